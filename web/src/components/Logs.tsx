import { useEffect, useRef, useState } from "react";
import { streamLines } from "../api.js";

/** The most lines kept on the page: older ones scroll away (loom logs has the rest). */
const KEEP = 5000;

/**
 * A job's logs, live: the same route `loom logs -f` streams, one worker or all interleaved;
 * with follow on, the view stays at the newest line.
 */
export function Logs(props: { path: string; workers: number; attempt?: number }) {
  const [worker, setWorker] = useState("all");
  const [follow, setFollow] = useState(true);
  const [lines, setLines] = useState<string[]>([]);
  const [error, setError] = useState("");
  const pre = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const abort = new AbortController();
    setLines([]);
    setError("");
    const q = new URLSearchParams({ follow: "1" });
    if (worker !== "all") q.set("worker", worker);
    if (props.attempt !== undefined) q.set("attempt", String(props.attempt));
    streamLines(
      `${props.path}/log?${q}`,
      (more) => setLines((old) => [...old, ...more].slice(-KEEP)),
      abort.signal,
    ).catch((err: Error) => {
      if (!abort.signal.aborted) setError(err.message);
    });
    return () => abort.abort();
  }, [props.path, worker, props.attempt]);
  useEffect(() => {
    if (follow && pre.current && lines.length) pre.current.scrollTop = pre.current.scrollHeight;
  }, [lines, follow]);
  return (
    <section aria-labelledby="logs">
      <h2 id="logs">Logs</h2>
      <div className="filters">
        <label>
          Worker
          <select value={worker} onChange={(e) => setWorker(e.target.value)}>
            <option value="all">all workers</option>
            {workerIndexes(props.workers).map((w) => (
              <option key={w} value={String(w)}>
                worker {w}
              </option>
            ))}
          </select>
        </label>
        <label>
          <input type="checkbox" checked={follow} onChange={(e) => setFollow(e.target.checked)} /> Follow
        </label>
      </div>
      {error && <p role="alert">{error}</p>}
      {/* biome-ignore lint/a11y/noNoninteractiveTabindex: the log box scrolls by keyboard */}
      <pre ref={pre} className="logs" tabIndex={0} role="log" aria-label="Log lines" data-testid="logs">
        {lines.join("\n")}
      </pre>
    </section>
  );
}

const workerIndexes = (n: number) => [...Array(n).keys()];

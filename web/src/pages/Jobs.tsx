import { useMemo, useState } from "react";
import { age, condition, type Job, keyOf } from "../api.js";
import { VirtualList } from "../components/VirtualList.js";
import { href } from "../router.js";
import { useMe } from "../session.js";
import { useWatchedList } from "../watch.js";
import { jobsPath } from "./Overview.js";

const PHASES = ["", "Pending", "Running", "Succeeded", "Failed"];

/** "a=b,c" → a test of a job's labels (equality and existence, as label selectors). */
export function labelMatcher(selector: string): (labels: Record<string, string> | undefined) => boolean {
  const terms = selector
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean)
    .map((t) => {
      const [k, v] = t.split(/!=|==?/).map((s) => s.trim());
      const negate = t.includes("!=");
      return { k: k ?? "", v, negate };
    });
  return (labels) =>
    terms.every(({ k, v, negate }) => {
      const have = labels?.[k];
      if (v === undefined) return have !== undefined;
      return negate ? have !== v : have === v;
    });
}

/** Every job the user can see, live, filtered by project, phase and labels. */
export function JobsPage() {
  const me = useMe();
  const jobs = useWatchedList<Job>(jobsPath(me.allProjects ? undefined : me.project));
  const [project, setProject] = useState("");
  const [phase, setPhase] = useState("");
  const [labels, setLabels] = useState("");
  const projects = useMemo(
    () => [...new Set(jobs.items.map((j) => j.metadata.project ?? ""))].sort(),
    [jobs.items],
  );
  const shown = useMemo(() => {
    const match = labelMatcher(labels);
    return jobs.items
      .filter(
        (j) =>
          (!project || j.metadata.project === project) &&
          (!phase || (j.status?.phase ?? "Pending") === phase) &&
          match(j.metadata.labels),
      )
      .sort((a, b) => (b.metadata.creationTimestamp ?? "").localeCompare(a.metadata.creationTimestamp ?? ""));
  }, [jobs.items, project, phase, labels]);
  const now = Date.now();
  return (
    <>
      <h1>Jobs</h1>
      <form className="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          Project
          <select value={project} onChange={(e) => setProject(e.target.value)}>
            <option value="">all</option>
            {projects.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </select>
        </label>
        <label>
          Phase
          <select value={phase} onChange={(e) => setPhase(e.target.value)}>
            {PHASES.map((p) => (
              <option key={p} value={p}>
                {p || "all"}
              </option>
            ))}
          </select>
        </label>
        <label>
          Labels
          <input value={labels} placeholder="team=nlp,example" onChange={(e) => setLabels(e.target.value)} />
        </label>
        <output aria-live="polite">
          {jobs.loaded
            ? `${shown.length} of ${jobs.items.length} jobs${jobs.more ? ", loading more…" : ""}`
            : "loading…"}
        </output>
      </form>
      {jobs.error && <p role="alert">{jobs.error}</p>}
      <div className="jobhead" aria-hidden="true">
        <span>Name</span>
        <span>Phase</span>
        <span>Ready</span>
        <span>Attempts</span>
        <span>Age</span>
        <span>Reason</span>
      </div>
      <VirtualList
        items={shown}
        rowHeight={32}
        height={560}
        label="Jobs"
        keyOf={keyOf}
        row={(j) => {
          const waiting = condition(j, "Admitted");
          const phaseOf = j.status?.phase ?? "Pending";
          return (
            <a className="jobrow" href={href("jobs", j.metadata.project ?? "", j.metadata.name)}>
              <span>
                {j.metadata.project}/{j.metadata.name}
              </span>
              <span className={`phase ${phaseOf}`}>{phaseOf}</span>
              <span>{j.status?.ready ?? ""}</span>
              <span>{j.status?.attempts ?? 0}</span>
              <span>{age(j.metadata.creationTimestamp, now)}</span>
              <span>{waiting?.status === "False" ? waiting.reason : ""}</span>
            </a>
          );
        }}
      />
    </>
  );
}

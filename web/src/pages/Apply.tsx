import { type UIEvent, useEffect, useRef, useState } from "react";
import {
  type Document,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseAllDocuments,
  type Scalar,
} from "yaml";
import { BASE, csrfToken } from "../api.js";
import { href } from "../router.js";
import { useMe } from "../session.js";
import "./ops.css";

/** Kinds the editor applies, by kind: their plural (the API's path), and whether they live in a project. */
const KINDS: Record<string, { plural: string; namespaced: boolean }> = {
  Project: { plural: "projects", namespaced: false },
  TrainingJob: { plural: "trainingjobs", namespaced: true },
  Sweep: { plural: "sweeps", namespaced: true },
  InferenceService: { plural: "inferenceservices", namespaced: true },
  Workspace: { plural: "workspaces", namespaced: true },
  App: { plural: "apps", namespaced: true },
  Model: { plural: "models", namespaced: true },
  Prompt: { plural: "prompts", namespaced: true },
};

const SAMPLE = `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata:
  name: hello
spec:
  command: ["sh", "-c", "echo hello from loom"]
  resources:
    cpu: 100m
    memory: 64Mi
`;

/** A problem to show at its field: the document, the path, the line where it can be found. */
interface Problem {
  doc: number;
  path?: string;
  line?: number;
  message: string;
}

interface Preview {
  outcome: "Admit" | "Preempt" | "Wait";
  message: string;
  preempts: string[];
}

/** What the dry run (or the apply) said of one document. */
interface Outcome {
  doc: number;
  ref: string;
  kind: string;
  project?: string;
  name: string;
  verb: string;
  preview?: Preview;
}

interface Answer {
  status?: { admissionPreview?: Preview };
  metadata?: { project?: string; name?: string };
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly causes: { field: string; message: string }[],
  ) {
    super(message);
  }
}

/** One request, keeping the API's reason and field causes (the editor shows them at the field). */
async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: {
      ...(method === "GET" ? {} : { "x-loom-csrf": csrfToken() }),
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {}
  if (!res.ok) {
    const details = json.details as { causes?: { field: string; message: string }[] } | undefined;
    throw new Refusal(
      res.status,
      String(json.reason ?? ""),
      String(json.message ?? (text || res.statusText)),
      details?.causes ?? [],
    );
  }
  return json as T;
}

/**
 * The line (1-based) of a field path ("spec.resources.cpu", "spec.env.1"): its key's line, or its
 * nearest parent's where the field is missing; "unknown field(s): x" points at the key x itself.
 */
function lineOf(doc: Document, lines: LineCounter, path: string, message: string): number | undefined {
  const parts = path.split(".").filter(Boolean);
  const unknown = /unknown field\(s\): ([^,\s]+)/.exec(message)?.[1];
  if (unknown) parts.push(unknown);
  const at = (range: [number, number, number] | null | undefined) =>
    range ? lines.linePos(range[0]).line : undefined;
  for (let n = parts.length; n > 0; n--) {
    const parent = n === 1 ? doc.contents : doc.getIn(parts.slice(0, n - 1), true);
    const last = parts[n - 1]!;
    if (isMap(parent)) {
      const pair = parent.items.find((p) => isScalar(p.key) && String(p.key.value) === last);
      const line = pair ? at((pair.key as Scalar).range) : undefined;
      if (line) return line;
    } else if (isSeq(parent)) {
      const item = parent.items[Number(last)];
      const line = item ? at((item as Node).range) : undefined;
      if (line) return line;
    }
  }
  return at((doc.contents as Node | null)?.range);
}

/** Objects (their paths) this page has seen to exist. */
const existing = new Set<string>();

/**
 * The dry run and the apply of one document, as `loom apply` does them: create, or (it exists)
 * replace at its revision; a dry run asks the scheduler what it would do with a job.
 */
async function applyDoc(body: Record<string, unknown>, fallbackProject: string, dry: boolean) {
  const kind = String(body.kind ?? "");
  const k = KINDS[kind];
  const meta = (body.metadata ?? {}) as { name?: string; project?: string };
  if (!k)
    throw new Refusal(
      422,
      "Invalid",
      `kind "${kind}" is not one Loom serves: ${Object.keys(KINDS).join(", ")}`,
      [{ field: "kind", message: `unknown kind "${kind}"` }],
    );
  const project = meta.project ?? fallbackProject;
  const list = k.namespaced
    ? `${BASE}/projects/${encodeURIComponent(project)}/${k.plural}`
    : `${BASE}/${k.plural}`;
  const query = dry ? "?dryRun=All&preview=admission" : "";
  const base = { kind, project: k.namespaced ? project : undefined, name: meta.name ?? "" };
  const item = `${list}/${encodeURIComponent(meta.name ?? "")}`;
  // Create first (no read that fails for a new object); an object seen to exist is read and
  // replaced from then on, so re-checking it as you type costs no refused request each time.
  if (!existing.has(item))
    try {
      const a = await call<Answer>("POST", `${list}${query}`, body);
      return { ...base, verb: "created", preview: a.status?.admissionPreview };
    } catch (e) {
      if (!(e instanceof Refusal && e.reason === "AlreadyExists") || !meta.name) throw e;
      existing.add(item);
    }
  let current: { metadata: Record<string, unknown> };
  try {
    current = await call<{ metadata: Record<string, unknown> }>("GET", item);
  } catch (e) {
    if (e instanceof Refusal && e.status === 404) existing.delete(item);
    throw e;
  }
  const a = await call<Answer>("PUT", `${item}${query}`, {
    ...body,
    metadata: { ...meta, resourceVersion: current.metadata.resourceVersion },
  });
  return { ...base, verb: "configured", preview: a.status?.admissionPreview };
}

/**
 * A YAML editor that validates as you type: the YAML itself here, then the API's own dry run of
 * every document (`loom apply --dry-run`), with each problem at its field and line and, for a
 * job, the scheduler's verdict; Apply does it. Viewers cannot write, so they get neither.
 */
export function ApplyPage() {
  const me = useMe();
  const [text, setText] = useState("");
  const [project, setProject] = useState(me.project ?? "default");
  const [problems, setProblems] = useState<Problem[]>([]);
  const [outcomes, setOutcomes] = useState<Outcome[]>([]);
  const [checking, setChecking] = useState(false);
  const [applied, setApplied] = useState<Outcome[] | undefined>();
  const [applyError, setApplyError] = useState("");
  const gutter = useRef<HTMLPreElement>(null);
  const seq = useRef(0);

  const check = async (dry: boolean, mine: number): Promise<{ problems: Problem[]; outcomes: Outcome[] }> => {
    const lines = new LineCounter();
    const docs = parseAllDocuments(text, { lineCounter: lines });
    const found: Problem[] = [];
    const done: Outcome[] = [];
    const list = Array.isArray(docs) ? docs : [];
    list.forEach((d, i) => {
      for (const e of d.errors) found.push({ doc: i, line: e.linePos?.[0].line, message: e.message });
    });
    if (found.length || !list.length) return { problems: found, outcomes: [] };
    for (const [i, d] of list.entries()) {
      const body = d.toJS() as Record<string, unknown> | null;
      if (!body || typeof body !== "object") continue;
      const ref = `${body.kind ?? "?"}/${(body.metadata as { name?: string } | undefined)?.name ?? "?"}`;
      try {
        done.push({ doc: i, ref, ...(await applyDoc(body, project, dry)) });
      } catch (e) {
        const r = e as Refusal;
        if (r.causes?.length)
          for (const c of r.causes)
            found.push({
              doc: i,
              path: c.field,
              line: lineOf(d, lines, c.field, c.message),
              message: c.message,
            });
        else found.push({ doc: i, message: `${ref}: ${r.message}` });
      }
      if (mine !== seq.current) break;
    }
    return { problems: found, outcomes: done };
  };

  // Validate as you type: 400 ms after the last key, and only the newest check's answer counts.
  // biome-ignore lint/correctness/useExhaustiveDependencies: check reads text and project, the triggers
  useEffect(() => {
    const mine = ++seq.current;
    if (!me.canWrite) return;
    const t = setTimeout(async () => {
      setChecking(true);
      const r = await check(true, mine);
      if (mine !== seq.current) return;
      setProblems(r.problems);
      setOutcomes(r.outcomes);
      setChecking(false);
    }, 400);
    return () => clearTimeout(t);
  }, [text, project, me.canWrite]);

  const apply = async () => {
    setApplyError("");
    setApplied(undefined);
    const mine = ++seq.current;
    const r = await check(false, mine);
    setProblems(r.problems);
    if (r.problems.length) setApplyError("Not everything was applied: see the problems listed.");
    setApplied(r.outcomes);
  };

  const lineCount = text.split("\n").length;
  const bad = new Set(problems.map((p) => p.line).filter((l): l is number => l !== undefined));
  const syncGutter = (e: UIEvent<HTMLTextAreaElement>) => {
    if (gutter.current) gutter.current.scrollTop = e.currentTarget.scrollTop;
  };
  return (
    <>
      <h1>Apply</h1>
      {!me.canWrite && (
        <p role="alert">
          Your token is a viewer's: it can read but not apply (nor dry-run) manifests. Ask an editor of the
          project.
        </p>
      )}
      <div className="apply-split">
        <section aria-labelledby="editor-title">
          <h2 id="editor-title">Manifest (YAML, one or more documents)</h2>
          <p>
            <label htmlFor="apply-project">Project </label>
            <input
              id="apply-project"
              value={project}
              onChange={(e) => setProject(e.target.value.trim())}
              disabled={!!me.project && !me.allProjects}
            />{" "}
            <span className="muted">(where metadata.project does not say)</span>
          </p>
          <div className="editor">
            <pre className="gutter" ref={gutter} aria-hidden="true">
              {Array.from({ length: lineCount }, (_, i) => i + 1).map((n) => (
                <span key={n} className={bad.has(n) ? "bad" : undefined}>
                  {n}
                </span>
              ))}
            </pre>
            <textarea
              id="manifest"
              aria-label="Manifest YAML"
              aria-describedby="problems-title"
              spellCheck={false}
              placeholder={SAMPLE}
              value={text}
              onChange={(e) => setText(e.target.value)}
              onScroll={syncGutter}
            />
          </div>
          {me.canWrite && (
            <p>
              <button type="button" onClick={apply} disabled={problems.length > 0 || checking}>
                Apply
              </button>{" "}
              <span className="muted" aria-live="polite">
                {checking ? "Checking…" : problems.length ? "Fix the problems to apply." : "Dry run passed."}
              </span>
            </p>
          )}
        </section>
        <Results
          canWrite={me.canWrite}
          problems={problems}
          outcomes={outcomes}
          applied={applied}
          applyError={applyError}
        />
      </div>
    </>
  );
}

/** What the checks found: problems at their fields and lines, the dry run's verdicts, what Apply did. */
function Results(props: {
  canWrite: boolean;
  problems: Problem[];
  outcomes: Outcome[];
  applied: Outcome[] | undefined;
  applyError: string;
}) {
  const { canWrite, problems, outcomes, applied, applyError } = props;
  return (
    <section aria-labelledby="problems-title">
      <h2 id="problems-title">Validation</h2>
      {problems.length === 0 ? (
        <p className="muted">{canWrite ? "No problems found." : "—"}</p>
      ) : (
        <ul className="problems" aria-label="Problems">
          {problems.map((p, i) => (
            // biome-ignore lint/suspicious/noArrayIndexKey: problems have no identity beyond their place
            <li key={i} role="alert" className="problem">
              {p.line !== undefined && <strong>line {p.line}</strong>} {p.path && <code>{p.path}</code>}:{" "}
              {p.message}
            </li>
          ))}
        </ul>
      )}
      <h2>Dry run</h2>
      <ul className="problems" aria-label="Dry run">
        {outcomes.map((o) => (
          <li key={o.ref}>
            {o.ref} {o.verb} (dry run)
            {o.preview && (
              <p className={`verdict ${o.preview.outcome}`}>
                <strong>
                  {o.preview.outcome === "Admit"
                    ? "Starts"
                    : o.preview.outcome === "Preempt"
                      ? "Preempts"
                      : "Waits"}
                  :
                </strong>{" "}
                {capital(o.preview.message)}
              </p>
            )}
          </li>
        ))}
      </ul>
      {applied && (
        <>
          <h2>Applied</h2>
          {applyError && <p role="alert">{applyError}</p>}
          <ul className="problems" aria-label="Applied">
            {applied.map((o) => (
              <li key={o.ref}>
                {o.kind === "TrainingJob" && o.project ? (
                  <a href={href("jobs", o.project, o.name)}>{o.ref}</a>
                ) : o.kind === "Workspace" || o.kind === "App" ? (
                  <a href={href("workspaces")}>{o.ref}</a>
                ) : (
                  o.ref
                )}{" "}
                {o.verb}
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}

/** The scheduler's sentence ("would start now on vm …") as a sentence. */
const capital = (m: string) => m.charAt(0).toUpperCase() + m.slice(1);

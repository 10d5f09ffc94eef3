import type { Command } from "commander";
import { TRAININGJOB } from "../../api/kinds.js";
import type { Resource } from "../../api/meta.js";
import { isFinished, type TrainingJob } from "../../api/trainingjob.js";
import { IDLE_STOPPED } from "../../api/workspace.js";
import { canonicalJson } from "../../lib/json.js";
import { ApiError } from "../client.js";
import type { Api, CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { type Prepared, prepare, readManifests } from "../manifests.js";
import { collectionPath, itemPath, ref } from "../resources.js";
import { defaultKubeconfigSecrets, sendKubeconfig, withKubeconfig } from "./cluster.js";

/** `loom apply -f FILE...`: create or update, all or nothing (every document is validated first). */
export function registerApply(program: Command, deps: CliDeps): void {
  program
    .command("apply")
    .description("create or update the objects in manifests (multi-document YAML or JSON)")
    .requiredOption("-f, --filename <path...>", "file, directory or - for stdin")
    .option("-p, --project <project>", "project for objects that do not name one")
    .option(
      "--dry-run",
      "change nothing; say what apply would do to each object (created, configured, unchanged) and, for TrainingJobs, whether each would start now, where, or what it would preempt",
    )
    .option(
      "--kubeconfig-file <path>",
      "with one Cluster: the member's kubeconfig, kept by the control plane as a secret (never shown again)",
    )
    .action(
      async (opts: { filename: string[]; project?: string; dryRun?: boolean; kubeconfigFile?: string }) =>
        apply(deps, opts.filename, opts.project, !!opts.dryRun, opts.kubeconfigFile),
    );
}

/** What apply does (or, in a dry run, would do) to one object, in the words both print. */
export interface Verdict {
  /** "created", "unchanged", or "configured" with what the change does to a TrainingJob. */
  verb: string;
  /** Dry run only: what the scheduler would do with a job that would wait for admission. */
  preview?: string;
}

/** The server's answer, with the admission preview a dry run asked for. */
type Answer = Resource & { status?: { admissionPreview?: { message: string } } };

async function apply(
  deps: CliDeps,
  files: string[],
  projectOpt: string | undefined,
  dryRunOnly: boolean,
  kubeconfigFile?: string,
) {
  const { api, defaultProject } = deps.client();
  const docs = readManifests(files);
  const prepared = docs.map((d) => prepare(d, projectOpt ?? defaultProject));
  const member = kubeconfigFile ? withKubeconfig(prepared, kubeconfigFile) : undefined;
  defaultKubeconfigSecrets(prepared);
  // The secret first (its checks too): the member's first probe finds its kubeconfig.
  if (member) await sendKubeconfig(api, member.cluster, member.kubeconfig, dryRunOnly);
  // The dry run of every document first: it is what --dry-run prints, and apply's check that
  // every document would go through before anything is written (a bad document stores nothing).
  // The admission preview costs a scheduling pass per job: only a dry run that prints it asks.
  const problems: string[] = [];
  const planned = new Map<Prepared, Verdict>();
  await Promise.all(
    prepared.map(async (p) => {
      try {
        planned.set(p, await applyOne(api, p, dryRunOnly ? "preview" : "dry"));
      } catch (err) {
        if (err instanceof ApiError && err.status !== 401 && err.status < 500) {
          for (const line of err.message.split("\n"))
            problems.push(`${p.source}: ${p.def.kind} "${p.name}": ${line}`);
        } else throw err;
      }
    }),
  );
  if (problems.length > 0) throw new CliError(`nothing was applied:\n${problems.join("\n")}`);
  if (dryRunOnly) {
    for (const p of prepared) {
      const v = planned.get(p)!;
      deps.stdout.write(`${ref(p.def, p.name)} ${v.verb} (dry run)${v.preview ? `: ${v.preview}` : ""}\n`);
    }
    return;
  }
  for (const p of prepared)
    deps.stdout.write(`${ref(p.def, p.name)} ${(await applyOne(api, p, "apply")).verb}\n`);
}

/**
 * The one decision for an object, shared by the dry run and apply so that they cannot disagree:
 * the same requests in the same order (create; if it exists, read it and update it at its
 * resourceVersion), with `?dryRun=All` in a dry run, and the same reading of the answers
 * ({@link updateVerdict}). The server answers a dry run as the real write would: AlreadyExists
 * for an object that exists, and the object as it would be stored.
 */
export async function applyOne(api: Api, p: Prepared, mode: "apply" | "dry" | "preview"): Promise<Verdict> {
  const query = mode === "apply" ? "" : mode === "dry" ? "?dryRun=All" : "?dryRun=All&preview=admission";
  // Models live in the model registry, whose POST creates or updates: ask first whether it exists.
  const upsert = (p.def.storage ?? "store") !== "store";
  for (let i = 0; i < 10; i++) {
    let current = upsert ? await read(api, p) : undefined;
    if (!current) {
      try {
        const created = await api.request<Answer>(
          "POST",
          `${collectionPath(p.def, p.project)}${query}`,
          p.body,
        );
        return { verb: "created", ...preview(created) };
      } catch (err) {
        if (upsert || !(err instanceof ApiError && err.reason === "AlreadyExists")) throw err;
      }
      current = await read(api, p);
      if (!current) continue; // deleted since: create again
    }
    const metadata = p.body.metadata as Resource["metadata"];
    const body = {
      ...p.body,
      metadata: {
        ...metadata,
        ...keptAnnotations(current, metadata),
        resourceVersion: current.metadata.resourceVersion,
      },
    };
    try {
      const updated = upsert
        ? await api.request<Answer>("POST", `${collectionPath(p.def, p.project)}${query}`, p.body)
        : await api.request<Answer>("PUT", `${itemPath(p.def, p.project, p.name)}${query}`, body);
      return updateVerdict(p.def.kind, current, updated);
    } catch (err) {
      if (err instanceof ApiError && (err.reason === "Conflict" || err.reason === "NotFound")) continue;
      throw err;
    }
  }
  throw new CliError(`${ref(p.def, p.name)}: gave up after repeated conflicting writes; try again`);
}

/**
 * Annotations a controller writes, which a manifest never has: kept through an apply, as kubectl
 * keeps what it did not apply. Re-applying an unchanged manifest must not undo an idle cull.
 */
const CONTROLLER_ANNOTATIONS = [IDLE_STOPPED];

export function keptAnnotations(
  current: Resource,
  metadata: Resource["metadata"],
): Pick<Resource["metadata"], "annotations"> {
  const kept = Object.entries(current.metadata.annotations ?? {}).filter(
    ([k]) => CONTROLLER_ANNOTATIONS.includes(k) && !(k in (metadata.annotations ?? {})),
  );
  if (!kept.length) return {};
  return { annotations: { ...metadata.annotations, ...Object.fromEntries(kept) } };
}

async function read(api: Api, p: Prepared): Promise<Resource | undefined> {
  try {
    return await api.request<Resource>("GET", itemPath(p.def, p.project, p.name));
  } catch (err) {
    if (err instanceof ApiError && err.reason === "NotFound") return undefined;
    throw err;
  }
}

function preview(answer: Resource | undefined): { preview?: string } {
  const message = (answer as Answer | undefined)?.status?.admissionPreview?.message;
  return message ? { preview: message } : {};
}

/**
 * What an update did (or would do), from the object before and the server's answer after: the
 * same comparison for the stored answer and for a dry run's. For a TrainingJob it also says what
 * the change does to the job: a spec change does not restart a running attempt (the controller
 * starts each attempt from the spec of that moment), and a finished job does not run again.
 */
export function updateVerdict(kind: string, current: Resource, updated: Resource): Verdict {
  const same = (a: unknown, b: unknown) => canonicalJson(a ?? {}) === canonicalJson(b ?? {});
  const specChanged = !same(current.spec, updated.spec);
  const metaChanged =
    !same(current.metadata.labels, updated.metadata?.labels) ||
    !same(current.metadata.annotations, updated.metadata?.annotations);
  if (!specChanged && !metaChanged) return { verb: "unchanged" };
  if (kind !== TRAININGJOB) return { verb: "configured" };
  if (!specChanged) return { verb: "configured (labels/annotations only: the job is not restarted)" };
  const job = current as TrainingJob;
  const status = job.status ?? {};
  if (isFinished(job))
    return {
      verb: `configured (spec changed: the job has finished (${status.phase}) and does not run again)`,
    };
  if ((status.attempts ?? 0) > 0)
    return {
      verb: "configured (spec changed: the running attempt is not restarted; the new spec applies from its next attempt)",
    };
  if (status.admission)
    return { verb: "configured (spec changed: the job has not started yet and starts with it)" };
  return { verb: "configured (spec changed: the job waits for admission with it)", ...preview(updated) };
}

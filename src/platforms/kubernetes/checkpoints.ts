import type { Logger } from "pino";
import { TRAININGJOB } from "../../api/kinds.js";
import { forEachConcurrently } from "../../lib/concurrency.js";
import { packTar, unpackTar } from "../../lib/tar.js";
import type { CheckpointFiles } from "../../ports/fleet.js";
import type { WorkloadRef } from "../../ports/runtime.js";
import type { KubeClient } from "./client.js";
import { execInPod } from "./exec.js";
import { LABELS as L, namespaceOf, refFromLabels } from "./naming.js";
import type { Pod } from "./pods.js";

/**
 * A job's checkpoints on Kubernetes (issue 23), read and written through the API server's
 * pods/exec in the job's own pods, so that no worker needs a credential or a route to anyone:
 * - the operator reports the step of `$LOOM_CHECKPOINT_DIR/loom.json` (worker 0's `cat` of it,
 *   every CHECKPOINT_PROBE_MS) as the job's `status.checkpoint`;
 * - a fleet control plane reads a member's copy's checkpoint (`tar -c` in worker 0) when that
 *   step is newer than the one it holds, and
 * - seeds the first attempt of a copy that failed over into this member (and the operator, as a
 *   control plane, a job that came back to its own cluster): its worker pods wait in an init
 *   container until the control plane has written the checkpoint into their
 *   LOOM_CHECKPOINT_DIR (`tar -x` from stdin).
 * Everything read is untrusted: regular files only (tar.ts), names checked by the vault.
 */

/** Where LOOM_CHECKPOINT_DIR is mounted in every worker. */
export const CHECKPOINT_MOUNT = "/loom/checkpoint";
/** The init container of a seeded attempt's workers: it waits for the control plane's files. */
export const SEED_CONTAINER = "checkpoint-seed";
/** How often the operator reads each running job's loom.json. */
export const CHECKPOINT_PROBE_MS = 5000;
/** How long a seeded worker waits for the control plane before its attempt fails. */
const SEED_WAIT_SECONDS = 600;
/** A checkpoint larger than this is not moved through the API server (it stays in the member). */
export const MAX_SYNCED_CHECKPOINT_BYTES = 256 << 20;
/** On worker 0 of a job whose checkpoint step is reported (GangSpec.reportCheckpoint). */
export const REPORT_LABEL = "loom.dev/checkpoint-report";
/** How many pods' loom.json are read at once. */
const PROBE_CONCURRENCY = 4;

/**
 * The mark the control plane leaves once a job's (by uid) checkpoint is in place for `attempt`:
 * a member's copy is seeded in its first attempt (the mark names the copy's uid alone, as members
 * of earlier versions wait for it); a job back on its control plane's own cluster in a later one,
 * whose mark names the attempt, since a claim keeps the marks of the job's earlier seeds.
 */
export function seededMark(uid: string, attempt = 1): string {
  return attempt === 1 ? `.loom-seeded-${uid}` : `.loom-seeded-${uid}-${attempt}`;
}

/**
 * The init container a seeded worker pod waits in: until the control plane's mark appears in
 * its checkpoint directory (on a shared claim, worker 0's seed is everyone's), at most
 * SEED_WAIT_SECONDS, then the attempt fails rather than start over from step 0.
 */
export function seedContainer(uid: string, worker: { image: string; securityContext: unknown }, attempt = 1) {
  const mark = `${CHECKPOINT_MOUNT}/${seededMark(uid, attempt)}`;
  return {
    name: SEED_CONTAINER,
    image: worker.image,
    command: [
      "sh",
      "-c",
      `i=0; while [ ! -e ${mark} ]; do i=$((i+1)); if [ $i -gt ${SEED_WAIT_SECONDS * 5} ]; then echo "the fleet's control plane did not write the job's checkpoint here within ${SEED_WAIT_SECONDS} s (is it reachable?); this attempt fails, the next starts without it" >&2; exit 1; fi; sleep 0.2; done`,
    ],
    volumeMounts: [{ name: "checkpoint", mountPath: CHECKPOINT_MOUNT }],
    securityContext: worker.securityContext,
    resources: { requests: { cpu: "10m", memory: "16Mi" }, limits: { memory: "64Mi" } },
  };
}

type CheckpointReport = { time: string; step?: number };

/**
 * The operator's side: the step each running TrainingJob's worker 0 last wrote to loom.json,
 * read every CHECKPOINT_PROBE_MS through pods/exec (one request per running job whose checkpoint
 * others read: REPORT_LABEL; images without `cat` are skipped after the first try), and a
 * wake-up for the job when it changes.
 */
export class CheckpointProbe {
  private readonly reports = new Map<string, { raw: string; report: CheckpointReport }>();
  /** Pods whose image has no `cat` (or that refuse exec): not asked again. */
  private readonly unreadable = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  /** Reads made (exec requests), for tests and metrics. */
  reads = 0;

  constructor(
    private readonly deps: {
      client: KubeClient;
      log: Logger;
      pods: () => Promise<Pod[]>;
      onChange: (ref: WorkloadRef) => void;
      now?: () => Date;
    },
  ) {}

  /** The latest checkpoint the job (by uid) reported, if any was read. */
  report(uid: string): CheckpointReport | undefined {
    return this.reports.get(uid)?.report;
  }

  start(intervalMs = CHECKPOINT_PROBE_MS): void {
    this.timer ??= setInterval(() => void this.probe(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One pass over the running jobs' worker 0. */
  async probe(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const pods = (await this.deps.pods()).filter((p) => {
        const l = p.metadata.labels ?? {};
        return (
          l[L.kind] === TRAININGJOB &&
          l[L.worker] === "0" &&
          l[REPORT_LABEL] === "true" &&
          workerRunning(p) &&
          !p.metadata.deletionTimestamp &&
          !this.unreadable.has(p.metadata.name)
        );
      });
      const live = new Set(pods.map((p) => p.metadata.labels?.[L.uid]));
      for (const uid of this.reports.keys()) if (!live.has(uid)) this.reports.delete(uid);
      await forEachConcurrently(pods, PROBE_CONCURRENCY, (p) => this.read(p));
    } catch (err) {
      this.deps.log.debug({ err }, "checkpoint probe pass failed");
    } finally {
      this.busy = false;
    }
  }

  private async read(p: Pod): Promise<void> {
    const ref = refFromLabels(p.metadata.labels);
    if (!ref) return;
    this.reads++;
    const r = await execInPod(
      this.deps.client,
      p.metadata.namespace,
      p.metadata.name,
      ["cat", `${CHECKPOINT_MOUNT}/loom.json`],
      { container: "worker", timeoutMs: 5000, maxBytes: 64 << 10 },
    ).catch((err: unknown) => {
      this.deps.log.debug({ err, pod: p.metadata.name }, "could not read the job's loom.json");
      return undefined;
    });
    if (!r) return;
    if (r.status.status !== "Success") {
      // No loom.json yet is the common case; no `cat` in the image is permanent.
      if (
        /executable file not found|no such file or directory: unknown|not found in \$PATH/i.test(
          r.status.message ?? "",
        )
      ) {
        this.unreadable.add(p.metadata.name);
        this.deps.log.info(
          { pod: p.metadata.name },
          "the job's image has no cat: its checkpoint step is not reported (nor synced in a fleet)",
        );
      }
      return;
    }
    const raw = r.stdout.trim();
    if (this.reports.get(ref.uid)?.raw === raw) return;
    const report: CheckpointReport = { time: (this.deps.now?.() ?? new Date()).toISOString() };
    try {
      const step = (JSON.parse(raw) as { step?: unknown }).step;
      if (typeof step === "number" && Number.isFinite(step)) report.step = step;
    } catch {
      // Half written, or not JSON: the time alone says it checkpointed.
    }
    this.reports.set(ref.uid, { raw, report });
    this.deps.onChange(ref);
  }
}

/**
 * The files of the latest checkpoint a job (by its uid in this cluster) wrote: `tar -c` of
 * LOOM_CHECKPOINT_DIR in worker 0 of its latest attempt, while that runs. Undefined when no
 * worker 0 runs. Throws, saying why, when the pod cannot be read or sends what is not a
 * checkpoint (links, devices, more than MAX_SYNCED_CHECKPOINT_BYTES).
 */
export async function readCheckpoint(
  client: KubeClient,
  ref: WorkloadRef,
): Promise<CheckpointFiles | undefined> {
  const pods = await podsOf(client, ref);
  const attempt = Math.max(0, ...pods.map((p) => Number(p.metadata.labels?.[L.attempt] ?? 0)));
  const pod = pods.find(
    (p) =>
      Number(p.metadata.labels?.[L.attempt] ?? 0) === attempt &&
      p.metadata.labels?.[L.worker] === "0" &&
      workerRunning(p),
  );
  if (!pod) return undefined;
  const r = await execInPod(
    client,
    pod.metadata.namespace,
    pod.metadata.name,
    ["tar", "-C", CHECKPOINT_MOUNT, "-cf", "-", "."],
    {
      container: "worker",
      timeoutMs: 120_000,
      maxBytes: MAX_SYNCED_CHECKPOINT_BYTES + (1 << 20),
    },
  );
  if (r.status.status !== "Success")
    throw new Error(
      `reading the checkpoint of ${ref.name} in pod ${pod.metadata.name}: ${r.status.message ?? r.stderr} (the image needs tar)`,
    );
  const files = unpackTar(r.stdoutBytes, MAX_SYNCED_CHECKPOINT_BYTES);
  for (const name of [...files.keys()]) if (name.startsWith(".loom-seeded-")) files.delete(name);
  return files;
}

/**
 * Writes a checkpoint into attempt `attempt` (a member's copy: its first) of a job (by its uid in
 * this cluster) whose workers wait in their SEED_CONTAINER: each waiting pod (only worker 0 when
 * the directory is a shared claim) gets the files through `tar -x` and the mark that lets it go
 * on. Returns how many pods still wait for it (1 while the attempt has no pod yet; 0: every pod
 * has its checkpoint). The caller stops asking once the job is past that attempt.
 */
export async function seedCheckpoint(
  client: KubeClient,
  ref: WorkloadRef,
  files: CheckpointFiles,
  attempt = 1,
): Promise<number> {
  return (await seedPods(client, ref, files, attempt)).waiting;
}

/** seedCheckpoint, also saying how many pods this call wrote the checkpoint into. */
export async function seedPods(
  client: KubeClient,
  ref: WorkloadRef,
  files: CheckpointFiles,
  attempt = 1,
): Promise<{ waiting: number; written: number }> {
  const pods = (await podsOf(client, ref)).filter((p) => p.metadata.labels?.[L.attempt] === String(attempt));
  // Not made yet: they will wait for it.
  if (pods.length === 0) return { waiting: 1, written: 0 };
  const waiting = pods.filter((p) => seedState(p) !== "done");
  const shared = pods.some((p) =>
    (p.spec as { volumes?: { name: string; persistentVolumeClaim?: unknown }[] } | undefined)?.volumes?.some(
      (v) => v.name === "checkpoint" && v.persistentVolumeClaim,
    ),
  );
  const targets = waiting.filter(
    (p) => seedState(p) === "running" && (!shared || p.metadata.labels?.[L.worker] === "0"),
  );
  if (targets.length === 0) return { waiting: waiting.length, written: 0 };
  const tar = packTar(files);
  const mark = `${CHECKPOINT_MOUNT}/${seededMark(ref.uid, attempt)}`;
  for (const pod of targets) {
    const r = await execInPod(
      client,
      pod.metadata.namespace,
      pod.metadata.name,
      ["sh", "-c", `head -c ${tar.length} | tar -x -f - -C ${CHECKPOINT_MOUNT} && touch ${mark}`],
      { container: SEED_CONTAINER, stdin: tar, timeoutMs: 120_000 },
    );
    if (r.status.status !== "Success")
      throw new Error(
        `writing the checkpoint of ${ref.name} into pod ${pod.metadata.name}: ${r.status.message ?? r.stderr}`,
      );
  }
  return { waiting: waiting.length - targets.length, written: targets.length };
}

/** The seed container's state in a pod: waiting to start, running (ready for files), or done. */
function seedState(p: Pod): "pending" | "running" | "done" {
  const s = (
    p.status as { initContainerStatuses?: { name: string; state?: Record<string, unknown> }[] } | undefined
  )?.initContainerStatuses?.find((c) => c.name === SEED_CONTAINER);
  if (!s) return p.status?.phase === "Pending" ? "pending" : "done";
  if (s.state?.running) return "running";
  return s.state?.terminated ? "done" : "pending";
}

function workerRunning(p: Pod): boolean {
  if (p.status?.phase !== "Running") return false;
  const c = (
    p.status as { containerStatuses?: { name: string; state?: Record<string, unknown> }[] }
  ).containerStatuses?.find((s) => s.name === "worker");
  return c ? !!c.state?.running : true;
}

async function podsOf(client: KubeClient, ref: WorkloadRef): Promise<Pod[]> {
  const list = await client.request<{ items: Pod[] }>(
    "GET",
    `/api/v1/namespaces/${namespaceOf(ref.project)}/pods`,
    {
      query: { labelSelector: `${L.uid}=${ref.uid}` },
    },
  );
  return list.items;
}

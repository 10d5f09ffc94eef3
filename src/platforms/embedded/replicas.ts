import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type {
  ExternalWork,
  ReplicaLogOptions,
  ReplicaObservation,
  RevisionObservation,
  RevisionRuntime,
  RevisionSpec,
  Runtime,
  WorkloadRef,
} from "../../ports/runtime.js";
import type { PodPlacement, RunningWorkload, Workload } from "../../ports/scheduler.js";
import type { EventRecorder } from "../../ports/store.js";
import { JsonFiles } from "./jsonfiles.js";
import { EXPOSE_ENV } from "./netns.js";
import { exitOutput, PreviousLogs, replicaLogsOf } from "./replicalogs.js";
import { externalId, httpProbe, needsPlace, requestOf, revisionKey } from "./replicaspec.js";

/**
 * Service replicas on this machine, as a Deployment and its kubelet would run them: each
 * replica is a supervised process (a one-worker workload of the process runtime) on a loopback
 * port of its own, probed until ready, replaced when it dies or never gets ready, stopped
 * gracefully when no longer wanted. Replicas that ask for resources wait for Loom's scheduler
 * as external work, exactly like `schedulerName: loom` pods on Kubernetes: the admission cycle
 * binds them (`bind`), tells them why they wait (`explain`), and may reclaim them (`preempt`).
 * Replicas that ask for nothing hold nothing and start at once.
 */

const KIND = "InferenceService";

type ReplicaPhase = "Pending" | "Running" | "Stopping";

interface Replica {
  /** SERVICE-N-rK: the revision's name and the replica's index. */
  id: string;
  uid: string;
  index: number;
  phase: ReplicaPhase;
  /** When it was asked for (its place in the scheduler's queue). */
  createdAt: string;
  host?: string;
  port?: number;
  startedAt?: string;
  ready: boolean;
  placement?: PodPlacement;
  /** Why it waits, as the scheduler last said (an event when it changes). */
  waiting?: string;
  /** Stopping: when to send SIGTERM (after the gateway has stopped routing to it). */
  stopAt?: number;
}

interface Revision {
  spec: RevisionSpec;
  replicas: Replica[];
  /** No replica starts before this (after a failed start). */
  retryAt?: number;
  /** The last environment failure said, so it is said once. */
  environmentFailure?: string;
  /** The scheduler's message when it last reclaimed a replica, until a replica starts again. */
  preempted?: string;
  /** Replicas that exited since one was last ready (a crash loop backs off), and the last's why. */
  exits?: number;
  lastExit?: string;
}

export interface LocalRevisionsDeps {
  /** The process runtime the replicas run on. */
  runtime: Runtime;
  events: EventRecorder;
  log: Logger;
  /** Where each revision's replicas are recorded, to be re-adopted after a restart. */
  stateDir: string;
  /** The node replicas that ask for nothing run on. */
  node: string;
  now?: () => Date;
  /** Probes a replica's readiness path; true when it answers 2xx. */
  probe?: (host: string, port: number, path: string) => Promise<boolean>;
  /**
   * How long a replica leaves the routing table before SIGTERM: the service's loop publishes the
   * table right after it scales down, so no new request reaches a replica that is shutting down.
   */
  drainMs?: number;
  /** Seconds between SIGTERM and SIGKILL when a replica is stopped. */
  graceSeconds?: number;
  /**
   * Where the host reaches a replica that has a network of its own (netns.ts), by its uid;
   * undefined: the replica listens on the host's loopback.
   */
  address?: (uid: string) => string | undefined;
}

/** The embedded RevisionRuntime, and the external work its replicas are for the scheduler. */
export class LocalRevisions implements RevisionRuntime {
  private readonly revisions = new Map<string, Revision>();
  /** One operation at a time per revision: starts, stops and scaling never interleave. */
  private readonly locks = new Map<string, Promise<void>>();
  private readonly changeListeners: ((ref: WorkloadRef) => void)[] = [];
  private readonly capacityListeners: (() => void)[] = [];
  private readonly probing = new Set<string>();
  private readonly now: () => Date;
  private readonly probe: NonNullable<LocalRevisionsDeps["probe"]>;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  private readonly files: JsonFiles<Revision>;
  private readonly previous: PreviousLogs;

  constructor(private readonly deps: LocalRevisionsDeps) {
    this.now = deps.now ?? (() => new Date());
    this.probe = deps.probe ?? httpProbe;
    this.files = new JsonFiles<Revision>(deps.stateDir, deps.log);
    this.previous = new PreviousLogs(deps.stateDir, deps.runtime);
    this.load();
    void this.collectOrphans();
    deps.runtime.onChange((ref) => {
      if (ref.kind === KIND) void this.replicaChanged(ref);
    });
    // Graceful stops in progress, readiness deadlines, and retries after a failed start.
    this.timer = setInterval(() => void this.tick(), 200);
    this.timer.unref();
  }

  /** Called when a replica becomes ready, exits or stops (its service looks again). */
  onChange(listener: (ref: WorkloadRef) => void): void {
    this.changeListeners.push(listener);
  }

  /** Called when replicas want a place or give capacity back (the scheduler looks again). */
  onCapacityChange(listener: () => void): void {
    this.capacityListeners.push(listener);
  }

  async applyRevision(spec: RevisionSpec): Promise<void> {
    const key = revisionKey(spec.service.project, spec.revision);
    await this.locked(key, async () => {
      let rev = this.revisions.get(key);
      if (!rev) {
        rev = { spec, replicas: [] };
        this.revisions.set(key, rev);
      }
      rev.spec = spec;
      await this.converge(rev);
    });
  }

  async observeRevision(service: WorkloadRef, revision: string): Promise<RevisionObservation> {
    const rev = this.revisions.get(revisionKey(service.project, revision));
    const replicas: ReplicaObservation[] = [];
    for (const r of rev?.replicas ?? []) {
      if (r.phase !== "Running" || r.port === undefined) continue;
      replicas.push({
        id: r.id,
        uid: r.uid,
        host: r.host!,
        port: r.port,
        ready: r.ready,
        startedAt: r.startedAt!,
        ...(r.placement ? { node: r.placement.node, gpus: r.placement.gpus } : {}),
      });
    }
    return {
      replicas,
      ...(rev?.preempted ? { preempted: rev.preempted } : {}),
      ...(rev?.lastExit ? { lastExit: rev.lastExit } : {}),
    };
  }

  async deleteRevision(service: WorkloadRef, revision: string): Promise<void> {
    const key = revisionKey(service.project, revision);
    await this.locked(key, async () => {
      const rev = this.revisions.get(key);
      if (!rev) return;
      rev.spec = { ...rev.spec, replicas: 0 };
      await this.converge(rev, 0);
    });
  }

  async listRevisions(): Promise<{ service: WorkloadRef; revision: string }[]> {
    return [...this.revisions.values()].map((r) => ({ service: r.spec.service, revision: r.spec.revision }));
  }

  async replicaLogs(service: WorkloadRef, revisions: string[], opts: ReplicaLogOptions) {
    const live = revisions.flatMap((name) => {
      const rev = this.revisions.get(revisionKey(service.project, name));
      return (rev?.replicas ?? [])
        .filter((r) => r.phase === "Running")
        .map((r) => ({ id: r.id, ref: this.refOf(rev!, r), ready: r.ready, startedAt: r.startedAt! }));
    });
    const previous = (revision: string) => this.previous.read(service.project, revision);
    return replicaLogsOf(live, previous, revisions, this.deps.runtime, opts);
  }

  /** For the scheduler: replicas waiting for a place, and what running ones hold. */
  external(): ExternalWork {
    const pending: Workload[] = [];
    const running: RunningWorkload[] = [];
    for (const rev of this.revisions.values()) {
      const request = requestOf(rev.spec);
      const project = rev.spec.service.project;
      for (const r of rev.replicas) {
        const workload: Workload = {
          id: externalId(project, r.id),
          name: externalId(project, r.id),
          project,
          priority: 0,
          // Model replicas may borrow beyond the deserved quota, so they can be reclaimed (stopped
          // gracefully and queued again), as a preemptible training job can; a workspace's may not.
          preemptible: rev.spec.preemptible ?? true,
          createdAt: r.createdAt,
          pods: [request],
          // The machine has no taints; they count all the same, as on Kubernetes.
          ...(rev.spec.worker.tolerations?.length ? { tolerations: rev.spec.worker.tolerations } : {}),
        };
        if (r.phase === "Pending") {
          if (needsPlace(request)) pending.push(workload);
        } else if (r.placement) {
          running.push({ ...workload, placements: [r.placement], stopping: r.phase === "Stopping" });
        }
      }
    }
    return { pending, running };
  }

  /** The scheduler placed a waiting replica: start it there. */
  async bind(id: string, placements: PodPlacement[]): Promise<void> {
    const found = this.find(id);
    if (!found) return;
    await this.locked(found.key, async () => {
      const r = found.rev.replicas.find((x) => x.id === found.replica);
      if (r?.phase !== "Pending" || !placements[0]) return;
      r.placement = placements[0];
      await this.startReplica(found.rev, r);
      this.save(found.rev);
    });
  }

  /** The scheduler says why a replica waits: an event on its service when the reason changes. */
  async explain(id: string, message: string): Promise<void> {
    const found = this.find(id);
    const r = found?.rev.replicas.find((x) => x.id === found.replica);
    if (!found || !r || r.phase !== "Pending" || r.waiting === message) return;
    r.waiting = message;
    await this.event(found.rev, "Warning", "ReplicaPending", `replica ${id} waits: ${message}`);
  }

  /** The scheduler reclaims a replica's capacity: it stops gracefully and a new one waits. */
  async preempt(id: string, message: string): Promise<void> {
    const found = this.find(id);
    if (!found) return;
    await this.locked(found.key, async () => {
      const r = found.rev.replicas.find((x) => x.id === found.replica);
      if (r?.phase !== "Running") return;
      this.stopReplica(r);
      found.rev.preempted = message;
      await this.event(
        found.rev,
        "Warning",
        "Preempted",
        `replica ${r.id} of ${found.rev.spec.revision} stops: ${message}`,
      );
      await this.converge(found.rev);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
  }

  /** Brings a revision to `desired` live replicas: asks for missing ones, stops extras. */
  private async converge(rev: Revision, desired = rev.spec.replicas): Promise<void> {
    const live = () => rev.replicas.filter((r) => r.phase !== "Stopping");
    // Scaled to zero: nothing waits for a place any more, so nothing is waiting after a preemption.
    if (desired === 0) rev.preempted = undefined;
    // Scale down: waiting ones first (nothing to stop), then not ready, then the newest.
    while (live().length > desired) {
      const candidates = live();
      const victim =
        candidates.find((r) => r.phase === "Pending") ??
        candidates.find((r) => !r.ready) ??
        candidates.at(-1)!;
      if (victim.phase === "Pending") rev.replicas.splice(rev.replicas.indexOf(victim), 1);
      else this.stopReplica(victim);
      this.capacityChanged();
    }
    if (live().length < desired && (await this.environmentReady(rev))) {
      if (rev.retryAt && this.now().getTime() < rev.retryAt) return this.save(rev);
      const request = requestOf(rev.spec);
      while (live().length < desired) {
        const index = Math.max(-1, ...rev.replicas.map((r) => r.index)) + 1;
        const r: Replica = {
          id: `${rev.spec.revision}-r${index}`,
          uid: randomUUID(),
          index,
          phase: "Pending",
          createdAt: this.now().toISOString(),
          ready: false,
        };
        rev.replicas.push(r);
        if (needsPlace(request)) {
          this.capacityChanged();
          continue;
        }
        // Nothing to place: it holds no capacity, so it starts at once (a scale from zero
        // waits for no scheduling cycle).
        r.placement = { pod: 0, node: this.deps.node, gpus: [] };
        if (!(await this.startReplica(rev, r))) break;
      }
    }
    this.save(rev);
  }

  /** Whether the revision's Python environment is built (minutes, the first time). */
  private async environmentReady(rev: Revision): Promise<boolean> {
    if (!rev.spec.python) return true;
    const prep = this.deps.runtime.prepare?.({ python: rev.spec.python }) ?? { ready: true };
    if ("failed" in prep) {
      if (rev.environmentFailure !== prep.failed) {
        rev.environmentFailure = prep.failed;
        await this.event(rev, "Warning", "EnvironmentFailed", prep.failed);
      }
      return false;
    }
    rev.environmentFailure = undefined;
    return prep.ready;
  }

  /** Starts a placed replica's process; false (and the replica dropped) if it could not start. */
  private async startReplica(rev: Revision, r: Replica): Promise<boolean> {
    const spec = rev.spec;
    const ref = this.refOf(rev, r);
    try {
      const [endpoint] = await this.deps.runtime.endpoints(ref, 1, 1, 1);
      const port = endpoint!.ports[0]!;
      const placement = r.placement!;
      const share = placement.gpus.length === 1 && placement.gpus[0]!.share < 1;
      await this.deps.runtime.start({
        ref,
        attempt: 1,
        workers: [
          {
            ...spec.worker,
            index: 0,
            // EXPOSE_ENV: the gateway (on the host) reaches this port in the replica's own network.
            env: { ...spec.worker.env, PORT: String(port), LOOM_REPLICA: r.id, [EXPOSE_ENV]: String(port) },
            allocation: {
              ...spec.worker.allocation,
              node: placement.node,
              gpus: placement.gpus.map((g) => g.device),
              ...(share ? { gpuShare: placement.gpus[0]!.share } : {}),
            },
            terminationGracePeriodSeconds: this.deps.graceSeconds ?? 15,
          },
        ],
        ...(spec.python ? { python: spec.python } : {}),
        ...(spec.home ? { home: spec.home } : {}),
      });
      r.phase = "Running";
      r.host = this.deps.address?.(r.uid) ?? endpoint!.host;
      r.port = port;
      r.startedAt = this.now().toISOString();
      r.waiting = undefined;
      rev.preempted = undefined;
      await this.event(
        rev,
        "Normal",
        "ReplicaStarted",
        `replica ${r.id} of ${spec.revision} on ${r.host}:${port}`,
      );
      this.watchReadiness(rev, r);
      return true;
    } catch (err) {
      // A port that cannot be had, a process that cannot start: say so, try again later.
      rev.replicas.splice(rev.replicas.indexOf(r), 1);
      rev.retryAt = this.now().getTime() + 2000;
      await this.deps.runtime.release(ref).catch(() => undefined);
      await this.event(
        rev,
        "Warning",
        "FailedCreate",
        `cannot start a replica of ${spec.revision}: ${(err as Error).message}`,
      );
      this.capacityChanged();
      return false;
    }
  }

  /**
   * Probes a started replica until it is ready: every 10 ms while it is young (a request may be
   * held for it: a cold start should cost the replica's own start-up and little more), then
   * every 250 ms (a big model loading).
   */
  private watchReadiness(rev: Revision, r: Replica): void {
    if (this.probing.has(r.uid)) return;
    this.probing.add(r.uid);
    const check = async () => {
      if (this.closed || r.phase !== "Running" || r.ready || !rev.replicas.includes(r)) {
        this.probing.delete(r.uid);
        return;
      }
      if (await this.probe(r.host!, r.port!, rev.spec.readinessPath)) {
        this.probing.delete(r.uid);
        if (r.phase !== "Running" || !rev.replicas.includes(r)) return;
        r.ready = true;
        rev.exits = 0;
        rev.lastExit = undefined;
        this.save(rev);
        const after = (this.now().getTime() - Date.parse(r.startedAt!)) / 1000;
        await this.event(
          rev,
          "Normal",
          "ReplicaReady",
          `replica ${r.id} of ${rev.spec.revision} is ready (${Math.round(after * 10) / 10}s after start)`,
        );
        this.changed(rev, r);
        return;
      }
      const age = this.now().getTime() - Date.parse(r.startedAt!);
      setTimeout(check, age < 5000 ? 10 : 250).unref();
    };
    void check();
  }

  /** Leaves the routing table now, SIGTERM after the drain period (tick sends it). */
  private stopReplica(r: Replica): void {
    r.phase = "Stopping";
    // A replica that never got ready was never routed to: nothing to drain.
    r.stopAt = this.now().getTime() + (r.ready ? (this.deps.drainMs ?? 1000) : 0);
    r.ready = false;
  }

  private async tick(): Promise<void> {
    if (this.closed) return;
    const now = this.now().getTime();
    for (const [key, rev] of this.revisions) {
      const due = rev.replicas.some(
        (r) =>
          (r.phase === "Stopping" && (r.stopAt ?? 0) <= now) ||
          (r.phase === "Running" &&
            !r.ready &&
            now - Date.parse(r.startedAt!) > rev.spec.readinessTimeoutSeconds * 1000),
      );
      const retry = rev.retryAt !== undefined && rev.retryAt <= now;
      const building =
        !!rev.spec.python && rev.replicas.filter((r) => r.phase !== "Stopping").length < rev.spec.replicas;
      if (!due && !retry && !building) continue;
      await this.locked(key, () => this.housekeep(key, rev, now)).catch((err: unknown) =>
        this.deps.log.error({ err, revision: key }, "replica housekeeping failed"),
      );
    }
  }

  /** Continues graceful stops, restarts replicas past their readiness deadline, retries starts. */
  private async housekeep(key: string, rev: Revision, now: number): Promise<void> {
    for (const r of [...rev.replicas]) {
      if (
        r.phase === "Running" &&
        !r.ready &&
        now - Date.parse(r.startedAt!) > rev.spec.readinessTimeoutSeconds * 1000
      ) {
        await this.event(
          rev,
          "Warning",
          "ReadinessTimeout",
          `replica ${r.id} of ${rev.spec.revision} was not ready within ${rev.spec.readinessTimeoutSeconds}s; restarting it`,
        );
        this.stopReplica(r);
      }
      if (r.phase !== "Stopping" || (r.stopAt ?? 0) > now) continue;
      const ref = this.refOf(rev, r);
      if (!(await this.deps.runtime.stop(ref, this.deps.graceSeconds ?? 15))) continue;
      await this.previous.keep(ref, rev.spec.revision);
      await this.deps.runtime.release(ref);
      rev.replicas.splice(rev.replicas.indexOf(r), 1);
      this.capacityChanged();
      this.changed(rev, r);
    }
    if (rev.retryAt !== undefined && rev.retryAt <= now) rev.retryAt = undefined;
    await this.converge(rev);
    if (rev.spec.replicas === 0 && rev.replicas.length === 0) {
      this.revisions.delete(key);
      this.files.remove(rev.spec.service.project, rev.spec.revision);
      this.previous.remove(rev.spec.service.project, rev.spec.revision);
    }
  }

  /** The process runtime saw a replica start or exit: an exited one is replaced. */
  private async replicaChanged(ref: WorkloadRef): Promise<void> {
    const key = revisionKey(ref.project, ref.name.replace(/-r\d+$/, ""));
    const rev = this.revisions.get(key);
    if (!rev) return;
    await this.locked(key, async () => {
      const r = rev.replicas.find((x) => x.uid === ref.uid);
      if (r?.phase !== "Running") return;
      const worker = (await this.deps.runtime.observe(ref))?.workers[0];
      if (worker?.state === "Running") return;
      rev.replicas.splice(rev.replicas.indexOf(r), 1);
      // Its output goes with its release: keep it for `loom logs --previous`, its end for the event.
      const output = await this.previous.keep(ref, rev.spec.revision);
      await this.deps.runtime.release(ref);
      const why = worker
        ? `exited${worker.exitCode !== undefined ? ` with code ${worker.exitCode}` : ""}${worker.signal ? ` (${worker.signal})` : ""}`
        : "is gone";
      // Exiting again before any replica got ready: each next start waits longer (1s, 2s, … 30s),
      // as Kubernetes backs off a CrashLoopBackOff; a single exit is replaced at once.
      rev.exits = (rev.exits ?? 0) + 1;
      const backoff = rev.exits > 1 ? Math.min(30, 2 ** (rev.exits - 2)) : 0;
      if (backoff) rev.retryAt = this.now().getTime() + backoff * 1000;
      rev.lastExit = `replica ${r.id} ${why}${exitOutput(rev.spec.service, output)}`;
      const next = backoff ? `starting another in ${backoff}s` : "starting another";
      await this.event(
        rev,
        "Warning",
        "ReplicaExited",
        `replica ${r.id} of ${rev.spec.revision} ${why}; ${next}${exitOutput(rev.spec.service, output)}`,
      );
      this.capacityChanged();
      this.changed(rev, r);
      await this.converge(rev);
    }).catch((err: unknown) => this.deps.log.error({ err, revision: key }, "replica exit handling failed"));
  }

  /** Re-adopts what an earlier server recorded: live replicas keep serving, dead ones go. */
  private load(): void {
    for (const rev of this.files.readAll()) {
      this.revisions.set(revisionKey(rev.spec.service.project, rev.spec.revision), rev);
      for (const r of rev.replicas) if (r.phase === "Running" && !r.ready) this.watchReadiness(rev, r);
      // Exits while the server was down: the process runtime re-adopted the processes and knows
      // their state; ask once everything is wired.
      setImmediate(() => {
        for (const r of rev.replicas) if (r.phase === "Running") void this.replicaChanged(this.refOf(rev, r));
      });
    }
  }

  /**
   * Replica processes no revision records (an older Loom ran them itself, or a crash came
   * between a start and its record) are stopped: nothing would probe, route to or replace them.
   */
  private async collectOrphans(): Promise<void> {
    try {
      const known = new Set([...this.revisions.values()].flatMap((rev) => rev.replicas.map((r) => r.uid)));
      for (const ref of await this.deps.runtime.list()) {
        if (ref.kind !== KIND || known.has(ref.uid)) continue;
        const grace = this.deps.graceSeconds ?? 15;
        for (let i = 0; !(await this.deps.runtime.stop(ref, grace)) && i < grace * 10 + 50; i++)
          await new Promise((ok) => setTimeout(ok, 100));
        await this.deps.runtime.release(ref);
        this.deps.log.info({ replica: ref.name, uid: ref.uid }, "stopped a replica no revision records");
      }
    } catch (err) {
      this.deps.log.error({ err }, "could not collect orphaned replicas");
    }
  }

  private save(rev: Revision): void {
    this.files.write(rev.spec.service.project, rev.spec.revision, rev);
  }

  private find(id: string): { key: string; rev: Revision; replica: string } | undefined {
    const slash = id.indexOf("/");
    const project = id.slice(0, slash);
    const replica = id.slice(slash + 1);
    const key = revisionKey(project, replica.replace(/-r\d+$/, ""));
    const rev = this.revisions.get(key);
    return rev ? { key, rev, replica } : undefined;
  }

  private refOf(rev: Revision, r: Replica): WorkloadRef {
    return { kind: KIND, project: rev.spec.service.project, name: r.id, uid: r.uid };
  }

  private locked(key: string, fn: () => Promise<void>): Promise<void> {
    const run = (this.locks.get(key) ?? Promise.resolve()).then(fn);
    const settled = run.catch(() => undefined);
    this.locks.set(key, settled);
    void settled.then(() => {
      if (this.locks.get(key) === settled) this.locks.delete(key);
    });
    return run;
  }

  private changed(rev: Revision, r: Replica): void {
    const ref = this.refOf(rev, r);
    for (const l of this.changeListeners) l(ref);
  }

  private capacityChanged(): void {
    for (const l of this.capacityListeners) l();
  }

  private async event(rev: Revision, type: "Normal" | "Warning", reason: string, message: string) {
    await this.deps.events
      .record(rev.spec.service, type, reason, message)
      .catch((err: unknown) => this.deps.log.warn({ err, reason }, "could not record a replica event"));
  }
}

import { createHash, randomUUID } from "node:crypto";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { NotFoundError } from "../../api/errors.js";
import type {
  InferenceService,
  InferenceServiceSpec,
  InferenceServiceStatus,
  RevisionStatus,
} from "../../api/inferenceservice.js";
import { setCondition } from "../../api/meta.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import type { PodPlacement } from "../../core/scheduler/model.js";
import type { Runtime, WorkloadRef } from "../../ports/runtime.js";
import type { ModelResolver, ScaleTargets, ServingTable } from "../../ports/serving.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";
import type { ServingAdmission } from "./admission.js";
import { INFERENCESERVICE, replicaName, SERVING_FINALIZER, seconds, serviceOfReplica } from "./names.js";
import { convergeOnPlatform, replicaWorker } from "./revisions.js";

export type { ModelResolver, ScaleTargets, ServingTable };
export { INFERENCESERVICE, replicaName, SERVING_FINALIZER, seconds, serviceOfReplica };

export interface InferenceServiceDeps {
  store: ResourceStore;
  runtime: Runtime;
  events: EventRecorder;
  log: Logger;
  now: () => Date;
  models: ModelResolver;
  scale?: ScaleTargets;
  table?: ServingTable;
  /** Where the built-in runtimes live (the repository's runtimes/ directory). */
  runtimesDir: string;
  /** Embedded: replicas that ask for resources are placed by the scheduler (quota, GPUs). */
  admission?: ServingAdmission;
  /** The gateway's OpenAI base URL, for status.url. */
  baseUrl?: () => string;
  /** Probes a replica's readiness path; true when it answers 2xx. */
  probe?: (host: string, port: number, path: string) => Promise<boolean>;
}

/** What makes a new revision: the parts that change the replicas, not traffic or scaling. */
function revisionHash(spec: InferenceServiceSpec): string {
  const { model, runtime, resources, readiness, python, env } = spec;
  return createHash("sha256")
    .update(JSON.stringify({ model, runtime, resources, readiness, python, env }))
    .digest("hex")
    .slice(0, 12);
}

async function httpProbe(host: string, port: number, path: string): Promise<boolean> {
  try {
    const res = await fetch(`http://${host}:${port}${path}`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

const HISTORY = 20;
const BUILTIN_PYTHON = process.env.LOOM_BUILTIN_PYTHON ?? "/usr/bin/python3";

/**
 * Runs an InferenceService: one revision per change of what the replicas run, replicas as
 * runtime workloads (embedded: supervised processes on loopback ports) started and stopped to
 * the autoscaler's targets, readiness probed, dead replicas replaced, traffic split between
 * revisions as the spec says (default: all to the latest ready one, so a rollout never routes
 * to a replica that is not ready, and the old revision serves until then).
 */
export class InferenceServiceReconciler implements Reconciler {
  readonly name = "inferenceservice";
  private readonly probe: NonNullable<InferenceServiceDeps["probe"]>;
  /** Replicas this process started and has not released: live even before a status says so. */
  readonly started = new Set<string>();

  constructor(private readonly deps: InferenceServiceDeps) {
    this.probe = deps.probe ?? httpProbe;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const [project, name] = key.split("/") as [string, string];
    let svc: InferenceService;
    try {
      svc = (await this.deps.store.get(INFERENCESERVICE, project, name)) as InferenceService;
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      this.deps.table?.publish(key, undefined);
      return {};
    }
    if (svc.metadata.deletionTimestamp) return this.finalize(key, svc);
    if (!svc.metadata.finalizers?.includes(SERVING_FINALIZER)) {
      svc = (await this.deps.store.update({
        ...svc,
        metadata: { ...svc.metadata, finalizers: [...(svc.metadata.finalizers ?? []), SERVING_FINALIZER] },
      })) as InferenceService;
    }
    const now = this.deps.now();
    const before = svc.status ?? {};
    const status: InferenceServiceStatus = structuredClone(before);
    const revisions: RevisionStatus[] = status.revisions ?? [];

    // 1. The revision the spec asks for; a new one when what the replicas run has changed.
    const hash = revisionHash(svc.spec);
    let latest = revisions.find((r) => r.spec?.hash === hash);
    if (!latest) {
      const n = Math.max(0, ...revisions.map((r) => Number(/-(\d+)$/.exec(r.name)?.[1] ?? 0))) + 1;
      latest = {
        name: `${name}-${n}`,
        generation: svc.metadata.generation,
        desired: Math.max(svc.spec.replicas.min, 1), // a new revision proves itself ready once
        ready: 0,
        replicas: [],
        createdAt: now.toISOString(),
        spec: { ...svc.spec, hash },
      };
      revisions.push(latest);
      await this.event(
        svc,
        "Normal",
        "RevisionCreated",
        `revision ${latest.name} for generation ${svc.metadata.generation}`,
      );
    }
    // The newest revision is what the spec wants; its replicas, scaling and traffic follow the spec.
    latest.spec = { ...latest.spec, replicas: svc.spec.replicas, autoscaling: svc.spec.autoscaling };

    // 2. Traffic: the spec's split, or all to the latest ready revision (the old one serves until then).
    const readyOnes = revisions.filter((r) => r.replicas?.some((x) => x.ready) || r.ready > 0);
    const latestReady = [...revisions]
      .reverse()
      .find((r) => readyOnes.includes(r) || (r === latest && latest.ready > 0));
    // One entry per revision: until a canary is ready, "latest" names the revision it is canary
    // of, and the two shares are that revision's.
    const traffic: { revision: string; percent: number }[] = [];
    for (const t of svc.spec.traffic ?? [{ revision: "latest", percent: 100 }]) {
      const revision = t.revision === "latest" ? (latestReady?.name ?? latest!.name) : t.revision;
      const same = traffic.find((x) => x.revision === revision);
      if (same) same.percent += t.percent;
      else traffic.push({ revision, percent: t.percent });
    }
    const unknown = traffic.find((t) => !revisions.some((r) => r.name === t.revision));
    if (unknown)
      status.conditions = setCondition(
        status.conditions,
        {
          type: "TrafficRouted",
          status: "False",
          reason: "UnknownRevision",
          message: `spec.traffic names revision ${unknown.revision}, which does not exist; revisions: ${revisions.map((r) => r.name).join(", ")}`,
        },
        now,
      );
    else
      status.conditions = setCondition(
        status.conditions,
        {
          type: "TrafficRouted",
          status: "True",
          reason: "Routed",
          message: traffic.map((t) => `${t.revision} ${t.percent}%`).join(", "),
        },
        now,
      );
    status.traffic = traffic;

    // 3. Replicas per revision: the autoscaler's target within {min, max} for revisions that take
    // traffic (or the latest, until it is ready); none for the rest.
    let waitingForReadiness = false;
    const keep: RevisionStatus[] = [];
    /** Replicas scaled down: stopped once the gateway no longer routes to them. */
    const stopping: { id: string; uid: string }[] = [];
    for (const rev of revisions) {
      const routed = traffic.some((t) => t.revision === rev.name && t.percent > 0);
      const isLatest = rev === latest;
      const { min, max } = svc.spec.replicas;
      let desired = 0;
      let why = "no traffic";
      if (routed || (isLatest && rev.ready === 0)) {
        const wanted = this.deps.scale?.desired(`${key}/${rev.name}`);
        desired = Math.min(max, Math.max(routed ? min : Math.max(min, 1), wanted ?? rev.desired));
        if (isLatest && !routed && rev.ready === 0) desired = Math.max(desired, 1);
        why =
          wanted === undefined
            ? "spec"
            : `autoscaler: ${this.deps.scale?.reason?.(`${key}/${rev.name}`) ?? `wants ${wanted}`}`;
      }
      if (desired !== rev.desired) {
        status.scaleEvents = [
          ...(status.scaleEvents ?? []),
          {
            time: now.toISOString(),
            revision: rev.name,
            from: rev.desired,
            to: desired,
            reason: why,
          },
        ].slice(-HISTORY);
        rev.desired = desired;
      }
      waitingForReadiness = (await this.converge(svc, rev, now, stopping)) || waitingForReadiness;
      // Revisions that serve nothing and run nothing are history; keep the latest few.
      if (rev.desired > 0 || (rev.replicas?.length ?? 0) > 0 || isLatest || routed) keep.push(rev);
    }
    status.revisions = keep;
    status.latestReadyRevision =
      [...keep].reverse().find((r) => r.ready > 0)?.name ?? status.latestReadyRevision;
    status.desired = keep.reduce((a, r) => a + r.desired, 0);
    status.ready = keep.reduce((a, r) => a + r.ready, 0);
    status.phase = status.ready > 0 ? "Ready" : status.desired === 0 ? "ScaledToZero" : "Pending";
    status.conditions = setCondition(
      status.conditions,
      status.ready > 0 || status.desired === 0
        ? {
            type: "Ready",
            status: "True",
            reason: status.ready > 0 ? "ReplicasReady" : "ScaledToZero",
            message: `${status.ready} ready replica(s); a request starts one when there are none`,
          }
        : {
            type: "Ready",
            status: "False",
            reason: "ReplicasStarting",
            message: `waiting for ${status.desired} replica(s) to pass readiness (${svc.spec.readiness.path})`,
          },
      now,
    );
    if (this.deps.baseUrl) status.url = `${this.deps.baseUrl()}/v1 (model ${name})`;
    status.observedGeneration = svc.metadata.generation;
    if (stopping.length) {
      // The gateway stops routing to them first (in-flight requests finish: SIGTERM drains), so a
      // scale-down or a rollout's retired revision never answers a new request with a refusal.
      this.deps.table?.publish(key, { ...svc, status });
      await Promise.all(stopping.map((r) => this.stopReplica(project, r)));
    }
    if (!isDeepStrictEqual(before, status))
      svc = (await this.deps.store.updateStatus({ ...svc, status })) as InferenceService;
    this.deps.table?.publish(key, { ...svc, status });
    // Capacity came back (a replica stopped, the status says so): waiting work may fit now.
    if (stopping.length) this.deps.admission?.released(stopping.map((r) => `${project}/${r.id}`));
    if (!waitingForReadiness) return { requeueAfterMs: 2000 };
    // A request may be held until a replica is ready: probe a fresh replica often (a probe is one
    // loopback GET), so a cold start costs the replica's own start-up and little more; an old
    // one that is still not ready (a big model loading) every 250 ms.
    const youngest = Math.max(
      0,
      ...keep.flatMap((r) => (r.replicas ?? []).filter((x) => !x.ready).map((x) => Date.parse(x.startedAt))),
    );
    return { requeueAfterMs: now.getTime() - youngest < 5000 ? 10 : 250 };
  }

  /** Brings a revision's replicas to its desired count; true while some are not ready yet. */
  private async converge(
    svc: InferenceService,
    rev: RevisionStatus,
    now: Date,
    stopping: { id: string; uid: string }[],
  ): Promise<boolean> {
    // Kubernetes: a Deployment per revision does what the rest of this method does embedded.
    if (this.deps.runtime.serving)
      return convergeOnPlatform(this.deps.runtime.serving, this.deps.models, svc, rev, [
        "python3",
        "runtimes/loom-tinygpt/server.py",
      ]);
    const project = svc.metadata.project!;
    const replicas = rev.replicas ?? [];
    const spec = rev.spec as InferenceServiceSpec;
    let waiting = false;
    // Observe: dead replicas go (and are replaced below); live ones are probed until ready.
    for (const r of [...replicas]) {
      const preemption = this.deps.admission?.takePreemption(`${project}/${r.id}`);
      if (preemption) {
        replicas.splice(replicas.indexOf(r), 1);
        stopping.push(r);
        await this.event(svc, "Warning", "Preempted", `replica ${r.id} of ${rev.name} stops: ${preemption}`);
        continue;
      }
      const ref = this.refOf(project, r);
      const obs = await this.deps.runtime.observe(ref);
      const worker = obs?.workers[0];
      if (!obs || (worker && worker.state !== "Running")) {
        replicas.splice(replicas.indexOf(r), 1);
        await this.deps.runtime.release(ref);
        this.started.delete(r.uid);
        const why = worker
          ? `exited${worker.exitCode !== undefined ? ` with code ${worker.exitCode}` : ""}${worker.signal ? ` (${worker.signal})` : ""}`
          : "is gone";
        await this.event(
          svc,
          "Warning",
          "ReplicaExited",
          `replica ${r.id} of ${rev.name} ${why}; starting another`,
        );
        continue;
      }
      if (!r.ready && r.host && r.port) {
        if (await this.probe(r.host, r.port, spec.readiness.path)) {
          r.ready = true;
          await this.event(
            svc,
            "Normal",
            "ReplicaReady",
            `replica ${r.id} of ${rev.name} is ready (${Math.round((now.getTime() - Date.parse(r.startedAt)) / 100) / 10}s after start)`,
          );
        } else if (now.getTime() - Date.parse(r.startedAt) > spec.readiness.timeoutSeconds * 1000) {
          await this.event(
            svc,
            "Warning",
            "ReadinessTimeout",
            `replica ${r.id} of ${rev.name} was not ready within ${spec.readiness.timeoutSeconds}s; restarting it`,
          );
          await this.stopReplica(project, r);
          replicas.splice(replicas.indexOf(r), 1);
        } else waiting = true;
      }
    }
    // Scale up, once the environment a custom runtime names is built (minutes, the first time).
    if (replicas.length < rev.desired && spec.python) {
      const prep = this.deps.runtime.prepare?.({ python: spec.python }) ?? { ready: true };
      if ("failed" in prep) {
        await this.event(svc, "Warning", "EnvironmentFailed", prep.failed);
        return false;
      }
      if (!prep.ready) return true;
    }
    const nextIndex = () =>
      Math.max(-1, ...replicas.map((r) => Number(/-r(\d+)$/.exec(r.id)?.[1] ?? -1))) + 1;
    const admission = this.deps.admission;
    const request = {
      cpuMillis: parseCpuMillis(spec.resources.cpu ?? 0) ?? 0,
      memoryBytes: parseMemoryBytes(spec.resources.memory ?? 0) ?? 0,
      gpu: spec.resources.gpu ?? 0,
    };
    const needsPlace = !!admission && (request.cpuMillis > 0 || request.memoryBytes > 0 || request.gpu > 0);
    while (replicas.length < rev.desired) {
      const k = nextIndex();
      let placements: PodPlacement[] | undefined;
      if (needsPlace) {
        // Like a training worker: the scheduler decides where it goes and whether the project
        // may have it now; until then the replica waits, and the service says why.
        const id = `${project}/${replicaName(rev.name, k)}`;
        placements = admission!.take(id);
        if (!placements) {
          admission!.want(id, `${project}/${svc.metadata.name}`, {
            name: id,
            project,
            priority: 0,
            preemptible: true,
            createdAt: now.toISOString(),
            pods: [request],
          });
          const why = admission!.reason(id);
          if (why) await this.event(svc, "Warning", "ReplicaPending", `replica ${id} waits: ${why}`);
          waiting = true;
          break;
        }
      }
      try {
        replicas.push(await this.startReplica(svc, rev, k, now, placements?.[0]));
      } catch (err) {
        // A model that does not resolve, a port that cannot be had: say so, try again later.
        await this.event(
          svc,
          "Warning",
          "FailedCreate",
          `cannot start a replica of ${rev.name}: ${(err as Error).message}`,
        );
        break;
      }
      waiting = true;
    }
    // A replica asked for and no longer wanted: withdraw the request.
    if (admission && replicas.length >= rev.desired)
      admission.forget(`${project}/${replicaName(rev.name, nextIndex())}`);
    // Scale down: not-ready replicas first, then the newest.
    while (replicas.length > rev.desired) {
      const victim = replicas.find((r) => !r.ready) ?? replicas.at(-1)!;
      replicas.splice(replicas.indexOf(victim), 1);
      stopping.push(victim);
    }
    rev.replicas = replicas;
    rev.ready = replicas.filter((r) => r.ready).length;
    return waiting;
  }

  private refOf(project: string, r: { id: string; uid: string }): WorkloadRef {
    return { kind: INFERENCESERVICE, project, name: r.id, uid: r.uid };
  }

  private async startReplica(
    svc: InferenceService,
    rev: RevisionStatus,
    k: number,
    now: Date,
    placement?: PodPlacement,
  ) {
    const project = svc.metadata.project!;
    const spec = rev.spec as InferenceServiceSpec;
    const id = replicaName(rev.name, k);
    const uid = randomUUID();
    const ref: WorkloadRef = { kind: INFERENCESERVICE, project, name: id, uid };
    this.started.add(uid);
    const [endpoint] = await this.deps.runtime.endpoints(ref, 1, 1, 1);
    const port = endpoint!.ports[0]!;
    const worker = replicaWorker(svc, rev, {
      port,
      modelLocation: await this.deps.models.resolve(project, spec.model),
      replica: id,
      // The built-in runtime needs only PyTorch, from Debian's python3-torch (docs/training.md).
      builtinCommand: [BUILTIN_PYTHON, join(this.deps.runtimesDir, "loom-tinygpt", "server.py")],
    });
    await this.deps.runtime.start({
      ref,
      attempt: 1,
      workers: [
        {
          ...worker,
          index: 0,
          allocation: {
            ...worker.allocation,
            node: placement?.node ?? "local",
            gpus: placement?.gpus.map((g) => g.device) ?? [],
            ...(placement?.gpus.length === 1 && placement.gpus[0]!.share < 1
              ? { gpuShare: placement.gpus[0]!.share }
              : {}),
          },
          terminationGracePeriodSeconds: 15,
        },
      ],
      ...(spec.python ? { python: spec.python } : {}),
    });
    await this.event(
      svc,
      "Normal",
      "ReplicaStarted",
      `replica ${id} of ${rev.name} on ${endpoint!.host}:${port}`,
    );
    return {
      id,
      uid,
      host: endpoint!.host,
      port,
      ready: false,
      startedAt: now.toISOString(),
      ...(placement ? { node: placement.node, gpus: placement.gpus } : {}),
    };
  }

  private async stopReplica(project: string, r: { id: string; uid: string }): Promise<void> {
    const ref = this.refOf(project, r);
    // Graceful: SIGTERM lets the runtime finish in-flight requests; the gateway stopped routing
    // to it before this (it is no longer in the published table).
    for (let i = 0; i < 200 && !(await this.deps.runtime.stop(ref, 15)); i++)
      await new Promise((ok) => setTimeout(ok, 100));
    await this.deps.runtime.release(ref);
    this.started.delete(r.uid);
  }

  private async finalize(key: string, svc: InferenceService): Promise<ReconcileResult> {
    this.deps.table?.publish(key, undefined);
    for (const rev of svc.status?.revisions ?? [])
      for (const r of rev.replicas ?? []) await this.stopReplica(svc.metadata.project!, r);
    await this.deps.store.update({
      ...svc,
      metadata: {
        ...svc.metadata,
        finalizers: (svc.metadata.finalizers ?? []).filter((f) => f !== SERVING_FINALIZER),
      },
    });
    return {};
  }

  private async event(svc: InferenceService, type: "Normal" | "Warning", reason: string, message: string) {
    await this.deps.events.record(
      {
        kind: INFERENCESERVICE,
        project: svc.metadata.project!,
        name: svc.metadata.name,
        uid: svc.metadata.uid,
      },
      type,
      reason,
      message,
    );
  }
}

import { createHash } from "node:crypto";
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
import type { RevisionRuntime, Runtime } from "../../ports/runtime.js";
import type { ModelResolver, ScaleTargets, ServingTable } from "../../ports/serving.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";
import { INFERENCESERVICE, replicaName, SERVING_FINALIZER, seconds, serviceOfReplica } from "./names.js";
import { convergeOnPlatform, serviceRef } from "./revisions.js";
import { routeTraffic } from "./traffic.js";

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
  /**
   * How this platform runs the built-in runtime (`runtime: loom-tinygpt`): embedded, Python and
   * the package's runtimes/ directory; Kubernetes, the path inside the image.
   */
  builtinCommand: string[];
  /** The gateway's OpenAI base URL, for status.url. */
  baseUrl?: () => string;
}

/** What makes a new revision: the parts that change the replicas, not traffic or scaling. */
function revisionHash(spec: InferenceServiceSpec): string {
  const { model, runtime, resources, readiness, python, env } = spec;
  return createHash("sha256")
    .update(JSON.stringify({ model, runtime, resources, readiness, python, env }))
    .digest("hex")
    .slice(0, 12);
}

const HISTORY = 20;

/**
 * Runs an InferenceService: one revision per change of what the replicas run, each revision's
 * replica count set to the autoscaler's target through the platform's serving capability
 * (Kubernetes: a Deployment; embedded: supervised processes on loopback ports, placed by the
 * scheduler like any pod), and traffic split between revisions as the spec says (default: all
 * to the latest ready one, so a rollout never routes to a replica that is not ready, and the old
 * revision serves until then). The platform probes readiness and replaces dead replicas.
 */
export class InferenceServiceReconciler implements Reconciler {
  readonly name = "inferenceservice";

  constructor(private readonly deps: InferenceServiceDeps) {}

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
    const { traffic, condition } = routeTraffic(svc, revisions, latest);
    status.conditions = setCondition(status.conditions, condition, now);
    status.traffic = traffic;

    // 3. Replicas per revision: the autoscaler's target within {min, max} for revisions that take
    // traffic (or the latest, until it is ready); none for the rest.
    let waitingForReadiness = false;
    const keep: RevisionStatus[] = [];
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
      waitingForReadiness = (await this.converge(svc, rev)) || waitingForReadiness;
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
    if (!isDeepStrictEqual(before, status))
      svc = (await this.deps.store.updateStatus({ ...svc, status })) as InferenceService;
    // Replicas scaled down are out of the observed set already: publishing drops them from the
    // gateway's table before the platform sends SIGTERM (it waits a drain period), so a
    // scale-down or a rollout's retired revision never answers a new request with a refusal.
    this.deps.table?.publish(key, { ...svc, status });
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

  /**
   * Brings a revision to its desired count through the platform's serving capability (the same
   * call on every platform) and reads its replicas back; true while some are not ready yet.
   */
  private async converge(svc: InferenceService, rev: RevisionStatus): Promise<boolean> {
    return convergeOnPlatform(this.serving(), this.deps.models, svc, rev, this.deps.builtinCommand);
  }

  private serving(): RevisionRuntime {
    const serving = this.deps.runtime.serving;
    if (!serving)
      throw new Error("this platform's runtime cannot run service replicas (no serving capability)");
    return serving;
  }

  private async finalize(key: string, svc: InferenceService): Promise<ReconcileResult> {
    this.deps.table?.publish(key, undefined);
    const service = serviceRef(svc);
    for (const rev of svc.status?.revisions ?? []) await this.serving().deleteRevision(service, rev.name);
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

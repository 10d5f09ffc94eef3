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
import type { RevisionRuntime, Runtime } from "../../ports/runtime.js";
import type { ModelResolver, ScaleTargets, ServingTable } from "../../ports/serving.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";
import { latestRevision, requeueAfter, type ServedView, scaleRevisions } from "../serving/revisions.js";
import type { FleetReplicas } from "./fleet.js";
import { INFERENCESERVICE, replicaName, SERVING_FINALIZER, seconds, serviceOfReplica } from "./names.js";
import { convergeOnPlatform, serviceRef } from "./revisions.js";

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
  /** Replicas across the fleet's members, for services that name some (issue 23). */
  fleet?: FleetReplicas;
}

/** What makes a new revision: the parts that change the replicas, not traffic or scaling. */
function revisionHash(spec: InferenceServiceSpec): string {
  const { model, runtime, resources, readiness, python, env, tolerations } = spec;
  // Tolerations are absent (and so out of the JSON) unless set: existing revisions keep their hash.
  return createHash("sha256")
    .update(JSON.stringify({ model, runtime, resources, readiness, python, env, tolerations }))
    .digest("hex")
    .slice(0, 12);
}

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
    // Across the fleet when the spec names members; a service that stopped naming them leaves them.
    const fleet = this.deps.fleet?.owns(svc) ? this.deps.fleet : undefined;
    if (!fleet && this.deps.fleet?.holds(svc.metadata.uid)) await this.deps.fleet.release(svc);
    const now = this.deps.now();
    const before = svc.status ?? {};
    const status: InferenceServiceStatus = structuredClone(before);
    const revisions: RevisionStatus[] = status.revisions ?? [];
    const view: ServedView = {
      key,
      name,
      generation: svc.metadata.generation,
      hash: revisionHash(svc.spec),
      revisionName: (n) => `${name}-${n}`,
      spec: svc.spec,
      readinessPath: svc.spec.readiness.path,
    };

    // 1. The revision the spec asks for; a new one when what the replicas run has changed.
    const { latest, created } = latestRevision(view, revisions, svc.spec, now);
    if (created)
      await this.event(
        svc,
        "Normal",
        "RevisionCreated",
        `revision ${latest.name} for generation ${svc.metadata.generation}`,
      );

    // 2–3. Traffic (the spec's split, or all to the latest ready revision) and replicas per revision.
    const { waiting, keep } = await scaleRevisions(view, status, revisions, latest, {
      ...(this.deps.scale ? { scale: this.deps.scale } : {}),
      now,
      converge: (rev) =>
        fleet ? fleet.converge(svc, rev, (r) => this.converge(svc, r)) : this.converge(svc, rev),
    });
    if (this.deps.baseUrl) status.url = `${this.deps.baseUrl()}/v1 (model ${name})`;
    status.observedGeneration = svc.metadata.generation;
    if (!isDeepStrictEqual(before, status))
      svc = (await this.deps.store.updateStatus({ ...svc, status })) as InferenceService;
    // Replicas scaled down are out of the observed set already: publishing drops them from the
    // gateway's table before the platform sends SIGTERM (it waits a drain period), so a
    // scale-down or a rollout's retired revision never answers a new request with a refusal.
    this.deps.table?.publish(key, { ...svc, status });
    // A request may be held until a replica is ready: probe a fresh replica often.
    // A member's replicas are read through its API: every 500 ms at most while one starts.
    const after = requeueAfter(keep, waiting, now);
    return { requeueAfterMs: fleet && waiting ? Math.max(after, 500) : after };
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
    const fleet = this.deps.fleet;
    if (fleet && (fleet.owns(svc) || fleet.holds(svc.metadata.uid)) && !(await fleet.release(svc)))
      return { requeueAfterMs: 500 };
    const service = serviceRef(svc);
    for (const rev of svc.status?.revisions ?? []) await this.serving().deleteRevision(service, rev.name);
    // The object goes once its replicas have (embedded lists what it still runs): removed earlier,
    // a server stopped right after would leave them running for a service that no longer exists.
    const serving = this.serving();
    if (serving.listRevisions) {
      const uid = svc.metadata.uid;
      if ((await serving.listRevisions()).some((r) => r.service.uid === uid)) return { requeueAfterMs: 250 };
    }
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

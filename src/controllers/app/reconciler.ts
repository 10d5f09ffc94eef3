import { createHash } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import type { App, AppSpec, AppStatus } from "../../api/app.js";
import { NotFoundError } from "../../api/errors.js";
import type { RevisionStatus } from "../../api/inferenceservice.js";
import { APP } from "../../api/kinds.js";
import { setCondition } from "../../api/meta.js";
import { parseCpuMillis, parseMemoryBytes } from "../../api/quantity.js";
import { type WorkloadModels, withModelAccess } from "../../ports/models.js";
import type { RevisionRuntime, Runtime, WorkloadRef } from "../../ports/runtime.js";
import type { ScaleTargets, ServingTable } from "../../ports/serving.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { WorkloadTracking } from "../../ports/tracking.js";
import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";
import { SERVING_FINALIZER } from "../inferenceservice/names.js";
import {
  convergeRevision,
  latestRevision,
  requeueAfter,
  type ServedView,
  scaleRevisions,
} from "../serving/revisions.js";
import { revisionAccess, revokeAccess } from "../workloadaccess.js";
import { APP_PORT, appProgram } from "./command.js";

export { APP };

export interface AppDeps {
  store: ResourceStore;
  runtime: Runtime;
  events: EventRecorder;
  log: Logger;
  now: () => Date;
  /** What the apps' gateway's autoscaler wants per revision. */
  scale?: ScaleTargets;
  /** The apps' serving table (its own: never the OpenAI routes'). */
  table?: ServingTable;
  /** The app's URL on the user-content origin, once that listens. */
  appOrigin?: (project: string, name: string) => string | undefined;
  /** The project's models for the app: OPENAI_BASE_URL and a key file (ports/models.ts), as a workspace's. */
  models?: WorkloadModels;
  /** The project's tracking for the app: MLFLOW_TRACKING_URI and ~/.mlflow/credentials, per revision. */
  tracking?: Pick<WorkloadTracking, "sessionCredentials" | "revokeCredentials">;
}

/** An App's revision: NAME-appN (never NAME-N, an InferenceService's of the same name). */
export const appRevisionName = (name: string, n: number) => `${name}-app${n}`;

/** An app replica's runtime name (NAME-appN-rK) → the app's name; undefined for others. */
export function appOfReplica(name: string): string | undefined {
  return /^(.+)-app\d+-r\d+$/.exec(name)?.[1];
}

/** What makes a new revision: what the replicas run, not scaling or access. */
function revisionHash(spec: AppSpec): string {
  const { framework, file, command, workingDir, python, image, resources, readinessPath, env } = spec;
  return createHash("sha256")
    .update(
      JSON.stringify({ framework, file, command, workingDir, python, image, resources, readinessPath, env }),
    )
    .digest("hex")
    .slice(0, 12);
}

/** The App as the owner of what the platform makes for its revisions. */
export function appRef(app: App): WorkloadRef {
  return { kind: APP, project: app.metadata.project!, name: app.metadata.name, uid: app.metadata.uid };
}

/**
 * Runs an App as an InferenceService runs its model (serving/revisions.ts): one revision per
 * change of what the replicas run, the old one serving until the new is ready, replicas the
 * apps' gateway autoscaler's target within {min, max} (0 by default: scale to zero). It
 * publishes to the apps' serving table, which the user-content origin leases replicas from.
 */
export class AppReconciler implements Reconciler {
  readonly name = "app";

  constructor(private readonly deps: AppDeps) {}

  async reconcile(key: string): Promise<ReconcileResult> {
    const [project, name] = key.split("/") as [string, string];
    let app: App;
    try {
      app = (await this.deps.store.get(APP, project, name)) as App;
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      this.deps.table?.publish(key, undefined);
      return {};
    }
    if (app.metadata.deletionTimestamp) return this.finalize(key, app);
    if (!app.metadata.finalizers?.includes(SERVING_FINALIZER)) {
      app = (await this.deps.store.update({
        ...app,
        metadata: { ...app.metadata, finalizers: [...(app.metadata.finalizers ?? []), SERVING_FINALIZER] },
      })) as App;
    }
    const now = this.deps.now();
    const before = app.status ?? {};
    const status: AppStatus = structuredClone(before);
    const revisions: RevisionStatus[] = status.revisions ?? [];
    const program = appProgram(app.spec);
    const view: ServedView = {
      key,
      name,
      generation: app.metadata.generation,
      hash: revisionHash(app.spec),
      revisionName: (n) => appRevisionName(name, n),
      spec: app.spec,
      readinessPath: program.readinessPath,
    };
    const { latest, created } = latestRevision(view, revisions, app.spec, now);
    if (created)
      await this.event(
        app,
        "RevisionCreated",
        `revision ${latest.name} for generation ${app.metadata.generation}`,
      );
    const { waiting, keep } = await scaleRevisions(view, status, revisions, latest, {
      ...(this.deps.scale ? { scale: this.deps.scale } : {}),
      now,
      converge: (rev) => this.converge(app, rev),
    });
    // No apps' gateway here (the operator without --data-dir): nothing would wake a replica, so
    // none is stopped for idleness, and the status says so rather than promising a wake-up.
    if (!this.deps.scale)
      status.conditions = setCondition(
        status.conditions,
        {
          type: "ScaleToZero",
          status: "False",
          reason: "NoGateway",
          message:
            "no gateway serves apps here (loom operator without --data-dir): the app keeps at least one replica and has no URL, since only Loom's gateway may reach its pods; run the operator with --data-dir to serve it and scale it to zero",
        },
        now,
      );
    const url = this.deps.appOrigin?.(project, name);
    if (url) status.url = `${url}/`;
    status.observedGeneration = app.metadata.generation;
    if (!isDeepStrictEqual(before, status))
      app = (await this.deps.store.updateStatus({ ...app, status })) as App;
    this.deps.table?.publish(key, { ...app, status });
    return { requeueAfterMs: requeueAfter(keep, waiting, now) };
  }

  private converge(app: App, rev: RevisionStatus): Promise<boolean> {
    const spec = rev.spec as AppSpec;
    const program = appProgram(spec);
    const r = spec.resources;
    const gpus = r.gpu && r.gpu >= 1 ? r.gpu : 0;
    return convergeRevision(this.serving(), appRef(app), rev, async () => {
      const models = await revisionAccess(this.deps, appRef(app), rev.name);
      return {
        worker: {
          command: program.command,
          ...(spec.image ? { image: spec.image } : {}),
          ...(spec.workingDir ? { workingDir: spec.workingDir } : {}),
          env: withModelAccess(
            {
              PYTHONUNBUFFERED: "1",
              HOST: "127.0.0.1",
              ...program.env,
              ...spec.env,
              LOOM_PROJECT: app.metadata.project!,
              LOOM_WORKLOAD: app.metadata.name,
              LOOM_WORKLOAD_KIND: APP,
              LOOM_REVISION: rev.name,
            },
            models,
          ),
          ...(models?.files.length ? { files: models.files } : {}),
          allocation: {
            node: "",
            cpuMillis: parseCpuMillis(r.cpu ?? 0) ?? 0,
            memoryBytes: parseMemoryBytes(r.memory ?? 0) ?? 0,
            gpus: Array.from({ length: gpus }, (_, i) => `gpu-${i}`),
          },
          terminationGracePeriodSeconds: 10,
        },
        port: APP_PORT,
        readinessPath: program.readinessPath,
        // A first start may build the environment (pip install gradio) before the app answers.
        readinessTimeoutSeconds: 600,
        ...(program.python ? { python: program.python } : {}),
        ...(r.gpu ? { gpu: r.gpu } : {}),
      };
    });
  }

  private serving(): RevisionRuntime {
    const serving = this.deps.runtime.serving;
    if (!serving) throw new Error("this platform's runtime cannot run apps (no serving capability)");
    return serving;
  }

  private async finalize(key: string, app: App): Promise<ReconcileResult> {
    this.deps.table?.publish(key, undefined);
    for (const rev of app.status?.revisions ?? []) await this.serving().deleteRevision(appRef(app), rev.name);
    await revokeAccess(this.deps, appRef(app));
    // The object goes once its replicas have (embedded lists what it still runs): removed earlier,
    // a server stopped right after would leave them running for an App that no longer exists.
    const serving = this.serving();
    if (serving.listRevisions) {
      const uid = app.metadata.uid;
      if ((await serving.listRevisions()).some((r) => r.service.uid === uid)) return { requeueAfterMs: 250 };
    }
    await this.deps.store.update({
      ...app,
      metadata: {
        ...app.metadata,
        finalizers: (app.metadata.finalizers ?? []).filter((f) => f !== SERVING_FINALIZER),
      },
    });
    return {};
  }

  private async event(app: App, reason: string, message: string) {
    await this.deps.events.record(appRef(app), "Normal", reason, message);
  }
}

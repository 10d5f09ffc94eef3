import type { InferenceServiceSpec, InferenceServiceStatus } from "../api/inferenceservice.js";
import type { Resource } from "../api/meta.js";

/** What the serving table needs of an InferenceService or an App: its scaling and its revisions. */
export type ServedObject = Resource<
  Pick<InferenceServiceSpec, "replicas" | "autoscaling"> &
    Partial<Pick<InferenceServiceSpec, "routing" | "tracing">>,
  Pick<InferenceServiceStatus, "revisions" | "traffic">
>;

/** Where a model reference such as models:/tinygpt@champion is on this platform's disk. */
export interface ModelResolver {
  resolve(project: string, model: string): Promise<string>;
}

/** The replicas the gateway's autoscaler wants per revision ("project/service/revision"). */
export interface ScaleTargets {
  desired(revisionKey: string): number | undefined;
  /** Why the autoscaler last changed that target (scale events). */
  reason?(revisionKey: string): string | undefined;
}

/** What the gateway needs to route: every service's revisions, traffic and ready replicas. */
export interface ServingTable {
  publish(key: string, service: ServedObject | undefined): void;
}

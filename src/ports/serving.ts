import type { InferenceService } from "../api/inferenceservice.js";

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
  publish(key: string, service: InferenceService | undefined): void;
}

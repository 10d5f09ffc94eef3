import { INFERENCESERVICE } from "../../api/kinds.js";
import { parseDurationSeconds } from "../../api/trainingjob.js";

export { INFERENCESERVICE };
export const SERVING_FINALIZER = "loom.dev/serving";

/** The replica's runtime workload name: SERVICE-N-rK (revision N, replica K). */
export function replicaName(revision: string, k: number): string {
  return `${revision}-r${k}`;
}

/** The service a replica workload belongs to, from its name. */
export function serviceOfReplica(name: string): string {
  return name.replace(/-\d+-r\d+$/, "");
}

/** Seconds of a Duration field (the schema has checked it). */
export function seconds(v: number | string): number {
  return parseDurationSeconds(v) ?? 0;
}

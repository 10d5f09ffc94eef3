import type { RevisionStatus } from "../../api/inferenceservice.js";

export interface TrafficEntry {
  revision: string;
  percent: number;
}

/**
 * Where requests go: the spec's split, or all to the latest ready revision, so a rollout never
 * routes to a replica that is not ready and the old revision serves until then. One entry per
 * revision: until a canary is ready, "latest" names the revision it is canary of, and the two
 * shares are that revision's (an InferenceService's spec.traffic; an App has none). The condition says whether every named revision exists.
 */
export function routeTraffic(
  split: TrafficEntry[] | undefined,
  revisions: RevisionStatus[],
  latest: RevisionStatus,
): {
  traffic: TrafficEntry[];
  condition: { type: string; status: "True" | "False"; reason: string; message: string };
} {
  const readyOnes = revisions.filter((r) => r.replicas?.some((x) => x.ready) || r.ready > 0);
  const latestReady = [...revisions]
    .reverse()
    .find((r) => readyOnes.includes(r) || (r === latest && latest.ready > 0));
  const traffic: TrafficEntry[] = [];
  for (const t of split ?? [{ revision: "latest", percent: 100 }]) {
    const revision = t.revision === "latest" ? (latestReady?.name ?? latest.name) : t.revision;
    const same = traffic.find((x) => x.revision === revision);
    if (same) same.percent += t.percent;
    else traffic.push({ revision, percent: t.percent });
  }
  const unknown = traffic.find((t) => !revisions.some((r) => r.name === t.revision));
  const condition = unknown
    ? {
        type: "TrafficRouted",
        status: "False" as const,
        reason: "UnknownRevision",
        message: `spec.traffic names revision ${unknown.revision}, which does not exist; revisions: ${revisions.map((r) => r.name).join(", ")}`,
      }
    : {
        type: "TrafficRouted",
        status: "True" as const,
        reason: "Routed",
        message: traffic.map((t) => `${t.revision} ${t.percent}%`).join(", "),
      };
  return { traffic, condition };
}

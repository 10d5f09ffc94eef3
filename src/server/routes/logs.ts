import type { FastifyInstance } from "fastify";
import { BadRequestError, NotFoundError } from "../../api/errors.js";
import { APP, INFERENCESERVICE, type KindDef, TRAININGJOB, WORKSPACE } from "../../api/kinds.js";
import type { Condition, Resource } from "../../api/meta.js";
import { type TrainingJob, workerRange } from "../../api/trainingjob.js";
import { interleaveLines } from "../../lib/interleave.js";
import type { ReplicaLog, Runtime } from "../../ports/runtime.js";
import type { ResourceService } from "../resources.js";
import { route, rule } from "../routetable.js";
import { BASE, type Params, type Query } from "./params.js";

export interface LogRoutesDeps {
  resources: ResourceService;
  runtime: Pick<Runtime, "logs" | "serving">;
  /**
   * A fleet member's logs (issue 23): a job placed in another member (status.admission.cluster)
   * has its workers there. Undefined when the member is unreachable.
   */
  memberLogs?: (cluster: string) => Pick<Runtime, "logs"> | undefined;
}

/** Kinds that run as replicas of revisions: their logs are a replica's output. */
const REPLICATED = new Set([WORKSPACE, APP, INFERENCESERVICE]);

/** What a Workspace, App or InferenceService status says of its revisions and why it waits. */
type Replicated = Resource<
  unknown,
  {
    phase?: string;
    revision?: string;
    revisions?: { name: string; createdAt: string }[];
    conditions?: Condition[];
  }
>;

/**
 * A Workspace's, App's or InferenceService's replica output: `?replica=ID|INDEX`, `?previous=true`
 * (the last exited one), `?follow=true`. Without a replica to show, says the phase and why.
 */
async function replicaLog(
  serving: Runtime["serving"],
  def: KindDef,
  obj: Replicated,
  query: Query,
): Promise<ReplicaLog> {
  const name = obj.metadata.name;
  if (!serving?.replicaLogs)
    throw new BadRequestError(`this platform cannot show the output of ${def.plural}`);
  const status = obj.status ?? {};
  // Newest revision first: the one a user most likely just changed.
  const revisions = status.revision
    ? [status.revision]
    : [...(status.revisions ?? [])].sort((a, b) => b.createdAt.localeCompare(a.createdAt)).map((r) => r.name);
  const flag = (v: string | undefined) => v === "1" || v === "true";
  const replica = query.replica === undefined || query.replica === "" ? undefined : query.replica;
  const ref = { kind: def.kind, project: obj.metadata.project!, name, uid: obj.metadata.uid };
  const log =
    revisions.length === 0
      ? undefined
      : await serving.replicaLogs(ref, revisions, {
          ...(replica !== undefined ? { replica } : {}),
          previous: flag(query.previous),
          follow: flag(query.follow),
        });
  if (log) return log;
  const short = def.shortNames[0] ?? def.plural;
  const waiting = (status.conditions ?? []).filter((c) => c.status === "False").at(-1);
  const why = waiting ? `: ${waiting.reason}${waiting.message ? ` (${waiting.message})` : ""}` : "";
  const what = flag(query.previous) ? "no replica has exited yet" : "no replica has started yet";
  throw new NotFoundError(
    `${def.kind} ${name} has no output: ${what}; it is ${status.phase ?? "Pending"}${why}. ` +
      `loom describe ${short}/${name} shows its events`,
  );
}

/**
 * `loom logs`: a TrainingJob's worker output (one worker, or every worker's lines interleaved), or
 * a Workspace's, App's or InferenceService's replica output (as `kubectl logs` shows a pod's).
 */
export function logRoutes(app: FastifyInstance, deps: LogRoutesDeps): void {
  const { resources } = deps;
  route<{ Params: Params; Querystring: Query }>(app, {
    method: "GET",
    url: `${BASE}/projects/:project/:plural/:name/log`,
    // A job's workers may read their own logs.
    rule: rule.project("logs", "read", { workload: "own-object" }),
    handler: async (req, reply) => {
      const def = resources.namespacedKind(req.params.plural!);
      if (REPLICATED.has(def.kind)) {
        const obj = await resources.get(def, req.params.project!, req.params.name!);
        const log = await replicaLog(deps.runtime.serving, def, obj as Replicated, req.query);
        req.raw.on("close", () => log.stream.destroy());
        return reply
          .header("x-loom-replica", log.replica)
          .header("x-loom-previous", String(log.previous))
          .type("text/plain; charset=utf-8")
          .send(log.stream);
      }
      if (def.kind !== TRAININGJOB)
        throw new BadRequestError(
          `${def.plural} have no logs; training jobs, workspaces, apps and inference services do`,
        );
      const job = (await resources.get(def, req.params.project!, req.params.name!)) as TrainingJob;
      // Workers of the latest attempt (an elastic job's size changes); the spec's most before any.
      const count = job.status?.workers?.length || workerRange(job.spec).max;
      const all = req.query.worker === undefined || req.query.worker === "" || req.query.worker === "all";
      const worker = all ? 0 : Number(req.query.worker);
      if (!Number.isInteger(worker) || worker < 0 || worker >= count) {
        throw new BadRequestError(`worker must be between 0 and ${count - 1} (or omit it for every worker)`);
      }
      const attempt = req.query.attempt === undefined ? undefined : Number(req.query.attempt);
      if (attempt !== undefined && (!Number.isInteger(attempt) || attempt < 1))
        throw new BadRequestError("attempt must be a positive integer");
      const ref = {
        kind: def.kind,
        project: req.params.project!,
        name: req.params.name!,
        uid: job.metadata.uid,
      };
      const follow = req.query.follow === "1" || req.query.follow === "true";
      const logs = logSource(deps, job);
      // Every line of "all workers" is prefixed, a one-worker job's too: the output reads the same
      // whatever the job's size, as the README promises; --worker N prints one worker's bare.
      const stream = all
        ? interleaveLines(
            await Promise.all(
              Array.from({ length: count }, async (_, w) => ({
                prefix: `[worker ${w}]`,
                stream: await logs.logs(ref, { worker: w, attempt, follow }),
              })),
            ),
          )
        : await logs.logs(ref, { worker, attempt, follow });
      req.raw.on("close", () => stream.destroy());
      return reply.type("text/plain; charset=utf-8").send(stream);
    },
  });
}

/** Where a job's workers' logs are: this platform's runtime, or the fleet member it was placed in. */
function logSource(deps: LogRoutesDeps, job: TrainingJob): Pick<Runtime, "logs"> {
  const cluster = job.status?.admission?.cluster;
  if (!cluster) return deps.runtime;
  const member = deps.memberLogs?.(cluster);
  if (!member)
    throw new BadRequestError(
      `${job.metadata.name} runs in cluster ${cluster}, which this control plane cannot reach now; loom get clusters says why`,
    );
  return member;
}

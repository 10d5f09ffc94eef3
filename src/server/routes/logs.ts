import type { FastifyInstance } from "fastify";
import { BadRequestError } from "../../api/errors.js";
import { TRAININGJOB } from "../../api/kinds.js";
import { type TrainingJob, workerRange } from "../../api/trainingjob.js";
import { interleaveLines } from "../../lib/interleave.js";
import type { Runtime } from "../../ports/runtime.js";
import type { ResourceService } from "../resources.js";
import { route, rule } from "../routetable.js";
import { BASE, type Params, type Query } from "./params.js";

export interface LogRoutesDeps {
  resources: ResourceService;
  runtime: Pick<Runtime, "logs">;
}

/** A TrainingJob's worker output (loom logs): one worker, or every worker's lines interleaved. */
export function logRoutes(app: FastifyInstance, deps: LogRoutesDeps): void {
  const { resources } = deps;
  route<{ Params: Params; Querystring: Query }>(app, {
    method: "GET",
    url: `${BASE}/projects/:project/:plural/:name/log`,
    // A job's workers may read their own logs.
    rule: rule.project("logs", "read", { workload: "own-object" }),
    handler: async (req, reply) => {
      const def = resources.namespacedKind(req.params.plural!);
      if (def.kind !== TRAININGJOB) throw new BadRequestError(`${def.plural} have no logs`);
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
      // Every line of "all workers" is prefixed, a one-worker job's too: the output reads the same
      // whatever the job's size, as the README promises; --worker N prints one worker's bare.
      const stream = all
        ? interleaveLines(
            await Promise.all(
              Array.from({ length: count }, async (_, w) => ({
                prefix: `[worker ${w}]`,
                stream: await deps.runtime.logs(ref, { worker: w, attempt, follow }),
              })),
            ),
          )
        : await deps.runtime.logs(ref, { worker, attempt, follow });
      req.raw.on("close", () => stream.destroy());
      return reply.type("text/plain; charset=utf-8").send(stream);
    },
  });
}

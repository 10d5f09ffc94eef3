import type { FastifyInstance } from "fastify";
import { CHECKPOINT_MEDIA_TYPE, checkpointStep, FLEET_SEED_ANNOTATION } from "../../api/cluster.js";
import { BadRequestError, LoomError, NotFoundError } from "../../api/errors.js";
import { TRAININGJOB } from "../../api/kinds.js";
import { isFinished, type TrainingJob } from "../../api/trainingjob.js";
import { packTar, unpackTar } from "../../lib/tar.js";
import { MAX_SYNCED_CHECKPOINT_BYTES, type MemberCheckpoints } from "../../ports/fleet.js";
import type { WorkloadRef } from "../../ports/runtime.js";
import type { ResourceService } from "../resources.js";
import { authz, route, rule } from "../routetable.js";
import { BASE, type Params, type Query } from "./params.js";

export interface CheckpointRoutesDeps {
  resources: ResourceService;
  /** This platform's jobs' checkpoints; absent: this server serves none (the routes say so). */
  checkpoints?: MemberCheckpoints;
}

/** The answer's header that names the step of the checkpoint sent (its loom.json). */
export const CHECKPOINT_STEP_HEADER = "x-loom-checkpoint-step";

type G = { Params: Params; Querystring: Query };

/**
 * A TrainingJob's checkpoint files, for a fleet's control plane that placed the job in this
 * server (a Loom member, `spec.api: loom`, issue 23): GET reads the latest checkpoint (a tar of
 * LOOM_CHECKPOINT_DIR once its loom.json is there), PUT seeds the first attempt of a copy the
 * control plane created with FLEET_SEED_ANNOTATION (its workers wait for it). `?uid=` names the
 * job as the caller knows it: another of the same name is not read or written.
 *
 * Both take a project's editor (the fleet's credential is an unscoped admin): a checkpoint is the
 * project's data in bulk, and a seed writes into the job's directory, so a viewer, an API key, a
 * workload's credential and another project's token are refused, reads included.
 */
export function checkpointRoutes(app: FastifyInstance, deps: CheckpointRoutesDeps): void {
  const url = `${BASE}/projects/:project/trainingjobs/:name/checkpoint`;
  const fence = rule.project("trainingjobs/checkpoint", "write");
  // On the one instance, so for every route: only these read a tar; others refuse it as a bad body.
  app.addContentTypeParser(CHECKPOINT_MEDIA_TYPE, { parseAs: "buffer" }, (_req, body, done) =>
    done(null, body),
  );
  route<G>(app, {
    method: "GET",
    url,
    rule: fence,
    handler: async (req, reply) => {
      const checkpoints = served(deps.checkpoints);
      const { ref } = await jobOf(deps.resources, req.params, req.query.uid);
      const files = await checkpoints.files(ref);
      if (!files)
        throw new NotFoundError(
          `TrainingJob ${ref.project}/${ref.name} has written no checkpoint yet (no loom.json in its LOOM_CHECKPOINT_DIR)`,
        );
      return reply
        .header(CHECKPOINT_STEP_HEADER, String(checkpointStep(files) ?? ""))
        .type(CHECKPOINT_MEDIA_TYPE)
        .send(packTar(files));
    },
  });
  app.put<G>(
    url,
    // The body is the checkpoint: up to the most moved between members, and its tar headers.
    { ...authz(fence), bodyLimit: MAX_SYNCED_CHECKPOINT_BYTES + (16 << 20) },
    async (req) => {
      const checkpoints = served(deps.checkpoints);
      const { job, ref } = await jobOf(deps.resources, req.params, req.query.uid);
      if (job.metadata.annotations?.[FLEET_SEED_ANNOTATION] === undefined)
        throw new BadRequestError(
          `TrainingJob ${ref.project}/${ref.name} waits for no checkpoint: only a copy a fleet's control plane created with the annotation ${FLEET_SEED_ANNOTATION} is seeded`,
        );
      // Its first attempt has started (with the seed, or without it after waiting too long):
      // what it wrote since is newer than any seed, and nothing waits any more.
      if (isFinished(job) || (job.status?.attempts ?? 0) >= 1) return { kind: "CheckpointSeed", waiting: 0 };
      if (!Buffer.isBuffer(req.body))
        throw new BadRequestError(
          `send the checkpoint as a tar of its files (content-type: ${CHECKPOINT_MEDIA_TYPE}), loom.json among them`,
        );
      let files: Map<string, Buffer>;
      try {
        files = unpackTar(req.body, MAX_SYNCED_CHECKPOINT_BYTES);
      } catch (err) {
        throw new BadRequestError(`the checkpoint seed is refused: ${(err as Error).message}`);
      }
      return { kind: "CheckpointSeed", waiting: await checkpoints.seed(ref, files) };
    },
  );
}

function served(checkpoints: MemberCheckpoints | undefined): MemberCheckpoints {
  if (checkpoints) return checkpoints;
  throw new LoomError(
    "NotImplemented",
    501,
    "this server does not serve its jobs' checkpoint files (an operator's API): register its cluster as a Kubernetes member instead, whose checkpoints move through pods/exec",
  );
}

async function jobOf(
  resources: ResourceService,
  params: Params,
  uid: string | undefined,
): Promise<{ job: TrainingJob; ref: WorkloadRef }> {
  const job = (await resources.get(
    resources.namespacedKind("trainingjobs"),
    params.project!,
    params.name!,
  )) as TrainingJob;
  if (uid !== undefined && uid !== job.metadata.uid)
    throw new NotFoundError(
      `TrainingJob ${params.project}/${params.name} is not the one asked for (uid ${uid}): it was deleted and made again`,
    );
  // The job as this server stores it: its uid names its directory, never a caller's word.
  const ref = { kind: TRAININGJOB, project: params.project!, name: params.name!, uid: job.metadata.uid };
  return { job, ref };
}

import { BadRequestError, NotFoundError } from "../api/errors.js";
import { TRAININGJOB, WORKSPACE } from "../api/kinds.js";
import type { Resource } from "../api/meta.js";
import type { TrainingJob } from "../api/trainingjob.js";
import type { Workspace } from "../api/workspace.js";
import type { ResourceStore } from "../ports/store.js";
import type { WorkspaceSnapshots } from "../ports/workspaces.js";

/**
 * `loom run --from ws/NAME` (a TrainingJob's spec.fromWorkspace): what ran in the notebook runs
 * as a gang. Resolved once, when the job is created: the workspace's environment (python, image)
 * and env fill what the job leaves unset, and its home is copied, so later edits in the notebook
 * do not change what the job runs (nor a restart of it). Creating the job needs edit rights on
 * the project (the route's rule), which are the rights that open the workspace's home: a job can
 * name only a workspace of its own project.
 */
export interface FromWorkspace {
  /** The job with the workspace's environment filled in, and the staged snapshot's handle. */
  resolve(job: TrainingJob, dryRun: boolean): Promise<{ job: TrainingJob; handle?: string }>;
  snapshots?: WorkspaceSnapshots;
}

/** Whether a create needs the workspace resolved. */
export function runsFromWorkspace(object: Resource): object is TrainingJob {
  return object.kind === TRAININGJOB && !!(object as TrainingJob).spec?.fromWorkspace;
}

/** Resolves spec.fromWorkspace against the store; snapshots undefined: the platform has none. */
export function fromWorkspace(
  store: ResourceStore,
  snapshots: WorkspaceSnapshots | undefined,
): FromWorkspace {
  return {
    ...(snapshots ? { snapshots } : {}),
    async resolve(job, dryRun) {
      const project = job.metadata.project!;
      const name = job.spec.fromWorkspace!;
      if (!snapshots) {
        throw new BadRequestError(
          "spec.fromWorkspace is not supported on this platform yet (Kubernetes: build an image with the code, or mount the home's claim read-only through spec.image's entrypoint); run the job from an image instead",
        );
      }
      if (job.spec.workingDir !== undefined) {
        throw new BadRequestError(
          "spec.fromWorkspace runs the job in a snapshot of the workspace's home: leave spec.workingDir unset",
        );
      }
      let ws: Workspace;
      try {
        ws = (await store.get(WORKSPACE, project, name)) as Workspace;
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
        throw new BadRequestError(
          `spec.fromWorkspace: workspace ${name} not found in project ${project}: a job runs from a workspace of its own project (loom get ws -p ${project} lists them)`,
        );
      }
      if (ws.metadata.deletionTimestamp) {
        throw new BadRequestError(`spec.fromWorkspace: workspace ${name} is being deleted`);
      }
      const spec = {
        ...job.spec,
        // The job's own settings come first: it may ask for another environment or variable.
        env: { ...ws.spec.env, ...job.spec.env },
        ...(job.spec.python === undefined && ws.spec.python ? { python: ws.spec.python } : {}),
        ...(job.spec.image === undefined && ws.spec.image ? { image: ws.spec.image } : {}),
      };
      const resolved: TrainingJob = { ...job, spec };
      if (dryRun) return { job: resolved };
      return { job: resolved, handle: await snapshots.take(project, name) };
    },
  };
}

/**
 * spec.fromWorkspace is resolved once, at create (the snapshot is named by the job's uid): an
 * update may not add, remove or change it, or workers would start from a snapshot never taken.
 */
export function sameWorkspace(current: Resource, next: Resource): void {
  if (current.kind !== TRAININGJOB) return;
  const was = (current as TrainingJob).spec?.fromWorkspace;
  const now = (next as TrainingJob).spec?.fromWorkspace;
  if (was !== now) {
    throw new BadRequestError(
      `spec.fromWorkspace is set when the job is created and cannot change (${was ?? "unset"} → ${now ?? "unset"}): create a new job (loom run --from ws/NAME)`,
    );
  }
}

import { NotFoundError } from "../../api/errors.js";
import type { Project } from "../../api/project.js";
import type { Runtime } from "../../ports/runtime.js";
import type { ResourceStore } from "../../ports/store.js";

/** Held while the platform side of the project (namespace, roles) may exist. */
export const PROJECT_FINALIZER = "loom.dev/project";

import type { ReconcileResult, Reconciler } from "../../reconcile/controller.js";

/**
 * Keeps the platform side of each project in line with its spec through the Runtime port
 * (embedded: nothing; Kubernetes: namespace, quota, network policy, roles) and marks it Active.
 */
export class ProjectReconciler implements Reconciler {
  readonly name = "project";

  constructor(
    private readonly store: ResourceStore,
    private readonly runtime: Runtime,
  ) {}

  async reconcile(key: string): Promise<ReconcileResult> {
    let project: Project;
    try {
      project = (await this.store.get("Project", "", key)) as Project;
    } catch (err) {
      if (err instanceof NotFoundError) return {};
      throw err;
    }
    const name = project.metadata.name;
    if (project.metadata.deletionTimestamp) {
      if (project.status?.phase !== "Terminating") {
        project = (await this.store.updateStatus({
          ...project,
          status: { ...project.status, phase: "Terminating" },
        })) as Project;
      }
      if (project.metadata.finalizers?.includes(PROJECT_FINALIZER)) {
        await this.runtime.removeProject(name);
        await this.store.update({
          ...project,
          metadata: {
            ...project.metadata,
            finalizers: project.metadata.finalizers.filter((f) => f !== PROJECT_FINALIZER),
          },
        });
      }
      return {};
    }
    if (!project.metadata.finalizers?.includes(PROJECT_FINALIZER)) {
      project = (await this.store.update({
        ...project,
        metadata: {
          ...project.metadata,
          finalizers: [...(project.metadata.finalizers ?? []), PROJECT_FINALIZER],
        },
      })) as Project;
    }
    await this.runtime.ensureProject({
      name,
      members: project.spec.members ?? [],
      quota: project.spec.quota,
      limit: project.spec.limit,
    });
    if (project.status?.phase !== "Active") {
      await this.store.updateStatus({ ...project, status: { ...project.status, phase: "Active" } });
    }
    return {};
  }
}

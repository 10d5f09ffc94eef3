import type { Project } from "../api/project.js";
import { NotFoundError } from "../errors.js";
import type { ResourceStore } from "../store/port.js";
import type { ReconcileResult, Reconciler } from "./controller.js";

/** Marks projects Active. Namespaces, quotas and roles join this loop in later issues. */
export class ProjectReconciler implements Reconciler {
  readonly name = "project";

  constructor(private readonly store: ResourceStore) {}

  async reconcile(key: string): Promise<ReconcileResult> {
    let project: Project;
    try {
      project = (await this.store.get("Project", "", key)) as Project;
    } catch (err) {
      if (err instanceof NotFoundError) return {};
      throw err;
    }
    const phase = project.metadata.deletionTimestamp ? "Terminating" : "Active";
    if (project.status?.phase !== phase)
      await this.store.updateStatus({ ...project, status: { ...project.status, phase } });
    return {};
  }
}

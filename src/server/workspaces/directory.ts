import type { WorkspaceDirectory, WorkspaceEndpoint } from "../../ports/workspaces.js";

/**
 * The table of running workspaces in this process: the controller publishes, the origin's proxy
 * looks up per request and records activity. Keyed "project/name" (neither may contain "/").
 */
export class InMemoryWorkspaceDirectory implements WorkspaceDirectory {
  private readonly endpoints = new Map<string, WorkspaceEndpoint>();
  private readonly activity = new Map<string, Date>();

  publish(project: string, name: string, endpoint: WorkspaceEndpoint | undefined): void {
    if (endpoint) this.endpoints.set(`${project}/${name}`, endpoint);
    else this.endpoints.delete(`${project}/${name}`);
  }

  lookup(project: string, name: string): WorkspaceEndpoint | undefined {
    return this.endpoints.get(`${project}/${name}`);
  }

  touch(project: string, name: string, at: Date): void {
    const key = `${project}/${name}`;
    const last = this.activity.get(key);
    if (!last || last < at) this.activity.set(key, at);
  }

  lastActivity(project: string, name: string): Date | undefined {
    return this.activity.get(`${project}/${name}`);
  }
}

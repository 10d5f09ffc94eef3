import type { WorkspaceDirectory, WorkspaceEndpoint } from "../../ports/workspaces.js";

/**
 * The table of running workspaces in this process: the workspace controller publishes, the
 * workspace origin's proxy looks up (per request) and touches. Keyed "project/name".
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
    this.activity.set(`${project}/${name}`, at);
  }

  lastActivity(project: string, name: string): Date | undefined {
    return this.activity.get(`${project}/${name}`);
  }
}

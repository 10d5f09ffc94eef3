import type { WorkspaceDirectory, WorkspaceEndpoint } from "../../ports/workspaces.js";
import { namespaceOf } from "./naming.js";

/** Where a replica's revision is served in the cluster: its Service's DNS name and port. */
export type ServiceOfReplica = (project: string, pod: string) => { host: string; port: number } | undefined;

/**
 * The workspace directory on Kubernetes: a running workspace is reached at its revision's Service
 * (`REVISION.loom-PROJECT.svc:80`, which its NetworkPolicy opens to Loom's gateway pods only),
 * not at its pod's address, so the user-content origin follows the Service whatever pod backs it.
 * Other ports (`/proxy/P/`) are reached through the API server's pods/portforward to the replica's
 * pod (Runtime.connectPort): the operator needs no route to the pod network.
 */
export class ServiceWorkspaceDirectory implements WorkspaceDirectory {
  constructor(
    private readonly inner: WorkspaceDirectory,
    private readonly serviceOf: ServiceOfReplica,
  ) {}

  publish(project: string, name: string, endpoint: WorkspaceEndpoint | undefined): void {
    const svc = endpoint?.replica ? this.serviceOf(project, endpoint.replica.name) : undefined;
    if (!endpoint || !svc) {
      this.inner.publish(project, name, endpoint);
      return;
    }
    // The IDE's port through the Service; the replica handle stays, so /proxy/P/ (ports the
    // Service does not carry, servers bound to the pod's 127.0.0.1) goes through pods/portforward.
    this.inner.publish(project, name, { ...endpoint, host: svc.host, port: svc.port });
  }

  lookup(project: string, name: string): WorkspaceEndpoint | undefined {
    return this.inner.lookup(project, name);
  }

  touch(project: string, name: string, at: Date): void {
    this.inner.touch?.(project, name, at);
  }

  lastActivity(project: string, name: string): Date | undefined {
    return this.inner.lastActivity?.(project, name);
  }
}

/** The DNS name of a revision's Service in a project's namespace (resolvable inside the cluster). */
export function serviceHost(project: string, revision: string): string {
  return `${revision.slice(0, 63)}.${namespaceOf(project)}.svc`;
}

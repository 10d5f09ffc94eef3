import type { WorkloadRef } from "./runtime.js";

/**
 * Where a running workspace (issue 19) answers, as its controller publishes it: the user-content
 * origin's proxy reads it per request. Embedded: a loopback (or namespace) address; Kubernetes:
 * the workspace's Service.
 */
export interface WorkspaceEndpoint {
  ref: WorkloadRef;
  /** Host and port of the IDE (or spec.command's server) inside the workspace. */
  host: string;
  port: number;
  /** TCP ports the workspace listens on besides the IDE's, each reachable at /proxy/PORT/. */
  ports: number[];
  /**
   * The runtime's handle of the replica's processes (its worker 0), where the runtime can dial
   * into them (Runtime.connectPort): /proxy/P/ then reaches a server bound to 127.0.0.1 inside
   * the workspace's own network, which host:port cannot. Absent: /proxy/P/ dials host:P.
   */
  replica?: WorkloadRef;
}

/** The table of running workspaces: the controller writes it, the workspace origin reads it. */
export interface WorkspaceDirectory {
  /** Publishes where the workspace answers; undefined when it is stopped or gone. */
  publish(project: string, name: string, endpoint: WorkspaceEndpoint | undefined): void;
  lookup(project: string, name: string): WorkspaceEndpoint | undefined;
  /** Activity seen by the proxy (requests; bytes either way on WebSockets and tunnels), for idle culling. */
  touch?(project: string, name: string, at: Date): void;
  lastActivity?(project: string, name: string): Date | undefined;
}

/**
 * The IDE's own record of its last activity (Jupyter: `GET /api/status` → `last_activity`, or now
 * while a kernel is busy), read from the endpoint where it answers; undefined where it keeps
 * none or cannot be asked. A port so the controller makes no network calls of its own.
 */
export type IdeActivity = (ide: string, endpoint: WorkspaceEndpoint) => Promise<Date | undefined>;

/**
 * Whether any of these GPUs (the platform's device ids) is computing now, for idle culling: a
 * training loop started from a notebook sends nothing for hours. Undefined where it cannot be
 * asked (no nvidia-smi, virtual devices).
 */
export type GpuActivity = (devices: string[]) => Promise<boolean | undefined>;

/**
 * Snapshots of a workspace's home for `loom run --from ws/NAME` (spec.fromWorkspace): taken when
 * the job is created, so later edits in the notebook do not change what the job runs. Embedded:
 * `<data>/snapshots/PROJECT/JOB-UID`, lent read-only to the job's workers as their working dir;
 * Kubernetes: a clone of the home's claim (`code-JOB-UID`), mounted read-only by the workers.
 */
export interface WorkspaceSnapshots {
  /**
   * Copies the home of workspace `name` of `project` to a staging dir (refused, with what to
   * do, when it is too big); returns a handle for `commit` or `discard`.
   */
  take(project: string, name: string): Promise<string>;
  /**
   * Makes the staged copy the snapshot of the job `uid` (named `name`: Kubernetes makes the job
   * the owner of its clone of the home, deleted with it).
   */
  commit(handle: string, project: string, uid: string, name?: string): Promise<void>;
  /** Throws the staged copy away (the job was not created). */
  discard(handle: string): Promise<void>;
}

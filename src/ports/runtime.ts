import type { Duplex, Readable } from "node:stream";
import type {
  Allocation,
  NodeCapacity,
  PodPlacement,
  RunningWorkload,
  Toleration,
  Workload,
} from "./scheduler.js";

/** Identifies one workload across the platform: uid guards against a re-created namesake. */
export interface WorkloadRef {
  kind: string;
  project: string;
  name: string;
  uid: string;
}

export interface ProjectInfo {
  name: string;
  members: { user?: string; group?: string; role: "admin" | "editor" | "viewer" }[];
  /** Deserved quota: enforced by Loom's scheduler, not by the platform. */
  quota?: { cpu?: string | number; memory?: string | number; gpu?: number };
  /** Hard cap, borrowing included: the platform's backstop (a ResourceQuota on Kubernetes). */
  limit?: { cpu?: string | number; memory?: string | number; gpu?: number };
}

export interface WorkerSpec {
  /** Container image (Kubernetes); the local runtime runs the command on this machine instead. */
  image?: string;
  /** The workload's annotations, carried to its pods on Kubernetes (scrape configs, tooling). */
  annotations?: Record<string, string>;
  index: number;
  command: string[];
  env: Record<string, string>;
  workingDir?: string;
  allocation: Allocation;
  /** Seconds between SIGTERM and SIGKILL for stops the platform makes on its own. */
  terminationGracePeriodSeconds?: number;
  /** Node taints it tolerates (Kubernetes: the pod's tolerations; the scheduler already honoured them). */
  tolerations?: Toleration[];
  /**
   * Secrets as files (the workload's credentials), never env: written, mode as given, under a
   * home directory private to the workload, which is the worker's HOME; `$(HOME)` in env values
   * names that directory (as Kubernetes expands `$(VAR)`).
   */
  files?: SecretFile[];
}

/** A file of secret data for a workload; `path` is relative to its private HOME. */
export interface SecretFile {
  path: string;
  data: string;
  mode: number;
}

/** A checkpoint's files: path relative to the checkpoint directory → contents. */
export type CheckpointFiles = Map<string, Buffer>;

/** Where checkpoints live across attempts (LOOM_CHECKPOINT_DIR). */
export interface CheckpointStorage {
  /** Kubernetes: an existing PersistentVolumeClaim; unset, the runtime makes one of `size`. */
  claimName?: string;
  size?: string | number;
  storageClassName?: string;
}

/** Embedded: the Python environment the workers run in (Kubernetes: the image is it). */
export type PythonEnvironmentSpec =
  | { venv: string }
  | { interpreter: string; requirements: string[]; systemSitePackages: boolean };

/**
 * A persistent home that outlives a workload's processes (a Workspace's): the working directory
 * and HOME of its worker. Embedded: `<data>/homes/PROJECT/NAME`; Kubernetes: the claim NAME-home.
 */
export interface PersistentHome {
  /** Names the home within the workload's project (the owner's name). */
  name: string;
  /** Kubernetes: size and class of the claim the runtime makes. */
  size?: string | number;
  storageClassName?: string;
}

/** One attempt of a gang: every worker starts together; a later attempt never overlaps it. */
export interface GangSpec {
  ref: WorkloadRef;
  attempt: number;
  workers: WorkerSpec[];
  checkpoint?: CheckpointStorage;
  /** Another job's checkpoints to start from (LOOM_INIT_CHECKPOINT_DIR). */
  initCheckpoint?: { ref: WorkloadRef; checkpoint?: CheckpointStorage };
  python?: PythonEnvironmentSpec;
  /** Embedded: the persistent home the workers run in (writable, their cwd and HOME). */
  home?: PersistentHome;
  /**
   * Embedded: the workers' working dir is the snapshot of a workspace's home taken when the job
   * was created (spec.fromWorkspace), lent read-only; the runtime knows where it is by the ref.
   */
  snapshot?: boolean;
  /**
   * The job failed over into this platform (issue 23): as another control plane's member (a
   * copy's first attempt), or back to its own control plane's cluster (the `self` member) after
   * it ran in a member. Its workers wait until the control plane has written the checkpoint it
   * holds into LOOM_CHECKPOINT_DIR (`Runtime.seedCheckpoint` here, `MemberCluster.seed` there).
   * Kubernetes: an init container waits. Embedded (a Loom member) ignores it: the trainingjob
   * loop starts the attempt only once MemberCheckpoints.seeded says so (seed.ts); an embedded
   * control plane's vault is the job's own checkpoint directory.
   */
  seedCheckpoint?: boolean;
  /**
   * Others read this job's checkpoints (a fleet's control plane; jobs with initCheckpointFrom):
   * a platform that must go looking for the step of LOOM_CHECKPOINT_DIR/loom.json (Kubernetes:
   * pods/exec) does so for these jobs only. The embedded platform reports every job's.
   */
  reportCheckpoint?: boolean;
}

/** A worker's network identity for one attempt: a host peers can reach and ports it may use. */
export interface WorkerEndpoint {
  host: string;
  ports: number[];
}

/** How a platform runs an MPI host worker: the launcher (worker 0) starts ranks on it. */
export interface MpiHost {
  command: string[];
  env: Record<string, string>;
}

/** Whether the environment a gang needs is ready; building it may take minutes the first time. */
export type Preparation = { ready: true } | { ready: false; message: string } | { failed: string };

export type WorkerState = "Running" | "Succeeded" | "Failed" | "Unknown";

export interface WorkerObservation {
  index: number;
  state: WorkerState;
  pid?: number;
  exitCode?: number;
  signal?: string;
  startTime?: string;
  finishTime?: string;
  /** Why the state is what it is, when that is not obvious from the exit code. */
  message?: string;
}

export interface GangObservation {
  attempt: number;
  workers: WorkerObservation[];
  /** The latest checkpoint the job reported, if the platform can see it. */
  checkpoint?: { time: string; step?: number };
  /** A stop was requested and not every worker has exited yet. */
  stopping: boolean;
}

export interface LogOptions {
  worker: number;
  /** Default: the latest attempt. */
  attempt?: number;
  follow?: boolean;
}

/**
 * The Runtime port: realises workloads on a platform. Local processes embedded; Jobs, Pods and
 * Services on Kubernetes. Controllers talk only to this, never to the platform.
 */
export interface Runtime {
  /** What the scheduler may place workloads on. */
  nodes(): Promise<NodeCapacity[]>;
  /**
   * Addresses for a new attempt's workers, `ports` each: fresh ones per attempt (a new
   * rendezvous), reachable by every worker of the gang.
   */
  endpoints(ref: WorkloadRef, attempt: number, workers: number, ports: number): Promise<WorkerEndpoint[]>;
  /** How this platform runs the MPI hosts of a gang (see MpiHost). */
  readonly mpiHost: MpiHost;
  /** Gets the gang's environment ready (embedded: builds its Python environment once). */
  prepare?(spec: Pick<GangSpec, "python">): Preparation;
  /**
   * When any worker of the latest attempt last showed life (wrote a log line or its heartbeat
   * file), for spec.progressTimeout; undefined if none has yet.
   */
  lastActivity(ref: WorkloadRef): Promise<Date | undefined>;
  /**
   * Starts an attempt. Idempotent: a second call for the same attempt does nothing. Throws if an
   * earlier attempt still has live workers (stop it first: attempts never overlap).
   * `held`: the caller's own write beside the start (the runtime finalizer) that must succeed
   * before any worker may run. A platform that can make its workers without running them makes
   * them meanwhile (Kubernetes: unbound pods, bound once it has succeeded); others wait for it
   * first. If it fails, no worker runs, nothing of the attempt is left, and start throws its error.
   */
  start(spec: GangSpec, held?: Promise<unknown>): Promise<void>;
  /** The latest attempt the runtime knows of, or undefined if it holds nothing for this workload. */
  observe(ref: WorkloadRef): Promise<GangObservation | undefined>;
  /**
   * Stops every worker: SIGTERM (or pod deletion) first, SIGKILL once graceSeconds have passed
   * since the first call. Call again until it returns true (nothing left alive).
   */
  stop(ref: WorkloadRef, graceSeconds: number): Promise<boolean>;
  /** Forgets the workload and removes what the runtime kept for it. Kills anything still alive. */
  release(ref: WorkloadRef): Promise<void>;
  /** Every workload the runtime holds, for garbage collection of ones whose object is gone. */
  list(): Promise<WorkloadRef[]>;
  /** A worker's output; ends at the end of the file, or when the worker exits if following. */
  logs(ref: WorkloadRef, opts: LogOptions): Promise<Readable>;
  /**
   * Makes the platform side of a project exist and match its spec (Kubernetes: namespace with
   * restricted Pod Security, ResourceQuota, NetworkPolicy, Roles and RoleBindings). Idempotent.
   */
  ensureProject(project: ProjectInfo): Promise<void>;
  /** Removes the platform side of a deleted project. Idempotent. */
  removeProject(name: string): Promise<void>;
  /** Called whenever a workload's observed state changes (a worker started or exited). */
  onChange(listener: (ref: WorkloadRef) => void): void;
  /**
   * Platforms where others place work too (Kubernetes): work submitted straight to Loom's
   * scheduler that no Loom kind owns (pods with schedulerName loom, in gangs), and capacity
   * everything else already holds. Absent embedded, where Loom is all there is.
   */
  external?(): ExternalWork;
  /** Carries out the scheduler's placement of an external workload (binds its pods). */
  bindExternal?(id: string, placements: PodPlacement[]): Promise<void>;
  /** Tells an external workload why it waits (Kubernetes: the pods' PodScheduled condition). */
  explainExternal?(id: string, reason: string, message: string): Promise<void>;
  /**
   * Stops running external work the scheduler reclaims (only work the platform reported as
   * preemptible: embedded model replicas, which come back as pending work and wait).
   */
  preemptExternal?(id: string, message: string): Promise<void>;
  /**
   * TCP ports a worker of the workload listens on (LISTEN sockets its processes hold), ascending;
   * every worker's when `worker` is unset. Cheap enough to poll every second (embedded: /proc).
   * Absent where the platform cannot see them.
   */
  listeningPorts?(ref: WorkloadRef, worker?: number): Promise<number[]>;
  /**
   * A TCP connection from Loom's server to a port a worker listens on, inside the workload's own
   * network where it has one (port-forward, ssh). Rejects with a message saying why it cannot.
   */
  connectPort?(ref: WorkloadRef, worker: number, port: number): Promise<Duplex>;
  /** Called when external work or the nodes change: the scheduler should look again. */
  onCapacityChange?(listener: () => void): void;
  /**
   * Writes a checkpoint into the workers of attempt `attempt`, started with
   * GangSpec.seedCheckpoint (they wait for it). Says how many still wait to be ready for it (0:
   * done, or nothing waits any more; asked again until it says 0) and how many this call wrote
   * it into. Absent where the fleet's vault is the job's own checkpoint directory (embedded).
   */
  seedCheckpoint?(
    ref: WorkloadRef,
    attempt: number,
    files: CheckpointFiles,
  ): Promise<{ waiting: number; written: number }>;
  /**
   * Where nodes come with demand (Kubernetes with a node autoscaler): makes a gang that waits
   * for capacity visible to the autoscaler, the whole gang at once, or withdraws it
   * (`undefined`). Idempotent; answers what is known of the request. Absent where nothing adds
   * nodes, and where the operator was not told an autoscaler runs. `start` withdraws the
   * workload's request itself before any of its pods exist.
   */
  requestCapacity?(
    ref: WorkloadRef,
    request: CapacityRequest | undefined,
  ): Promise<CapacityAnswer | undefined>;
  /**
   * Long-running service replicas (InferenceService revisions): Kubernetes runs them as a
   * Deployment per revision, embedded as supervised processes. Either way their pods wait for
   * Loom's scheduler as external work (`external()`), so one admission cycle places them and
   * gangs alike. A platform without it cannot serve.
   */
  readonly serving?: RevisionRuntime;
  close(): Promise<void>;
}

/** A waiting gang's shape: what a node autoscaler needs to add nodes for all of it at once. */
export interface CapacityRequest {
  /** Workers the gang needs at once (an elastic gang's minimum). */
  workers: number;
  /** What each worker asks for. */
  cpuMillis: number;
  memoryBytes: number;
  gpu: number;
  nodePool?: string;
  gpuModel?: string;
  /** The taints the gang tolerates: a node group whose nodes are tainted must see them to help. */
  tolerations?: Toleration[];
  /** Loom's reason it waits (the scheduler's code and words). */
  reason: string;
  message: string;
}

/** What is known of a capacity request: since when, and what the autoscaler answered. */
export interface CapacityAnswer {
  requestedAt: string;
  /** Nodes the autoscaler is adding for it, and their pool (its node group), once it said so. */
  nodes?: number;
  pool?: string;
  /** The autoscaler's own words when it will not help (no node group fits, at its maximum). */
  refused?: string;
}

/** One revision of an InferenceService, for platforms that manage replicas themselves. */
export interface RevisionSpec {
  /** The InferenceService (owner of what is made). */
  service: WorkloadRef;
  revision: string;
  replicas: number;
  worker: Omit<WorkerSpec, "index">;
  /** The port the model server listens on ($PORT) and its readiness path. */
  port: number;
  readinessPath: string;
  readinessTimeoutSeconds: number;
  /** Embedded: the Python environment replicas run in (Kubernetes: the image is it). */
  python?: PythonEnvironmentSpec;
  /** GPUs each replica asks for, fractions included (the worker's allocation names whole devices). */
  gpu?: number;
  /**
   * Whether the scheduler may reclaim a replica (default true: model replicas may borrow beyond
   * the deserved quota). False: it must fit within the quota and is never preempted (a Workspace).
   */
  preemptible?: boolean;
  /** A home every replica mounts as its working directory, kept when replicas go (a Workspace's). */
  home?: PersistentHome;
}

export interface ReplicaObservation {
  id: string;
  /** Stable across restarts of Loom (embedded: the replica's workload uid); default: id. */
  uid?: string;
  host?: string;
  port: number;
  ready: boolean;
  startedAt: string;
  /** Where the scheduler placed it, where the platform tells (embedded). */
  node?: string;
  gpus?: { device: string; share: number }[];
}

export interface RevisionObservation {
  /** Replicas that run (started, not being stopped): what the gateway may route to once ready. */
  replicas: ReplicaObservation[];
  /**
   * Why the scheduler stopped a replica of the revision, while the one replacing it waits for a
   * place (embedded: Loom preempts replicas it runs); undefined once a replica has started again.
   */
  preempted?: string;
  /**
   * The last replica's exit, while none has been ready since: its exit code and the last lines
   * of its output, naming `loom logs … --previous` (a crash loop's condition message).
   */
  lastExit?: string;
}

/**
 * Replica management for one revision of a service, as a Deployment does it: keep N replicas
 * running, probe their readiness, replace the ones that die or never get ready, stop extras
 * gracefully. Kubernetes: a Deployment and a Service per revision, readiness probes, a
 * NetworkPolicy letting only the gateway in. Embedded: supervised processes on loopback ports.
 * Calls return at once; the platform converges in the background and calls `onChange` with the
 * service's kind when a replica becomes ready or exits.
 */
export interface RevisionRuntime {
  /** Makes the revision exist with this many replicas. Idempotent. */
  applyRevision(spec: RevisionSpec): Promise<void>;
  observeRevision(service: WorkloadRef, revision: string): Promise<RevisionObservation>;
  /** Stops every replica of the revision (gracefully) and forgets it. Idempotent. */
  deleteRevision(service: WorkloadRef, revision: string): Promise<void>;
  /**
   * Every revision the platform holds, for garbage collection of ones whose service is gone.
   * Absent where the platform collects them itself (Kubernetes: owner references).
   */
  listRevisions?(): Promise<{ service: WorkloadRef; revision: string }[]>;
  /**
   * The TCP ports replica `replica` (its id) of `service` listens on, asked inside it (Kubernetes:
   * pods/exec reading the pod's /proc/net/tcp{,6}): a round trip through the API server, so asked
   * at the reconcile cadence, not every second. Absent where Runtime.listeningPorts sees them.
   */
  replicaPorts?(service: WorkloadRef, replica: string): Promise<number[]>;
  /**
   * A replica's output (`loom logs ws/NAME`, app/, isvc/), as `kubectl logs` shows a pod's: the
   * one named (its id, or its index among the running ones), else the first ready, else the
   * newest; `previous`: the last one that exited (a crashing replica's output). Undefined when no
   * replica of these revisions runs or ran; rejects with a NotFoundError when the one named is
   * not there. Absent: the platform cannot show replicas' output.
   */
  replicaLogs?(
    service: WorkloadRef,
    revisions: string[],
    opts: ReplicaLogOptions,
  ): Promise<ReplicaLog | undefined>;
}

export interface ReplicaLogOptions {
  /** A replica's id, or its index among the running replicas (newest revision first). */
  replica?: string;
  /** The last replica (or container attempt) that exited instead of a running one. */
  previous?: boolean;
  /** Keep streaming until the replica exits. */
  follow?: boolean;
}

export interface ReplicaLog {
  /** The replica shown. */
  replica: string;
  /** True when it is one that exited (asked for with `previous`, or none runs). */
  previous: boolean;
  stream: Readable;
}

export interface ExternalWork {
  /** Gangs waiting for Loom to place them. */
  pending: Workload[];
  /** What others hold: never preempted by Loom. */
  running: RunningWorkload[];
}

import type { Readable } from "node:stream";
import type { Cluster } from "../api/cluster.js";
import type { CheckpointFiles, LogOptions, WorkloadRef } from "./runtime.js";
import type { NodeCapacity } from "./scheduler.js";
import type { EventRecorder, ResourceStore } from "./store.js";

/**
 * A member of the fleet as the controllers see it (issue 23): a Loom store to create workloads
 * in and read their status from, and a capacity source. Nothing here says which platform the
 * member is: a Kubernetes cluster with Loom's CRDs and operator, or (in tests) another store.
 */
export interface MemberCluster {
  /** The member's Loom store (the CRDs there): workloads placed in it are created here. */
  readonly store: ResourceStore;
  /**
   * The member's nodes as the scheduler counts them (names unprefixed), each with what work
   * `holder` did not place holds on it (usedByOthers: the member's own users' jobs, plain pods;
   * never the copies `holder` made, which its own admissions count). A member's figures are
   * untrusted: a request that cannot be read counts as nothing.
   */
  nodes(holder: string): Promise<NodeCapacity[]>;
  /**
   * Why the last nodes() could not count what the member's own work holds (its nodes then look
   * free of it); undefined when it could. The member stays Ready and its status says so.
   */
  readonly usageError?: string;
  /** Reaches the member; throws when it cannot. Versions where the member says them. */
  probe(): Promise<{ kubernetes?: string; loom?: string }>;
  /** The member's events about one of its objects (mirrored back to the control plane). */
  readonly events?: Pick<EventRecorder, "listFor">;
  /** A worker's log in the member (`loom logs` from the control plane). */
  logs?(ref: WorkloadRef, opts: LogOptions): Promise<Readable>;
  /**
   * The files of the latest checkpoint the member's copy of a job wrote (its LOOM_CHECKPOINT_DIR,
   * names relative to it), or undefined when it has none or the member cannot read them. Only
   * asked when the copy reports a checkpoint step newer than the one the control plane holds.
   */
  checkpoint?(ref: WorkloadRef): Promise<CheckpointFiles | undefined>;
  /**
   * Writes the checkpoint the control plane holds into the first attempt of a copy created with
   * FLEET_SEED_ANNOTATION (its workers wait for it). Returns how many of the copy's workers still
   * wait to be ready for it (0: done, or nothing waits any more). Asked again until it says 0.
   */
  seed?(ref: WorkloadRef, files: CheckpointFiles): Promise<number>;
  /**
   * Where the control plane's gateway sends a project's requests for the replicas this member
   * runs (its gateway), with a credential scoped to that project (a project API key made there
   * through the member's API, the project made first where missing): never an open port, and a
   * key of one project reaches no other.
   * Absent: the member runs no replicas for the fleet (InferenceServices stay off it).
   */
  gateway?(project: string): Promise<MemberGateway>;
  /**
   * Renews this control plane's lease in the member (self-fencing): the member's own Loom stops
   * the copies placed by `holder` when it has not seen the lease renewed for `durationSeconds` by
   * its own clock. Absent: the member cannot fence (its copies run on through a partition).
   */
  renewLease?(holder: string, durationSeconds: number): Promise<void>;
  /** Stops its connections and watches. */
  close(): void;
}

/** A member's gateway as one project reaches it. */
export interface MemberGateway {
  host: string;
  port: number;
  /** Set on every request forwarded there (Authorization: the project's key in that member). */
  headers: Record<string, string>;
}

export type { CheckpointFiles } from "./runtime.js";

/**
 * Where the control plane keeps each fleet job's last synced checkpoint (by the job's uid on the
 * control plane): the directory the job's next attempt resumes from when it lands on the
 * control plane's own platform (the `self` member).
 */
export interface CheckpointVault {
  /** The step of the checkpoint held for the job (its loom.json), undefined when none. */
  step(uid: string): Promise<number | undefined>;
  /**
   * Replaces the checkpoint held for the job with these files, loom.json last, so the step it
   * reports never runs ahead of the files. Refuses names that leave the directory.
   */
  put(uid: string, files: CheckpointFiles): Promise<void>;
  /** The files held for the job, undefined when none (to seed a member it moves into). */
  files(uid: string): Promise<CheckpointFiles | undefined>;
  /**
   * Where the vault is not the job's own checkpoint storage on the control plane's platform (the
   * operator: its data dir, while the job's pods checkpoint to their own volume), what was last
   * written from it into that storage: a job that comes back to the `self` member is seeded from
   * the vault like a member's copy. Absent (embedded): the vault is the job's own directory there.
   */
  readonly self?: SelfSeedMarks;
  /**
   * Forgets the checkpoints of jobs whose uid is not in `live` (deleted while or before this
   * process ran). Absent where the platform removes them with the job's own files (embedded).
   */
  prune?(live: ReadonlySet<string>): Promise<void>;
}

/** The step of the vault's checkpoint last written into a job's storage on the `self` member. */
export interface SelfSeedMarks {
  /** The step last seeded into the job's own checkpoint storage there; undefined: never. */
  seeded(uid: string): Promise<number | undefined>;
  /** Records that the job's workers there got the vault's checkpoint of this step. */
  markSeeded(uid: string, step: number): Promise<void>;
}

/** The most a checkpoint moved between members may hold (its files' bytes together). */
export const MAX_SYNCED_CHECKPOINT_BYTES = 256 << 20;

/**
 * This platform's own jobs' checkpoints, as a fleet's control plane reads and seeds them through
 * Loom's API when this platform is its member (`spec.api: loom`, issue 23). Jobs by their ref
 * here (the copy's uid in this platform, never the control plane's).
 */
export interface MemberCheckpoints {
  /**
   * The files of the latest checkpoint the job wrote (its LOOM_CHECKPOINT_DIR: regular files
   * only, never through a link), undefined while it has no loom.json there. Throws past
   * MAX_SYNCED_CHECKPOINT_BYTES.
   */
  files(ref: WorkloadRef): Promise<CheckpointFiles | undefined>;
  /**
   * Writes the control plane's checkpoint into the job's directory before its first attempt
   * (a copy created with FLEET_SEED_ANNOTATION), loom.json last; then `seeded` says so. A seed
   * already written is never written over (the workers may have gone on from it). Returns how
   * many workers still wait for it (0: done), as MemberCluster.seed. Refuses names that leave
   * the directory, and a directory on the way that is a link.
   */
  seed(ref: WorkloadRef, files: CheckpointFiles): Promise<number>;
  /**
   * Whether the seed is in place: the first attempt of a seeded copy starts only then (the
   * trainingjob loop waits). Absent: the platform's workers wait for it themselves.
   */
  seeded?(ref: WorkloadRef): Promise<boolean>;
}

/** Makes a member from its Cluster object and the kubeconfig its secret holds. */
export interface MemberConnector {
  connect(cluster: Cluster, kubeconfig: string): Promise<MemberCluster>;
}

/** One control plane's lease in a member, as the member reads it. */
export interface FleetLease {
  /** The control plane that renews it (copies it placed carry its name: FLEET_HOLDER_ANNOTATION). */
  holder: string;
  durationSeconds: number;
  /**
   * Changes with every renewal (a counter, a resourceVersion): the member watches it change and
   * times it by its own clock. Never a time to compare with the member's clock.
   */
  renewal: string;
}

/**
 * The leases control planes renew in this platform (the member's side of self-fencing): a
 * coordination.k8s.io Lease on Kubernetes, a record in the data dir embedded.
 */
export interface FleetLeases {
  /** Every control plane's lease here. Throws when they cannot be read (then none is seen renewed). */
  list(): Promise<FleetLease[]>;
  /** Renews (or creates) holder's lease: what a control plane's renewal writes. */
  renew(holder: string, durationSeconds: number): Promise<void>;
}

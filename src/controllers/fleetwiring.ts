import type { Logger } from "pino";
import { FLEET_HOLDER_ANNOTATION } from "../api/cluster.js";
import { displayKey, type Resource } from "../api/meta.js";
import type { CheckpointVault, FleetLeases } from "../ports/fleet.js";
import type { Runtime } from "../ports/runtime.js";
import type { EventRecorder, ResourceStore } from "../ports/store.js";
import { RemoteJobs } from "./cluster/dispatch.js";
import { Fence } from "./cluster/fence.js";
import { Fleet, type FleetDeps } from "./cluster/fleet.js";
import { FleetReplicas } from "./inferenceservice/fleet.js";
import type { InferenceServiceDeps } from "./inferenceservice/reconciler.js";
import { type SelfSeeding, selfSeedingOf } from "./trainingjob/selfseed.js";

/** How a control plane reaches its fleet (ControllerManagerDeps.fleet). */
export type FleetOptions = Pick<FleetDeps, "connector" | "secrets" | "version"> & {
  probeMs?: number;
  /** This control plane's name in the leases it renews in members (default: the host's name). */
  holder?: string;
  /** Where members' checkpoints are copied to: a job that fails over here resumes from them. */
  vault?: CheckpointVault;
};

/** What the fleet's halves take of the manager's deps. */
interface WiringDeps {
  store: ResourceStore;
  events: EventRecorder;
  runtime: Runtime;
  now: () => Date;
  serving?: Pick<InferenceServiceDeps, "models">;
  fleet?: FleetOptions;
  fleetLeases?: FleetLeases;
}

/** The fleet's members and the loop half that runs jobs placed in them, where deps.fleet is given. */
export function fleetOf(
  deps: WiringDeps,
  log: Logger,
): { fleet?: Fleet; remote?: RemoteJobs; replicas?: FleetReplicas; selfSeed?: SelfSeeding } {
  if (!deps.fleet) return {};
  const fleet = new Fleet({ ...deps.fleet, localNodes: () => deps.runtime.nodes(), now: deps.now });
  const vault = deps.fleet.vault;
  const remote = new RemoteJobs({
    ...deps,
    log,
    member: (name) => fleet.member(name),
    holder: fleet.holder,
    ...(vault ? { vault } : {}),
  });
  // Services' replicas in members, where this platform serves (they run beside its own).
  const replicas =
    deps.serving && deps.runtime.serving
      ? new FleetReplicas({ fleet, store: deps.store, events: deps.events, log, now: deps.now })
      : undefined;
  // A job back on this platform from a member, where the vault is not its own storage here.
  const selfSeed = selfSeedingOf({ ...deps, vault, log });
  return { fleet, remote, ...(replicas ? { replicas } : {}), ...(selfSeed ? { selfSeed } : {}) };
}

/**
 * This platform as a member (self-fencing), where it reads its control planes' leases: a lapsed
 * lease wakes the copies that control plane placed here (`jobs`: the informer's), whose loop
 * stops them.
 */
export function fenceOf(
  deps: WiringDeps,
  log: Logger,
  jobs: () => Resource[],
  wake: (key: string) => void,
): Fence | undefined {
  if (!deps.fleetLeases) return undefined;
  return new Fence({
    leases: deps.fleetLeases,
    log,
    onExpired: (holder) => {
      for (const job of jobs())
        if (job.metadata.annotations?.[FLEET_HOLDER_ANNOTATION] === holder) wake(displayKey(job.metadata));
    },
  });
}

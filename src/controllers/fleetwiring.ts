import type { Logger } from "pino";
import { FLEET_HOLDER_ANNOTATION } from "../api/cluster.js";
import { displayKey, type Resource } from "../api/meta.js";
import { RemoteJobs } from "./cluster/dispatch.js";
import { Fence } from "./cluster/fence.js";
import { Fleet } from "./cluster/fleet.js";
import { FleetReplicas } from "./inferenceservice/fleet.js";
import type { ControllerManagerDeps } from "./manager.js";

/** The fleet's members and the loop half that runs jobs placed in them, where deps.fleet is given. */
export function fleetOf(
  deps: ControllerManagerDeps,
  log: Logger,
): { fleet?: Fleet; remote?: RemoteJobs; replicas?: FleetReplicas } {
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
  return { fleet, remote, ...(replicas ? { replicas } : {}) };
}

/**
 * This platform as a member (self-fencing), where it reads its control planes' leases: a lapsed
 * lease wakes the copies that control plane placed here (`jobs`: the informer's), whose loop
 * stops them.
 */
export function fenceOf(
  deps: ControllerManagerDeps,
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

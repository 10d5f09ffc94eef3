import type { Logger } from "pino";
import { FLEET_UID_LABEL } from "../../api/cluster.js";
import { TRAININGJOB } from "../../api/kinds.js";
import { displayKey } from "../../api/meta.js";
import type { MemberCluster } from "../../ports/fleet.js";
import type { StopWatch } from "../../ports/store.js";

interface MemberWatch {
  member: MemberCluster;
  stop?: StopWatch;
  live: boolean;
}

/**
 * One watch per member on the copies the control plane made there (TrainingJobs labelled
 * `loom.dev/fleet-uid`), instead of reading each job's copy every 2 s: a change to a copy wakes
 * the control plane's job of the same project and name, whose mirror then reads it (status,
 * events, and the checkpoint when the copy reports a newer step). A watch that ends, or a member
 * that reconnected (a new MemberCluster), is watched again on the next mirror; until a watch is
 * live the jobs placed there are read on a short interval as before.
 */
export class CopyWatches {
  private readonly watches = new Map<string, MemberWatch>();
  /** Watches opened (for tests and logs: one per member and reconnect, never one per job). */
  opened = 0;

  constructor(
    private readonly deps: {
      log: Logger;
      /** Wakes the control plane's job with this key ("project/name"). */
      wake: (key: string) => void;
    },
  ) {}

  /** Whether the member's copies are watched now; opens the watch when they are not. */
  ensure(name: string, member: MemberCluster): boolean {
    const known = this.watches.get(name);
    if (known?.member === member) return known.live;
    known?.stop?.();
    const w: MemberWatch = { member, live: false };
    this.watches.set(name, w);
    this.opened++;
    member.store
      .watch(
        TRAININGJOB,
        { labelSelector: FLEET_UID_LABEL },
        (e) =>
          this.deps.wake(displayKey({ project: e.object.metadata.project, name: e.object.metadata.name })),
        (err) => {
          this.deps.log.info(
            { err, cluster: name },
            "watch of the member's copies ended; opened again at the next mirror",
          );
          if (this.watches.get(name) === w) this.watches.delete(name);
        },
      )
      .then((stop) => {
        if (this.watches.get(name) !== w) return stop();
        w.stop = stop;
        w.live = true;
      })
      .catch((err: unknown) => {
        this.deps.log.info(
          { err, cluster: name },
          "could not watch the member's copies; retried at the next mirror",
        );
        if (this.watches.get(name) === w) this.watches.delete(name);
      });
    return false;
  }

  /** Stops every watch (the control plane is stopping). */
  close(): void {
    for (const w of this.watches.values()) w.stop?.();
    this.watches.clear();
  }
}

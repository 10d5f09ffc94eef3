import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { FleetLease, FleetLeases } from "../../ports/fleet.js";

interface Held {
  durationSeconds: number;
  /** Counts renewals: what the member's fence watches change (never a time). */
  renewals: number;
}

/**
 * The leases control planes renew in this embedded platform (it is their fleet member), kept in
 * `<data dir>/fleet-leases.json` so a restarted server still knows them: its copies wait until
 * the lease is seen renewed again, and stop if it is not (controllers/cluster/fence.ts).
 */
export class FileFleetLeases implements FleetLeases {
  private readonly file: string;
  private readonly held: Map<string, Held>;

  constructor(dataDir: string) {
    this.file = join(dataDir, "fleet-leases.json");
    this.held = new Map(Object.entries(read(this.file)));
  }

  async list(): Promise<FleetLease[]> {
    return [...this.held].map(([holder, h]) => ({
      holder,
      durationSeconds: h.durationSeconds,
      renewal: String(h.renewals),
    }));
  }

  async renew(holder: string, durationSeconds: number): Promise<void> {
    const prev = this.held.get(holder);
    this.held.set(holder, { durationSeconds, renewals: (prev?.renewals ?? 0) + 1 });
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(Object.fromEntries(this.held)), { mode: 0o600 });
    renameSync(tmp, this.file);
  }
}

function read(file: string): Record<string, Held> {
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as Record<string, Held>;
    return typeof parsed === "object" && parsed !== null ? parsed : {};
  } catch {
    return {};
  }
}

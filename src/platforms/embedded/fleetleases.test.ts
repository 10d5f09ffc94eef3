import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FileFleetLeases } from "./fleetleases.js";

describe("the fleet's leases in an embedded member", () => {
  it("each renewal changes the record; a restarted server still knows the lease (its copies wait for a renewal)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "loom-leases-"));
    const leases = new FileFleetLeases(dir);
    expect(await leases.list()).toEqual([]);
    await leases.renew("cp-1", 15);
    const first = await leases.list();
    await leases.renew("cp-1", 15);
    const second = await leases.list();
    expect(second[0]!.renewal).not.toBe(first[0]!.renewal);
    expect(second).toEqual([{ holder: "cp-1", durationSeconds: 15, renewal: second[0]!.renewal }]);
    expect(await new FileFleetLeases(dir).list()).toEqual(second);
  });
});

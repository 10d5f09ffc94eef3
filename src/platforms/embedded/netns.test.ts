import { describe, expect, it } from "vitest";
import { EXPOSE_ENV, exposedPorts, GangNetworks } from "./netns.js";

describe("GangNetworks", () => {
  it("shares the machine's network when turned off, and says so", () => {
    const n = new GangNetworks({ instanceId: "0123456789abcdef", enabled: false });
    expect(n.capability).toEqual({ isolated: false, reason: "turned off" });
    expect(n.join("u", [])).toBeUndefined();
    expect(n.address("u")).toBeUndefined();
    expect(n.teardown("u")).toBeUndefined();
    expect(n.orphans(new Set())).toEqual([]);
  });

  it("reads the ports a workload exposes from its workers' env", () => {
    expect(
      exposedPorts([{ env: { [EXPOSE_ENV]: "8080,9090" } }, { env: { [EXPOSE_ENV]: "8080" } }, { env: {} }]),
    ).toEqual([8080, 9090]);
    expect(exposedPorts([{ env: { [EXPOSE_ENV]: "x,1;2" } }])).toEqual([]);
  });

  it.runIf(process.getuid?.() === 0)("moves Loom's URL to the link's host end, and only Loom's", () => {
    const n = new GangNetworks({ instanceId: "feedfacefeedface" });
    if (!n.capability.isolated) return;
    n.openApi(7470);
    try {
      const join = n.join("11112222-3333-4444-5555-666677778888", [8000])!;
      const { hostAddress, address, ifname, ports } = join.setup;
      expect(ifname).toBe("lmfeed111122223");
      expect(ifname.length).toBeLessThanOrEqual(15);
      expect(ports).toEqual([8000]);
      expect(hostAddress).toMatch(/^198\.1[89]\.\d+\.\d+$/);
      expect(n.address("11112222-3333-4444-5555-666677778888")).toBe(address);
      const env = join.env({
        MLFLOW_TRACKING_URI: "http://127.0.0.1:7470/mlflow/projects/a",
        LOOM_URL: "http://localhost:7470",
        OTHER: "http://127.0.0.1:74701/",
        PLAIN: "127.0.0.1:7470",
      });
      expect(env).toEqual({
        MLFLOW_TRACKING_URI: `http://${hostAddress}:7470/mlflow/projects/a`,
        LOOM_URL: `http://${hostAddress}:7470`,
        OTHER: "http://127.0.0.1:74701/",
        PLAIN: "127.0.0.1:7470",
      });
      // Two gangs never share a link's addresses.
      expect(n.join("99998888-3333-4444-5555-666677778888", [])!.setup.hostAddress).not.toBe(hostAddress);
    } finally {
      n.close();
    }
  });
});

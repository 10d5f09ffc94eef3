import { describe, expect, it } from "vitest";
import { fleetLeaseName } from "./fleetleases.js";

describe("the fleet's Leases in a Kubernetes member", () => {
  it("a Kubernetes member's Lease is named as a DNS label whatever the control plane's host is called", () => {
    expect(fleetLeaseName("vm")).toBe("loom-fleet-vm");
    expect(fleetLeaseName("Build_Host.example.com")).toBe("loom-fleet-build-host-example-com");
    expect(fleetLeaseName("___")).toBe("loom-fleet-control-plane");
    expect(fleetLeaseName("x".repeat(200)).length).toBeLessThanOrEqual(63);
  });
});

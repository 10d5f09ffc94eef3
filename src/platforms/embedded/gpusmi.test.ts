import { describe, expect, it } from "vitest";
import {
  busKey,
  parseComputeApps,
  parseGpuQuery,
  parseMigList,
  parseSmiErrors,
  parseXids,
  xidMatches,
} from "./gpusmi.js";

// nvidia-smi's own shapes (no GPU here to capture from: these follow its documented CSV, `-L` and
// driver log formats; replace with a capture from the GPU check's summary once one has run).
const QUERY = [
  "0, GPU-1f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0, NVIDIA H100 80GB HBM3, 81559, 1, 0, 00000000:18:00.0, 550.54.15, Disabled, 0",
  "1, GPU-2f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0, NVIDIA H100 80GB HBM3, 81559, 40210, 97, 00000000:2A:00.0, 550.54.15, Disabled, [N/A]",
  "2, GPU-3f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0, NVIDIA H100 80GB HBM3, 81559, [Unknown Error], [Unknown Error], 00000000:3A:00.0, 550.54.15, Disabled, 2",
  "",
].join("\n");

describe("nvidia-smi's output", () => {
  it("reads the device listing: identity, memory in MiB, utilisation, and which fields are errors", () => {
    const rows = parseGpuQuery(QUERY);
    expect(rows.map((r) => r.index)).toEqual(["0", "1", "2"]);
    expect(rows[0]).toEqual({
      index: "0",
      uuid: "GPU-1f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0",
      name: "NVIDIA H100 80GB HBM3",
      memoryTotalMiB: 81559,
      memoryUsedMiB: 1,
      utilization: 0,
      busId: "00000000:18:00.0",
      driver: "550.54.15",
      migMode: "Disabled",
      eccUncorrected: 0,
      errors: [],
    });
    // [N/A] is "not reported", not a fault; [Unknown Error] is.
    expect(rows[1]!.errors).toEqual([]);
    expect(rows[1]!.eccUncorrected).toBeUndefined();
    expect(rows[2]!.errors).toEqual(["memory.used: [Unknown Error]", "utilization.gpu: [Unknown Error]"]);
    expect(rows[2]!.eccUncorrected).toBe(2);
  });

  it("finds the devices nvidia-smi could not reach, by bus id", () => {
    const m = parseSmiErrors("Unable to determine the device handle for GPU0000:3B:00.0: Unknown Error\n");
    expect([...m]).toEqual([["0000:3b:00.0", "Unknown Error"]]);
    expect(busKey("00000000:3B:00.0")).toBe("0000:3b:00.0");
  });

  it("reads MIG instances per GPU from nvidia-smi -L", () => {
    const m = parseMigList(
      [
        "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)",
        "  MIG 3g.20gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)",
        "  MIG 1g.5gb      Device  1: (UUID: MIG-0a1b2c3d-42e4-5de3-91c7-45d71c87eb3f)",
        "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-6d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)",
      ].join("\n"),
    );
    expect(m.get("GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77")).toEqual([
      { profile: "3g.20gb", device: 0, uuid: "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f" },
      { profile: "1g.5gb", device: 1, uuid: "MIG-0a1b2c3d-42e4-5de3-91c7-45d71c87eb3f" },
    ]);
    expect(m.has("GPU-6d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77")).toBe(false);
  });

  it("reads the processes on the devices, and the driver's XIDs for a device", () => {
    expect(
      parseComputeApps(
        "4242, GPU-1f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0, 2048\n77, GPU-x, [N/A]\nNo running processes found\n",
      ),
    ).toEqual([
      { pid: 4242, gpuUuid: "GPU-1f2e3d4c-5b6a-7988-a7b6-c5d4e3f2a1b0", usedMiB: 2048 },
      { pid: 77, gpuUuid: "GPU-x" },
    ]);
    const xids = parseXids(
      "[ 1234.5] NVRM: Xid (PCI:0000:3a:00): 79, pid=0, name=, GPU has fallen off the bus.\n[ 1300.1] NVRM: Xid (PCI:0000:18:00): 13, Graphics Exception\n",
    );
    expect(xids.map((x) => x.xid)).toEqual([79, 13]);
    expect(xidMatches(xids[0]!, "00000000:3A:00.0")).toBe(true);
    expect(xidMatches(xids[0]!, "00000000:18:00.0")).toBe(false);
  });
});

import { describe, expect, it } from "vitest";
import { formatBytes, formatCpu, parseCpuMillis, parseMemoryBytes } from "./quantity.js";

describe("quantities", () => {
  it("parses CPU as millicores", () => {
    expect(parseCpuMillis(2)).toBe(2000);
    expect(parseCpuMillis("500m")).toBe(500);
    expect(parseCpuMillis("1.5")).toBe(1500);
    expect(parseCpuMillis("2Gi")).toBeUndefined();
    expect(parseCpuMillis("lots")).toBeUndefined();
  });
  it("parses memory as bytes", () => {
    expect(parseMemoryBytes("512Mi")).toBe(512 * 2 ** 20);
    expect(parseMemoryBytes("1G")).toBe(1e9);
    expect(parseMemoryBytes(1024)).toBe(1024);
    expect(parseMemoryBytes("1.5Gi")).toBe(1.5 * 2 ** 30);
    expect(parseMemoryBytes("5m")).toBeUndefined();
    expect(parseMemoryBytes("-1")).toBeUndefined();
  });
  it("formats for messages", () => {
    expect(formatBytes(512 * 2 ** 20)).toBe("512Mi");
    expect(formatCpu(1500)).toBe("1.5");
    expect(formatCpu(250)).toBe("250m");
  });
});

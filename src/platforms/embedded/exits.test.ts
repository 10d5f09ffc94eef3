import { describe, expect, it } from "vitest";
import { exitOf, NO_EXIT_STATUS, signalName } from "./exits.js";

const T = "2025-01-01T00:00:00.000Z";

describe("exitOf", () => {
  it("believes the shim's recorded code first, a code above 128 naming the signal", () => {
    expect(exitOf(0, 1, "SIGTERM", true, T)).toEqual({ finishTime: T, code: 0 });
    expect(exitOf(143, undefined, undefined, false, T)).toEqual({
      finishTime: T,
      code: 143,
      signal: "SIGTERM",
    });
  });

  it("then what the spawn helper saw", () => {
    expect(exitOf(undefined, 3, undefined, true, T)).toMatchObject({ code: 3 });
    expect(exitOf(undefined, undefined, "SIGKILL", false, T)).toMatchObject({ signal: "SIGKILL" });
  });

  it("then the SIGKILL the runtime sent, else nothing known", () => {
    expect(exitOf(undefined, undefined, undefined, true, T)).toEqual({
      finishTime: T,
      code: 137,
      signal: "SIGKILL",
    });
    expect(exitOf(undefined, undefined, undefined, false, T)).toEqual({
      finishTime: T,
      message: NO_EXIT_STATUS,
    });
  });

  it("names signals it knows, numbers the rest", () => {
    expect(signalName(9)).toBe("SIGKILL");
    expect(signalName(42)).toBe("signal 42");
  });
});

import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { LogOptions, WorkloadRef } from "../../ports/runtime.js";
import { exitOutput, type LiveReplica, lastLines, PreviousLogs, replicaLogsOf } from "./replicalogs.js";

/** Which replica `loom logs` shows on embedded, and what an exited replica leaves behind. */

const ref = (name: string): WorkloadRef => ({
  kind: "InferenceService",
  project: "p",
  name,
  uid: `uid-${name}`,
});
const live = (id: string, ready: boolean, startedAt: string): LiveReplica => ({
  id,
  ref: ref(id),
  ready,
  startedAt,
});

function runtime(outputs: Record<string, string>) {
  const asked: { name: string; opts: LogOptions }[] = [];
  return {
    asked,
    logs: async (r: WorkloadRef, opts: LogOptions) => {
      asked.push({ name: r.name, opts });
      return Readable.from([Buffer.from(outputs[r.name] ?? "")]);
    },
  };
}

async function text(s: Readable): Promise<string> {
  let out = "";
  for await (const c of s) out += c.toString();
  return out;
}

const none = () => undefined;

describe("replicaLogsOf", () => {
  const replicas = [
    live("svc-2-r0", false, "2026-01-01T00:00:05Z"),
    live("svc-2-r1", false, "2026-01-01T00:00:09Z"),
    live("svc-1-r3", true, "2026-01-01T00:00:01Z"),
  ];

  it("defaults to the first ready replica, else the newest; -f is passed on", async () => {
    const rt = runtime({});
    expect((await replicaLogsOf(replicas, none, ["svc-2", "svc-1"], rt, {}))?.replica).toBe("svc-1-r3");
    const log = await replicaLogsOf(replicas.slice(0, 2), none, ["svc-2"], rt, { follow: true });
    expect(log?.replica).toBe("svc-2-r1");
    expect(rt.asked.at(-1)).toEqual({ name: "svc-2-r1", opts: { worker: 0, follow: true } });
  });

  it("--replica by index or id; an unknown one names the running ones", async () => {
    const rt = runtime({});
    expect((await replicaLogsOf(replicas, none, ["svc-2", "svc-1"], rt, { replica: "1" }))?.replica).toBe(
      "svc-2-r1",
    );
    expect(
      (await replicaLogsOf(replicas, none, ["svc-2", "svc-1"], rt, { replica: "svc-1-r3" }))?.replica,
    ).toBe("svc-1-r3");
    await expect(replicaLogsOf(replicas, none, ["svc-2"], rt, { replica: "9" })).rejects.toThrow(
      "no running replica 9; the running ones are 0 (svc-2-r0), 1 (svc-2-r1), 2 (svc-1-r3)",
    );
  });

  it("nothing runs: the last exited replica's output; --previous asks for it; nothing at all: undefined", async () => {
    const rt = runtime({});
    const prev = (rev: string) =>
      rev === "svc-1" ? { replica: "svc-1-r0", stream: Readable.from(["crashed\n"]) } : undefined;
    const log = await replicaLogsOf([], prev, ["svc-2", "svc-1"], rt, {});
    expect(log).toMatchObject({ replica: "svc-1-r0", previous: true });
    expect(await text(log!.stream)).toBe("crashed\n");
    expect((await replicaLogsOf(replicas, prev, ["svc-1"], rt, { previous: true }))?.replica).toBe(
      "svc-1-r0",
    );
    expect(await replicaLogsOf([], none, ["svc-2"], rt, { previous: true })).toBeUndefined();
    expect(await replicaLogsOf([], none, ["svc-2"], rt, {})).toBeUndefined();
  });
});

describe("PreviousLogs", () => {
  it("keeps an exited replica's output past its release, and its last lines for the event", async () => {
    const dir = mkdtempSync(join(tmpdir(), "prevlogs-"));
    const rt = runtime({
      "svc-1-r0": "loading\nTraceback (most recent call last):\n\nValueError: no model\n",
    });
    const prev = new PreviousLogs(dir, rt);
    const tail = await prev.keep(ref("svc-1-r0"), "svc-1");
    expect(tail).toBe("loading | Traceback (most recent call last): | ValueError: no model");
    const read = prev.read("p", "svc-1")!;
    expect(read.replica).toBe("svc-1-r0");
    expect(await text(read.stream)).toContain("ValueError: no model");
    expect(readFileSync(join(dir, "p", "svc-1.previous.log"), "utf8")).toContain("loading");
    prev.remove("p", "svc-1");
    expect(prev.read("p", "svc-1")).toBeUndefined();
  });

  it("the event names the command that shows the rest", () => {
    const ws = { kind: "Workspace", project: "p", name: "nb", uid: "u" };
    expect(exitOutput(ws, "boom")).toBe("; last output: boom (loom logs ws/nb --previous)");
    expect(exitOutput({ ...ws, kind: "App" }, "")).toBe(" (loom logs app/nb --previous)");
  });
});

describe("lastLines", () => {
  it("keeps the last non-empty lines, each and all bounded", () => {
    expect(lastLines("a\n\nb\nc\nd\ne\nf\n")).toBe("b | c | d | e | f");
    expect(lastLines(`${"x".repeat(300)}\n`)).toBe(`${"x".repeat(200)}…`);
    expect(lastLines(Array.from({ length: 5 }, () => "y".repeat(199)).join("\n")).length).toBe(601);
  });
});

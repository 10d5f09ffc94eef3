import { describe, expect, it } from "vitest";
import type { Runtime, WorkloadRef } from "../../ports/runtime.js";
import { targetsOf } from "./portforward.js";

/** Which running process `loom port-forward KIND/NAME` reaches, from the runtime's list. */
describe("port-forward targets", () => {
  const refs: WorkloadRef[] = [
    { kind: "InferenceService", project: "p", name: "nb-wsa1b2c3-r0", uid: "u1" },
    { kind: "InferenceService", project: "p", name: "nb-2-wsa1b2c3-r0", uid: "u2" },
    { kind: "InferenceService", project: "q", name: "nb-wsa1b2c3-r0", uid: "u3" },
    { kind: "InferenceService", project: "p", name: "chat-3-r0", uid: "u4" },
  ];
  const runtime = {
    list: async () => refs,
    observe: async () => ({ workers: [{ index: 0, state: "Running" }] }),
  } as unknown as Pick<Runtime, "list" | "observe">;

  it("a workspace's one replica (NAME-wsHASH-rK, run through the serving path) in its own project only", async () => {
    const t = await targetsOf(runtime, { kind: "Workspace", project: "p", name: "nb", uid: "w" });
    expect(t.map((x) => x.ref.uid)).toEqual(["u1"]);
  });

  it("a model's replicas are not a workspace's, nor a workspace's a model's", async () => {
    expect(
      (await targetsOf(runtime, { kind: "InferenceService", project: "p", name: "nb", uid: "x" })).length,
    ).toBe(0);
    const chat = await targetsOf(runtime, { kind: "InferenceService", project: "p", name: "chat", uid: "c" });
    expect(chat.map((x) => x.ref.uid)).toEqual(["u4"]);
  });
});

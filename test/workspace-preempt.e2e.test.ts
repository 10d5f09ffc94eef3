import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";

/**
 * Preemption of a preemptible Workspace (issue 19) on `loom up --gpus 1`: a TrainingJob of higher
 * priority in the same project needs the one GPU the workspace holds, so the scheduler reclaims
 * it (Priority); the workspace says it was preempted and waits, runs again once the job has
 * ended, and its home is as it left it. `ide: none` with Python's http.server: nothing to build.
 */

interface Ws {
  status?: {
    phase?: string;
    stoppedReason?: string;
    replica?: { id: string; host?: string; port?: number; ready: boolean };
    conditions?: { type: string; reason?: string; message?: string }[];
  };
}

const PATH = "/apis/loom.dev/v1alpha1/projects/default/workspaces";

// Each start appends a line to a file in the home (its working directory), then serves it.
const WORKSPACE = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: lab}
spec:
  ide: none
  preemptible: true
  resources: {gpu: 1}
  command: [sh, -c, 'date +%s%N >> starts.txt && exec python3 -m http.server $PORT --bind 127.0.0.1']
`;

describe("a preemptible workspace (embedded, 1 virtual GPU)", () => {
  const s = new LoomProcess(["--gpus", "1"]);
  afterAll(async () => {
    await s.cli(["delete", "ws", "--all", "--timeout", "30"]).catch(() => undefined);
    await s.stop();
  });

  async function waitFor(pred: (w: Ws) => boolean, ms = 60_000): Promise<Ws> {
    const deadline = Date.now() + ms;
    let last: Ws | undefined;
    while (Date.now() < deadline) {
      const r = await s.api("GET", `${PATH}/lab`);
      last = r.body as Ws;
      if (r.status === 200 && pred(last)) return last;
      await sleep(100);
    }
    throw new Error(`ws/lab: timed out; last status: ${JSON.stringify(last?.status)}\n${s.log.slice(-3000)}`);
  }

  const running = (w: Ws) => w.status?.phase === "Running" && !!w.status.replica?.ready;
  const ready = (w: Ws) => w.status?.conditions?.find((c) => c.type === "Ready");

  async function starts(w: Ws): Promise<string[]> {
    const res = await fetch(`http://${w.status!.replica!.host}:${w.status!.replica!.port}/starts.txt`);
    expect(res.status).toBe(200);
    return (await res.text()).trim().split("\n");
  }

  it("is preempted by a higher-priority job, says so while it waits, and runs again on the same home", async () => {
    await s.start();
    expect((await s.cli(["apply", "-f", "-"], { input: WORKSPACE })).code).toBe(0);
    const first = await waitFor(running);
    expect(await starts(first)).toHaveLength(1);
    const home = join(s.dataDir, "homes", "default", "lab", "starts.txt");

    // The job runs until the test lets it end: a file in its checkpoint dir (the sandbox lends it).
    const job = `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: big}
spec:
  command: [sh, -c, 'while [ ! -e "$LOOM_CHECKPOINT_DIR/release" ]; do sleep 0.2; done']
  resources: {gpu: 1}
  priority: 10
  terminationGracePeriodSeconds: 1
`;
    expect((await s.cli(["apply", "-f", "-"], { input: job })).code).toBe(0);
    const big = await s.waitFor("big", (j) => j.status?.phase === "Running", 60_000);

    // The job runs on the workspace's GPU: the workspace waits and says why.
    const waiting = await waitFor((w) => w.status?.phase !== "Running" && !w.status?.replica);
    expect(waiting.status?.phase).toBe("Pending");
    expect(waiting.status?.stoppedReason).toBe("Preempted");
    expect(ready(waiting)?.reason).toBe("Preempted");
    expect(ready(waiting)?.message).toMatch(
      /^preempted for default\/big \(priority 10 > 0\) in project default; it runs again once the scheduler places it \(its home is kept\)$/,
    );
    const events = await s.cli(["describe", "ws/lab"]);
    expect(events.stdout).toMatch(/Preempted.*preempted for default\/big/);
    const get = await s.cli(["get", "ws", "lab"]);
    expect(get.stdout).toMatch(/lab\s+Pending/);
    expect(readFileSync(home, "utf8").trim().split("\n")).toHaveLength(1);

    // The job ends: the workspace is placed again and starts on the same home.
    writeFileSync(join(s.dataDir, "workloads", big.metadata.uid, "checkpoint", "release"), "");
    await s.waitFor("big", (j) => j.status?.phase === "Succeeded", 60_000);
    const back = await waitFor(running);
    expect(back.status?.stoppedReason).toBeUndefined();
    expect(ready(back)?.reason).toBe("Ready");
    expect(await starts(back)).toHaveLength(2); // the first start's line is still there
  }, 240_000);
});

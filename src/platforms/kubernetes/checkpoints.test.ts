import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import {
  CHECKPOINT_MOUNT,
  CheckpointProbe,
  REPORT_LABEL,
  readCheckpoint,
  SEED_CONTAINER,
  seedCheckpoint,
  seedContainer,
  seededMark,
  seedPods,
} from "./checkpoints.js";
import type { KubeClient } from "./client.js";
import { LABELS as L, workloadLabels } from "./naming.js";
import type { Pod } from "./pods.js";
import { parseFrame, frame as wsFrame } from "./portforward.js";

// checkpoints.ts against a fake API server whose pods/exec runs the command for real on this
// machine (real tar, cat and sh), each pod's LOOM_CHECKPOINT_DIR a directory of its own: what
// moves through exec's channels is exactly what a kubelet would move.

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

const ref = { kind: "TrainingJob", project: "p", name: "train", uid: "copy-uid" };

function pod(
  name: string,
  worker: number,
  opts: {
    attempt?: number;
    uid?: string;
    seed?: "running" | "terminated";
    claim?: boolean;
    phase?: string;
  } = {},
): Pod {
  return {
    metadata: {
      name,
      namespace: "loom-p",
      labels: {
        ...workloadLabels({ ...ref, uid: opts.uid ?? ref.uid }),
        [L.attempt]: String(opts.attempt ?? 1),
        [L.worker]: String(worker),
        ...(worker === 0 ? { [REPORT_LABEL]: "true" } : {}),
      },
    },
    spec: {
      volumes: [
        opts.claim
          ? { name: "checkpoint", persistentVolumeClaim: { claimName: "c" } }
          : { name: "checkpoint", emptyDir: {} },
      ],
    } as Pod["spec"],
    status: {
      phase: opts.phase ?? (opts.seed === "running" ? "Pending" : "Running"),
      ...(opts.seed ? { initContainerStatuses: [{ name: SEED_CONTAINER, state: { [opts.seed]: {} } }] } : {}),
      containerStatuses: [
        { name: "worker", state: opts.seed === "running" ? { waiting: {} } : { running: {} } },
      ],
    } as unknown as Pod["status"],
  };
}

/** A frame on one exec channel (masked as a client's are: the reader unmasks either). */
function frame(channel: number, body: Buffer): Buffer {
  return wsFrame(0x2, Buffer.concat([Buffer.from([channel]), body]));
}

/** The fake API server: lists pods by label selector, runs execs in each pod's directory. */
function fakeCluster(pods: Pod[], dirs: Map<string, string>) {
  const calls: string[] = [];
  const client = {
    request: async (_method: string, path: string, opts?: { query?: Record<string, string> }) => {
      calls.push(`GET ${path}?${opts?.query?.labelSelector ?? ""}`);
      const ns = /namespaces\/([^/]+)\/pods$/.exec(path)?.[1];
      const [k, v] = (opts?.query?.labelSelector ?? "").split("=");
      return {
        items: pods.filter((p) => p.metadata.namespace === ns && (!k || p.metadata.labels?.[k] === v)),
      };
    },
    upgrade: async (path: string, query: Record<string, string | string[]>) => {
      const name = /pods\/([^/]+)\/exec$/.exec(path)![1]!;
      calls.push(`EXEC ${name} ${query.container} ${[query.command].flat().join(" ")}`);
      const dir = dirs.get(name)!;
      const command = [query.command].flat().map((a) => (a ?? "").replaceAll(CHECKPOINT_MOUNT, dir));
      const server = createServer();
      servers.push(server);
      await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
      const theirs = new Promise<Socket>((ok) => server.once("connection", ok));
      const ours = connect((server.address() as { port: number }).port, "127.0.0.1");
      await new Promise((ok) => ours.once("connect", ok));
      const kubelet = await theirs;
      const child = spawn(command[0]!, command.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
      let ended = false;
      child.on("error", () => {
        if (ended) return;
        ended = true;
        kubelet.write(
          frame(
            3,
            Buffer.from(
              JSON.stringify({
                status: "Failure",
                message: `exec: "${command[0]}": executable file not found in $PATH`,
              }),
            ),
          ),
        );
        kubelet.end();
      });
      let buf = Buffer.alloc(0);
      kubelet.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (let f = parseFrame(buf); f; f = parseFrame(buf)) {
          buf = buf.subarray(f.size);
          if (f.payload[0] === 0) child.stdin.write(f.payload.subarray(1));
        }
      });
      child.stdout.on("data", (d: Buffer) => kubelet.write(frame(1, d)));
      child.stderr.on("data", (d: Buffer) => kubelet.write(frame(2, d)));
      child.on("close", (code) => {
        if (ended) return;
        ended = true;
        const status =
          code === 0
            ? { status: "Success" }
            : { status: "Failure", message: `command terminated with non-zero exit code: ${code}` };
        kubelet.write(frame(3, Buffer.from(JSON.stringify(status))));
        kubelet.end();
      });
      return { socket: ours, head: Buffer.alloc(0), headers: {} };
    },
  } as unknown as KubeClient;
  return { client, calls };
}

const dirOf = () => mkdtempSync(join(tmpdir(), "loom-ckpt-pod-"));

describe("checkpoints through pods/exec", () => {
  it("reads worker 0's checkpoint of the latest attempt byte for byte, in the job's own namespace and by its uid only", async () => {
    const d0 = dirOf();
    mkdirSync(join(d0, "shards"));
    writeFileSync(join(d0, "loom.json"), '{"step": 40}');
    const weights = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 256));
    writeFileSync(join(d0, "shards", "w.pt"), weights);
    writeFileSync(join(d0, seededMark(ref.uid)), "");
    const old = dirOf();
    writeFileSync(join(old, "loom.json"), '{"step": 1}');
    const { client, calls } = fakeCluster(
      [
        pod("train-a1-w0", 0, { attempt: 1 }),
        pod("train-a2-w0", 0, { attempt: 2 }),
        pod("train-a2-w1", 1, { attempt: 2 }),
      ],
      new Map([
        ["train-a1-w0", old],
        ["train-a2-w0", d0],
      ]),
    );
    const files = await readCheckpoint(client, ref);
    expect([...files!.keys()].sort()).toEqual(["loom.json", "shards/w.pt"]);
    expect(files!.get("shards/w.pt")!.equals(weights)).toBe(true);
    expect(calls).toEqual([
      `GET /api/v1/namespaces/loom-p/pods?${L.uid}=copy-uid`,
      `EXEC train-a2-w0 worker tar -C ${CHECKPOINT_MOUNT} -cf - .`,
    ]);
  });

  it("refuses a checkpoint that links out of its directory (the member's files are untrusted); no running worker 0: nothing", async () => {
    const d0 = dirOf();
    writeFileSync(join(d0, "loom.json"), '{"step": 5}');
    symlinkSync("/etc/passwd", join(d0, "passwd"));
    const { client } = fakeCluster([pod("train-a1-w0", 0)], new Map([["train-a1-w0", d0]]));
    await expect(readCheckpoint(client, ref)).rejects.toThrow(/"\.\/passwd" is not a regular file/);
    const stopped = fakeCluster([pod("train-a1-w0", 0, { phase: "Succeeded" })], new Map());
    expect(await readCheckpoint(stopped.client, ref)).toBeUndefined();
  });

  it("another job's pods are never read or written: not in the same namespace, not another project's pod that copies the uid label", async () => {
    const theirs = dirOf();
    writeFileSync(join(theirs, "loom.json"), '{"step": 99}');
    // Project q's worker labels its pod with p's copy uid, hoping to be read (or seeded) for it.
    const impostor = pod("train-a1-w0", 0, { seed: "running" });
    impostor.metadata.namespace = "loom-q";
    const { client, calls } = fakeCluster(
      [
        pod("other-a1-w0", 0, { uid: "someone-else" }),
        pod("other-a1-w1", 1, { uid: "someone-else", seed: "running" }),
        impostor,
      ],
      new Map([
        ["other-a1-w0", theirs],
        ["train-a1-w0", theirs],
      ]),
    );
    expect(await readCheckpoint(client, ref)).toBeUndefined();
    // None of its own: it says its attempt's pods are still to come, and writes nowhere.
    expect(await seedCheckpoint(client, ref, new Map([["loom.json", Buffer.from("{}")]]))).toBe(1);
    expect(calls.filter((c) => c.startsWith("EXEC"))).toEqual([]);
  });

  it("seeds each waiting worker of the first attempt (worker 0 alone on a shared claim), then they go on", async () => {
    const files = new Map([
      ["loom.json", Buffer.from('{"step": 40}')],
      ["shards/w.pt", Buffer.from([0, 255, 1])],
    ]);
    const d0 = dirOf();
    const d1 = dirOf();
    const { client, calls } = fakeCluster(
      [pod("train-a1-w0", 0, { seed: "running" }), pod("train-a1-w1", 1, { seed: "running" })],
      new Map([
        ["train-a1-w0", d0],
        ["train-a1-w1", d1],
      ]),
    );
    expect(await seedCheckpoint(client, ref, files)).toBe(0);
    for (const d of [d0, d1]) {
      expect(readFileSync(join(d, "loom.json"), "utf8")).toBe('{"step": 40}');
      expect(readFileSync(join(d, "shards", "w.pt"))).toEqual(Buffer.from([0, 255, 1]));
      expect(existsSync(join(d, seededMark(ref.uid)))).toBe(true);
    }
    expect(calls.filter((c) => c.startsWith("EXEC")).map((c) => c.split(" ").slice(1, 3).join(" "))).toEqual([
      `train-a1-w0 ${SEED_CONTAINER}`,
      `train-a1-w1 ${SEED_CONTAINER}`,
    ]);

    const shared = dirOf();
    const claim = fakeCluster(
      [
        pod("train-a1-w0", 0, { seed: "running", claim: true }),
        pod("train-a1-w1", 1, { seed: "running", claim: true }),
      ],
      new Map([["train-a1-w0", shared]]),
    );
    // Worker 1 reads the same claim: it still waits (for the mark it will see), so 1.
    expect(await seedCheckpoint(claim.client, ref, files)).toBe(1);
    expect(claim.calls.filter((c) => c.startsWith("EXEC"))).toHaveLength(1);
    expect(existsSync(join(shared, seededMark(ref.uid)))).toBe(true);

    // Not started yet: nothing written, and it says they wait.
    const early = fakeCluster([pod("train-a1-w0", 0, { phase: "Pending" })], new Map());
    expect(await seedCheckpoint(early.client, ref, files)).toBe(1);
    // Done (the seed container ended): nothing more to do.
    const done = fakeCluster([pod("train-a1-w0", 0, { seed: "terminated" })], new Map());
    expect(await seedCheckpoint(done.client, ref, files)).toBe(0);
    expect(done.calls.filter((c) => c.startsWith("EXEC"))).toEqual([]);
  });

  it("a job back on its control plane's own cluster: seeds only the named attempt's waiting pods, with a mark of that attempt", async () => {
    const files = new Map([["loom.json", Buffer.from('{"step": 9}')]]);
    const d3 = dirOf();
    // The claim keeps the mark of an earlier seed (attempt 1's): attempt 3 waits for its own.
    writeFileSync(join(d3, seededMark(ref.uid)), "");
    const { client, calls } = fakeCluster(
      [pod("train-a1-w0", 0, { seed: "terminated" }), pod("train-a3-w0", 0, { attempt: 3, seed: "running" })],
      new Map([["train-a3-w0", d3]]),
    );
    expect(seededMark(ref.uid, 3)).not.toBe(seededMark(ref.uid));
    expect(await seedPods(client, ref, files, 3)).toEqual({ waiting: 0, written: 1 });
    expect(readFileSync(join(d3, "loom.json"), "utf8")).toBe('{"step": 9}');
    expect(existsSync(join(d3, seededMark(ref.uid, 3)))).toBe(true);
    expect(calls.filter((c) => c.startsWith("EXEC")).map((c) => c.split(" ")[1])).toEqual(["train-a3-w0"]);
    // Its init container waits for that attempt's mark, not the one the claim already has.
    const init = seedContainer(ref.uid, { image: "python:3.11-slim", securityContext: {} }, 3);
    expect(init.command[2]).toContain(`${CHECKPOINT_MOUNT}/${seededMark(ref.uid, 3)} `);
    // Not made yet: they will wait for it.
    expect(await seedCheckpoint(client, ref, files, 4)).toBe(1);
    // Done (the seed container ended): nothing written, and nothing waits.
    const done = fakeCluster([pod("train-a3-w0", 0, { attempt: 3, seed: "terminated" })], new Map());
    expect(await seedPods(done.client, ref, files, 3)).toEqual({ waiting: 0, written: 0 });
  });

  it("the operator reports worker 0's loom.json step, wakes the job only when it changes, and gives up on an image without cat", async () => {
    const d0 = dirOf();
    // A job whose checkpoint nobody reads (no REPORT_LABEL) is never asked.
    const quiet = pod("quiet-a1-w0", 0, { uid: "quiet" });
    delete quiet.metadata.labels![REPORT_LABEL];
    const pods = [pod("train-a1-w0", 0), pod("train-a1-w1", 1), quiet];
    const { client, calls } = fakeCluster(pods, new Map([["train-a1-w0", d0]]));
    const woken: string[] = [];
    const probe = new CheckpointProbe({
      client,
      log: pino({ level: "silent" }),
      pods: async () => pods,
      onChange: (r) => woken.push(r.uid),
      now: () => new Date("2026-12-07T00:00:00Z"),
    });
    await probe.probe();
    expect(probe.report(ref.uid)).toBeUndefined(); // no loom.json yet
    writeFileSync(join(d0, "loom.json"), '{"step": 15}');
    await probe.probe();
    await probe.probe();
    expect(probe.report(ref.uid)).toEqual({ time: "2026-12-07T00:00:00.000Z", step: 15 });
    expect(woken).toEqual([ref.uid]);
    // Worker 1 is never asked (worker 0 speaks for the job), nor the quiet job.
    expect(
      calls.filter((c) => c.startsWith("EXEC")).every((c) => c.startsWith("EXEC train-a1-w0 worker cat")),
    ).toBe(true);

    const nocat = fakeCluster([pod("slim-a1-w0", 0, { uid: "slim" })], new Map([["slim-a1-w0", dirOf()]]));
    const slim = new CheckpointProbe({
      client: {
        ...nocat.client,
        upgrade: (path: string, q: Record<string, string | string[]>, h: Record<string, string>) =>
          nocat.client.upgrade(path, { ...q, command: ["no-such-cat"] }, h),
      } as unknown as KubeClient,
      log: pino({ level: "silent" }),
      pods: async () => [pod("slim-a1-w0", 0, { uid: "slim" })],
      onChange: () => {},
    });
    await slim.probe();
    await slim.probe();
    expect(slim.reads).toBe(1);
  });

  it("a seeded worker's init container waits for the control plane's mark, as the restricted worker it runs as", async () => {
    const c = seedContainer(ref.uid, { image: "img", securityContext: { runAsNonRoot: true } });
    expect(c).toMatchObject({
      name: SEED_CONTAINER,
      image: "img",
      securityContext: { runAsNonRoot: true },
      volumeMounts: [{ name: "checkpoint", mountPath: CHECKPOINT_MOUNT }],
    });
    const dir = dirOf();
    const script = c.command[2]!.replaceAll(CHECKPOINT_MOUNT, dir);
    const child = spawn("sh", ["-c", script]);
    const exited = new Promise<number | null>((ok) => child.on("close", ok));
    await new Promise((ok) => setTimeout(ok, 300));
    expect(child.exitCode).toBeNull(); // still waiting
    writeFileSync(join(dir, seededMark(ref.uid)), "");
    expect(await exited).toBe(0);
  });
});

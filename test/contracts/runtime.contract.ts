import type { Readable } from "node:stream";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type {
  GangObservation,
  GangSpec,
  RevisionSpec,
  Runtime,
  WorkerSpec,
  WorkloadRef,
} from "../../src/ports/runtime.js";
import { eventually } from "./poll.js";

/**
 * The Runtime contract (src/ports/runtime.ts): one suite of cases every platform's runtime must
 * pass, in the style of hono's router `common.case.test.ts`. Differences a platform legitimately
 * has, or cannot show under test, are named options below, never silent branches.
 */

/** What a worker should do; the fixture turns it into this platform's worker fields. */
export type WorkerBehaviour =
  /** Writes `output` (if any) and exits with `code` shortly after it starts. */
  | { exit: number; output?: string }
  /** Runs until it is stopped. */
  | { runs: true }
  /** A model server: answers HTTP 200 on every path at $PORT until it is stopped. */
  | { serves: true };

export interface RuntimeFixture {
  /**
   * A new runtime instance over the platform's shared state (the same data dir; the same
   * cluster). A second instance must see what the first started: that is re-adoption.
   */
  newRuntime(): Promise<Runtime>;
  /** A workload identity the platform accepts (on Kubernetes an object exists to own the pods). */
  newRef(name: string): Promise<WorkloadRef>;
  /** The project the refs and revisions live in. */
  project: string;
  /** This platform's worker fields for a behaviour. */
  worker(b: WorkerBehaviour): Pick<WorkerSpec, "command" | "env" | "annotations">;
  /**
   * Where replicas of a revision wait for Loom's scheduler to place them (Kubernetes: model pods
   * carry schedulerName loom), the test plays the scheduler: places what waits. Absent where the
   * runtime places them itself.
   */
  placeReplicas?(rt: Runtime): Promise<void>;
  /** Removes everything the fixture made and closes its runtimes. */
  close(): Promise<void>;
}

export interface RuntimeContractOptions {
  /**
   * Whether logs() returns what the worker wrote. kwok runs no container: a pod's log is whatever
   * file a kwok Logs object names (by default one line saying it is simulated), so there the
   * suite checks only that the log of a finished worker can be read to its end.
   */
  workerOutput: boolean;
  /**
   * What remains of an attempt once stop() returned true. "kept": the attempt stays observable
   * with its workers' exits (embedded: state.json records them); "removed": stopping deletes the
   * workers (Kubernetes deletes the pods), so observe() returns undefined.
   */
  stoppedAttempt: "kept" | "removed";
  /**
   * How endpoints() names a gang's workers. "loopback-ports": one host, ports the kernel says are
   * free now, distinct across the gang and picked afresh per call (embedded: every worker is on
   * this machine). "pod-hostnames": a distinct stable host per worker and the same fixed ports
   * (Kubernetes: each pod has its own IP and a name behind a headless Service), so two attempts
   * get the same endpoints: attempts never overlap.
   */
  endpoints: "loopback-ports" | "pod-hostnames";
  /**
   * Which port a revision's replicas listen on. "spec": the revision's port on every replica
   * (Kubernetes: each pod has its own IP); "per-replica": a free loopback port each (embedded:
   * every replica is on this machine).
   */
  replicaPorts: "spec" | "per-replica";
}

async function readAll(stream: Readable): Promise<string> {
  let out = "";
  for await (const chunk of stream) out += chunk.toString();
  return out;
}

export function runtimeContract(
  platform: string,
  open: () => Promise<RuntimeFixture>,
  options: RuntimeContractOptions,
): void {
  describe(`Runtime contract: ${platform}`, () => {
    let fx: RuntimeFixture;
    let rt: Runtime;
    let node: string;
    let refs: WorkloadRef[];
    let seq = 0;
    const unique = (base: string) => `${base}-${++seq}`;

    /** A gang of `n` workers, all behaving alike, placed on the platform's first node. */
    function gang(ref: WorkloadRef, b: WorkerBehaviour, n = 2, attempt = 1): GangSpec {
      return {
        ref,
        attempt,
        workers: Array.from({ length: n }, (_, index) => ({
          index,
          ...fx.worker(b),
          env: { ...fx.worker(b).env },
          allocation: { node, cpuMillis: 100, memoryBytes: 64 * 2 ** 20, gpus: [] },
        })),
      };
    }

    async function newRef(base: string): Promise<WorkloadRef> {
      const ref = await fx.newRef(unique(base));
      refs.push(ref);
      return ref;
    }

    /** Observes until every worker of the attempt satisfies `pred`. */
    function workersAre(
      r: Runtime,
      ref: WorkloadRef,
      what: string,
      pred: (o: GangObservation) => boolean,
    ): Promise<GangObservation> {
      return eventually(`${ref.name}: ${what}`, async () => {
        const o = await r.observe(ref);
        return o && pred(o) ? o : undefined;
      });
    }

    const allRunning = (n: number) => (o: GangObservation) =>
      o.workers.length === n && o.workers.every((w) => w.state === "Running");
    const allDone = (n: number) => (o: GangObservation) =>
      o.workers.length === n && o.workers.every((w) => w.state !== "Running");

    /** Stops the workload through `r`, calling stop() until it says nothing is left alive. */
    function stopped(r: Runtime, ref: WorkloadRef, grace = 1): Promise<true> {
      return eventually(`${ref.name} to stop`, async () => (await r.stop(ref, grace)) || undefined);
    }

    beforeAll(async () => {
      fx = await open();
      rt = await fx.newRuntime();
      const nodes = await rt.nodes();
      expect(nodes.length).toBeGreaterThan(0);
      node = nodes[0]!.name;
    }, 180_000);

    beforeEach(() => {
      refs = [];
    });

    afterEach(async () => {
      for (const ref of refs) await rt.release(ref);
    }, 120_000);

    afterAll(async () => {
      await fx?.close();
    }, 180_000);

    it("reports nodes with a name and capacity", async () => {
      const nodes = await rt.nodes();
      for (const n of nodes) {
        expect(n.name).not.toBe("");
        expect(n.cpuMillis).toBeGreaterThan(0);
        expect(n.memoryBytes).toBeGreaterThan(0);
        expect(Array.isArray(n.gpus)).toBe(true);
      }
    });

    it("starts a gang, idempotently: a second start of the same attempt adds no worker", async () => {
      const ref = await newRef("idem");
      const changes: string[] = [];
      rt.onChange((r) => changes.push(r.uid));
      const spec = gang(ref, { runs: true });
      await rt.start(spec);
      await rt.start(spec);
      const o = await workersAre(rt, ref, "both running", allRunning(2));
      expect(o.attempt).toBe(1);
      expect(o.stopping).toBe(false);
      expect(o.workers.map((w) => w.index)).toEqual([0, 1]);
      // An older attempt's start is a no-op too.
      await rt.start({ ...spec, attempt: 0 });
      const again = (await rt.observe(ref))!;
      expect(again.attempt).toBe(1);
      expect(again.workers).toHaveLength(2);
      expect((await rt.list()).filter((r) => r.uid === ref.uid)).toEqual([ref]);
      await eventually("a change announced for the gang", () => changes.includes(ref.uid));
    });

    it("observes a worker that succeeds: state Succeeded, exit code 0, finish time", async () => {
      const ref = await newRef("ok");
      await rt.start(gang(ref, { exit: 0 }));
      const o = await workersAre(rt, ref, "both finished", allDone(2));
      for (const w of o.workers) {
        expect(w).toMatchObject({ state: "Succeeded", exitCode: 0 });
        expect(w.finishTime).toBeDefined();
      }
    });

    it("observes a worker that fails: state Failed with its exit code", async () => {
      const ref = await newRef("fail");
      await rt.start(gang(ref, { exit: 3 }, 1));
      const o = await workersAre(rt, ref, "the worker finished", allDone(1));
      expect(o.workers).toEqual([expect.objectContaining({ index: 0, state: "Failed", exitCode: 3 })]);
      expect(o.stopping).toBe(false);
    });

    it(
      options.workerOutput
        ? "serves a finished worker's log, per attempt"
        : "serves a finished worker's log to its end (workerOutput: false, the platform writes it)",
      async () => {
        const ref = await newRef("logs");
        await rt.start(gang(ref, { exit: 0, output: "hello from 0\n" }, 1));
        await workersAre(rt, ref, "the worker finished", allDone(1));
        const text = await readAll(await rt.logs(ref, { worker: 0 }));
        const explicit = await readAll(await rt.logs(ref, { worker: 0, attempt: 1 }));
        if (options.workerOutput) {
          expect(text).toBe("hello from 0\n");
          expect(explicit).toBe("hello from 0\n");
          // Following a finished worker ends too.
          expect(await readAll(await rt.logs(ref, { worker: 0, follow: true }))).toBe("hello from 0\n");
        } else {
          expect(explicit).toBe(text);
        }
      },
    );

    it("stops with grace: false while workers live, then true; nothing stays Running", async () => {
      const ref = await newRef("stop");
      await rt.start(gang(ref, { runs: true }));
      await workersAre(rt, ref, "both running", allRunning(2));
      expect(await rt.stop(ref, 5)).toBe(false);
      await stopped(rt, ref, 5);
      // Once stop() says so, a new attempt may start (attempts never overlap).
      const after = await rt.observe(ref);
      if (options.stoppedAttempt === "kept") {
        expect(after?.attempt).toBe(1);
        expect(after?.stopping).toBe(false);
        expect(after?.workers).toHaveLength(2);
        for (const w of after!.workers) expect(w.state).not.toBe("Running");
      } else {
        expect(after).toBeUndefined();
      }
      // Stopping what is stopped is done at once.
      expect(await rt.stop(ref, 5)).toBe(true);
    });

    it("stop() of a workload the runtime never ran returns true", async () => {
      const ref = await newRef("never");
      expect(await rt.observe(ref)).toBeUndefined();
      expect(await rt.stop(ref, 1)).toBe(true);
    });

    it("refuses a new attempt while the previous one has live workers, and starts it once stopped", async () => {
      const ref = await newRef("attempts");
      await rt.start(gang(ref, { runs: true }, 1));
      await workersAre(rt, ref, "attempt 1 running", allRunning(1));
      await expect(rt.start(gang(ref, { exit: 0 }, 1, 2))).rejects.toThrow(/live/);
      expect((await rt.observe(ref))!.attempt).toBe(1);
      await stopped(rt, ref, 0);
      await rt.start(gang(ref, { exit: 0 }, 1, 2));
      const o = await workersAre(rt, ref, "attempt 2 finished", (x) => x.attempt === 2 && allDone(1)(x));
      expect(o.workers[0]).toMatchObject({ state: "Succeeded", exitCode: 0 });
    });

    it("release() forgets the workload: observe() undefined, not listed, stop() true", async () => {
      const ref = await newRef("release");
      await rt.start(gang(ref, { runs: true }));
      await workersAre(rt, ref, "both running", allRunning(2));
      expect((await rt.list()).map((r) => r.uid)).toContain(ref.uid);
      await rt.release(ref);
      await eventually("the released workload to be gone", async () => (await rt.observe(ref)) === undefined);
      await eventually("the released workload to be unlisted", async () =>
        (await rt.list()).every((r) => r.uid !== ref.uid),
      );
      expect(await rt.stop(ref, 1)).toBe(true);
      // Releasing again is harmless.
      await rt.release(ref);
    });

    it("re-adopts: a new runtime on the same state sees the running gang and can stop it", async () => {
      const first = await fx.newRuntime();
      const ref = await newRef("adopt");
      await first.start(gang(ref, { runs: true }));
      await workersAre(first, ref, "both running", allRunning(2));
      await first.close();
      const second = await fx.newRuntime();
      expect((await second.list()).filter((r) => r.uid === ref.uid)).toEqual([ref]);
      const o = await workersAre(second, ref, "seen running by the new runtime", allRunning(2));
      expect(o.attempt).toBe(1);
      // Idempotent across instances: starting the same attempt again adds nothing.
      await second.start(gang(ref, { runs: true }));
      expect((await second.observe(ref))!.workers).toHaveLength(2);
      await stopped(second, ref, 1);
      await second.release(ref);
    });

    it(`gives each worker of an attempt its own endpoint (${options.endpoints})`, async () => {
      const ref = await newRef("ep");
      const a1 = await rt.endpoints(ref, 1, 3, 2);
      const a2 = await rt.endpoints(ref, 2, 3, 2);
      for (const eps of [a1, a2]) {
        expect(eps).toHaveLength(3);
        for (const e of eps) {
          expect(e.host).not.toBe("");
          expect(e.ports).toHaveLength(2);
          for (const p of e.ports) expect(Number.isInteger(p) && p > 0 && p < 65536).toBe(true);
          expect(new Set(e.ports).size).toBe(2);
        }
        const pairs = eps.flatMap((e) => e.ports.map((p) => `${e.host}:${p}`));
        expect(new Set(pairs).size).toBe(6);
      }
      if (options.endpoints === "pod-hostnames") {
        expect(new Set(a1.map((e) => e.host)).size).toBe(3);
        expect(a2).toEqual(a1);
      } else {
        expect(new Set(a1.map((e) => e.host)).size).toBe(1);
        expect(new Set(a1.flatMap((e) => e.ports)).size).toBe(6);
      }
      expect(await rt.endpoints(ref, 1, 0, 2)).toEqual([]);
    });

    describe("serving (RevisionRuntime), where the platform has it", () => {
      let service: WorkloadRef;
      const revision = () => `${service.name}-r1`;
      const spec = (replicas: number): RevisionSpec => ({
        service,
        revision: revision(),
        replicas,
        worker: {
          ...fx.worker({ serves: true }),
          allocation: { node, cpuMillis: 100, memoryBytes: 64 * 2 ** 20, gpus: [] },
        },
        port: 8080,
        readinessPath: "/health",
        readinessTimeoutSeconds: 60,
      });
      /** Observes the revision (placing waiting replicas, where the test plays the scheduler). */
      async function replicasAre(what: string, pred: (n: number, ready: number) => boolean) {
        return eventually(`revision ${revision()}: ${what}`, async () => {
          await fx.placeReplicas?.(rt);
          const o = await rt.serving!.observeRevision(service, revision());
          const ready = o.replicas.filter((r) => r.ready).length;
          return pred(o.replicas.length, ready) ? o : undefined;
        });
      }

      it(`capability: whether ${platform} has runtime.serving is checked, not assumed`, () => {
        // A capability check, not a silent skip: the output says which platform lacks it.
        console.info(
          `[runtime contract] ${platform}: runtime.serving is ${rt.serving ? "present" : "ABSENT: the revision cases below are skipped"}`,
        );
        expect(rt.serving === undefined || typeof rt.serving.applyRevision === "function").toBe(true);
      });

      it("applies a revision idempotently, scales it, observes ready replicas on its port, and deletes it", async (ctx) => {
        if (!rt.serving) {
          console.info(`[runtime contract] ${platform}: no runtime.serving; revision case skipped`);
          ctx.skip();
          return;
        }
        // The service's ref is only an owner to the runtime: any workload the fixture can make.
        service = await newRef("svc");
        await rt.serving.applyRevision(spec(2));
        await rt.serving.applyRevision(spec(2));
        const two = await replicasAre("2 ready replicas", (n, ready) => n === 2 && ready === 2);
        if (options.replicaPorts === "per-replica")
          expect(new Set(two.replicas.map((r) => `${r.host}:${r.port}`)).size).toBe(2);
        for (const r of two.replicas) {
          if (options.replicaPorts === "spec") expect(r.port).toBe(8080);
          else expect(r.port).toBeGreaterThan(0);
          expect(r.id).not.toBe("");
          expect(Number.isNaN(Date.parse(r.startedAt))).toBe(false);
        }
        expect(new Set(two.replicas.map((r) => r.id)).size).toBe(2);
        await rt.serving.applyRevision(spec(1));
        await replicasAre("scaled to 1", (n, ready) => n === 1 && ready === 1);
        await rt.serving.deleteRevision(service, revision());
        await replicasAre("no replica left", (n) => n === 0);
      });

      it("deleting a revision that is already gone is not an error", async (ctx) => {
        if (!rt.serving) {
          console.info(`[runtime contract] ${platform}: no runtime.serving; revision case skipped`);
          ctx.skip();
          return;
        }
        service = await newRef("svcgone");
        await rt.serving.applyRevision(spec(1));
        await rt.serving.deleteRevision(service, revision());
        await rt.serving.deleteRevision(service, revision());
        await replicasAre("no replica left", (n) => n === 0);
      });
    });
  });
}

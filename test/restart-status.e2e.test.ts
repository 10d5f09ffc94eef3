import { type ChildProcess, spawn } from "node:child_process";
import { availableParallelism } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Job, LoomProcess } from "./helpers.js";

/** Gangs killed side by side; each lane replaces its job once the job's restarts are used up. */
const LANES = Number(process.env.LOOM_TEST_RESTART_LANES ?? 6);
/** Kills in all, across the lanes. */
const KILLS = Number(process.env.LOOM_TEST_RESTART_KILLS ?? 240);
/**
 * Restarts per job: the first restarts at once (the case the issue reported), the second after
 * the 1 s backoff. Then the job is replaced by a fresh one.
 */
const RESTARTS_PER_JOB = 2;
/** How long status may take to show the new attempt running: a bound on waiting, not a timing. */
const BOUND_MS = 30_000;
/** The whole test's bound, larger for heavier runs (LOOM_TEST_RESTART_KILLS): not a timing. */
const TEST_MS = Math.max(300_000, KILLS * 1500);

/**
 * After a worker dies, status follows the runtime: the next attempt, its workers Running. Many
 * gangs are killed at random over and over while every core is busy, so the orderings a quiet
 * machine never shows (a worker's exit heard while the gang is being stopped or started, status
 * writes racing the watch that feeds the cache) come up.
 */
describe("status after a restart (embedded, under a CPU hog)", () => {
  const loom = new LoomProcess();
  const hogs: ChildProcess[] = [];
  beforeAll(async () => {
    await loom.start();
    // LOOM_TEST_RESTART_HOGS: more hogs than cores, for the load of a full-suite run.
    const count = Number(process.env.LOOM_TEST_RESTART_HOGS ?? availableParallelism());
    for (let i = 0; i < count; i++)
      hogs.push(spawn("/bin/sh", ["-c", "while :; do :; done"], { stdio: "ignore" }));
  });
  afterAll(async () => {
    for (const h of hogs) h.kill("SIGKILL");
    await loom.stop();
  });

  it(`reaches the new attempt with every worker Running after each of ${KILLS} random worker kills`, {
    timeout: TEST_MS,
  }, async () => {
    let kills = 0;
    const stuck: string[] = [];
    const last = new Map<string, Job["status"]>();
    const lane = async (n: number) => {
      for (let generation = 0; kills < KILLS && stuck.length === 0; generation++) {
        const name = `gang-${n}-${generation}`;
        await create(name);
        let job = await waitRunning(name, 1);
        if (!job) stuck.push(`${name} never ran: ${await story(name)}`);
        for (let restart = 1; restart <= RESTARTS_PER_JOB && kills < KILLS && job; restart++) {
          const victim = job.status!.workers![Math.floor(Math.random() * 2)]!;
          kills++;
          try {
            // The worker's process, or its whole process group as bench:training (b) does.
            process.kill(Math.random() < 0.5 ? victim.pid! : -victim.pid!, "SIGKILL");
          } catch {
            // Gone already: nothing was killed, the gang must still run this attempt.
          }
          job = await waitRunning(name, job.status!.attempts! + 1);
          if (!job)
            stuck.push(
              `${name} after killing worker ${victim.index} (pid ${victim.pid}) of attempt ${restart}: ${await story(name)}`,
            );
        }
        await loom.api("DELETE", `/apis/loom.dev/v1alpha1/projects/default/trainingjobs/${name}`);
      }
    };
    /**
     * What tells which worker of which attempt failed and why: the job's status, its events, and
     * the server's log lines about it.
     */
    const story = async (name: string): Promise<string> => {
      const events = await loom.api(
        "GET",
        `/apis/loom.dev/v1alpha1/projects/default/events?kind=TrainingJob&name=${name}&limit=100`,
      );
      const items = (events.body as { items?: { reason?: string; message?: string }[] }).items ?? [];
      const lines = loom.log.split("\n").filter((l) => l.includes(`"${name}"`));
      return [
        `status ${JSON.stringify(last.get(name))}`,
        "events:",
        ...items.map((e) => `  ${e.reason}: ${e.message}`),
        "server log:",
        ...lines.slice(-60).map((l) => `  ${l}`),
      ].join("\n");
    };
    /** The job once status shows `attempt` with both workers Running; undefined past the bound. */
    const waitRunning = async (name: string, attempt: number): Promise<Job | undefined> => {
      const deadline = Date.now() + BOUND_MS;
      while (Date.now() < deadline) {
        const job = await loom.job(name);
        last.set(name, job.status);
        const workers = job.status?.workers ?? [];
        if (
          job.status?.attempts === attempt &&
          job.status.phase === "Running" &&
          workers.length === 2 &&
          workers.every((w) => w.state === "Running" && w.pid !== undefined)
        )
          return job;
        if ((job.status?.attempts ?? 0) > attempt) break; // an attempt too many: a worker lost
        await sleep(50);
      }
      return undefined;
    };
    const create = async (name: string) => {
      const r = await loom.api("POST", "/apis/loom.dev/v1alpha1/projects/default/trainingjobs", {
        apiVersion: "loom.dev/v1alpha1",
        kind: "TrainingJob",
        metadata: { name },
        spec: {
          command: ["sleep", "600"],
          workers: 2,
          failurePolicy: { maxRestarts: RESTARTS_PER_JOB },
          terminationGracePeriodSeconds: 5,
        },
      });
      expect(r.status).toBe(201);
    };
    await Promise.all(Array.from({ length: LANES }, (_, n) => lane(n)));
    expect(stuck).toEqual([]);
    expect(kills).toBeGreaterThanOrEqual(KILLS);
  });
});

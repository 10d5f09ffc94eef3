import { readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { alive, jobYaml, LoomProcess } from "./helpers.js";
import { foundationScenarios } from "./scenarios.js";

/** The foundation's scenarios, driven through the real CLI against a real `loom up`. */
describe("TrainingJob end to end (embedded)", () => {
  const loom = new LoomProcess();
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());

  it("runs examples/hello to Succeeded and shows its output", async () => {
    const applied = await loom.cli(["apply", "-f", "examples/hello/"]);
    expect(applied.stderr).toBe("");
    expect(applied.stdout).toContain("trainingjob.loom.dev/hello created");
    const job = await loom.waitFor("hello", (j) => j.status?.phase === "Succeeded", 15_000);
    expect(job.status?.workers?.[0]?.exitCode).toBe(0);
    const got = await loom.cli(["get", "tj", "hello", "-o", "json"]);
    expect(got.code).toBe(0);
    expect(JSON.parse(got.stdout).status.phase).toBe("Succeeded");
    const logs = await loom.cli(["logs", "tj/hello"]);
    expect(logs.code).toBe(0);
    // Every line prefixed, a one-worker job's too (as the README says); the kind may be left off.
    expect(logs.stdout).toContain("[worker 0] hello from loom: worker 0 of 1, attempt 1");
    expect((await loom.cli(["logs", "hello"])).stdout).toBe(logs.stdout);
    // Re-applying an unchanged manifest is a no-op, as with kubectl.
    expect((await loom.cli(["apply", "-f", "examples/hello/"])).stdout).toContain("hello unchanged");
  });

  it("restarts a failing job maxRestarts times, then fails naming the exit code and attempts", async () => {
    const yaml = jobYaml(
      "exit3",
      ["sh", "-c", "echo attempt $LOOM_ATTEMPT; exit 3"],
      "  failurePolicy:\n    maxRestarts: 2\n",
    );
    expect((await loom.cli(["apply", "-f", "-"], { input: yaml })).code).toBe(0);
    const job = await loom.waitFor("exit3", (j) => j.status?.phase === "Failed", 30_000);
    expect(job.status?.attempts).toBe(3);
    const failed = job.status?.conditions?.find((c) => c.type === "Failed");
    expect(failed?.status).toBe("True");
    expect(failed?.message).toContain("exited with code 3");
    expect(failed?.message).toContain("attempt 3 of 3");
    // Each attempt has its own log; the last one is shown by default.
    expect((await loom.cli(["logs", "tj/exit3"])).stdout).toBe("[worker 0] attempt 3\n");
    expect((await loom.cli(["logs", "tj/exit3", "--attempt", "1"])).stdout).toBe("[worker 0] attempt 1\n");
    const described = await loom.cli(["describe", "tj", "exit3"]);
    expect(described.stdout).toMatch(/WorkerFailed .*exited with code 3 on attempt 1 of 3/);
  });

  it("delete stops a running job's whole process tree within the grace period", async () => {
    // The job runs in a PID namespace of its own (the sandbox): its pids mean nothing here, so
    // its processes are found on the host by their unusual arguments.
    const yaml = jobYaml(
      "tree",
      ["sh", "-c", "sleep 3001 & sleep 3002 & wait"],
      "  terminationGracePeriodSeconds: 5\n",
    );
    await loom.cli(["apply", "-f", "-"], { input: yaml });
    await loom.waitFor("tree", (j) => j.status?.workers?.[0]?.state === "Running");
    const sleepers = () => processesWithArgs(["sleep", "3001"]).concat(processesWithArgs(["sleep", "3002"]));
    for (let i = 0; i < 50 && sleepers().length < 2; i++) await sleep(100);
    const pids = sleepers();
    expect(pids).toHaveLength(2);
    const started = Date.now();
    const del = await loom.cli(["delete", "tj", "tree"]);
    expect(del.code).toBe(0);
    expect(del.stdout).toContain("trainingjob.loom.dev/tree deleted");
    expect(Date.now() - started).toBeLessThan(5_000 + 3_000);
    expect(pids.filter(alive)).toEqual([]);
    expect(sleepers()).toEqual([]);
    expect((await loom.cli(["get", "tj", "tree"])).code).not.toBe(0);
  });

  it("a worker that ignores SIGTERM is killed once the grace period is over", async () => {
    const yaml = jobYaml(
      "stubborn",
      ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
      "  terminationGracePeriodSeconds: 1\n",
    );
    await loom.cli(["apply", "-f", "-"], { input: yaml });
    const job = await loom.waitFor("stubborn", (j) => j.status?.workers?.[0]?.state === "Running");
    const pid = job.status!.workers![0]!.pid!;
    const started = Date.now();
    expect((await loom.cli(["delete", "tj", "stubborn"])).code).toBe(0);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(900);
    expect(alive(pid)).toBe(false);
  });

  it("rejects bad manifests with the field named, a non-zero exit, and stores nothing", async () => {
    const cases: { input: string; expect: RegExp }[] = [
      { input: "apiVersion: loom.dev/v1alpha1\nkind: [TrainingJob\n", expect: /invalid YAML/ },
      {
        input: "apiVersion: loom.dev/v1alpha1\nkind: Widget\nmetadata: {name: bad1}\n",
        expect: /unknown kind "Widget"/,
      },
      {
        input: "apiVersion: loom.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: bad2}\nspec: {}\n",
        expect: /spec\.command: required/,
      },
      { input: jobYaml("bad3", ["true"], "  workers: 0\n"), expect: /spec\.workers: must be at least 1/ },
      {
        input: jobYaml("bad4", ["true"], "  workers: {min: 4, max: 2}\n"),
        expect: /spec\.workers\.min: min must not exceed max/,
      },
      { input: jobYaml("bad5", ["true"], "  resources: {cpu: lots}\n"), expect: /spec\.resources\.cpu/ },
      { input: jobYaml("Bad_Name", ["true"]), expect: /metadata\.name/ },
    ];
    for (const c of cases) {
      const r = await loom.cli(["apply", "-f", "-"], { input: c.input });
      expect(r.code, c.input).not.toBe(0);
      expect(r.stderr, c.input).toMatch(c.expect);
      expect(r.stderr, c.input).not.toMatch(/\n\s+at /); // no stack trace
    }
    // A good document next to a bad one: nothing is applied.
    const mixed = `${jobYaml("good-one", ["true"])}---\n${jobYaml("bad6", ["true"], "  workers: 0\n")}`;
    const r = await loom.cli(["apply", "-f", "-"], { input: mixed });
    expect(r.code).not.toBe(0);
    const list = await loom.cli(["get", "tj", "-o", "name"]);
    for (const n of ["bad1", "bad2", "bad3", "bad4", "bad5", "good-one", "bad6"])
      expect(list.stdout).not.toContain(`/${n}\n`);
  });

  it("answers 401 without a token or with a wrong one, over REST and through the CLI", async () => {
    const path = "/apis/loom.dev/v1alpha1/projects/default/trainingjobs";
    expect((await loom.api("GET", path, undefined, null)).status).toBe(401);
    const wrong = await loom.api("GET", path, undefined, "not-a-token");
    expect(wrong.status).toBe(401);
    expect((wrong.body as { reason: string }).reason).toBe("Unauthorized");
    expect((await loom.api("GET", "/healthz", undefined, null)).status).toBe(200);
    const cli = await loom.cli(["get", "tj"], { env: { LOOM_TOKEN: "wrong" } });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/unauthorized/);
  });

  it("stores all of 100 concurrent applies and stays responsive", async () => {
    const applies = Array.from({ length: 100 }, (_, i) =>
      loom.cli(["apply", "-f", "-"], { input: jobYaml(`many-${i}`, ["true"]) }),
    );
    // While 100 CLIs hammer it, the server still answers health checks.
    const probes: number[] = [];
    const probing = (async () => {
      for (let i = 0; i < 20; i++) {
        const t = Date.now();
        const r = await loom.api("GET", "/healthz", undefined, null);
        if (r.status === 200) probes.push(Date.now() - t);
        await sleep(100);
      }
    })();
    const results = await Promise.all(applies);
    await probing;
    expect(results.filter((r) => r.code !== 0).map((r) => r.stderr)).toEqual([]);
    expect(probes.length).toBe(20);
    const list = await loom.api(
      "GET",
      "/apis/loom.dev/v1alpha1/projects/default/trainingjobs?labelSelector=",
    );
    const names = new Set(
      (list.body as { items: { metadata: { name: string } }[] }).items.map((i) => i.metadata.name),
    );
    for (let i = 0; i < 100; i++) expect(names.has(`many-${i}`)).toBe(true);
    // They all run to completion.
    for (let i = 0; i < 100; i += 9)
      await loom.waitFor(`many-${i}`, (j) => j.status?.phase === "Succeeded", 60_000);
    expect((await loom.cli(["delete", "tj", "--all"])).code).toBe(0);
  }, 180_000);
});

describe("foundation scenarios on the embedded platform", () => {
  const loom = new LoomProcess();
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());
  foundationScenarios(() => ({
    name: "embedded",
    loom: (args, input) => loom.cli(args, { input }),
    workersGone: async (job) =>
      (job.status?.workers ?? []).every((w) => w.pid === undefined || !alive(w.pid)),
  }));
});

/** Host pids of the processes whose argv is exactly `args`. */
function processesWithArgs(args: string[]): number[] {
  const want = `${args.join("\0")}\0`;
  const found: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, "utf8") === want) found.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

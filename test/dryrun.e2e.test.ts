import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliResult, type Job, LoomProcess } from "./helpers.js";

/** What this file reads of a job beyond helpers' Job. */
type Seen = Job & {
  metadata: Job["metadata"] & { generation: number; labels?: Record<string, string> };
  status?: Job["status"] & {
    observedGeneration?: number;
    admission?: { node: string; gpus: string[] };
  };
};

const job = (name: string, project: string, opts: { gpu?: number; command?: string; labels?: string } = {}) =>
  `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: ${name}, project: ${project}${opts.labels ? `, labels: ${opts.labels}` : ""}}
spec:
  command: ${opts.command ?? '[sleep, "300"]'}
  resources: {gpu: ${opts.gpu ?? 0}}
  terminationGracePeriodSeconds: 1
`;

/**
 * `loom apply --dry-run` must predict exactly what `loom apply` then does (issue 18, point 3: an
 * unchanged, already-Succeeded job was "would start now on vm" in the dry run and `unchanged` in
 * the apply). Every scenario runs the dry run and then the real apply on the same manifest and
 * checks that the dry run's line is apply's, word for word, with only " (dry run)" added, errors
 * included; and that what the dry run says of scheduling (start where, wait why, preempt whom)
 * is what the platform then did.
 */
describe("apply --dry-run predicts apply (embedded, 2 virtual GPUs)", () => {
  const loom = new LoomProcess(["--gpus", "2"]);
  beforeAll(async () => {
    await loom.start();
    const projects =
      "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: lo}\nspec: {quota: {gpu: 1}}\n---\n" +
      "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: hi}\nspec: {quota: {gpu: 1}}\n";
    const r = await loom.cli(["apply", "-f", "-"], { input: projects });
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    for (const p of ["lo", "hi"])
      await loom.cli(["delete", "tj", "--all", "-p", p, "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });

  const get = (name: string, project: string) => loom.job(name, project) as Promise<Seen>;
  const waitFor = (name: string, project: string, pred: (j: Seen) => boolean) =>
    loom.waitFor(name, (j) => pred(j as Seen), 60_000, project) as Promise<Seen>;

  /**
   * The dry run, then apply, of the same manifest: same exit code, same errors, and each dry-run
   * line is apply's line plus " (dry run)" and, for TrainingJobs it would schedule, ": PREVIEW".
   * Returns the previews and apply's result.
   */
  async function dryThenApply(
    input: string,
    env?: Record<string, string>,
  ): Promise<{ previews: (string | undefined)[]; real: CliResult }> {
    const dry = await loom.cli(["apply", "--dry-run", "-f", "-"], { input, env });
    const real = await loom.cli(["apply", "-f", "-"], { input, env });
    expect({ code: dry.code, stderr: dry.stderr }).toEqual({ code: real.code, stderr: real.stderr });
    const dryLines = dry.stdout.split("\n").filter(Boolean);
    const parsed = dryLines.map((l) => /^(.*?) \(dry run\)(?:: (.*))?$/.exec(l));
    expect(parsed.every(Boolean), dry.stdout).toBe(true);
    expect(parsed.map((m) => m![1]).join("\n")).toBe(real.stdout.trimEnd());
    return { previews: parsed.map((m) => m![2]), real };
  }

  it("new jobs that fit: the dry run names the node and GPUs the job is then admitted to", async () => {
    for (const name of ["h1", "h2"]) {
      const { previews, real } = await dryThenApply(job(name, "lo", { gpu: 1 }));
      expect(real.stdout).toBe(`trainingjob.loom.dev/${name} created\n`);
      const m = /^would start now on (\S+) with GPU\(s\) (\S+)$/.exec(previews[0] ?? "");
      expect(m, previews[0]).not.toBeNull();
      const admitted = await waitFor(name, "lo", (j) => !!j.status?.admission);
      expect(admitted.status!.admission!.node).toBe(m![1]);
      expect(admitted.status!.admission!.gpus.join(",")).toBe(m![2]);
      await waitFor(name, "lo", (j) => j.status?.workers?.[0]?.state === "Running");
    }
  }, 120_000);

  it("a new job that waits: the dry run's reason is the one its condition then gives", async () => {
    const { previews, real } = await dryThenApply(job("w1", "lo", { gpu: 1 }));
    expect(real.stdout).toBe("trainingjob.loom.dev/w1 created\n");
    const m = /^would wait \((\w+), queue position \d+\): /.exec(previews[0] ?? "");
    expect(m, previews[0]).not.toBeNull();
    const waiting = await waitFor(
      "w1",
      "lo",
      (j) => !!j.status?.conditions?.some((c) => c.type === "Admitted" && c.status === "False"),
    );
    expect(waiting.status?.conditions?.find((c) => c.type === "Admitted")?.reason).toBe(m![1]);
    expect(waiting.status?.admission).toBeUndefined();
  }, 60_000);

  it("an unchanged running job: unchanged, and nothing restarts", async () => {
    const before = await get("h1", "lo");
    const { previews, real } = await dryThenApply(job("h1", "lo", { gpu: 1 }));
    expect(real.stdout).toBe("trainingjob.loom.dev/h1 unchanged\n");
    expect(previews).toEqual([undefined]);
    const after = await get("h1", "lo");
    expect(after.metadata.resourceVersion).toBe(before.metadata.resourceVersion);
  }, 60_000);

  it("a label-only change of a running job: configured, metadata only, the attempt runs on", async () => {
    const before = await get("h1", "lo");
    const { real } = await dryThenApply(job("h1", "lo", { gpu: 1, labels: "{team: a}" }));
    expect(real.stdout).toBe(
      "trainingjob.loom.dev/h1 configured (labels/annotations only: the job is not restarted)\n",
    );
    const after = await get("h1", "lo");
    expect(after.metadata.labels).toEqual({ team: "a" });
    expect(after.metadata.generation).toBe(before.metadata.generation);
    expect(after.status?.attempts).toBe(1);
    expect(after.status?.workers?.[0]?.pid).toBe(before.status?.workers?.[0]?.pid);
  }, 60_000);

  it("a changed spec of a running job: configured, and the running attempt is not restarted", async () => {
    const before = await get("h1", "lo");
    const { real } = await dryThenApply(
      job("h1", "lo", { gpu: 1, labels: "{team: a}", command: '[sleep, "301"]' }),
    );
    expect(real.stdout).toBe(
      "trainingjob.loom.dev/h1 configured (spec changed: the running attempt is not restarted; the new spec applies from its next attempt)\n",
    );
    const after = await get("h1", "lo");
    expect(after.metadata.generation).toBe(before.metadata.generation + 1);
    // The attempt that runs is the one started from the old spec.
    expect(after.status?.observedGeneration).toBe(before.metadata.generation);
    expect(after.status?.attempts).toBe(1);
    expect(after.status?.workers?.[0]?.pid).toBe(before.status?.workers?.[0]?.pid);
  }, 60_000);

  it("a job that would preempt: the workloads the dry run names are the ones preempted", async () => {
    const { previews, real } = await dryThenApply(job("t1", "hi", { gpu: 1 }));
    expect(real.stdout).toBe("trainingjob.loom.dev/t1 created\n");
    const m = /^would preempt (\d+) workload\(s\) \((\w+)\): (.*); starts once they stop$/.exec(
      previews[0] ?? "",
    );
    expect(m, previews[0]).not.toBeNull();
    const victims = m![3]!.split(", ");
    expect(victims).toHaveLength(Number(m![1]));
    for (const v of victims) {
      const [project, name] = v.split("/") as [string, string];
      await waitFor(name, project, (j) => (j.status?.preemptions ?? 0) >= 1);
    }
    await waitFor("t1", "hi", (j) => !!j.status?.admission);
    for (const other of ["h1", "h2"].filter((n) => !victims.includes(`lo/${n}`)))
      expect((await get(other, "lo")).status?.preemptions ?? 0).toBe(0);
  }, 120_000);

  it("a changed spec of a waiting job: configured, and scheduled anew as the dry run says", async () => {
    const before = await get("w1", "lo");
    expect(before.status?.admission).toBeUndefined();
    const { previews, real } = await dryThenApply(job("w1", "lo", { gpu: 0 }));
    expect(real.stdout).toBe(
      "trainingjob.loom.dev/w1 configured (spec changed: the job waits for admission with it)\n",
    );
    const preview = previews[0] ?? "";
    const start = /^would start now on (\S+)$/.exec(preview);
    const wait = /^would wait \((\w+), queue position \d+\): /.exec(preview);
    expect(start ?? wait, preview).not.toBeNull();
    if (start) {
      const admitted = await waitFor("w1", "lo", (j) => !!j.status?.admission);
      expect(admitted.status!.admission!.node).toBe(start[1]);
    } else {
      const waiting = await waitFor("w1", "lo", (j) => j.metadata.generation > before.metadata.generation);
      expect(waiting.status?.admission).toBeUndefined();
      await waitFor(
        "w1",
        "lo",
        (j) => j.status?.conditions?.find((c) => c.type === "Admitted")?.reason === wait![1],
      );
    }
  }, 60_000);

  it("an unchanged Succeeded job: unchanged (not 'would start now'), and it does not run again", async () => {
    const done = job("done", "default", { command: '["true"]' });
    const first = await dryThenApply(done);
    expect(first.real.stdout).toBe("trainingjob.loom.dev/done created\n");
    expect(first.previews[0]).toMatch(/^would start now on \S+$/);
    await waitFor("done", "default", (j) => j.status?.phase === "Succeeded");

    const again = await dryThenApply(done);
    expect(again.real.stdout).toBe("trainingjob.loom.dev/done unchanged\n");
    expect(again.previews).toEqual([undefined]);

    const changed = await dryThenApply(job("done", "default", { command: "[sleep, '0']" }));
    expect(changed.real.stdout).toBe(
      "trainingjob.loom.dev/done configured (spec changed: the job has finished (Succeeded) and does not run again)\n",
    );
    const after = await get("done", "default");
    expect(after.status?.phase).toBe("Succeeded");
    expect(after.status?.attempts).toBe(1);
  }, 60_000);

  it("other kinds: a Project and a registry Model, created, unchanged and configured alike", async () => {
    const project = (gpu: number) =>
      `apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: side}\nspec: {quota: {gpu: ${gpu}}}\n`;
    const model = (description: string) =>
      `apiVersion: loom.dev/v1alpha1\nkind: Model\nmetadata: {name: draft, project: lo}\nspec: {description: ${description}}\n`;
    const steps: [string, string][] = [
      [project(1), "project.loom.dev/side created"],
      [project(1), "project.loom.dev/side unchanged"],
      [project(2), "project.loom.dev/side configured"],
      [model("first"), "model.loom.dev/draft created"],
      [model("first"), "model.loom.dev/draft unchanged"],
      [model("second"), "model.loom.dev/draft configured"],
    ];
    for (const [input, line] of steps) {
      const { previews, real } = await dryThenApply(input);
      expect(real.stdout).toBe(`${line}\n`);
      expect(previews).toEqual([undefined]);
    }
  }, 60_000);

  it("an invalid object: the dry run fails as apply does, with the same error", async () => {
    const { real } = await dryThenApply(job("bad", "lo", { gpu: -1 }));
    expect(real.code).toBe(1);
    expect(real.stderr).toContain('nothing was applied:\nstdin: TrainingJob "bad": ');
    expect((await loom.cli(["get", "tj", "bad", "-p", "lo"])).code).toBe(1);
  }, 60_000);

  it("a project the token may not write: the dry run is refused as apply is", async () => {
    const minted = await loom.cli(["token", "create", "reader", "--role", "viewer", "-p", "lo"]);
    expect(minted.code, minted.stderr).toBe(0);
    const { real } = await dryThenApply(job("sneaky", "lo"), { LOOM_TOKEN: minted.stdout.trim() });
    expect(real.code).toBe(1);
    expect(real.stderr).toContain("may read, not change");
    // And an unchanged object: a reader is refused too, not told "unchanged".
    const again = await dryThenApply(job("h2", "lo", { gpu: 1 }), { LOOM_TOKEN: minted.stdout.trim() });
    expect(again.real.code).toBe(1);
  }, 60_000);
});

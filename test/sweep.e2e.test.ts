import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * examples/finetune end to end on the embedded platform: a pretrained base (examples/pretrain,
 * shortened), then the sweep as written — TPE over learning rate and LoRA rank, 2 trials at a
 * time, the median rule stopping trials that fall behind, the best registered as tinygpt@champion
 * with its lineage back to the job. Real PyTorch (Debian's), real mlflow in the trials.
 */

interface SweepObject {
  metadata: { name: string; uid: string };
  status?: {
    phase?: string;
    running?: number;
    trials?: {
      number: number;
      name: string;
      params: Record<string, unknown>;
      phase: string;
      objective?: number;
      step?: number;
      runId?: string;
      message?: string;
    }[];
    best?: { trial: number; name: string; objective: number; params: Record<string, unknown> };
    model?: { name: string; version: string; alias: string };
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

const BASE = "/apis/loom.dev/v1alpha1/projects/default";

describe("examples/finetune: a sweep with early stopping that registers its champion (embedded)", () => {
  const loom = new LoomProcess();
  beforeAll(() => loom.start());
  afterAll(() => loom.stop());

  it("runs the sweep as written: parallelism 2, at least one trial stopped early, best registered with lineage", async () => {
    // The base model: the pretrain example on one worker and fewer steps (the sweep needs a checkpoint, not a good one).
    const pretrain = readFileSync(join(ROOT, "examples/pretrain/pretrain.yaml"), "utf8")
      .replace(/^ {2}workers: 2$/m, "  workers: 1")
      .replace(
        /^ {2}command: .*$/m,
        `  command: ${JSON.stringify(["python3", "examples/pretrain/train.py", "--steps", "60", "--checkpoint-every", "20"])}`,
      );
    expect((await loom.cli(["apply", "-f", "-"], { input: pretrain })).code).toBe(0);
    const base = await loom.waitFor(
      "pretrain",
      (j) => j.status?.phase === "Succeeded" || j.status?.phase === "Failed",
      400_000,
    );
    expect(base.status?.phase, JSON.stringify(base.status)).toBe("Succeeded");

    const apply = await loom.cli(["apply", "-f", "examples/finetune/sweep.yaml"]);
    expect(apply.code, apply.stderr).toBe(0);
    expect(apply.stdout).toMatch(/sweep.loom.dev\/finetune created/);

    // Watch it: never more than 2 trials at once, and 2 at once at some point.
    let sweep: SweepObject | undefined;
    let maxActive = 0;
    const deadline = Date.now() + 900_000;
    while (Date.now() < deadline) {
      const r = await loom.api("GET", `${BASE}/sweeps/finetune`);
      sweep = r.body as SweepObject;
      const active = (sweep.status?.trials ?? []).filter(
        (t) => t.phase === "Pending" || t.phase === "Running",
      );
      maxActive = Math.max(maxActive, active.length);
      if (sweep.status?.phase === "Succeeded" || sweep.status?.phase === "Failed") break;
      await sleep(250);
    }
    const status = sweep?.status;
    expect(status?.phase, JSON.stringify(status, null, 1)).toBe("Succeeded");
    expect(maxActive).toBe(2);
    const trials = status!.trials!;
    expect(trials).toHaveLength(6);
    const stopped = trials.filter((t) => t.phase === "EarlyStopped");
    const succeeded = trials.filter((t) => t.phase === "Succeeded");
    expect(stopped.length, JSON.stringify(trials, null, 1)).toBeGreaterThanOrEqual(1);
    expect(stopped[0]!.message).toMatch(/median rule at step \d+/);
    // A stopped trial ended before its last step, and its job is gone (stopped the graceful way).
    for (const t of stopped) {
      expect(t.step ?? 0).toBeLessThan(60);
      expect((await loom.api("GET", `${BASE}/trainingjobs/${t.name}`)).status).toBe(404);
    }
    // The best is the succeeded trial with the lowest val_loss, and its parameters are what its job got.
    const best = succeeded.reduce((a, b) => (b.objective! < a.objective! ? b : a));
    expect(status!.best).toMatchObject({ trial: best.number, objective: best.objective });
    const bestJob = (await loom.api("GET", `${BASE}/trainingjobs/${best.name}`)).body as {
      spec: { env: Record<string, string>; initCheckpointFrom: string; experiment: string };
      status: { checkpoint: { step: number }; tracking: { runId: string } };
    };
    expect(bestJob.spec.env.LR).toBe(String(best.params.lr));
    expect(bestJob.spec.env.LORA_RANK).toBe(String(best.params.lora_rank));
    expect(bestJob.spec.experiment).toBe("finetune");
    expect(bestJob.status.checkpoint.step).toBe(60);
    const logs = (await loom.cli(["logs", `tj/${best.name}`])).stdout;
    expect(Number(/FINAL val_loss=([\d.]+)/.exec(logs)?.[1])).toBeCloseTo(best.objective!, 5);

    // The trial table.
    const table = (await loom.cli(["get", "sweep", "finetune"])).stdout;
    expect(table).toMatch(/finetune\s+Succeeded\s+tpe\s+0\s+\d\s+\d\s+0\s+[\d.]+/);
    expect(table).toMatch(/TRIAL\s+NAME\s+LR\s+LORA_RANK\s+PHASE\s+VAL_LOSS\s+STEP/);
    expect(table).toMatch(new RegExp(`${best.number} \\*\\s+${best.name}\\s`));
    expect(table).toMatch(/EarlyStopped/);
    console.log(table);

    // Registered: tinygpt version 1 @champion, from the best trial's run.
    expect(status!.model).toEqual({ name: "tinygpt", version: "1", alias: "champion" });
    const alias = await loom.api(
      "GET",
      "/api/2.0/mlflow/registered-models/alias?name=tinygpt&alias=champion",
    );
    const version = (alias.body as { model_version: { run_id: string; source: string } }).model_version;
    expect(version.run_id).toBe(bestJob.status.tracking.runId);
    expect(version.source).toBe(`runs:/${best.runId}/model`);
    const run = await loom.api("GET", `/api/2.0/mlflow/runs/get?run_id=${best.runId}`);
    const uri = (run.body as { run: { info: { artifact_uri: string } } }).run.info.artifact_uri;
    const files = await loom.api(
      "GET",
      `/api/2.0/mlflow-artifacts/artifacts?path=${encodeURIComponent(`${uri.replace(/^mlflow-artifacts:\//, "")}/model`)}`,
    );
    expect(JSON.stringify(files.body)).toMatch(/model\.pt/);

    // The Model kind: lineage job → run → checkpoint → version.
    const models = (await loom.cli(["get", "models"])).stdout;
    expect(models).toMatch(/NAME\s+LATEST\s+ALIASES\s+SOURCE-JOB\s+AGE/);
    expect(models).toMatch(new RegExp(`tinygpt\\s+1\\s+champion=1\\s+${best.name}\\s`));
    const described = (await loom.cli(["describe", "model", "tinygpt"])).stdout;
    console.log(described);
    expect(described).toMatch(/version 1 @champion/);
    expect(described).toMatch(
      new RegExp(
        `job: +trainingjob/${best.name} Succeeded, trial ${best.number} of sweep/finetune \\(started from the checkpoints of trainingjob/pretrain\\)`,
      ),
    );
    expect(described).toContain(`run:        ${best.runId}`);
    expect(described).toMatch(/checkpoint: step 60/);

    // Deleting the sweep deletes its trials (they are owned by it).
    expect((await loom.cli(["delete", "sweep", "finetune"])).code).toBe(0);
    const until = Date.now() + 60_000;
    let left: unknown[] = [];
    while (Date.now() < until) {
      const r = await loom.api("GET", `${BASE}/trainingjobs?labelSelector=loom.dev/sweep%3Dfinetune`);
      left = (r.body as { items: unknown[] }).items;
      if (left.length === 0) break;
      await sleep(250);
    }
    expect(left).toEqual([]);
    // The model and its lineage outlive the sweep; the job is reported gone.
    expect((await loom.cli(["describe", "model", "tinygpt"])).stdout).toMatch(
      new RegExp(`trainingjob/${best.name} deleted`),
    );
  }, 1_500_000);

  it("explains a sweep that cannot work: bad spec fields, a missing base job", async () => {
    const bad = readFileSync(join(ROOT, "examples/finetune/sweep.yaml"), "utf8")
      .replace("name: finetune", "name: broken")
      .replace("logUniform: {min: 1.0e-5, max: 3.0e-2}", "logUniform: {min: 0, max: 3.0e-2}");
    const r = await loom.cli(["apply", "-f", "-"], { input: bad });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/spec\.parameters\.0\.logUniform\.min: must be above 0/);
    const orphan = readFileSync(join(ROOT, "examples/finetune/sweep.yaml"), "utf8")
      .replace("name: finetune", "name: orphan")
      .replace("initCheckpointFrom: pretrain", "initCheckpointFrom: nosuchjob")
      .replace("maxFailedTrials: 1", "maxFailedTrials: 0");
    expect((await loom.cli(["apply", "-f", "-"], { input: orphan })).code).toBe(0);
    const deadline = Date.now() + 60_000;
    let message = "";
    while (Date.now() < deadline) {
      const job = (await loom.api("GET", `${BASE}/trainingjobs/orphan-1`)).body as {
        status?: { conditions?: { message: string }[] };
      };
      message = job.status?.conditions?.map((c) => c.message).join("; ") ?? "";
      if (/nosuchjob/.test(message)) break;
      await sleep(250);
    }
    expect(message).toMatch(/initCheckpointFrom names TrainingJob nosuchjob, which does not exist/);
    expect((await loom.cli(["delete", "sweep", "orphan"])).code).toBe(0);
  }, 120_000);

  it("applies a Model as a registered model: --dry-run writes nothing, apply creates it, describe shows no versions yet", async () => {
    const model =
      "apiVersion: loom.dev/v1alpha1\nkind: Model\nmetadata: {name: draft}\nspec: {description: a model to come}\n";
    expect((await loom.cli(["apply", "--dry-run", "-f", "-"], { input: model })).code).toBe(0);
    expect((await loom.api("GET", "/api/2.0/mlflow/registered-models/get?name=draft")).status).toBe(404);
    const applied = await loom.cli(["apply", "-f", "-"], { input: model });
    expect(applied.code, applied.stderr).toBe(0);
    const mlflow = await loom.api("GET", "/api/2.0/mlflow/registered-models/get?name=draft");
    expect((mlflow.body as { registered_model: { description: string } }).registered_model.description).toBe(
      "a model to come",
    );
    expect((await loom.cli(["get", "models", "draft", "-o", "wide"])).stdout).toMatch(
      /draft\s+<none>\s+<none>\s+<none>\s+a model to come/,
    );
    expect((await loom.cli(["describe", "model", "draft"])).stdout).toMatch(
      /Versions \(lineage.*\n {2}<none>/,
    );
    const missing = await loom.cli(["describe", "model", "nope"]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/model "nope" not found/);
    expect((await loom.cli(["delete", "model", "draft"])).code).toBe(0);
    expect((await loom.api("GET", "/api/2.0/mlflow/registered-models/get?name=draft")).status).toBe(404);
  }, 60_000);
});

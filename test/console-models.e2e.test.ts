import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { type Browser, type BrowserContext, launchBrowser, type Page, screenshot } from "./browser.js";
import { axeViolations, consoleLogin } from "./console.js";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * Issue 21's pages 4-6 in real Chromium on a real `loom up`: a sweep's page shows its trials;
 * a model's lineage (job → run → checkpoint → version) leads to the serving revision that runs
 * it; the playground streams an answer from that service (text grows while it streams) on a
 * 15-minute key for that one service, revoked when the page is left. No console errors; axe-core
 * finds no serious or critical violation. Screenshots in test-artifacts/console-*.png.
 */

interface UiPage extends Page {
  fill(selector: string, value: string): Promise<void>;
  click(selector: string, opts?: { timeout?: number }): Promise<void>;
  waitForSelector(selector: string, opts?: { timeout?: number; state?: string }): Promise<unknown>;
  setViewportSize(size: { width: number; height: number }): Promise<void>;
  keyboard: { press(key: string): Promise<void> };
  on(event: "console", fn: (msg: { type(): string; text(): string }) => void): void;
  on(event: "pageerror", fn: (err: Error) => void): void;
}

const BASE = "/apis/loom.dev/v1alpha1";
const MLFLOW = "/mlflow/projects/default/api/2.0/mlflow";

describe("console: sweeps, models, serving in Chromium", () => {
  const loom = new LoomProcess();
  const modelDir = mkdtempSync(join(tmpdir(), "loom-console-model-"));
  chmodSync(modelDir, 0o755);
  let browser: Browser;
  let context: BrowserContext;
  let page: UiPage;
  const errors: string[] = [];

  beforeAll(async () => {
    // A tiny pretrained checkpoint the built-in runtime serves (as test/serving.e2e.test.ts makes).
    const train = spawnSync(
      "/usr/bin/python3",
      ["examples/pretrain/train.py", "--steps", "20", "--checkpoint-every", "20", "--corpus-chars", "50000"],
      {
        cwd: ROOT,
        env: { ...process.env, LOOM_CHECKPOINT_DIR: modelDir },
        encoding: "utf8",
        timeout: 120_000,
      },
    );
    expect(train.status, train.stderr).toBe(0);
    await loom.start();
    browser = await launchBrowser();
    context = await browser.newContext();
    page = (await context.newPage()) as UiPage;
    await page.setViewportSize({ width: 1280, height: 800 });
    page.on("console", (m) => {
      // Starting a sandboxed replica adds a network namespace's interfaces, which Chromium sees as the
      // machine's network changing: it fails the fetches in flight then (ERR_NETWORK_CHANGED), and the
      // console retries them. Not the console's error; every other one counts.
      if (m.type() === "error" && !m.text().includes("ERR_NETWORK_CHANGED"))
        errors.push(`${page.url()}: ${m.text()}`);
    });
    page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
    await consoleLogin(page, loom.url, loom.token);
  }, 240_000);
  afterAll(async () => {
    await context?.close().catch(() => undefined);
    await browser?.close();
    await loom.stop();
  });

  async function mlflow(path: string, body: unknown): Promise<Record<string, unknown>> {
    const r = await loom.api("POST", `${MLFLOW}/${path}`, body);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body as Record<string, unknown>;
  }

  it("a sweep's page shows its trials", async () => {
    const hello = parse(readFileSync(join(ROOT, "examples", "hello", "hello.yaml"), "utf8"));
    const r = await loom.api("POST", `${BASE}/projects/default/sweeps`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Sweep",
      metadata: { name: "lr" },
      spec: {
        objective: { metric: "loss", goal: "minimize" },
        algorithm: "grid",
        parameters: [{ name: "lr", categorical: { values: [0.1, 0.01] } }],
        parallelism: 2,
        maxTrials: 2,
        template: hello.spec,
      },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    await page.goto(`${loom.url}/#/sweeps`);
    await page.waitForSelector('a[href="#/sweeps/default/lr"]', { timeout: 30_000 });
    await page.click('a[href="#/sweeps/default/lr"]');
    // Trials arrive through the watch: two rows, each linking to its job.
    await page.waitForSelector("table[aria-labelledby=trials] tbody tr:nth-child(2)", { timeout: 60_000 });
    expect(
      await page.evaluate(() => document.querySelectorAll("table[aria-labelledby=trials] tbody tr").length),
    ).toBe(2);
    expect(await axeViolations(page)).toEqual([]);
    await screenshot(page, "console-sweep");
  }, 120_000);

  it("follows a model's lineage from its job to its serving revision, and streams an answer there", async () => {
    // The chain: a job, its run (tagged as a Loom job's run is), a registered version of the run,
    // and an InferenceService of the built-in runtime serving the version by alias.
    const hello = parse(readFileSync(join(ROOT, "examples", "hello", "hello.yaml"), "utf8"));
    expect((await loom.api("POST", `${BASE}/projects/default/trainingjobs`, hello)).status).toBe(201);
    const exp = await mlflow("experiments/create", { name: "tiny" });
    const run = (await mlflow("runs/create", {
      experiment_id: exp.experiment_id,
      tags: [
        { key: "loom.workload", value: "hello" },
        { key: "loom.checkpoint_step", value: "20" },
      ],
    })) as { run: { info: { run_id: string } } };
    const runId = run.run.info.run_id;
    await mlflow("registered-models/create", { name: "tiny" });
    // The checkpoint's files become the run's artifacts, as a job's log_artifacts puts them.
    const artifactUri = (run.run.info as { artifact_uri?: string }).artifact_uri ?? "";
    for (const file of ["ckpt.pt", "loom.json"]) {
      const res = await fetch(
        `${loom.url}/mlflow/projects/default/api/2.0/mlflow-artifacts/artifacts/${artifactUri.replace(/^mlflow-artifacts:\//, "")}/model/${file}`,
        {
          method: "PUT",
          headers: { authorization: `Bearer ${loom.token}` },
          body: readFileSync(join(modelDir, file)),
        },
      );
      expect(res.status, await res.text()).toBe(200);
    }
    await mlflow("model-versions/create", {
      name: "tiny",
      source: `runs:/${runId}/model`,
      run_id: runId,
      tags: [{ key: "loom.checkpoint_step", value: "20" }],
    });
    await mlflow("registered-models/alias", { name: "tiny", alias: "champion", version: "1" });
    const isvc = await loom.api("POST", `${BASE}/projects/default/inferenceservices`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name: "tiny" },
      spec: { model: "models:/tiny@champion", runtime: "loom-tinygpt" },
    });
    expect(isvc.status, JSON.stringify(isvc.body)).toBe(201);

    await page.goto(`${loom.url}/#/models`);
    await page.waitForSelector('a[href="#/models/default/tiny"]', { timeout: 30_000 });
    await page.click('a[href="#/models/default/tiny"]');
    await page.waitForSelector('ol[aria-label="Lineage of version 1"] a[href="#/jobs/default/hello"]');
    await page.waitForSelector("text=step 20");
    // The serving node appears once the service has its first revision (through the watch).
    await page.waitForSelector('ol[aria-label="Lineage of version 1"] a[href="#/serving/default/tiny"]', {
      timeout: 60_000,
    });
    expect(await axeViolations(page)).toEqual([]);
    await screenshot(page, "console-model");
    await page.click('ol[aria-label="Lineage of version 1"] a[href="#/serving/default/tiny"]');
    await page.waitForSelector("text=Revisions and traffic");
    await page.waitForSelector("dd.phase.Ready", { timeout: 120_000 });

    await page.fill(".playground textarea >> nth=1", "Once upon a time");
    // Record the answer's length on every change: streamed, it grows more than once.
    await page.evaluate(() => {
      const out = document.querySelector("output.answer")!;
      const w = window as unknown as { lengths: number[] };
      w.lengths = [];
      new MutationObserver(() => w.lengths.push(out.textContent?.length ?? 0)).observe(out, {
        childList: true,
        characterData: true,
        subtree: true,
      });
    });
    await page.click(".playground button[type=submit]");
    await page.waitForSelector(".playground button:not([disabled])", { timeout: 120_000 });
    expect(
      await page.evaluate(() => document.querySelector(".playground [role=alert]")?.textContent ?? ""),
    ).toBe("");
    const lengths = await page.evaluate(() => (window as unknown as { lengths: number[] }).lengths);
    expect(new Set(lengths.filter((n) => n > 0)).size).toBeGreaterThan(1);
    expect(await axeViolations(page)).toEqual([]);
    await screenshot(page, "console-serving");
    // The playground's key is for this one service and short-lived.
    const keys = (await loom.api("GET", `${BASE}/projects/default/apikeys`)).body as {
      items: { name: string; services?: string[]; expiresAt?: string }[];
    };
    const mine = keys.items.find((k) => k.name.startsWith("console-playground-"));
    expect(mine?.services).toEqual(["tiny"]);
    expect(Date.parse(mine!.expiresAt!) - Date.now()).toBeLessThanOrEqual(15 * 60_000);
    expect(errors).toEqual([]);
  }, 300_000);
});

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { type Browser, type BrowserContext, launchBrowser, type Page, screenshot } from "./browser.js";
import { axeViolations, consoleLogin } from "./console.js";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * Issue 21's run chart and sweep view on real training, in real Chromium on a real `loom up`:
 * examples/pretrain (shortened) makes the base model, then examples/finetune runs as written, once
 * as a TrainingJob made from the sweep's own template and once as the sweep itself (TPE, the median
 * rule stopping trials). The run's page charts val_loss by step with exactly the points finetune.py
 * printed (read from the chart's own data attributes against the job's logs); the sweep's page
 * draws parallel coordinates with an axis per swept parameter plus the objective, a polyline per
 * trial and the early-stopped ones marked. Screenshots: test-artifacts/console-finetune*.png.
 */

interface UiPage extends Page {
  click(selector: string, opts?: { timeout?: number }): Promise<void>;
  check(selector: string): Promise<void>;
  waitForSelector(selector: string, opts?: { timeout?: number }): Promise<unknown>;
  setViewportSize(size: { width: number; height: number }): Promise<void>;
  fill(selector: string, value: string): Promise<void>;
  keyboard: { press(key: string): Promise<void> };
  getAttribute(selector: string, name: string): Promise<string | null>;
  on(
    event: "console",
    fn: (msg: { type(): string; text(): string; location(): { url: string } }) => void,
  ): void;
  on(event: "pageerror", fn: (err: Error) => void): void;
}

const BASE = "/apis/loom.dev/v1alpha1/projects/default";
const SWEEP_YAML = readFileSync(join(ROOT, "examples/finetune/sweep.yaml"), "utf8");

interface SweepStatus {
  phase?: string;
  trials?: { number: number; phase: string; params: Record<string, unknown>; objective?: number }[];
  best?: { trial: number };
}

describe("console: examples/finetune's run chart and sweep in Chromium", () => {
  const loom = new LoomProcess();
  let browser: Browser;
  let context: BrowserContext;
  let page: UiPage;
  const errors: string[] = [];

  beforeAll(async () => {
    await loom.start();
    // The base model: examples/pretrain on one worker and fewer steps, as test/sweep.e2e.test.ts makes it.
    const pretrain = readFileSync(join(ROOT, "examples/pretrain/pretrain.yaml"), "utf8")
      .replace(/^ {2}workers: 2$/m, "  workers: 1")
      .replace(
        /^ {2}command: .*$/m,
        `  command: ${JSON.stringify(["python3", "examples/pretrain/train.py", "--steps", "60", "--checkpoint-every", "20"])}`,
      );
    expect((await loom.cli(["apply", "-f", "-"], { input: pretrain })).code).toBe(0);
    const base = await loom.waitFor(
      "pretrain",
      (j) => ["Succeeded", "Failed"].includes(j.status?.phase ?? ""),
      400_000,
    );
    expect(base.status?.phase, JSON.stringify(base.status)).toBe("Succeeded");
    browser = await launchBrowser();
    context = await browser.newContext();
    page = (await context.newPage()) as UiPage;
    await page.setViewportSize({ width: 1280, height: 800 });
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`${page.url()}: ${m.text()} (${m.location().url})`);
    });
    page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
    await consoleLogin(page, loom.url, loom.token);
  }, 600_000);

  afterAll(async () => {
    await context?.close().catch(() => undefined);
    await browser?.close();
    await loom.cli(["delete", "sweep", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  }, 120_000);

  it("charts a finetune run's val_loss by step with exactly the points it logged", async () => {
    // examples/finetune as a TrainingJob: the sweep's template, with one learning rate and rank.
    const template = (parse(SWEEP_YAML) as { spec: { template: Record<string, unknown> } }).spec.template;
    const job = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: "ft" },
      spec: {
        ...template,
        env: { ...(template.env as Record<string, string>), LR: "0.003", LORA_RANK: "4" },
      },
    };
    const made = await loom.api("POST", `${BASE}/trainingjobs`, job);
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    const done = await loom.waitFor(
      "ft",
      (j) => ["Succeeded", "Failed"].includes(j.status?.phase ?? ""),
      600_000,
    );
    const logs = (await loom.cli(["logs", "tj/ft"])).stdout;
    expect(done.status?.phase, logs.slice(-3000)).toBe("Succeeded");
    // What finetune.py printed is what it logged: `step N val_loss X train_loss Y` per evaluation.
    const evals = [...logs.matchAll(/step (\d+) val_loss [\d.]+( train_loss)?/g)];
    const steps = evals.map((m) => Number(m[1]));
    // Step 0 of a fresh run has val_loss only (no training yet).
    const trainPoints = evals.filter((m) => m[2]).length;
    expect(steps.length).toBeGreaterThan(2);
    const runId = (done.status as { tracking?: { runId: string } }).tracking?.runId;
    expect(runId).toBeTruthy();

    await page.goto(`${loom.url}/#/runs/default/${runId}`);
    await page.waitForSelector("figure[data-metric=val_loss][data-xmin] canvas", { timeout: 60_000 });
    expect(await page.getAttribute("figure[data-metric=val_loss]", "data-points")).toBe(String(steps.length));
    expect(await page.getAttribute("figure[data-metric=train_loss]", "data-points")).toBe(
      String(trainPoints),
    );
    expect(await page.getAttribute("figure[aria-label='val_loss by step']", "data-series")).toBe("1");
    // By step: the axis spans the first to the last evaluation.
    expect(Number(await page.getAttribute("figure[data-metric=val_loss]", "data-xmin"))).toBe(
      Math.min(...steps),
    );
    expect(Number(await page.getAttribute("figure[data-metric=val_loss]", "data-xmax"))).toBe(
      Math.max(...steps),
    );
    expect(await axeViolations(page)).toEqual([]);
    await screenshot(page, "console-finetune-run");
  }, 700_000);

  it("draws the sweep's trials as parallel coordinates, early stops marked", async () => {
    const apply = await loom.cli(["apply", "-f", "examples/finetune/sweep.yaml"]);
    expect(apply.code, apply.stderr).toBe(0);
    await page.goto(`${loom.url}/#/sweeps/default/finetune`);
    // Live: the view is there while trials run, before the sweep ends.
    await page.waitForSelector("figure.parcoords[data-axes='lora_rank,lr,val_loss']", { timeout: 300_000 });
    let status: SweepStatus = {};
    for (const deadline = Date.now() + 1_200_000; Date.now() < deadline; await sleep(500)) {
      status =
        ((await loom.api("GET", `${BASE}/sweeps/finetune`)).body as { status?: SweepStatus }).status ?? {};
      if (status.phase === "Succeeded" || status.phase === "Failed") break;
    }
    expect(status.phase, JSON.stringify(status, null, 1)).toBe("Succeeded");
    const trials = status.trials ?? [];
    const stopped = trials.filter((t) => t.phase === "EarlyStopped").length;
    expect(stopped, JSON.stringify(trials, null, 1)).toBeGreaterThanOrEqual(1);
    const fig = `figure.parcoords[data-lines='${trials.length}'][data-stopped='${stopped}']`;
    await page.waitForSelector(`${fig} canvas`, { timeout: 60_000 });
    const label = await page.getAttribute(`${fig} canvas`, "aria-label");
    expect(label).toBe(
      `Parallel coordinates: ${trials.length} trials across lora_rank, lr, val_loss; ${stopped} stopped early (dashed)`,
    );
    // The canvas has ink in the early-stopped colour (dashed orange) and the best's (green).
    const colours = await page.evaluate(() => {
      const c = document.querySelector("figure.parcoords canvas") as HTMLCanvasElement;
      const d = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
      const seen = { stopped: 0, best: 0 };
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3]! < 120) continue; // lines other than the best are drawn at 70% opacity
        if (d[i]! > 150 && d[i + 1]! > 50 && d[i + 1]! < 110 && d[i + 2]! < 40) seen.stopped++;
        if (d[i]! < 60 && d[i + 1]! > 100 && d[i + 2]! < 90) seen.best++;
      }
      return seen;
    });
    expect(colours.stopped).toBeGreaterThan(0);
    expect(colours.best).toBeGreaterThan(0);
    await page.waitForSelector("tr.stopped");
    expect(await axeViolations(page)).toEqual([]);
    await screenshot(page, "console-finetune-sweep");
  }, 1_500_000);

  it("logged no console errors on any page", () => {
    expect(errors).toEqual([]);
  });
});

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Browser, type BrowserContext, launchBrowser, type Page, screenshot } from "./browser.js";
import { axeViolations, consoleLogin } from "./console.js";
import { LoomProcess } from "./helpers.js";

/**
 * Issue 21's Experiments and runs pages in real Chromium on a real `loom up`: runs logged through
 * MLflow's REST API (as the mlflow client and examples/finetune log them) show in the runs table;
 * a run's loss chart holds exactly the points logged (read from the chart's own data); comparing
 * two runs draws two series; a bad filter shows MLflow's own error message; the artifacts browser
 * lists a logged file with a download link that serves it. axe-core finds no serious or critical
 * violation and no page logs an error. Screenshots: test-artifacts/console-runs*.png.
 */

interface UiPage extends Page {
  fill(selector: string, value: string): Promise<void>;
  click(selector: string, opts?: { timeout?: number }): Promise<void>;
  check(selector: string): Promise<void>;
  waitForSelector(selector: string, opts?: { timeout?: number; state?: string }): Promise<unknown>;
  setViewportSize(size: { width: number; height: number }): Promise<void>;
  keyboard: { press(key: string): Promise<void> };
  on(
    event: "console",
    fn: (msg: { type(): string; text(): string; location(): { url: string } }) => void,
  ): void;
  on(event: "pageerror", fn: (err: Error) => void): void;
  getAttribute(selector: string, name: string): Promise<string | null>;
  textContent(selector: string): Promise<string | null>;
}

const ML = "/mlflow/projects/default/api/2.0/mlflow";
/** Points logged of each run's loss: what its chart must hold, exactly. */
const POINTS_A = 37;
const POINTS_B = 20;

describe("console: experiments and runs in Chromium", () => {
  const loom = new LoomProcess();
  let browser: Browser;
  let context: BrowserContext;
  let page: UiPage;
  const errors: string[] = [];
  let expId = "";
  const runs: Record<string, string> = {};
  /** When each run logged its one accuracy point (ms): the lone x of that chart. */
  const accuracyAt: Record<string, number> = {};

  async function ml<T>(path: string, body: unknown): Promise<T> {
    const r = await loom.api("POST", `${ML}/${path}`, body);
    if (r.status !== 200) throw new Error(`${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as T;
  }

  /** A finetune-like run: lr param, `points` loss values by step, one accuracy. */
  async function logRun(name: string, lr: string, points: number): Promise<string> {
    const t0 = Date.now() - points * 1000;
    const { run } = await ml<{ run: { info: { run_id: string } } }>("runs/create", {
      experiment_id: expId,
      run_name: name,
      start_time: t0,
    });
    const id = run.info.run_id;
    const metrics = Array.from({ length: points }, (_, step) => ({
      key: "loss",
      value: 2 / (step + 1),
      timestamp: t0 + step * 1000,
      step,
    }));
    metrics.push({ key: "accuracy", value: 0.5 + points / 100, timestamp: t0, step: 0 });
    accuracyAt[name.slice(-1)] = t0;
    await ml("runs/log-batch", { run_id: id, metrics, params: [{ key: "lr", value: lr }] });
    await ml("runs/update", { run_id: id, status: "FINISHED", end_time: Date.now() });
    return id;
  }

  beforeAll(async () => {
    await loom.start();
    browser = await launchBrowser();
    expId = (await ml<{ experiment_id: string }>("experiments/create", { name: "finetune" })).experiment_id;
    runs.a = await logRun("ft-a", "0.01", POINTS_A);
    runs.b = await logRun("ft-b", "0.1", POINTS_B);
    // An artifact, uploaded through the artifact proxy as the mlflow client does.
    const res = await fetch(
      `${loom.url}/mlflow/projects/default/api/2.0/mlflow-artifacts/artifacts/${expId}/${runs.a}/artifacts/model/weights.txt`,
      { method: "PUT", headers: { authorization: `Bearer ${loom.token}` }, body: "w=1\n" },
    );
    expect(res.status).toBe(200);
    context = await browser.newContext();
    page = (await context.newPage()) as UiPage;
    await page.setViewportSize({ width: 1280, height: 800 });
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`${page.url()}: ${m.text()} (${m.location().url})`);
    });
    page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
    await consoleLogin(page, loom.url, loom.token);
  }, 90_000);
  afterAll(async () => {
    await context?.close().catch(() => undefined);
    await browser?.close();
    await loom.stop();
  });

  it("lists experiments and an experiment's runs with params and metrics columns", async () => {
    await page.goto(`${loom.url}/#/experiments`);
    await page.click("text=finetune");
    await page.waitForSelector("text=2 runs");
    expect(await page.textContent(".runhead")).toContain("lr");
    expect(await page.textContent(".runhead")).toContain("loss");
    expect(await page.textContent(".vlist")).toContain("ft-a");
    expect(await axeViolations(page)).toEqual([]);
    await screenshot(page, "console-runs");
  }, 60_000);

  it("filters with MLflow's search syntax on the server, and shows the API's message for a bad filter", async () => {
    await page.fill('input[placeholder^="metrics.loss"]', "params.lr = '0.01'");
    await page.keyboard.press("Enter");
    await page.waitForSelector("text=1 runs");
    expect(await page.textContent(".vlist")).not.toContain("ft-b");
    const bad = "metrics.loss <<< 1";
    const direct = await loom.api("POST", `${ML}/runs/search`, { experiment_ids: [expId], filter: bad });
    expect(direct.status).toBe(400);
    const message = (direct.body as { message: string }).message;
    await page.fill('input[placeholder^="metrics.loss"]', bad);
    await page.keyboard.press("Enter");
    await page.waitForSelector("p[role=alert]");
    expect(await page.textContent("p[role=alert]")).toBe(message);
    await screenshot(page, "console-runs-bad-filter");
    // Sorting by a metric column is the server's order_by: lowest accuracy (ft-b's 0.7) first.
    await page.fill('input[placeholder^="metrics.loss"]', "");
    await page.keyboard.press("Enter");
    await page.waitForSelector("text=2 runs");
    await page.click('button[aria-label^="Sort by accuracy"]');
    await page.click('button[aria-label^="Sort by accuracy"]');
    await page.waitForSelector('button[aria-label="Sort by accuracy, now ascending"]');
    await page.waitForSelector(".vrow:first-child >> text=ft-b");
  }, 60_000);

  it("draws a run's loss chart with exactly the points logged, and lists its artifacts", async () => {
    await page.goto(`${loom.url}/#/runs/default/${runs.a}`);
    await page.waitForSelector("figure[data-metric=loss] canvas");
    expect(await page.getAttribute("figure[data-metric=loss]", "data-points")).toBe(String(POINTS_A));
    expect(await page.getAttribute("figure[data-metric=loss]", "data-series")).toBe("1");
    expect(await page.textContent("main")).toContain("0.01");
    await page.click("text=model/");
    await page.waitForSelector("a[download='weights.txt']");
    const link = await page.getAttribute("a[download='weights.txt']", "href");
    const got = await page.evaluate(async (u: string) => (await fetch(u)).text(), link!);
    expect(got).toBe("w=1\n");
    // By time: the same points on a time axis.
    await page.check("input[type=radio] >> nth=1");
    await page.waitForSelector("figure[aria-label='loss by time'] canvas");
    expect(await page.getAttribute("figure[data-metric=loss]", "data-points")).toBe(String(POINTS_A));
    // accuracy has one point: by time its axis is a small window around it, not uPlot's years.
    await page.waitForSelector("figure[aria-label='accuracy by time'][data-xmin] canvas");
    const xmin = Number(await page.getAttribute("figure[data-metric=accuracy]", "data-xmin"));
    const xmax = Number(await page.getAttribute("figure[data-metric=accuracy]", "data-xmax"));
    expect(xmax - xmin).toBeGreaterThan(0);
    expect(xmax - xmin).toBeLessThanOrEqual(120);
    expect((xmin + xmax) / 2).toBeCloseTo(accuracyAt.a! / 1000, 3);
    // The many-point loss chart keeps its own span: first to last point, edge to edge.
    expect(Number(await page.getAttribute("figure[data-metric=loss]", "data-xmax"))).toBe(
      (accuracyAt.a! + (POINTS_A - 1) * 1000) / 1000,
    );
    expect(await axeViolations(page)).toEqual([]);
    await screenshot(page, "console-run");
  }, 60_000);

  it("compares two runs selected in the table: one chart per metric, each run a series", async () => {
    await page.goto(`${loom.url}/#/experiments/default/${expId}`);
    await page.waitForSelector("text=2 runs");
    await page.check("input[aria-label='Compare ft-a']");
    await page.check("input[aria-label='Compare ft-b']");
    await page.click("text=Compare 2 runs");
    await page.waitForSelector("figure[data-metric=loss][data-series='2'] canvas");
    const points = await page.getAttribute("figure[data-metric=loss]", "data-points");
    expect(
      points
        ?.split(",")
        .map(Number)
        .sort((x, y) => x - y),
    ).toEqual([POINTS_B, POINTS_A]);
    await page.waitForSelector("figure[data-metric=accuracy][data-series='2']");
    expect(await axeViolations(page)).toEqual([]);
    await screenshot(page, "console-runs-compare");
  }, 60_000);

  it("logged no console errors on any page", () => {
    // Chromium logs every refused fetch; the one 400 the deliberate bad filter drew is expected.
    const expected = /status of 400 .*\/mlflow\/runs\/search\)$/;
    expect(errors.filter((e) => !expected.test(e))).toEqual([]);
    expect(errors.filter((e) => expected.test(e))).toHaveLength(1);
  });
});

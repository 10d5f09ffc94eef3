import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Browser, type BrowserContext, launchBrowser, type Page, screenshot } from "./browser.js";
import { axeViolations, consoleLogin } from "./console.js";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * Issue 21's Workspaces and apps, Nodes and Apply pages in real Chromium on a real `loom up`
 * with two virtual GPUs: examples/hello applied from the editor (after its dry run said it
 * would start now) shows its log line live on the job's page the result links to; a bad manifest
 * shows its error at the field and line; a job that cannot fit gets "would wait", one that
 * outranks what holds the GPUs "would preempt" naming it; a running job
 * with half a GPU appears live on its node's device map; a workspace's Open button opens its own
 * origin (never the console's) through the one-time log-in link. No console errors, axe-core
 * finds no serious or critical violation; screenshots in test-artifacts/console-*.png.
 */

interface UiPage extends Page {
  fill(selector: string, value: string): Promise<void>;
  click(selector: string, opts?: { timeout?: number }): Promise<void>;
  waitForSelector(selector: string, opts?: { timeout?: number; state?: string }): Promise<unknown>;
  waitForFunction<A>(fn: (arg: A) => boolean, arg: A, opts?: { timeout?: number }): Promise<unknown>;
  setViewportSize(size: { width: number; height: number }): Promise<void>;
  keyboard: { press(key: string): Promise<void>; type(text: string): Promise<void> };
  on(
    event: "console",
    fn: (msg: { type(): string; text(): string; location(): { url: string } }) => void,
  ): void;
  on(event: "pageerror", fn: (err: Error) => void): void;
  $(selector: string): Promise<unknown>;
}
interface UiContext extends BrowserContext {
  waitForEvent(event: "page", opts?: { timeout?: number }): Promise<UiPage>;
}

const BASE = "/apis/loom.dev/v1alpha1";
const HELLO = readFileSync(join(ROOT, "examples", "hello", "hello.yaml"), "utf8");

describe("console: workspaces, nodes and apply in Chromium", () => {
  const loom = new LoomProcess(["--gpus", "2"]);
  let browser: Browser;
  let context: UiContext;
  let admin: UiPage;
  const contexts: BrowserContext[] = [];
  const errors: string[] = [];

  beforeAll(async () => {
    await loom.start();
    browser = await launchBrowser();
  }, 60_000);
  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await loom.cli(["delete", "ws", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });

  async function newPage(): Promise<UiPage> {
    const c = (await browser.newContext()) as UiContext;
    contexts.push(c);
    context = c;
    const page = (await c.newPage()) as UiPage;
    await page.setViewportSize({ width: 1280, height: 800 });
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`${page.url()}: ${m.text()} (${m.location().url})`);
    });
    page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
    return page;
  }

  const login = (page: UiPage, token: string) => consoleLogin(page, loom.url, token);

  const textOf = (page: UiPage, sel: string) =>
    page.evaluate((s: string) => document.querySelector(s)?.textContent ?? "", sel);

  it("shows a bad manifest's error at its field and line, and no Apply until it is fixed", async () => {
    admin = await newPage();
    await login(admin, loom.token);
    await admin.goto(`${loom.url}/#/apply`);
    await admin.waitForSelector("#manifest");
    // The API's dry run names the misspelt field; the editor finds its very line.
    const bad = HELLO.replace("  resources:\n", "  resourcez:\n");
    const line = bad.split("\n").findIndex((l) => l.includes("resourcez")) + 1;
    await admin.fill("#manifest", bad);
    await admin.waitForSelector(".problem", { timeout: 30_000 });
    const problem = await textOf(admin, ".problem");
    expect(problem).toContain("resourcez");
    expect(problem).toMatch(/line \d+/);
    expect(Number(/line (\d+)/.exec(problem)![1])).toBe(line);
    expect(
      await admin.evaluate(
        () =>
          (document.querySelector("button") &&
            [...document.querySelectorAll("button")].find((b) => b.textContent === "Apply")?.disabled) ??
          null,
      ),
    ).toBe(true);
    await screenshot(admin, "console-apply-error");
    // The API's refusal of the bad manifest (422) is the one error a page logged, and the point.
    expect(errors.splice(0).every((e) => e.includes("422"))).toBe(true);
  }, 90_000);

  it("dry-runs examples/hello (would start now), applies it, and its log line appears live on the linked job page", async () => {
    await admin.fill("#manifest", HELLO);
    await admin.waitForSelector(".verdict.Admit", { timeout: 30_000 });
    expect(await textOf(admin, ".verdict")).toMatch(/Would start now on vm/);
    await screenshot(admin, "console-apply");
    // No job yet: the dry run wrote nothing.
    expect((await loom.api("GET", `${BASE}/projects/default/trainingjobs/hello`)).status).toBe(404);
    await admin.waitForFunction(
      () => [...document.querySelectorAll("button")].some((b) => b.textContent === "Apply" && !b.disabled),
      undefined,
      { timeout: 30_000 },
    );
    await admin.click("button:text-is('Apply')");
    await admin.waitForSelector('a[href="#/jobs/default/hello"]', { timeout: 30_000 });
    await admin.click('a[href="#/jobs/default/hello"]');
    await admin.waitForFunction(
      () => (document.querySelector("[data-testid=logs]")?.textContent ?? "").includes("hello from loom"),
      undefined,
      { timeout: 60_000 },
    );
  }, 120_000);

  it("shows the scheduler's verdict for a job that cannot start: would wait", async () => {
    await admin.goto(`${loom.url}/#/apply`);
    await admin.waitForSelector("#manifest");
    const big = HELLO.replace("name: hello", "name: big").replace(
      "    cpu: 100m",
      "    cpu: 100m\n    gpu: 8",
    );
    await admin.fill("#manifest", big);
    await admin.waitForSelector(".verdict.Wait", { timeout: 30_000 });
    expect(await textOf(admin, ".verdict")).toMatch(/Would wait \(/);
  }, 60_000);

  it("shows a running job with half a GPU on its node's device map, live, and a dry run that would preempt", async () => {
    await admin.goto(`${loom.url}/#/nodes`);
    await admin.waitForSelector(".device");
    const job = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: "sleeper" },
      spec: { command: ["sleep", "300"], resources: { cpu: "100m", memory: "64Mi", gpu: 0.5 } },
    };
    expect((await loom.api("POST", `${BASE}/projects/default/trainingjobs`, job)).status).toBe(201);
    // No reload: the job's change triggers the read of the node view.
    await admin.waitForSelector('[role=img][aria-label*="default/sleeper worker 0 holds 50%"]', {
      timeout: 60_000,
    });
    await admin.waitForSelector('.held a[href="#/jobs/default/sleeper"]');
    await screenshot(admin, "console-nodes");
    // A whole device for a preemptible job, then a higher-priority job that needs one: no device
    // is free, so the dry run says whom it would preempt.
    const hog = {
      ...job,
      metadata: { name: "hog" },
      spec: { ...job.spec, resources: { ...job.spec.resources, gpu: 1 } },
    };
    expect((await loom.api("POST", `${BASE}/projects/default/trainingjobs`, hog)).status).toBe(201);
    await admin.waitForSelector('[role=img][aria-label*="default/hog worker 0 holds 100%"]', {
      timeout: 60_000,
    });
    await admin.goto(`${loom.url}/#/apply`);
    await admin.waitForSelector("#manifest");
    await admin.fill(
      "#manifest",
      HELLO.replace("name: hello", "name: urgent")
        .replace("    cpu: 100m", "    cpu: 100m\n    gpu: 1")
        .replace("spec:\n", "spec:\n  priority: 10\n"),
    );
    await admin.waitForSelector(".verdict.Preempt", { timeout: 30_000 });
    expect(await textOf(admin, ".verdict")).toMatch(/Would preempt 1 workload\(s\).*default\/(hog|sleeper)/);
    await screenshot(admin, "console-apply-preempt");
    for (const name of ["sleeper", "hog"])
      await loom.api("DELETE", `${BASE}/projects/default/trainingjobs/${name}`);
  }, 90_000);

  it("opens a workspace's own origin through the one-time log-in link, and stops it", async () => {
    const ws = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Workspace",
      metadata: { name: "web" },
      spec: { ide: "none", command: ["python3", "-m", "http.server", "$PORT", "--bind", "127.0.0.1"] },
    };
    expect((await loom.api("POST", `${BASE}/projects/default/workspaces`, ws)).status).toBe(201);
    await admin.goto(`${loom.url}/#/workspaces`);
    await admin.waitForSelector("text=default/web");
    await admin.waitForSelector(".served .phase.Running", { timeout: 90_000 });
    await screenshot(admin, "console-workspaces");
    const popup = context.waitForEvent("page", { timeout: 30_000 });
    await admin.click('button[aria-label="Open default/web in a new tab"]');
    const tab = await popup;
    await tab.waitForFunction(
      () => document.body?.textContent?.includes("Directory listing") ?? false,
      undefined,
      { timeout: 30_000 },
    );
    const opened = new URL(tab.url());
    const status = (await loom.api("GET", `${BASE}/projects/default/workspaces/web`)).body as {
      status: { url: string };
    };
    expect(opened.origin).toBe(new URL(status.status.url).origin);
    expect(opened.origin).not.toBe(new URL(loom.url).origin);
    // The console's session never reaches the workspace's origin.
    expect((await context.cookies(opened.origin)).map((c) => c.name)).not.toContain("loom_console");
    await screenshot(tab, "console-workspace-opened");
    await tab.close();
    await admin.click('button[aria-label="Stop default/web"]');
    await admin.waitForSelector('button[aria-label="Start default/web"]', { timeout: 60_000 });
    await admin.waitForSelector(".served .phase.Stopped", { timeout: 60_000 });
  }, 180_000);

  it("has no serious accessibility violations and no console errors on these pages; viewers cannot apply", async () => {
    const found: string[] = [];
    for (const [path, text] of [
      ["workspaces", "Workspaces and apps"],
      ["nodes", "Workloads here"],
      ["apply", "Validation"],
    ] as const) {
      await admin.goto(`${loom.url}/#/${path}`);
      await admin.waitForSelector(`text=${text}`);
      found.push(...(await axeViolations(admin)).map((v) => `${path}: ${v}`));
    }
    expect(found).toEqual([]);
    expect(errors).toEqual([]);
    const made = await loom.api("POST", `${BASE}/tokens`, {
      name: "viewer",
      role: "viewer",
      project: "default",
    });
    expect(made.status).toBe(201);
    const viewer = await newPage();
    await login(viewer, (made.body as { token: string }).token);
    await viewer.goto(`${loom.url}/#/apply`);
    await viewer.waitForSelector("text=it can read but not apply");
    expect(await viewer.$("button:text-is('Apply')")).toBeNull();
    await viewer.goto(`${loom.url}/#/workspaces`);
    await viewer.waitForSelector("text=default/web");
    expect(await viewer.$("button:text-is('Start')")).toBeNull();
    await screenshot(viewer, "console-viewer-apply");
    expect(errors).toEqual([]);
  }, 90_000);
});

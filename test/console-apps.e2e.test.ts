import { chmodSync, copyFileSync, mkdirSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appsVenv } from "./appframeworks.js";
import { type Browser, type BrowserContext, launchBrowser, type Page, screenshot } from "./browser.js";
import { axeViolations, consoleLogin } from "./console.js";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * Issue 21's Apps page in real Chromium on a real `loom up`: a real Streamlit App
 * (test/fixtures/apps, the venv test/apps* use) shows Ready, and its Open button opens a tab on
 * the app's own user-content origin (never the console's), through the one-time log-in link, which
 * lands on the app's page as rendered by Streamlit. The attacks: the link's ticket is refused the
 * second time, and the console's session cookie never reaches the app's origin.
 * Screenshots: test-artifacts/console-apps*.png.
 */

interface UiPage extends Page {
  click(selector: string, opts?: { timeout?: number }): Promise<void>;
  waitForSelector(selector: string, opts?: { timeout?: number }): Promise<unknown>;
  setViewportSize(size: { width: number; height: number }): Promise<void>;
  fill(selector: string, value: string): Promise<void>;
  keyboard: { press(key: string): Promise<void> };
  on(
    event: "console",
    fn: (msg: { type(): string; text(): string; location(): { url: string } }) => void,
  ): void;
  on(event: "pageerror", fn: (err: Error) => void): void;
}
interface UiContext extends BrowserContext {
  waitForEvent(event: "page", opts?: { timeout?: number }): Promise<UiPage>;
  on(event: "request", fn: (req: { url(): string }) => void): void;
}

const BASE = "/apis/loom.dev/v1alpha1";

/** A GET of `url` sent to loopback with its Host (Node need not resolve *.app.localhost): status and Set-Cookie. */
function get(url: URL): Promise<{ status: number; setCookie: string }> {
  return new Promise((ok, fail) => {
    const req = request(
      { host: "127.0.0.1", port: url.port, path: url.pathname + url.search, headers: { host: url.host } },
      (res) => {
        res.resume();
        res.on("end", () =>
          ok({ status: res.statusCode ?? 0, setCookie: String(res.headers["set-cookie"] ?? "") }),
        );
      },
    );
    req.on("error", fail);
    req.end();
  });
}

describe("console: an App's Open button in Chromium", () => {
  const loom = new LoomProcess();
  let browser: Browser;
  let context: UiContext;
  let page: UiPage;
  const errors: string[] = [];

  beforeAll(async () => {
    const venv = appsVenv();
    await loom.start();
    // The app's code where the sandboxed replica (the project's uid) may read it.
    const code = join(loom.home, "code");
    mkdirSync(code);
    copyFileSync(join(ROOT, "test/fixtures/apps/streamlit_app.py"), join(code, "streamlit_app.py"));
    chmodSync(loom.home, 0o755);
    const app =
      "apiVersion: loom.dev/v1alpha1\nkind: App\nmetadata: {name: tides}\nspec:\n  framework: streamlit\n" +
      `  file: streamlit_app.py\n  workingDir: ${code}\n  python: {venv: ${venv}}\n  replicas: {min: 1, max: 1}\n`;
    const r = await loom.cli(["apply", "-f", "-"], { input: app });
    expect(r.code, r.stderr).toBe(0);
    browser = await launchBrowser();
    context = (await browser.newContext()) as UiContext;
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
    await loom.cli(["delete", "app", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });

  async function appStatus(): Promise<{ url?: string; ready?: number }> {
    const r = await loom.api("GET", `${BASE}/projects/default/apps/tides`);
    return (r.body as { status?: { url?: string; ready?: number } }).status ?? {};
  }

  it("opens the app on its own origin through the one-time log-in, landing on the app's page", async () => {
    await page.goto(`${loom.url}/#/workspaces`);
    await page.waitForSelector("text=default/tides");
    // Live through the watch: the row turns Ready once Streamlit answers.
    await page.waitForSelector("#apps-title ~ table .phase.Ready", { timeout: 300_000 });
    let status = await appStatus();
    for (const deadline = Date.now() + 60_000; !status.url && Date.now() < deadline; await sleep(250))
      status = await appStatus();
    expect(status.url).toBeTruthy();
    expect(await axeViolations(page)).toEqual([]);
    await screenshot(page, "console-apps");

    const logins: string[] = [];
    context.on("request", (req) => {
      if (req.url().includes("/_loom/login")) logins.push(req.url());
    });
    const popup = context.waitForEvent("page", { timeout: 30_000 });
    await page.click('button[aria-label="Open default/tides in a new tab"]');
    const tab = await popup;
    // Streamlit's own page, rendered by its script over its WebSocket: the log-in landed on the app.
    await tab.waitForSelector("text=hello from streamlit", { timeout: 120_000 });
    const opened = new URL(tab.url());
    expect(opened.origin).toBe(new URL(status.url!).origin);
    expect(opened.origin).not.toBe(new URL(loom.url).origin);
    expect(opened.hostname).toMatch(/^tides--default\.app\.localhost$/);
    // Landed on the app, the ticket gone from the address bar.
    expect(opened.pathname).toBe("/");
    expect(opened.search).not.toMatch(/ticket/);
    await screenshot(tab, "console-apps-opened");

    // The tab went through exactly one log-in link, on the app's origin.
    expect(logins).toHaveLength(1);
    const link = new URL(logins[0]!);
    expect(link.origin).toBe(opened.origin);
    // Attack: the same link a second time (say, from the history) is refused: the ticket is one-time.
    const again = await get(link);
    expect(again.status, `the reused ticket got ${again.status}: ${again.setCookie}`).toBeGreaterThanOrEqual(
      400,
    );
    expect(again.setCookie).not.toMatch(/loom_app=/);
    // Attack: the console's session never reaches the app's origin; the app's never the console's.
    expect((await context.cookies(opened.origin)).map((c) => c.name)).not.toContain("loom_console");
    expect((await context.cookies(loom.url)).map((c) => c.name)).not.toContain("loom_app");
    await tab.close();
  }, 600_000);

  it("logged no console errors on the console's page", () => {
    expect(errors).toEqual([]);
  });
});

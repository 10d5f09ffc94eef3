import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { type Browser, type BrowserContext, launchBrowser, type Page, screenshot } from "./browser.js";
import { axeViolations, consoleLogin } from "./console.js";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * Issue 21's console in real Chromium on a real `loom up`: log in with a token; examples/hello
 * applied through the API appears live in the jobs list and its log line appears live on its
 * page; a viewer sees no write buttons and a write forged with the viewer's cookie gets 403; a
 * write from another origin of the same site (which SameSite does not stop) gets 403; no console
 * errors on any page; axe-core finds no serious or critical violation. Screenshots go to
 * test-artifacts/console-*.png.
 */

/** What this test drives of playwright's Page beyond test/browser.ts's subset. */
interface UiPage extends Page {
  fill(selector: string, value: string): Promise<void>;
  click(selector: string, opts?: { timeout?: number }): Promise<void>;
  waitForSelector(selector: string, opts?: { timeout?: number; state?: string }): Promise<unknown>;
  waitForFunction<A>(fn: (arg: A) => boolean, arg: A, opts?: { timeout?: number }): Promise<unknown>;
  waitForURL(url: string | RegExp, opts?: { timeout?: number }): Promise<void>;
  setViewportSize(size: { width: number; height: number }): Promise<void>;
  keyboard: { press(key: string): Promise<void>; type(text: string): Promise<void> };
  on(
    event: "console",
    fn: (msg: { type(): string; text(): string; location(): { url: string } }) => void,
  ): void;
  on(event: "pageerror", fn: (err: Error) => void): void;
  $(selector: string): Promise<unknown>;
}

const BASE = "/apis/loom.dev/v1alpha1";

describe("web console in Chromium", () => {
  const loom = new LoomProcess();
  let browser: Browser;
  let attacker: Server | undefined;
  const contexts: BrowserContext[] = [];
  /** Errors the pages logged, by page: none are allowed on any console page. */
  const errors: string[] = [];

  beforeAll(async () => {
    await loom.start();
    browser = await launchBrowser();
  }, 60_000);
  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    attacker?.close();
    await loom.stop();
  });

  async function newPage(): Promise<UiPage> {
    const context = await browser.newContext();
    contexts.push(context);
    const page = (await context.newPage()) as UiPage;
    await page.setViewportSize({ width: 1280, height: 800 });
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`${page.url()}: ${m.text()} (${m.location().url})`);
    });
    page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
    return page;
  }

  const login = (page: UiPage, token: string) => consoleLogin(page, loom.url, token);

  let admin: UiPage;

  it("logs in with a token, kept in an HttpOnly SameSite=Strict cookie", async () => {
    admin = await newPage();
    await page0Login();
    const context = contexts[0]!;
    const cookies = await context.cookies(loom.url);
    const session = cookies.find((c) => c.name === "loom_console");
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe("Strict");
    expect(await admin.evaluate(() => document.cookie)).not.toContain("loom_console");
    await screenshot(admin, "console-overview");
  }, 60_000);

  async function page0Login() {
    await admin.goto(`${loom.url}/`);
    await admin.waitForSelector("#token");
    await screenshot(admin, "console-login");
    await admin.fill("#token", loom.token);
    await admin.keyboard.press("Enter");
    await admin.waitForSelector("nav[aria-label=Pages]");
    await admin.waitForSelector("text=Capacity by node pool");
  }

  it("shows examples/hello appear live in the jobs list and its log line live on its page", async () => {
    await admin.goto(`${loom.url}/#/jobs`);
    await admin.waitForSelector("text=0 of 0 jobs");
    const manifest = parse(readFileSync(join(ROOT, "examples", "hello", "hello.yaml"), "utf8"));
    const created = await loom.api("POST", `${BASE}/projects/default/trainingjobs`, manifest);
    expect(created.status).toBe(201);
    // No reload: the row arrives through the watch.
    await admin.waitForSelector('a[href="#/jobs/default/hello"]', { timeout: 30_000 });
    await admin.click('a[href="#/jobs/default/hello"]');
    await admin.waitForFunction(
      () => (document.querySelector("[data-testid=logs]")?.textContent ?? "").includes("hello from loom"),
      undefined,
      { timeout: 60_000 },
    );
    await admin.waitForSelector(".phase.Succeeded", { timeout: 60_000 });
    await admin.waitForSelector("text=Delete job");
    await screenshot(admin, "console-job-hello");
    await admin.goto(`${loom.url}/#/jobs`);
    await admin.waitForSelector('a[href="#/jobs/default/hello"]');
    await screenshot(admin, "console-jobs");
  }, 120_000);

  it("has no serious accessibility violations and no console errors on any page", async () => {
    const pages = [
      ["overview", "Capacity by node pool"],
      ["jobs", "Jobs"],
      ["jobs/default/hello", "Workers"],
      ["projects", "API tokens"],
    ] as const;
    const found: string[] = [];
    for (const [path, text] of pages) {
      await admin.goto(`${loom.url}/#/${path}`);
      await admin.waitForSelector(`text=${text}`);
      found.push(...(await axeViolations(admin)).map((v) => `${path}: ${v}`));
    }
    await screenshot(admin, "console-projects");
    expect(found).toEqual([]);
    expect(errors).toEqual([]);
  }, 120_000);

  it("shows a viewer no write buttons, and refuses a write forged with the viewer's cookie (403)", async () => {
    const made = await loom.api("POST", `${BASE}/tokens`, {
      name: "viewer",
      role: "viewer",
      project: "default",
    });
    expect(made.status).toBe(201);
    const viewer = await newPage();
    await login(viewer, (made.body as { token: string }).token);
    await viewer.goto(`${loom.url}/#/jobs/default/hello`);
    await viewer.waitForSelector("text=Workers");
    expect(await viewer.$("text=Delete job")).toBeNull();
    await viewer.goto(`${loom.url}/#/projects`);
    await viewer.waitForSelector("text=Quota");
    expect(await viewer.$("text=Create API key")).toBeNull();
    expect(await viewer.$("text=Create token")).toBeNull();
    await screenshot(viewer, "console-viewer-projects");
    expect(errors).toEqual([]);
    // The forgery: the viewer's own session and CSRF token, a write the page never offers.
    const status = await viewer.evaluate(async (base: string) => {
      const csrf = /loom_csrf=([^;]+)/.exec(document.cookie)?.[1] ?? "";
      const res = await fetch(`${base}/projects/default/trainingjobs/hello`, {
        method: "DELETE",
        headers: { "x-loom-csrf": csrf },
      });
      return res.status;
    }, BASE);
    expect(status).toBe(403);
    expect((await loom.job("hello")).metadata.name).toBe("hello");
    // The refusal is the one error a page logged ("Failed to load resource: … 403"), and the point.
    expect(errors.splice(0)).toEqual([expect.stringContaining("403")]);
  }, 60_000);

  it("creates and revokes a project's API key from the Projects page, by keyboard", async () => {
    await admin.goto(`${loom.url}/#/projects`);
    await admin.waitForSelector("text=API keys (inference gateway)");
    // Keyboard: the name field, type, Enter submits the form.
    await admin.click('form[aria-label="Create API key"] input');
    await admin.keyboard.type("console-key");
    await admin.keyboard.press("Enter");
    await admin.waitForSelector("code.secret");
    const keys = await loom.api("GET", `${BASE}/projects/default/apikeys`);
    const made = (keys.body as { items: { id: string; name: string }[] }).items.find(
      (k) => k.name === "console-key",
    );
    expect(made).toBeDefined();
    await screenshot(admin, "console-apikey-created");
    await admin.click('button[aria-label="Revoke console-key"]');
    await admin.waitForSelector('button[aria-label="Revoke console-key"]', { state: "detached" });
    const after = await loom.api("GET", `${BASE}/projects/default/apikeys`);
    expect((after.body as { items: { name: string }[] }).items.some((k) => k.name === "console-key")).toBe(
      false,
    );
    expect(errors).toEqual([]);
  }, 60_000);

  it("lists 10,000 jobs rendering only the rows in view, and scrolls to the last", async () => {
    // A project whose limit no job fits: its jobs wait, so nothing runs.
    const project = {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "bulk" },
      spec: { limit: { cpu: "1m" } },
    };
    expect((await loom.api("POST", `${BASE}/projects`, project)).status).toBe(201);
    await admin.goto(`${loom.url}/#/jobs`);
    await admin.waitForSelector("text=of 1 jobs");
    const N = 10_000;
    for (let i = 0; i < N; i += 100) {
      await Promise.all(
        Array.from({ length: 100 }, (_, j) =>
          loom.api("POST", `${BASE}/projects/bulk/trainingjobs`, {
            apiVersion: "loom.dev/v1alpha1",
            kind: "TrainingJob",
            metadata: { name: `j${String(i + j).padStart(5, "0")}`, labels: { bulk: "yes" } },
            spec: { command: ["true"], resources: { cpu: "100m", memory: "16Mi" } },
          }),
        ),
      );
    }
    // Arrived through the open page's watch, no reload.
    await admin.waitForSelector(`text=${N + 1} of ${N + 1} jobs`, { timeout: 120_000 });
    const rendered = await admin.evaluate(() => document.querySelectorAll(".vrow").length);
    expect(rendered).toBeLessThan(100);
    await admin.evaluate(() => {
      const box = document.querySelector(".vlist")!;
      box.scrollTop = box.scrollHeight;
    });
    // Newest first: the oldest (j00000… or hello) is last.
    await admin.waitForSelector('a[href="#/jobs/default/hello"]');
    await admin.fill('input[placeholder="team=nlp,example"]', "bulk=yes");
    await admin.waitForSelector(`text=${N} of ${N + 1} jobs`);
    await screenshot(admin, "console-jobs-10000");
    // A figure for the report, not an assertion (the machine is shared): a fresh load of the page
    // to its first rows with 10,001 jobs (bench:console is where the budget of 1 s is judged).
    const started = Date.now();
    await admin.goto(`${loom.url}/?fresh=1#/jobs`);
    await admin.waitForSelector(".vrow");
    const listed = Date.now();
    const all = await fetch(`${loom.url}${BASE}/trainingjobs`, {
      headers: { authorization: `Bearer ${loom.token}` },
    });
    const bytes = (await all.text()).length;
    console.log(
      `console: jobs page first rows with ${N + 1} jobs after ${listed - started} ms; ` +
        `the list alone: ${Date.now() - listed} ms, ${(bytes / 2 ** 20).toFixed(1)} MiB of JSON`,
    );
    expect(errors).toEqual([]);
  }, 300_000);

  it("refuses a write from another origin of the same site, which carries the cookie (403)", async () => {
    // Another port of the same host: the same site to SameSite (ports do not count), so the
    // browser sends the admin's cookie along; only the CSRF check stands in the way.
    const target = `${loom.url}${BASE}/projects/default/trainingjobs`;
    attacker = createServer((req, res) => {
      res.setHeader("content-type", "text/html");
      if (req.url === "/blank") return res.end("<!doctype html><title>elsewhere</title>");
      res.end(
        `<!doctype html><form id=f method=POST action="${target}" enctype="text/plain">` +
          `<input name='{"apiVersion":"loom.dev/v1alpha1","kind":"TrainingJob","metadata":{"name":"forged"},"spec":{"command":["true"],"x":"' value='"}}'>` +
          "</form><script>document.getElementById('f').submit()</script>",
      );
    });
    await new Promise<void>((ok) => attacker!.listen(0, new URL(loom.url).hostname, ok));
    const port = (attacker.address() as { port: number }).port;
    const page = admin;
    await page.goto(`http://${new URL(loom.url).hostname}:${port}/`);
    await page.waitForURL(target, { timeout: 30_000 });
    const body = (await page.textContent("body")) ?? "";
    expect(body).toContain("403");
    await screenshot(page, "console-csrf-refused");
    // A script on that origin cannot send the header either: without a CORS grant, which Loom never
    // gives, the browser's preflight fails and the request is never sent.
    await page.goto(`http://${new URL(loom.url).hostname}:${port}/blank`);
    const sent = await page.evaluate(async (url: string) => {
      try {
        await fetch(url, {
          method: "POST",
          credentials: "include",
          headers: { "x-loom-csrf": "guess", "content-type": "application/json" },
          body: JSON.stringify({ metadata: { name: "forged" }, spec: { command: ["true"] } }),
        });
        return "sent";
      } catch {
        return "blocked";
      }
    }, target);
    expect(sent).toBe("blocked");
    const r = await loom.api("GET", `${BASE}/projects/default/trainingjobs/forged`);
    expect(r.status).toBe(404);
  }, 60_000);
});

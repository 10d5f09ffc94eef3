import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Browser, launchBrowser, type Page, screenshot } from "./browser.js";
import { codeServerPackage } from "./codeserver.js";
import { LoomProcess } from "./helpers.js";

/**
 * Issue 19's `ide: vscode` as a user meets it, on a real `loom up` with real code-server (npm,
 * 4.100.3) and real Chromium: the one-time link logs in, VS Code's workbench loads through Loom's
 * workspace origin and its Explorer lists a file of the home — which it reads over the WebSocket
 * Loom proxies to code-server's remote side. The open editor keeps the workspace from being
 * culled (its WebSocket traffic through Loom's proxy is activity); once the browser is gone,
 * idle culling stops it with reason Idle, as it does for Jupyter. Screenshots go to test-artifacts/.
 */

interface UiPage extends Page {
  waitForSelector(selector: string, opts?: { timeout?: number }): Promise<unknown>;
}

interface Ws {
  status?: {
    phase?: string;
    url?: string;
    stoppedReason?: string;
    conditions?: { type: string; message?: string }[];
  };
}

/** Short, so the test sees a cull; the page is kept open for longer than this first. */
const IDLE_S = 20;

describe("VS Code (code-server) workspace in Chromium through Loom", () => {
  const loom = new LoomProcess();
  let browser: Browser | undefined;
  let codeServer = "";
  beforeAll(() => {
    codeServer = codeServerPackage();
  }, 900_000);
  afterAll(async () => {
    await browser?.close();
    await loom.cli(["delete", "ws", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });

  async function get(): Promise<Ws> {
    const r = await loom.cli(["get", "ws", "code", "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Ws) : {};
  }

  async function phase(want: string, ms = 240_000): Promise<Ws> {
    let w: Ws = {};
    for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(250)) {
      w = await get();
      if (w.status?.phase === want || w.status?.phase === "Failed") break;
    }
    expect(w.status?.phase, JSON.stringify(w.status) + loom.log.slice(-2000)).toBe(want);
    return w;
  }

  it("logs in by the one-time link, VS Code's Explorer lists the home over Loom's WebSocket proxy, and an open editor is activity until the browser goes", async () => {
    await loom.start({ LOOM_CODE_SERVER: codeServer });
    expect(loom.log).toMatch(/code-server serves ide: vscode workspaces/);
    const yaml = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: code}
spec: {ide: vscode, idleTimeout: ${IDLE_S}s}
`;
    const applied = await loom.cli(["apply", "-f", "-"], { input: yaml });
    expect(applied.code, applied.stderr).toBe(0);
    await phase("Running");
    writeFileSync(join(loom.dataDir, "homes", "default", "code", "from-the-home.txt"), "kept\n");

    const open = await loom.cli(["open", "ws/code", "--no-browser"]);
    expect(open.code, open.stderr).toBe(0);
    const link = open.stdout.trim();
    expect(link).toMatch(/^http:\/\/code--default\.ws\.localhost:\d+\/_loom\/login\?ticket=\S+$/);

    browser = await launchBrowser();
    const page = (await (await browser.newContext()).newPage()) as UiPage;
    await page.goto(link);
    await page.waitForSelector(".monaco-workbench", { timeout: 120_000 });
    // The Explorer's rows come from code-server's remote file system, over the WebSocket.
    await page
      .waitForSelector('.explorer-folders-view .monaco-list-row:has-text("from-the-home.txt")', {
        timeout: 120_000,
      })
      .catch(async (err) => {
        await screenshot(page, "workspace-vscode-failed");
        throw err;
      });
    expect(new URL(page.url()).host).toBe(new URL(link).host);
    await screenshot(page, "workspace-vscode-explorer");

    // Open for longer than idleTimeout: VS Code's connection through Loom keeps it running.
    await sleep((IDLE_S + 15) * 1000);
    expect((await get()).status?.phase).toBe("Running");

    await browser.close();
    browser = undefined;
    const culled = await phase("Stopped", 180_000);
    expect(culled.status?.stoppedReason).toBe("Idle");
  }, 900_000);
});

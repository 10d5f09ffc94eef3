import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appsVenv } from "./appframeworks.js";
import { type Browser, launchBrowser, type Page, screenshot } from "./browser.js";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * Issue 20's browser scenario on a real `loom up`: the playground's examples (examples/playground)
 * as Apps behind the project log-in, opened in real Chromium by `loom open app/NAME` links. The
 * Gradio chat answers a typed prompt with a reply streamed from the `tiny` InferenceService
 * (loom-tinygpt) through the openai client Loom configures (OPENAI_BASE_URL and the bridged key
 * file: no configuration in the app); the Streamlit comparison renders and updates over its
 * WebSocket. Another project's member gets no link and no app. Screenshots go to test-artifacts/.
 * The apps load their system prompts from the project's registry and the chat records a trace per
 * exchange, with mlflow configured by Loom alone (MLFLOW_TRACKING_URI and a credential file).
 */

/** Two distinctive versions of the playground's system prompt; @champion is the second. */
const PROMPTS = [
  "PROMPT-ONE: you keep the tide log. Answer briefly.",
  "PROMPT-TWO: you speak only of ships and sails, at length.",
];
const BASE = "/apis/loom.dev/v1alpha1";

/** What this test drives of playwright's Page beyond test/browser.ts's subset. */
interface UiPage extends Page {
  waitForSelector(selector: string, opts?: { timeout?: number }): Promise<unknown>;
  click(selector: string, opts?: { timeout?: number }): Promise<void>;
  fill(selector: string, value: string, opts?: { timeout?: number }): Promise<void>;
  keyboard: { press(key: string): Promise<void> };
  waitForFunction<A>(fn: (arg: A) => boolean, arg?: A, opts?: { timeout?: number }): Promise<unknown>;
}

interface Status {
  phase?: string;
  ready?: number;
  url?: string;
}

describe("playground apps in Chromium through Loom", () => {
  const loom = new LoomProcess();
  const modelDir = mkdtempSync(join(tmpdir(), "loom-playground-model-"));
  // Replicas run sandboxed as their project's uid: the model they are lent must be readable by it.
  chmodSync(modelDir, 0o755);
  let browser: Browser | undefined;
  let key = "";
  let python = "";

  /** Runs `code` with the official mlflow client against the default project (admin token); its stdout. */
  function mlflowClient(code: string): string {
    const r = spawnSync(python, ["-c", code], {
      encoding: "utf8",
      env: { ...process.env, MLFLOW_TRACKING_URI: loom.url, MLFLOW_TRACKING_TOKEN: loom.token },
      timeout: 120_000,
    });
    expect(r.status, r.stderr).toBe(0);
    return r.stdout;
  }

  async function waitFor(path: string, done: (s: Status) => boolean): Promise<Status> {
    let s: Status = {};
    for (const deadline = Date.now() + 300_000; Date.now() < deadline; await sleep(250)) {
      const r = await loom.api("GET", `${BASE}/projects/default/${path}`);
      s = (r.body as { status?: Status }).status ?? {};
      if (done(s)) return s;
    }
    throw new Error(`${path} never got ready: ${JSON.stringify(s)}\n${loom.log.slice(-3000)}`);
  }

  /** A one-time log-in link for the app, printed by the real CLI. */
  async function openLink(name: string): Promise<string> {
    const open = await loom.cli(["open", `app/${name}`, "--no-browser"]);
    expect(open.code, open.stderr).toBe(0);
    const link = open.stdout.trim();
    expect(link).toMatch(
      new RegExp(`^http://${name}--default\\.app\\.localhost:\\d+/_loom/login\\?ticket=\\S+$`),
    );
    return link;
  }

  beforeAll(async () => {
    const venv = appsVenv();
    python = join(venv, "bin", "python");
    // A tiny pretrained checkpoint (ckpt.pt), as test/serving.e2e.test.ts makes one.
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
    // The registry's prompt versions, before the apps load them at start.
    mlflowClient(
      [
        "import mlflow",
        ...PROMPTS.map(
          (t) => `v = mlflow.genai.register_prompt(name="playground-system", template=${JSON.stringify(t)})`,
        ),
        'mlflow.genai.set_prompt_alias("playground-system", alias="champion", version=v.version)',
      ].join("\n"),
    );
    // The examples as a user has them: a directory the sandboxed replica may read.
    const code = join(loom.home, "playground");
    cpSync(join(ROOT, "examples/playground"), code, { recursive: true });
    chmodSync(loom.home, 0o755);
    const app = (name: string, framework: string, file: string) =>
      `apiVersion: loom.dev/v1alpha1\nkind: App\nmetadata: {name: ${name}}\nspec:\n  framework: ${framework}\n` +
      `  file: ${file}\n  workingDir: ${code}\n  python: {venv: ${venv}}\n  replicas: {min: 1, max: 1}\n` +
      // Greedy decoding: the reply must be the one the service gives the same messages.
      "  env: {MODEL: tiny, TEMPERATURE: '0'}\n";
    const isvc =
      "apiVersion: loom.dev/v1alpha1\nkind: InferenceService\nmetadata: {name: tiny}\n" +
      `spec: {model: ${modelDir}, runtime: loom-tinygpt, replicas: {min: 1, max: 1}}\n`;
    const other = "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: other}\nspec: {}\n";
    const r = await loom.cli(["apply", "-f", "-"], {
      input: [other, isvc, app("chat", "gradio", "chat.py"), app("compare", "streamlit", "compare.py")].join(
        "---\n",
      ),
    });
    expect(r.code, r.stderr).toBe(0);
    const k = await loom.api("POST", `${BASE}/projects/default/apikeys`, { name: "test" });
    expect(k.status, JSON.stringify(k.body)).toBe(201);
    key = (k.body as { key: string }).key;
    await waitFor("inferenceservices/tiny", (s) => s.phase === "Ready");
    await waitFor("apps/chat", (s) => (s.ready ?? 0) >= 1 && !!s.url);
    await waitFor("apps/compare", (s) => (s.ready ?? 0) >= 1 && !!s.url);
    browser = await launchBrowser();
  }, 600_000);

  afterAll(async () => {
    await browser?.close();
    await loom.cli(["delete", "app", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.cli(["delete", "isvc", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
    rmSync(modelDir, { recursive: true, force: true });
  }, 120_000);

  it("the Gradio chat answers a typed prompt with a reply streamed from the tiny service", async () => {
    const context = await browser!.newContext();
    const page = (await context.newPage()) as UiPage;
    await page.goto(await openLink("chat"));
    expect(new URL(page.url()).pathname).toBe("/");
    const box = "textarea";
    await page.waitForSelector(box, { timeout: 120_000 });
    // The registry's @champion (version 2), loaded with no configuration, and the page says so.
    await page.waitForSelector("text=prompts:/playground-system@champion (version 2)", { timeout: 60_000 });
    // Every text the bot's message shows, from before the first token (streamed: several).
    await page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { seen: string[] }).seen = seen;
      new MutationObserver(() => {
        const bots = document.querySelectorAll('[data-testid="bot"]');
        const text = bots[bots.length - 1]?.textContent?.trim();
        if (text && seen[seen.length - 1] !== text) seen.push(text);
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await page.fill(box, "Tide log?");
    await page.keyboard.press("Enter");
    const want = await complete("Tide log?", PROMPTS[1]!);
    expect(want.length).toBeGreaterThan(0);
    await page
      .waitForFunction(
        (text: string) => {
          const bots = document.querySelectorAll('[data-testid="bot"]');
          return (bots[bots.length - 1]?.textContent ?? "").trim() === text;
        },
        want.trim(),
        { timeout: 120_000 },
      )
      .catch(async (err) => {
        await screenshot(page, "apps-browser-gradio-failed");
        throw err;
      });
    await screenshot(page, "apps-browser-gradio-chat");
    const seen = await page.evaluate(() => (window as unknown as { seen: string[] }).seen);
    // Streamed: the reply grew in the page through shorter prefixes of itself.
    expect(seen.length, JSON.stringify(seen)).toBeGreaterThan(1);
    for (const s of seen) expect(want.trim().startsWith(s)).toBe(true);
    await context.close();
    // The exchange is a trace in the project's `playground` experiment: the registry's prompt in
    // its request, the streamed reply in its response.
    const deadline = Date.now() + 60_000;
    let traces: { request: string; response: string }[] = [];
    for (; Date.now() < deadline; await sleep(500)) {
      traces = JSON.parse(
        mlflowClient(
          [
            "import json, mlflow",
            'e = mlflow.get_experiment_by_name("playground")',
            'ts = mlflow.search_traces(locations=[e.experiment_id], return_type="list") if e else []',
            'print(json.dumps([{"request": t.data.request, "response": t.data.response} for t in ts]))',
          ].join("\n"),
        ),
      );
      if (traces.some((t) => t.request.includes("Tide log?"))) break;
    }
    const trace = traces.find((t) => t.request.includes("Tide log?"));
    expect(trace, JSON.stringify(traces)).toBeDefined();
    expect(trace!.request).toContain("PROMPT-TWO");
    expect(JSON.parse(trace!.response).reply).toBe(want);
  }, 300_000);

  /** What the tiny service answers the chat's first turn, asked directly with the project's key. */
  async function complete(user: string, system: string, max_tokens = 64): Promise<string> {
    const res = await fetch(`${loom.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "tiny",
        messages: [
          { role: "system", content: system },
          { role: "user", content: user },
        ],
        max_tokens,
        temperature: 0,
      }),
    });
    expect(res.status).toBe(200);
    return ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message
      .content;
  }

  it("the Streamlit comparison renders and updates over its WebSocket", async () => {
    const context = await browser!.newContext();
    const page = (await context.newPage()) as UiPage;
    await page.goto(await openLink("compare"));
    // Rendered from the script's first run: the page's elements arrive over /_stcore/stream.
    await page.waitForSelector("text=Type an input above", { timeout: 120_000 });
    const input = '[data-testid="stTextInput"] input';
    for (const question of ["Tide log?", "Mira found the"]) {
      await page.fill(input, question);
      await page.keyboard.press("Enter");
      await page
        .waitForFunction(
          (q: string) =>
            [...document.querySelectorAll("strong + em, em")].filter((e) => e.textContent === q).length >=
              2 && document.querySelectorAll('[data-testid="stCode"], pre').length >= 2,
          question,
          { timeout: 120_000 },
        )
        .catch(async (err) => {
          await screenshot(page, "apps-browser-streamlit-failed");
          throw err;
        });
    }
    // Two versions side by side: each column names its version and shows what the service answers
    // with that version's prompt; long answers wrap instead of running past the column.
    // Waited for (a rerun shows the last input's elements, stale, until the new ones arrive).
    const want = [
      (await complete("Mira found the", PROMPTS[0]!, 48)).trim(),
      (await complete("Mira found the", PROMPTS[1]!, 48)).trim(),
    ];
    const read = () =>
      [...document.querySelectorAll('[data-testid="stColumn"]')].map((c) => ({
        caption: c.querySelector('[data-testid="stCaptionContainer"]')?.textContent ?? "",
        answer: (c.querySelector("pre")?.textContent ?? "").trim(),
        cut: [...c.querySelectorAll("pre, code")].some((e) => e.scrollWidth > e.clientWidth + 1),
      }));
    await page
      .waitForFunction(
        (w: string[]) =>
          [...document.querySelectorAll('[data-testid="stColumn"]')]
            .map((c) => (c.querySelector("pre")?.textContent ?? "").trim())
            .join("\u0000") === w.join("\u0000"),
        want,
        { timeout: 120_000 },
      )
      .catch(async (err) => {
        await screenshot(page, "apps-browser-streamlit-failed");
        throw new Error(
          `columns ${JSON.stringify(await page.evaluate(read))}, want ${JSON.stringify(want)}: ${err}`,
        );
      });
    const columns = await page.evaluate(read);
    expect(columns.map((c) => c.caption)).toEqual([
      `prompts:/playground-system/1 (version 1): ${PROMPTS[0]}`,
      `prompts:/playground-system/2 (version 2): ${PROMPTS[1]}`,
    ]);
    for (const c of columns) expect(c.cut, c.answer).toBe(false);
    await screenshot(page, "apps-browser-streamlit-compare");
    await context.close();
  }, 300_000);

  it("refuses another project's member: no log-in link, and the app's origin without a session", async () => {
    const t = await loom.api("POST", `${BASE}/tokens`, {
      name: "outsider",
      role: "editor",
      project: "other",
    });
    expect(t.status, JSON.stringify(t.body)).toBe(201);
    const outsider = (t.body as { token: string }).token;
    const link = await loom.api("POST", `${BASE}/projects/default/apps/chat/login`, {}, outsider);
    expect(link.status).toBe(403);
    const context = await browser!.newContext();
    const page = (await context.newPage()) as UiPage;
    const status = await waitFor("apps/chat", () => true);
    const res = await page.goto(status.url!);
    expect(res?.status()).toBe(401);
    expect(await page.content()).not.toContain("Loom playground");
    await screenshot(page, "apps-browser-refused");
    await context.close();
  }, 60_000);
});

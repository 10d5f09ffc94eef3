import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { ROOT } from "./helpers.js";

/**
 * Real Chromium for end-to-end tests (issue 19): Debian's chromium (apt-get install chromium),
 * driven by playwright-core (no browser download). Screenshots go to test-artifacts/ (gitignored).
 */

/** What the tests use of playwright-core (its own types are not needed to compile the suite). */
export interface Page {
  goto(url: string): Promise<{ status(): number } | null>;
  url(): string;
  content(): Promise<string>;
  textContent(selector: string): Promise<string | null>;
  evaluate<T, A = undefined>(fn: (arg: A) => T | Promise<T>, arg?: A): Promise<T>;
  screenshot(opts: { path: string; fullPage?: boolean }): Promise<unknown>;
  close(): Promise<void>;
}
export interface Cookie {
  name: string;
  value: string;
  domain: string;
  path: string;
  httpOnly: boolean;
  sameSite: string;
}
export interface BrowserContext {
  newPage(): Promise<Page>;
  cookies(urls?: string | string[]): Promise<Cookie[]>;
  addCookies(cookies: { name: string; value: string; url: string }[]): Promise<void>;
  close(): Promise<void>;
}
export interface Browser {
  newContext(): Promise<BrowserContext>;
  close(): Promise<void>;
}
interface Chromium {
  launch(opts: { executablePath: string; headless: boolean; args: string[] }): Promise<Browser>;
}

export const CHROMIUM = process.env.LOOM_CHROMIUM ?? "/usr/bin/chromium";
export const ARTIFACTS = join(ROOT, "test-artifacts");

/**
 * playwright-core from the project's dependencies, else from $LOOM_PLAYWRIGHT_CORE (a directory
 * holding its package), else /tmp/pw (`npm install --prefix /tmp/pw playwright-core`).
 */
export function loadChromium(): Chromium {
  const tried: string[] = [];
  const from = [ROOT, process.env.LOOM_PLAYWRIGHT_CORE, "/tmp/pw"].filter((d): d is string => !!d);
  for (const dir of from) {
    try {
      const mod = createRequire(join(dir, "package.json"))("playwright-core") as { chromium: Chromium };
      return mod.chromium;
    } catch (err) {
      tried.push(`${dir}: ${(err as Error).message.split("\n")[0]}`);
    }
  }
  throw new Error(
    `playwright-core is not installed (tried ${tried.join("; ")}): add it to devDependencies, ` +
      "or npm install --prefix /tmp/pw playwright-core",
  );
}

/** Headless Debian chromium; --no-sandbox where we run as root (its sandbox refuses root). */
export async function launchBrowser(): Promise<Browser> {
  const args = ["--disable-gpu", "--disable-dev-shm-usage"];
  if (process.getuid?.() === 0) args.push("--no-sandbox");
  try {
    return await loadChromium().launch({ executablePath: CHROMIUM, headless: true, args });
  } catch (err) {
    throw new Error(
      `could not start ${CHROMIUM} (apt-get install -y chromium, or set LOOM_CHROMIUM): ${(err as Error).message}`,
    );
  }
}

/** Saves a full-page screenshot as test-artifacts/NAME.png; returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

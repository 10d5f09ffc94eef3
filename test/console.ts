import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./helpers.js";

/** axe-core's script, injected into console pages by the browser tests. */
const AXE = readFileSync(join(ROOT, "node_modules", "axe-core", "axe.min.js"), "utf8");

/** What these helpers drive of playwright's Page (each test's own UiPage has more). */
interface ConsolePage {
  goto(url: string): Promise<unknown>;
  waitForSelector(selector: string, opts?: { timeout?: number }): Promise<unknown>;
  fill(selector: string, value: string): Promise<void>;
  keyboard: { press(key: string): Promise<void> };
  evaluate<T, A = undefined>(fn: (arg: A) => T | Promise<T>, arg?: A): Promise<T>;
}

/** Logs in to the console at `url` with a token, as a user does: the form, then Enter. */
export async function consoleLogin(page: ConsolePage, url: string, token: string): Promise<void> {
  await page.goto(`${url}/`);
  await page.waitForSelector("#token");
  await page.fill("#token", token);
  await page.keyboard.press("Enter");
  await page.waitForSelector("nav[aria-label=Pages]");
}

/** Serious and critical accessibility violations axe-core finds in the page as it is. */
export async function axeViolations(page: ConsolePage): Promise<string[]> {
  // Evaluated through the DevTools protocol: the console's CSP (no inline script) does not apply.
  await page.evaluate(AXE as unknown as () => void);
  return page.evaluate(async () => {
    const axe = (
      window as unknown as {
        axe: {
          run(
            ctx: Document,
          ): Promise<{ violations: { id: string; impact?: string; nodes: { target: unknown }[] }[] }>;
        };
      }
    ).axe;
    const r = await axe.run(document);
    return r.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} (${v.impact}): ${JSON.stringify(v.nodes.slice(0, 3).map((n) => n.target))}`);
  });
}

import { setTimeout as sleep } from "node:timers/promises";

/**
 * Polls until `fn` returns a truthy value and returns it. The deadline is generous on purpose:
 * the contracts run against a real API server on a busy two-core machine, and a slow platform
 * must not fail a case that only asks "does it happen", never "how fast".
 */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false | null> | T | undefined | false | null,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ""}`,
      );
    await sleep(50);
  }
}

import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { LoomProcess, ROOT } from "./helpers.js";

/**
 * An InferenceService's object goes only once its replicas have: deleted, then the server
 * stopped as soon as the object is gone, no replica process of it is left running (as fixed for
 * Apps in 7b1991b). The replicas carry a marker in their command line, so that this test finds
 * exactly its own.
 */
const BASE = "/apis/loom.dev/v1alpha1/projects/default/inferenceservices";

/** Processes whose command line holds the marker (never this test's own pgrep). */
function withMarker(marker: string): string[] {
  const r = spawnSync("pgrep", ["-af", marker], { encoding: "utf8" });
  return r.stdout
    .split("\n")
    .filter((l) => l.includes(marker) && !l.includes("pgrep"))
    .map((l) => l.trim().slice(0, 160));
}

describe("InferenceService deletion", () => {
  const loom = new LoomProcess();
  afterAll(() => loom.stop());

  it("leaves no replica process behind when the server stops right after the object is gone", async () => {
    await loom.start();
    const marker = `loom-finalizer-${randomUUID()}`;
    const r = await loom.api("POST", BASE, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name: "doomed" },
      spec: {
        model: ROOT,
        // The marker rides as an argument the server ignores.
        runtime: {
          command: ["python3", join(ROOT, "test/fixtures/serving/slow_server.py"), marker],
          env: { SLOW_SECONDS: "0" },
        },
        replicas: { min: 2, max: 2 },
        readiness: { path: "/health", timeoutSeconds: 30 },
      },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    let ready = 0;
    for (let i = 0; i < 600 && ready < 2; i++) {
      await sleep(100);
      ready =
        ((await loom.api("GET", `${BASE}/doomed`)).body as { status?: { ready?: number } }).status?.ready ??
        0;
    }
    expect(ready).toBe(2);
    expect(withMarker(marker).length).toBeGreaterThanOrEqual(2);

    expect((await loom.api("DELETE", `${BASE}/doomed`)).status).toBeLessThan(300);
    let gone = false;
    for (let i = 0; i < 600 && !gone; i++) {
      gone = (await loom.api("GET", `${BASE}/doomed`)).status === 404;
      if (!gone) await sleep(20);
    }
    expect(gone).toBe(true);
    // The object is gone: stop at once, before anything else could clean up after it.
    await loom.kill("SIGTERM");
    // A leaked replica never goes; one being stopped goes within moments (polled, not timed).
    let left = withMarker(marker);
    for (let i = 0; i < 100 && left.length > 0; i++) {
      await sleep(100);
      left = withMarker(marker);
    }
    expect(left).toEqual([]);
  }, 120_000);
});

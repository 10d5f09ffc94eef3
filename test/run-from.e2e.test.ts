import { lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";

/**
 * `loom run --from ws/NAME` on a real `loom up`: the notebook's code (a snapshot of the home,
 * taken when the job is created) and the workspace's env run as a 2-worker gang; later edits of
 * the home do not reach the submitted job; a job may run only from a workspace of its own
 * project, by someone with edit rights.
 */

const WS = `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: nb}
spec:
  ide: none
  command: [python3, -m, http.server, $PORT, --bind, 127.0.0.1]
  env: {GREETING: hello-from-ws}
`;

// What the notebook wrote: reads a file of the home, says who it is, and tries to write its cwd.
const TRAIN = `import os
value = open("config.txt").read().strip()
try:
    open("scratch.txt", "w").write("x")
    ro = "no"
except OSError:
    ro = "yes"
print(f"value={value} rank={os.environ['RANK']} world={os.environ['WORLD_SIZE']} "
      f"greeting={os.environ.get('GREETING')} readonly={ro} cache={os.path.exists('.cache')}", flush=True)
`;

describe("loom run --from ws/NAME (embedded)", () => {
  const loom = new LoomProcess();
  let home = "";
  beforeAll(async () => {
    await loom.start();
    const r = await loom.cli(["apply", "-f", "-"], { input: WS });
    expect(r.code, r.stderr).toBe(0);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const w = await loom.api("GET", "/apis/loom.dev/v1alpha1/projects/default/workspaces/nb");
      if ((w.body as { status?: { phase?: string } }).status?.phase === "Running") break;
      if (Date.now() > deadline) throw new Error(`workspace not Running: ${JSON.stringify(w.body)}`);
      await sleep(100);
    }
    home = join(loom.dataDir, "homes", "default", "nb");
    writeFileSync(join(home, "train.py"), TRAIN);
    writeFileSync(join(home, "config.txt"), "lr=0.125\n");
    mkdirSync(join(home, ".cache"), { recursive: true });
    writeFileSync(join(home, ".cache", "big.bin"), "cache");
    mkdirSync(join(home, "venv"), { recursive: true });
    writeFileSync(join(home, "venv", "pyvenv.cfg"), "home = /usr/bin\n");
    // An attack: a link to a file only root reads. Copied as a link (the copy runs as the
    // project's uid), never as the file's content.
    symlinkSync("/etc/shadow", join(home, "leak"));
  }, 120_000);
  afterAll(async () => {
    await loom.cli(["delete", "ws", "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });

  it("runs the home's snapshot as a 2-worker gang, with the workspace's env; later edits do not reach it", async () => {
    const r = await loom.cli([
      "run",
      "--from",
      "ws/nb",
      "--workers",
      "2",
      "--name",
      "r1",
      "--",
      "python3",
      "train.py",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("trainingjob.loom.dev/r1 created");
    // The notebook goes on editing: the submitted job keeps what it was given.
    writeFileSync(join(home, "config.txt"), "lr=999\n");
    const job = await loom.waitFor(
      "r1",
      (j) => j.status?.phase === "Succeeded" || j.status?.phase === "Failed",
      120_000,
    );
    expect(job.status?.phase, JSON.stringify(job.status)).toBe("Succeeded");
    expect(job.spec.fromWorkspace).toBe("nb");
    for (const worker of [0, 1]) {
      const logs = (await loom.cli(["logs", "tj/r1", "--worker", String(worker)])).stdout;
      expect(logs).toContain(
        `value=lr=0.125 rank=${worker} world=2 greeting=hello-from-ws readonly=yes cache=False`,
      );
    }
    // Resolved once: an update may not point the job at another workspace (or none).
    const moved = await fetch(`${loom.url}/apis/loom.dev/v1alpha1/projects/default/trainingjobs/r1`, {
      method: "PATCH",
      headers: { authorization: `Bearer ${loom.token}`, "content-type": "application/merge-patch+json" },
      body: JSON.stringify({ spec: { fromWorkspace: "other" } }),
    });
    expect(moved.status).toBe(400);
    expect(await moved.text()).toContain("cannot change");
    const snap = join(loom.dataDir, "snapshots", "default", job.metadata.uid);
    expect(readFileSync(join(snap, "config.txt"), "utf8")).toBe("lr=0.125\n");
    expect(lstatSync(join(snap, "leak")).isSymbolicLink()).toBe(true);
    expect(() => lstatSync(join(snap, "venv"))).toThrow(); // a venv is left out
    // The snapshot goes with the job.
    expect((await loom.cli(["delete", "tj/r1", "--timeout", "30"])).code).toBe(0);
    expect(() => lstatSync(snap)).toThrow();
  }, 180_000);

  it("refuses an unknown workspace, one of another project, and a caller without edit rights", async () => {
    const unknown = await loom.cli(["run", "--from", "ws/nope", "--", "python3", "train.py"]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain("workspace nope not found in project default");

    const proj = "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: other}\nspec: {}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: proj })).code).toBe(0);
    const other = await loom.cli(["run", "--from", "ws/nb", "-p", "other", "--", "python3", "train.py"]);
    expect(other.code).not.toBe(0);
    expect(other.stderr).toContain("a job runs from a workspace of its own project");
    // No job was left behind by a refusal.
    expect((await loom.api("GET", "/apis/loom.dev/v1alpha1/projects/other/trainingjobs")).body).toMatchObject(
      {
        items: [],
      },
    );

    const minted = await loom.cli(["token", "create", "watcher", "--role", "viewer", "-p", "default"]);
    expect(minted.code, minted.stderr).toBe(0);
    const viewer = await loom.cli(["run", "--from", "ws/nb", "--", "python3", "train.py"], {
      env: { LOOM_TOKEN: minted.stdout.trim() },
    });
    expect(viewer.code).not.toBe(0);
    expect(viewer.stderr).toMatch(/forbidden|not allowed|403|viewer/i);

    const both = await loom.api("POST", "/apis/loom.dev/v1alpha1/projects/default/trainingjobs", {
      apiVersion: "loom.dev/v1alpha1",
      kind: "TrainingJob",
      metadata: { name: "wd" },
      spec: { command: ["true"], fromWorkspace: "nb", workingDir: "/tmp" },
    });
    expect(both.status).toBe(400);
    expect(JSON.stringify(both.body)).toContain("leave spec.workingDir unset");
  }, 120_000);
});

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";

/**
 * `loom logs` for long-running workloads on a real `loom up`: a workspace whose command prints
 * then fails (its output, the exit in describe, --previous), one that keeps printing (-f shows new
 * lines), an App's and an InferenceService's replica, and the refusals a user can hit.
 */

const BASE = "/apis/loom.dev/v1alpha1/projects/default";

const SERVE = "exec python3 -m http.server $PORT --bind 127.0.0.1";
const MANIFESTS = [
  // Prints, complains on stderr, exits 3: a replica that keeps failing.
  `kind: Workspace
metadata: {name: broken}
spec:
  ide: none
  command: [sh, -c, 'echo starting broken; echo cannot find config.yaml >&2; exit 3']
`,
  // Serves, and keeps printing a numbered line: what -f must keep showing.
  `kind: Workspace
metadata: {name: ticker}
spec:
  ide: none
  command: [sh, -c, 'python3 -m http.server $PORT --bind 127.0.0.1 & i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done']
`,
  `kind: App
metadata: {name: hello}
spec:
  framework: custom
  command: [sh, -c, 'echo app hello says hi; ${SERVE}']
  replicas: {min: 1, max: 1}
`,
  `kind: InferenceService
metadata: {name: echo}
spec:
  model: /tmp
  runtime: {command: [sh, -c, 'echo isvc echo loading; ${SERVE}']}
  replicas: {min: 1, max: 1}
  readiness: {path: /}
`,
]
  .map((m) => `apiVersion: loom.dev/v1alpha1\n${m}`)
  .join("---\n");

describe("loom logs for workspaces, apps and inference services (embedded)", () => {
  const loom = new LoomProcess();
  beforeAll(async () => {
    await loom.start();
    const r = await loom.cli(["apply", "-f", "-"], { input: MANIFESTS });
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    for (const kind of ["ws", "app", "isvc"])
      await loom.cli(["delete", kind, "--all", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });

  /** Runs `loom logs ARGS` until its output has `text` (the replica may not have started yet). */
  async function logsUntil(args: string[], text: string): Promise<{ stdout: string; stderr: string }> {
    let last = { stdout: "", stderr: "" };
    for (let i = 0; i < 600; i++) {
      const r = await loom.cli(["logs", ...args]);
      last = r;
      if (r.code === 0 && r.stdout.includes(text)) return r;
      await new Promise((ok) => setTimeout(ok, 200));
    }
    throw new Error(
      `loom logs ${args.join(" ")} never showed "${text}": ${JSON.stringify(last)}\n${loom.log.slice(-3000)}`,
    );
  }

  it("a failing workspace's output, stdout and stderr, is visible; --previous shows the one that exited", async () => {
    const r = await logsUntil(["ws/broken"], "cannot find config.yaml");
    expect(r.stdout).toContain("starting broken");
    const prev = await logsUntil(["ws/broken", "--previous"], "cannot find config.yaml");
    expect(prev.stdout).toContain("starting broken");
  });

  it("describe and the Ready condition point at loom logs --previous with the failing replica's last lines; restarts back off", async () => {
    for (let i = 0; ; i++) {
      const d = await loom.cli(["describe", "ws/broken"]);
      const ws = (await loom.api("GET", `${BASE}/workspaces/broken`)).body as {
        status?: { conditions?: { type: string; reason?: string; message?: string }[] };
      };
      const ready = ws.status?.conditions?.find((c) => c.type === "Ready");
      if (
        d.stdout.includes("loom logs ws/broken --previous") &&
        ready?.reason === "ReplicaExited" &&
        // A second quick exit waits before the next start (a crash loop backs off).
        /starting another in \d+s/.test(d.stdout)
      ) {
        // The event and the Ready condition both say why and where the rest is (a crash loop).
        expect(d.stdout).toContain("exited with code 3");
        expect(d.stdout).toContain("cannot find config.yaml");
        expect(ready.message).toMatch(
          /exited with code 3; last output: .*cannot find config\.yaml \(loom logs ws\/broken --previous\)/,
        );
        return;
      }
      if (i > 300) throw new Error(`describe never pointed at loom logs:\n${d.stdout}`);
      await new Promise((ok) => setTimeout(ok, 200));
    }
  });

  it("-f keeps printing lines written after it started", async () => {
    const first = await logsUntil(["ws/ticker"], "tick ");
    expect(first.stdout).toMatch(/tick \d+/);
    const follow = loom.cliBackground(["logs", "ws/ticker", "-f"]);
    try {
      const seen = () => [...follow.output().matchAll(/tick (\d+)/g)].map((m) => Number(m[1]));
      for (let i = 0; seen().length === 0; i++) {
        if (i > 600) throw new Error(`follow printed nothing: ${follow.output()}`);
        await new Promise((ok) => setTimeout(ok, 100));
      }
      // The newest line when it started; a later one must come through the same stream.
      const started = Math.max(...seen());
      for (let i = 0; Math.max(...seen()) < started + 3; i++) {
        if (i > 600)
          throw new Error(`follow stopped at ${Math.max(...seen())}: ${follow.output().slice(-500)}`);
        await new Promise((ok) => setTimeout(ok, 100));
      }
      expect(follow.proc.exitCode).toBeNull();
    } finally {
      follow.proc.kill();
    }
  });

  it("an App's and an InferenceService's replica output, by index and by id", async () => {
    await logsUntil(["app/hello"], "app hello says hi");
    await logsUntil(["isvc/echo"], "isvc echo loading");
    await logsUntil(["isvc/echo", "--replica", "0"], "isvc echo loading");
    const svc = (await loom.api("GET", `${BASE}/inferenceservices/echo`)).body as {
      status: { revisions: { replicas?: { id: string }[] }[] };
    };
    const id = svc.status.revisions.flatMap((r) => r.replicas ?? [])[0]!.id;
    await logsUntil(["isvc/echo", "--replica", id], "isvc echo loading");
  });

  it("is behind the project's read rule: no token, no output", async () => {
    const r = await loom.api("GET", `${BASE}/workspaces/broken/log`, undefined, null);
    expect(r.status).toBe(401);
    expect(JSON.stringify(r.body)).not.toContain("cannot find config.yaml");
  });

  it("says what to do: an unknown replica, training-job flags, no replica yet", async () => {
    const bad = await loom.cli(["logs", "isvc/echo", "--replica", "7"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/no running replica 7; the running ones are 0 \(echo-/);
    const flags = await loom.cli(["logs", "ws/ticker", "--worker", "1"]);
    expect(flags.code).not.toBe(0);
    expect(flags.stderr).toContain("use --replica or --previous");
    // Stopped before it ever ran: nothing to show, and the phase says why.
    const stopped = `apiVersion: loom.dev/v1alpha1\nkind: Workspace\nmetadata: {name: idle}\nspec: {ide: none, command: [sh, -c, '${SERVE}'], stopped: true}\n`;
    expect((await loom.cli(["apply", "-f", "-"], { input: stopped })).code).toBe(0);
    for (let i = 0; ; i++) {
      const r = await loom.cli(["logs", "ws/idle"]);
      expect(r.code).not.toBe(0);
      if (/has no output: no replica has started yet; it is Stopped/.test(r.stderr)) break;
      if (i > 300) throw new Error(r.stderr);
      await new Promise((ok) => setTimeout(ok, 200));
    }
  });
});

import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobYaml, LoomProcess } from "./helpers.js";

/**
 * Inference is a tenant of the same scheduler as training (embedded, one virtual GPU): a replica
 * that asks for a GPU waits while a training job holds it, says why, starts on the device once it
 * is free, and then holds it against the next training job.
 */
describe("InferenceService replicas are placed by the scheduler (embedded, 1 virtual GPU)", () => {
  const loom = new LoomProcess(["--gpus", "1"]);
  beforeAll(() => loom.start());
  afterAll(async () => {
    await loom.cli(["delete", "isvc", "gpusvc", "--timeout", "30"]).catch(() => undefined);
    await loom.stop();
  });

  // A model server in a few lines: /health answers, and says which devices it was given.
  const server = [
    "/usr/bin/python3",
    "-c",
    [
      "import http.server, os",
      "class H(http.server.BaseHTTPRequestHandler):",
      "    def do_GET(self):",
      "        body = ('devices=' + os.environ.get('CUDA_VISIBLE_DEVICES', '')).encode()",
      "        self.send_response(200); self.send_header('content-length', str(len(body))); self.end_headers(); self.wfile.write(body)",
      "    def log_message(self, *a): pass",
      "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()",
    ].join("\n"),
  ];
  const isvc = `apiVersion: loom.dev/v1alpha1
kind: InferenceService
metadata: {name: gpusvc}
spec:
  model: /tmp
  runtime: {command: ${JSON.stringify(server)}}
  resources: {gpu: 1}
  replicas: {min: 1, max: 1}
`;
  const status = async () =>
    (
      (await loom.api("GET", "/apis/loom.dev/v1alpha1/projects/default/inferenceservices/gpusvc")).body as {
        status?: {
          phase?: string;
          ready?: number;
          revisions?: { replicas?: { host: string; port: number; gpus?: { device: string }[] }[] }[];
        };
      }
    ).status;

  it("waits for the GPU a training job holds, saying why; takes it when freed; then holds it against training", async () => {
    const train = (name: string) =>
      jobYaml(name, ["sleep", "600"], "  resources:\n    gpu: 1\n  terminationGracePeriodSeconds: 1\n");
    expect((await loom.cli(["apply", "-f", "-"], { input: train("holder") })).code).toBe(0);
    await loom.waitFor("holder", (j) => j.status?.workers?.[0]?.state === "Running");

    expect((await loom.cli(["apply", "-f", "-"], { input: isvc })).code).toBe(0);
    let described = "";
    for (let i = 0; i < 100 && !/ReplicaPending/.test(described); i++) {
      await sleep(200);
      described = (await loom.cli(["describe", "isvc", "gpusvc"])).stdout;
    }
    expect(described).toMatch(
      /ReplicaPending .*replica default\/gpusvc-1-r0 waits: .*gpu: requested 1, free 0/,
    );
    expect((await status())?.ready ?? 0).toBe(0);

    // The training job ends: the replica gets the device and serves.
    expect((await loom.cli(["delete", "tj", "holder"])).code).toBe(0);
    let st = await status();
    for (let i = 0; i < 150 && st?.ready !== 1; i++) {
      await sleep(200);
      st = await status();
    }
    expect(st?.ready, JSON.stringify(st)).toBe(1);
    const replica = st!.revisions![0]!.replicas![0]!;
    expect(replica.gpus?.map((g) => g.device)).toHaveLength(1);
    const res = await fetch(`http://${replica.host}:${replica.port}/health`);
    expect(await res.text()).toBe(`devices=${replica.gpus![0]!.device}`);

    // Now training waits for the replica's GPU.
    expect((await loom.cli(["apply", "-f", "-"], { input: train("after") })).code).toBe(0);
    const waiting = await loom.waitFor(
      "after",
      (j) => j.status?.phase === "Pending" && !!j.status.conditions?.some((c) => c.type === "Admitted"),
    );
    const cond = waiting.status?.conditions?.find((c) => c.type === "Admitted");
    expect(cond?.message).toContain("gpu: requested 1, free 0");
    expect(cond?.message).toContain("default/gpusvc-1-r0");
    await loom.cli(["delete", "tj", "after"]);
  }, 120_000);

  it("loom get nodes and loom top count the GPU a model replica holds", async () => {
    let st = await status();
    for (let i = 0; i < 100 && st?.ready !== 1; i++) {
      await sleep(200);
      st = await status();
    }
    expect(st?.ready).toBe(1);
    const nodes = await loom.cli(["get", "nodes", "-o", "json"]);
    expect(nodes.code, nodes.stderr).toBe(0);
    const [node] = (
      JSON.parse(nodes.stdout) as { items: { allocated: { gpus: number }; workloads: string[] }[] }
    ).items;
    expect(node?.allocated.gpus).toBe(1);
    expect(node?.workloads).toContain("default/gpusvc-1-r0");
    const top = await loom.cli(["top"]);
    expect(top.code, top.stderr).toBe(0);
    // The project row: default holds 1 GPU (its replica), with no deserved quota.
    expect(top.stdout).toMatch(/^default\s+1\b/m);
  }, 60_000);

  it("a project below its deserved quota reclaims the GPU a replica borrowed: the replica stops gracefully and waits", async () => {
    // gpusvc (project default, no quota) holds the one GPU on borrowed capacity.
    let st = await status();
    for (let i = 0; i < 100 && st?.ready !== 1; i++) {
      await sleep(200);
      st = await status();
    }
    expect(st?.ready).toBe(1);
    const project =
      "apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: research}\nspec: {quota: {gpu: 1}}\n";
    expect((await loom.cli(["apply", "-f", "-"], { input: project })).code).toBe(0);
    const job = jobYaml(
      "claim",
      ["sleep", "600"],
      "  resources:\n    gpu: 1\n  terminationGracePeriodSeconds: 1\n",
    ).replace("  name: claim", "  name: claim\n  project: research");
    expect((await loom.cli(["apply", "-f", "-"], { input: job })).code).toBe(0);
    const running = await loom.waitFor(
      "claim",
      (j) => j.status?.workers?.[0]?.state === "Running",
      60_000,
      "research",
    );
    expect(running.status?.phase).toBe("Running");
    const described = (await loom.cli(["describe", "isvc", "gpusvc"])).stdout;
    expect(described).toMatch(/Preempted .*replica gpusvc-1-r0 of gpusvc-1 stops: /);
    expect(described).toMatch(/ReplicaPending/);
    expect((await status())?.ready ?? 0).toBe(0);
    await loom.cli(["delete", "tj", "claim", "-p", "research"]);
  }, 120_000);
});

import { chmodSync, copyFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, processesNaming, ROOT, until as waitUntil } from "./helpers.js";

/**
 * Serving across the fleet (issue 23), for real: a control plane (`loom up`) with its own
 * platform, and a second `loom up` registered on it as a member (`spec.api: loom`: the member is
 * spoken to through Loom's API with the kubeconfig's server and token). An InferenceService that
 * names both runs replicas in each (spread by free room, counted against the project's limit
 * over the whole fleet); the control plane's gateway balances the official OpenAI client's
 * requests over them, reaching the member's replicas through the member's gateway with a key of
 * the project made there. Timings are logged, never asserted.
 */

const BASE = "/apis/loom.dev/v1alpha1";
// biome-ignore lint/suspicious/noExplicitAny: objects as the API returns them
type Obj = Record<string, any>;

describe("fleet serving: one InferenceService, replicas in the control plane and a Loom member", () => {
  const cp = new LoomProcess();
  const member = new LoomProcess();
  const dir = mkdtempSync(join(tmpdir(), "loom-fleet-serving-"));
  // The echo model is lent to replicas as their model directory (their sandbox sees only that):
  // the same path on both, as the two servers share this machine.
  const modelDir = mkdtempSync(join(tmpdir(), "loom-fleet-echo-"));
  copyFileSync(join(ROOT, "test/fixtures/serving/echo_chat.py"), join(modelDir, "echo_chat.py"));
  chmodSync(modelDir, 0o755);
  chmodSync(join(modelDir, "echo_chat.py"), 0o644);
  const echo = [
    "python3",
    "-c",
    "import os, runpy; runpy.run_path(os.path.join(os.environ['LOOM_MODEL_DIR'], 'echo_chat.py'))",
  ];
  let key = ""; // a key of project default on the control plane
  let otherKey = ""; // one of project other

  const until = <T>(what: string, probe: () => Promise<T | undefined>, ms = 120_000) =>
    waitUntil(what, probe, {
      ms,
      every: 300,
      context: () => `control plane:\n${cp.log.slice(-3000)}\nmember:\n${member.log.slice(-2000)}`,
    });
  const isvc = async (p: LoomProcess, name: string, project = "default"): Promise<Obj | undefined> => {
    const r = await p.api("GET", `${BASE}/projects/${project}/inferenceservices/${name}`);
    return r.status === 200 ? (r.body as Obj) : undefined;
  };
  const events = async (name: string, project = "default"): Promise<string> => {
    const r = await cp.api(
      "GET",
      `${BASE}/projects/${project}/events?kind=InferenceService&name=${name}&limit=100`,
    );
    return ((r.body as Obj).items as Obj[]).map((e) => `${e.reason} ${e.message}`).join("\n");
  };
  const create = async (name: string, spec: Obj, project = "default") => {
    const r = await cp.api("POST", `${BASE}/projects/${project}/inferenceservices`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "InferenceService",
      metadata: { name },
      spec: { model: modelDir, runtime: { command: echo }, ...spec },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  };
  const apiKey = async (p: LoomProcess, project: string, name: string): Promise<string> => {
    const r = await p.api("POST", `${BASE}/projects/${project}/apikeys`, { name });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return (r.body as { key: string }).key;
  };
  const ask = async (model: string, k = key) => {
    const client = new OpenAI({ baseURL: `${cp.url}/v1`, apiKey: k, maxRetries: 0, timeout: 120_000 });
    const { data, response } = await client.chat.completions
      .create({ model, messages: [{ role: "user", content: "hello fleet" }] })
      .withResponse();
    return { text: data.choices[0]?.message.content, replica: response.headers.get("x-loom-replica") };
  };
  const registerMember = async (url: string, token: string) => {
    const kubeconfig = join(dir, "m1.kubeconfig");
    writeFileSync(
      kubeconfig,
      [
        "apiVersion: v1",
        "kind: Config",
        `clusters: [{name: m1, cluster: {server: "${url}"}}]`,
        `users: [{name: m1, user: {token: "${token}"}}]`,
        "contexts: [{name: m1, context: {cluster: m1, user: m1}}]",
        "current-context: m1",
      ].join("\n"),
      { mode: 0o600 },
    );
    const manifest = join(dir, "m1.yaml");
    writeFileSync(
      manifest,
      "apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: m1}\nspec: {api: loom, clusterLostTimeout: 3s}\n",
    );
    const r = await cp.cli(["apply", "-f", manifest, "--kubeconfig-file", kubeconfig]);
    expect(r.code, r.stderr).toBe(0);
  };

  beforeAll(async () => {
    await cp.start();
    await member.start();
    await registerMember(member.url, member.token);
    await until("m1 Ready", async () => {
      const r = await cp.cli(["get", "clusters"]);
      return /^m1\s+Ready/m.test(r.stdout) && /^self\s+Ready/m.test(r.stdout) ? true : undefined;
    });
    const other = await cp.api("POST", `${BASE}/projects`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "other" },
      spec: {},
    });
    expect(other.status, JSON.stringify(other.body)).toBe(201);
    key = await apiKey(cp, "default", "fleet-test");
    otherKey = await apiKey(cp, "other", "other-test");
  }, 180_000);

  afterAll(async () => {
    for (const name of ["echo", "capped", "zero"])
      await cp.cli(["delete", "isvc", name, "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    await member.stop();
  }, 240_000);

  it("spreads a service's replicas over self and the member; the one gateway balances the OpenAI client over both", async () => {
    await create("echo", {
      clusters: ["self", "m1"],
      resources: { cpu: "100m" },
      replicas: { min: 2, max: 2 },
    });
    const t0 = Date.now();
    const svc = await until("echo: 2 ready replicas", async () => {
      const s = await isvc(cp, "echo");
      return s?.status?.ready === 2 ? s : undefined;
    });
    console.log(`echo: 2 replicas ready (one in the member) in ${Date.now() - t0} ms`);
    const replicas = svc.status.revisions.flatMap((r: Obj) => r.replicas) as Obj[];
    expect(replicas.map((r) => r.cluster ?? "self").sort()).toEqual(["m1", "self"]);
    // The member runs its share as its own copy of the service, pinned to the count placed there.
    const copy = await isvc(member, "echo");
    expect(copy?.metadata.labels["loom.dev/fleet-uid"]).toBe(svc.metadata.uid);
    expect(copy?.spec.replicas).toEqual({ min: 1, max: 1 });
    expect(copy?.spec.clusters).toBeUndefined();
    // The control plane's key for the member's gateway is a key of this project there.
    const memberKeys = await member.api("GET", `${BASE}/projects/default/apikeys`);
    expect(JSON.stringify(memberKeys.body)).toContain("fleet-gateway-m1");

    const seen = new Map<string, number>();
    for (let i = 0; i < 16; i++) {
      const a = await ask("echo");
      expect(a.text).toBe("echo: hello fleet");
      const where = a.replica?.startsWith("m1/") ? "m1" : "self";
      seen.set(where, (seen.get(where) ?? 0) + 1);
    }
    console.log(`echo: 16 requests answered, by member: ${JSON.stringify(Object.fromEntries(seen))}`);
    expect(seen.get("m1") ?? 0).toBeGreaterThan(0);
    expect(seen.get("self") ?? 0).toBeGreaterThan(0);
  }, 300_000);

  it("refuses another project's key at the control plane's gateway and at the member's", async () => {
    // At the control plane: the other project has no model "echo", and may not name default's.
    const notTheirs = await ask("echo", otherKey).catch((e: unknown) => e);
    expect(notTheirs).toBeInstanceOf(OpenAI.NotFoundError);
    const named = await ask("default/echo", otherKey).catch((e: unknown) => e);
    expect(named).toBeInstanceOf(OpenAI.PermissionDeniedError);
    // At the member's gateway, where the replicas really are: no key, or a key of another project
    // there, reaches nothing.
    const direct = (k?: string) =>
      fetch(`${member.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(k ? { authorization: `Bearer ${k}` } : {}) },
        body: JSON.stringify({ model: "default/echo", messages: [{ role: "user", content: "hi" }] }),
      });
    expect((await direct()).status).toBe(401);
    const memberOther = await member.api("POST", `${BASE}/projects`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "other" },
      spec: {},
    });
    expect([201, 409]).toContain(memberOther.status);
    const theirKey = await apiKey(member, "other", "attacker");
    expect((await direct(theirKey)).status).toBe(403);
    // A key of the control plane is nothing at the member.
    expect((await direct(key)).status).toBe(401);
  });

  it("counts replicas in every member against the project's limit: the one over it waits, saying why", async () => {
    const project = await cp.api("POST", `${BASE}/projects`, {
      apiVersion: "loom.dev/v1alpha1",
      kind: "Project",
      metadata: { name: "capped" },
      spec: { limit: { cpu: "250m" } },
    });
    expect(project.status, JSON.stringify(project.body)).toBe(201);
    await create(
      "capped",
      { clusters: ["self", "m1"], resources: { cpu: "100m" }, replicas: { min: 3, max: 3 } },
      "capped",
    );
    const why = await until("capped's third replica waits", async () => {
      const e = await events("capped", "capped");
      return /ReplicaPending/.test(e) ? e : undefined;
    });
    expect(why).toMatch(/limit/);
    const svc = await until("capped: 2 ready", async () => {
      const s = await isvc(cp, "capped", "capped");
      return s?.status?.ready === 2 ? s : undefined;
    });
    const where = (svc.status.revisions as Obj[])
      .flatMap((r) => r.replicas)
      .map((r: Obj) => r.cluster ?? "self");
    expect(where.sort()).toEqual(["m1", "self"]);
    expect(svc.status.desired).toBe(3);
    await cp.cli(["delete", "isvc", "capped", "-p", "capped", "--timeout", "60"]);
  }, 300_000);

  it("scales a member-only service to zero (its copy goes) and back on a request", async () => {
    await create("zero", {
      clusters: ["m1"],
      replicas: { min: 0, max: 1 },
      autoscaling: { scaleToZeroAfter: "5s", scaleDownDelay: "2s" },
    });
    await until("zero: first ready", async () =>
      (await isvc(cp, "zero"))?.status?.ready === 1 ? true : undefined,
    );
    await until(
      "zero: scaled to zero",
      async () => ((await isvc(cp, "zero"))?.status?.phase === "ScaledToZero" ? true : undefined),
      180_000,
    );
    await until("zero: the member's copy deleted", async () =>
      (await isvc(member, "zero")) ? undefined : true,
    );
    const t0 = Date.now();
    const a = await ask("zero");
    console.log(`zero: a request from zero answered from the member in ${Date.now() - t0} ms`);
    expect(a.text).toBe("echo: hello fleet");
    expect(a.replica).toMatch(/^m1\//);
  }, 400_000);

  it("a TrainingJob placed in the Loom member runs there; its status and its log come back", async () => {
    const r = await cp.cli(["apply", "-f", "-"], {
      input: `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: hello}
spec:
  command: [python3, -c, "print('hello from the member')"]
  clusters: [m1]
`,
    });
    expect(r.code, r.stderr).toBe(0);
    const job = await until("hello Succeeded, mirrored from m1", async () => {
      const j = (await cp.api("GET", `${BASE}/projects/default/trainingjobs/hello`)).body as Obj;
      return j.status?.phase === "Succeeded" ? j : undefined;
    });
    expect(job.status.admission.cluster).toBe("m1");
    const copy = (await member.api("GET", `${BASE}/projects/default/trainingjobs/hello`)).body as Obj;
    expect(copy.metadata.labels["loom.dev/fleet-uid"]).toBe(job.metadata.uid);
    const logs = await cp.cli(["logs", "hello"]);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain("hello from the member");
  }, 300_000);

  it("a lost member's replicas are made again elsewhere; back, its stale copy is deleted", async () => {
    const before = await isvc(cp, "echo");
    expect(before?.status?.ready).toBe(2);
    const memberHome = member.home;
    // Stopped, its data dir kept (stop() would delete it: a new member, not this one back). Its
    // replica outlives it by design: the next server on the data dir adopts it.
    await member.kill("SIGTERM");
    const t0 = Date.now();
    await until("echo: both replicas in self", async () => {
      const s = await isvc(cp, "echo");
      const reps = (s?.status?.revisions ?? []).flatMap((r: Obj) => r.replicas ?? []) as Obj[];
      return s?.status?.ready === 2 && reps.every((r) => !r.cluster) ? true : undefined;
    });
    console.log(
      `echo: replicas re-made in self ${Date.now() - t0} ms after the member stopped (clusterLostTimeout 3s)`,
    );
    expect((await events("echo")).match(/ClusterLost/)).toBeTruthy();
    const a = await ask("echo");
    expect(a.replica).not.toMatch(/^m1\//);

    // The member comes back (on another port: its kubeconfig is sent again): its stale copy goes.
    const again = new LoomProcess([], memberHome);
    await again.start();
    try {
      await registerMember(again.url, again.token);
      await until("the stale copy deleted in the member", async () =>
        (await isvc(again, "echo")) ? undefined : true,
      );
      // And its replica stopped, not left running with no object to say so (the server itself
      // names its data dir too).
      await until("the stale replica's process gone in the member", async () =>
        processesNaming(again.dataDir).filter((pid) => pid !== again.pid).length === 0 ? true : undefined,
      );
    } finally {
      await again.stop();
    }
  }, 400_000);
});

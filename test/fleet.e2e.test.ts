import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess } from "./helpers.js";
import { gpuJobYaml, type OperatorMember, operatorMembers, registerMembers } from "./k8s/cluster.js";

/**
 * One queue over a fleet (issue 23), for real: two private kwok clusters (LOOM_K8S_STATE-fleet-a
 * and -fleet-b), each with Loom's CRDs and its own `loom operator`, registered on an embedded
 * control plane (`loom up`) with `loom apply --kubeconfig-file`. Each member has one 8-GPU node;
 * the control plane's own platform has no GPU, so GPU jobs go to the members.
 */
describe("fleet: one queue over two Kubernetes members", () => {
  const members: OperatorMember[] = [];
  const cp = new LoomProcess();
  // biome-ignore lint/suspicious/noExplicitAny: objects as the API server returns them
  type Obj = Record<string, any>;

  async function until<T>(what: string, probe: () => Promise<T | undefined>, tries = 240): Promise<T> {
    for (let i = 0; i < tries; i++) {
      const v = await probe();
      if (v !== undefined) return v;
      await sleep(500);
    }
    throw new Error(`timed out waiting for ${what}\n${cp.log.slice(-3000)}`);
  }
  const job = async (name: string): Promise<Obj | undefined> => {
    const r = await cp.cli(["get", "tj", name, "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
  };
  const inMember = (m: number, name: string) =>
    members[m]!.cluster.kubectl(["get", "trainingjobs.loom.dev", name, "-n", "loom-default", "-o", "json"]);
  const jobYaml = gpuJobYaml;

  beforeAll(async () => {
    members.push(...(await operatorMembers("fleet", ["a", "b"])));
    await cp.start();
    await registerMembers(cp, members);
  }, 600_000);

  afterAll(async () => {
    for (const p of ["default", "p1", "p2"])
      await cp.cli(["delete", "tj", "--all", "-p", p, "--timeout", "60"]).catch(() => undefined);
    await cp.stop();
    for (const m of members) await m.operator.stop();
  });

  it("registers both members (Ready, version, capacity) and the control plane itself; the kubeconfig is never served", async () => {
    const out = await until("both members Ready", async () => {
      const r = await cp.cli(["get", "clusters"]);
      return /^a\s+Ready\s+v1\.\S+\s+8 GPU/m.test(r.stdout) && /^b\s+Ready/m.test(r.stdout)
        ? r.stdout
        : undefined;
    });
    expect(out).toMatch(/^NAME\s+STATUS\s+VERSION\s+POOLS\s+FREE\s+AGE/);
    expect(out).toMatch(/^self\s+Ready/m);
    const described = await cp.cli(["get", "cluster", "a", "-o", "json"]);
    expect(described.stdout).not.toContain("certificate-authority");
    expect(described.stdout).toContain('"name": "cluster-a-kubeconfig"');
  });

  it("fills a, then b: a job too big for a's free GPUs lands on b; spec.clusters sends to b; a gang too big for any member waits naming each", async () => {
    // One at a time, so the order is the submission order: 6 GPUs fill most of a; 4 do not fit
    // the 2 a has left and go to b; 2 fill a.
    const placed: string[] = [];
    for (const [name, gpu] of [
      ["j1", 6],
      ["j2", 4],
      ["j3", 2],
    ] as const) {
      const r = await cp.cli(["apply", "-f", "-"], { input: jobYaml(name, gpu) });
      expect(r.code, r.stderr).toBe(0);
      placed.push(await until(`${name} admitted`, async () => (await job(name))?.status?.admission?.cluster));
    }
    expect(placed).toEqual(["a", "b", "a"]);
    // Each runs in its member: the copy is there, its pods bound by that member's Loom.
    const running = await until("j2 Running, mirrored from its member", async () => {
      const j = await job("j2");
      return j?.status?.phase === "Running" ? j : undefined;
    });
    expect(running.status.admission.node).toMatch(/^b\//);
    expect(inMember(1, "j2").code).toBe(0);
    expect(inMember(0, "j2").code).not.toBe(0);
    const b = await cp.cli(["apply", "-f", "-"], { input: jobYaml("onlyb", 2, 1, "  clusters: [b]") });
    expect(b.code, b.stderr).toBe(0);
    const onlyb = await until("onlyb admitted", async () => (await job("onlyb"))?.status?.admission);
    expect(onlyb.cluster).toBe("b");
    const huge = await cp.cli(["apply", "-f", "-"], { input: jobYaml("huge", 8, 2) });
    expect(huge.code, huge.stderr).toBe(0);
    const why = await until("huge's reason", async () => {
      const c = (await job("huge"))?.status?.conditions?.find((x: Obj) => x.type === "Admitted");
      return c?.message as string | undefined;
    });
    expect(why).toMatch(/fits in no member cluster/);
    expect(why).toMatch(/ a: /);
    expect(why).toMatch(/; b: /);
    const describe = await cp.cli(["describe", "tj", "j2"]);
    expect(describe.stdout).toMatch(/Dispatched/);
  });

  it("apply --dry-run says which member would take a job", async () => {
    const r = await cp.cli(["apply", "--dry-run", "-f", "-"], {
      input: jobYaml("probe", 2, 1, "  clusters: [b]"),
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/would start now in cluster b on b\//);
  });

  it("deleting a job on the control plane deletes its copy in the member", async () => {
    const where = (await job("onlyb"))!.status.admission.cluster === "a" ? 0 : 1;
    const r = await cp.cli(["delete", "tj", "onlyb", "--timeout", "60"]);
    expect(r.code, r.stderr).toBe(0);
    await until("the member's copy gone", async () =>
      inMember(where, "onlyb").code !== 0 ? true : undefined,
    );
  });

  it("two projects of equal quota share the fleet by fair share: the one that borrowed it all gives back, across both members", async () => {
    const cleared = await cp.cli(["delete", "tj", "--all", "--timeout", "120"]);
    expect(cleared.code, cleared.stderr).toBe(0);
    const projects = await cp.cli(["apply", "-f", "-"], {
      input: ["p1", "p2"]
        .map(
          (p) =>
            `apiVersion: loom.dev/v1alpha1\nkind: Project\nmetadata: {name: ${p}}\nspec: {quota: {gpu: 4}}\n`,
        )
        .join("---\n"),
    });
    expect(projects.code, projects.stderr).toBe(0);
    /** GPUs each project holds in each member, from the control plane's view ("p1@a": 8). */
    const held = async () => {
      const r = await cp.api("GET", "/apis/loom.dev/v1alpha1/trainingjobs");
      const by: Record<string, number> = {};
      for (const j of (r.body as { items: Obj[] }).items)
        if (j.status?.admission?.cluster && j.status.phase === "Running") {
          const k = `${j.metadata.project}@${j.status.admission.cluster}`;
          by[k] = (by[k] ?? 0) + 2;
        }
      return by;
    };
    const submit = async (p: string) => {
      const r = await cp.cli(["apply", "-p", p, "-f", "-"], {
        input: Array.from({ length: 6 }, (_, i) => jobYaml(`${p}-${i}`, 2)).join("---\n"),
      });
      expect(r.code, r.stderr).toBe(0);
    };
    // Alone, p1 may borrow all it asks for: 12 of the 16 GPUs, running in both members.
    await submit("p1");
    const alone = await until("p1's six jobs running", async () => {
      const by = await held();
      return (by["p1@a"] ?? 0) + (by["p1@b"] ?? 0) === 12 ? by : undefined;
    });
    expect(alone).toEqual({ "p1@a": 8, "p1@b": 4 });
    // p2 asks as much: it gets its quota and an equal share of the rest, 8 each, the members full.
    await submit("p2");
    const shared = await until(
      "8 GPUs each, every member full",
      async () => {
        const by = await held();
        const sum = (keys: string[]) => keys.reduce((s, k) => s + (by[k] ?? 0), 0);
        return sum(["p1@a", "p1@b"]) === 8 &&
          sum(["p2@a", "p2@b"]) === 8 &&
          sum(["p1@a", "p2@a"]) === 8 &&
          sum(["p1@b", "p2@b"]) === 8
          ? by
          : undefined;
      },
      480,
    );
    expect(Object.keys(shared).some((k) => k.startsWith("p2@"))).toBe(true);
    // p1 gave back by preemption; the rest wait, saying why.
    const p1 = (
      (await cp.api("GET", "/apis/loom.dev/v1alpha1/projects/p1/trainingjobs")).body as { items: Obj[] }
    ).items;
    expect(p1.filter((j) => (j.status?.preemptions ?? 0) > 0).length).toBeGreaterThanOrEqual(2);
    const waiting = p1.filter((j) => !j.status?.admission);
    expect(waiting.length).toBe(2);
    for (const j of waiting)
      expect(j.status?.conditions?.find((c: Obj) => c.type === "Admitted")?.status).toBe("False");
    // What each member runs is what the control plane says: 4 copies each, of both projects' jobs.
    for (const m of members) {
      const copies = m.cluster.kubectl([
        "get",
        "trainingjobs.loom.dev",
        "-A",
        "-l",
        "loom.dev/fleet-uid",
        "-o",
        "name",
      ]);
      expect(copies.stdout.trim().split("\n").filter(Boolean).length, copies.stderr).toBe(4);
    }
  });
});

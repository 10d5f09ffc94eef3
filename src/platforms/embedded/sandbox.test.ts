import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { GangSpec } from "../../ports/runtime.js";
import { cgroupPlan } from "./cgroups.js";
import { gangSandbox } from "./gangsandbox.js";
import { LocalRuntime } from "./runtime.js";
import { bwrapArgs, detectSandbox, PROJECT_UID_BASE, ProjectIds, sandboxedArgv } from "./sandbox.js";
import { WorkloadFiles } from "./workloadfiles.js";

const support = detectSandbox();

function gang(project: string, over: Partial<GangSpec["workers"][number]> = {}): GangSpec {
  return {
    ref: { kind: "TrainingJob", project, name: "j", uid: randomUUID() },
    attempt: 1,
    workers: [
      {
        index: 0,
        command: ["true"],
        env: {},
        allocation: { node: "n", cpuMillis: 500, memoryBytes: 2 ** 28, gpus: [] },
        ...over,
      },
    ],
  };
}

describe("sandbox", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "loom-sandbox-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("gives each project a stable uid of its own, kept across restarts", () => {
    const file = join(dir, "ids.json");
    const ids = new ProjectIds(file);
    const a = ids.of("a");
    const b = ids.of("b");
    expect(a).toBeGreaterThan(PROJECT_UID_BASE);
    expect(b).not.toBe(a);
    const again = new ProjectIds(file);
    expect([again.of("a"), again.of("b"), again.of("c")]).toEqual([a, b, b + 1]);
  });

  it("composes: the network is one field, a netns caller can join or unshare one", () => {
    const base = { rw: ["/x/rw"], ro: ["/x/ro"], cwd: "/x/rw" };
    expect(bwrapArgs({ ...base, network: "host" }, true)).not.toContain("--unshare-net");
    expect(bwrapArgs({ ...base, network: "none" }, true)).toContain("--unshare-net");
    // As root, no user namespace (its uid 0 would be root outside); unprivileged, one.
    expect(bwrapArgs({ ...base, network: "host" }, true)).not.toContain("--unshare-user");
    expect(bwrapArgs({ ...base, network: "host" }, false)).toContain("--unshare-user");
    const args = bwrapArgs({ ...base, network: "host" }, true);
    expect(args.join(" ")).toMatch(/--ro-bind-try \/x\/ro \/x\/ro.*--bind \/x\/rw \/x\/rw/);
    expect(args.join(" ")).toContain("--perms 0755 --dir /x");
  });

  it("turns the spec's memory into a cgroup limit and its CPU a weight never below a plain process's", () => {
    const v1 = cgroupPlan({ version: "v1", memory: "/m/loom", cpu: "/c/own" }, "w", {
      cpuMillis: 1500,
      memoryBytes: 2 ** 30,
    });
    // v1: shares in a cgroup beside Loom's own processes (under one parent, all of Loom's
    // workloads together would weigh as one process against the rest of the machine).
    expect(v1.writes).toEqual([
      { path: "/m/loom/w/memory.limit_in_bytes", data: String(2 ** 30) },
      { path: "/c/own/loom-w/cpu.shares", data: "1536" },
    ]);
    expect(v1.procs).toEqual(["/m/loom/w/tasks", "/c/own/loom-w/tasks"]);
    const small = cgroupPlan({ version: "v1", memory: "/m/loom", cpu: "/c/own" }, "w", {
      cpuMillis: 100,
      memoryBytes: 0,
    });
    expect(small.writes).toEqual([{ path: "/c/own/loom-w/cpu.shares", data: "1024" }]);
    // No request, no cgroup: the scheduler placed it as asking for none.
    expect(
      cgroupPlan({ version: "v1", memory: "/m/loom", cpu: "/c/own" }, "w", { cpuMillis: 0, memoryBytes: 0 })
        .procs,
    ).toEqual(["/m/loom/w/tasks"]);
    const v2 = cgroupPlan({ version: "v2", root: "/g/loom" }, "w", { cpuMillis: 250, memoryBytes: 0 });
    expect(v2.writes).toContainEqual({ path: "/g/loom/w/cpu.weight", data: "100" });
    const big = cgroupPlan({ version: "v2", root: "/g/loom" }, "w", { cpuMillis: 64_000, memoryBytes: 0 });
    expect(big.writes).toContainEqual({ path: "/g/loom/w/cpu.weight", data: "2500" });
    expect(v2.writes.some((w) => w.path.endsWith("memory.max"))).toBe(false);
  });

  /** A privileged sandbox's deps over this file's temp dir, for the tests of what may be lent. */
  const lendingDeps = () => ({
    support: { bwrap: "/usr/bin/bwrap", privileged: true },
    files: new WorkloadFiles(join(dir, "data")),
    ids: new ProjectIds(join(dir, "ids.json")),
    dataDir: join(dir, "data"),
    environmentsDir: join(dir, "data", "environments"),
    devices: () => [],
    lend: [],
  });

  it("refuses to lend the data dir, or a directory holding it, as a working directory or venv", () => {
    const deps = lendingDeps();
    expect(() => gangSandbox(deps, gang("a", { workingDir: dir }), undefined)).toThrow(
      /inside Loom's data dir or holds it/,
    );
    expect(() =>
      gangSandbox(deps, gang("a", { workingDir: join(dir, "data", "workloads", "x") }), undefined),
    ).toThrow(/workingDir/);
    expect(() => gangSandbox(deps, gang("a"), join(dir, "data", "artifacts"))).toThrow(/python.venv/);
    // A directory the project's uid cannot read is refused with what to do, not lent to fail later.
    const closed = mkdtempSync(join(tmpdir(), "loom-closed-"));
    try {
      expect(() => gangSandbox(deps, gang("a", { workingDir: closed }), undefined)).toThrow(/chmod o\+rX/);
      chmodSync(closed, 0o755);
      expect(() => gangSandbox(deps, gang("a", { workingDir: closed }), undefined)).not.toThrow();
    } finally {
      rmSync(closed, { recursive: true, force: true });
    }
    // Loom's own built environments are lent as they are.
    expect(() => gangSandbox(deps, gang("a"), join(dir, "data", "environments", "abc"))).not.toThrow();
  });

  it("follows links before it lends: /proc/1/root (the host's /) and a link into the data dir are refused", () => {
    const deps = lendingDeps();
    mkdirSync(join(dir, "data", "secrets"), { recursive: true });
    // The attack: a path that reads as harmless text but names the host's root or Loom's secrets.
    expect(() => gangSandbox(deps, gang("a", { workingDir: "/proc/1/root" }), undefined)).toThrow(/\/proc/);
    expect(() => gangSandbox(deps, gang("a", { workingDir: "/sys/fs/cgroup" }), undefined)).toThrow(/\/sys/);
    const outside = mkdtempSync(join(tmpdir(), "loom-link-"));
    try {
      symlinkSync(join(dir, "data", "secrets"), join(outside, "innocent"));
      expect(() =>
        gangSandbox(deps, gang("a", { workingDir: join(outside, "innocent") }), undefined),
      ).toThrow(/inside Loom's data dir or holds it/);
      symlinkSync(join(dir, "data", "secrets"), join(outside, "venv"));
      expect(() => gangSandbox(deps, gang("a"), join(outside, "venv"))).toThrow(/python.venv/);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it("lends a workspace's persistent home writable as its cwd, owned by the project's uid; only its own", () => {
    const deps = lendingDeps();
    const spec = { ...gang("a"), home: { name: "nb" } };
    const home = join(dir, "data", "homes", "a", "nb");
    const plan = gangSandbox(deps, spec, undefined);
    expect(plan.prepare.owned).toContainEqual({ path: home, uid: deps.ids.of("a"), gid: deps.ids.of("a") });
    const w = plan.worker(spec.workers[0]!, join(dir, "exit"), join(dir, "hb"), {});
    const argv = w.args.join(" ");
    expect(argv).toContain(`--bind ${home} ${home}`);
    expect(argv).toContain(`--chdir ${home}`);
    // Another workspace's home (or the homes dir) is not lent.
    expect(argv).not.toContain(join(dir, "data", "homes", "a", "other"));
    expect(argv).not.toMatch(new RegExp(`--bind ${join(dir, "data", "homes")} `));
  });

  it.runIf(!!support.bwrap && support.privileged)(
    "runs a command as the project's uid, in its own PID namespace, seeing only what it was lent",
    () => {
      const secret = join(dir, "secret");
      writeFileSync(secret, "s");
      const lent = join(dir, "lent");
      mkdirSync(lent);
      chmodSync(dir, 0o700);
      const argv = sandboxedArgv(support, { uid: 200_999, rw: [], ro: [lent], network: "host", cwd: lent }, [
        "sh",
        "-c",
        `id -u; ls /proc | grep -c '^[0-9]'; cat ${secret} || echo hidden; ls ${lent} >/dev/null && echo lent`,
      ]);
      const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
      expect(r.stderr).toMatch(/No such file/);
      expect(r.stdout.trim().split("\n")).toEqual([
        "200999",
        expect.stringMatching(/^[1-4]$/),
        "hidden",
        "lent",
      ]);
    },
  );

  // cgroup v1 (this Debian host's): the worker weighs what it asked for against the processes
  // beside Loom's own, not as a share of one `loom` parent.
  it.runIf(!!support.bwrap && support.cgroups?.version === "v1")(
    "gives a sandboxed worker CPU shares from its request, in a cgroup beside Loom's own processes",
    async () => {
      const rt = new LocalRuntime({
        dataDir: join(dir, "data"),
        instanceId: randomUUID(),
        cpuMillis: 4000,
        memoryBytes: 2 ** 30,
        gpus: [],
        log: pino({ level: "silent" }),
        sandbox: support,
      });
      const spec = gang("a", {
        command: ["sleep", "600"],
        allocation: { node: "n", cpuMillis: 2000, memoryBytes: 2 ** 28, gpus: [] },
      });
      try {
        await rt.start(spec);
        const w = (await rt.observe(spec.ref))!.workers[0]!;
        expect(w.state, w.message).toBe("Running");
        const own = /^\d+:(?:[^:]*,)?cpu(?:,[^:]*)?:(.*)$/m.exec(
          readFileSync("/proc/self/cgroup", "utf8"),
        )![1]!;
        // The shim joins its cgroups first thing after it starts.
        const cpuOf = (pid: number | string) =>
          /^\d+:(?:[^:]*,)?cpu(?:,[^:]*)?:(.*)$/m.exec(readFileSync(`/proc/${pid}/cgroup`, "utf8"))![1]!;
        let cg = cpuOf(w.pid!);
        for (let i = 0; i < 100 && cg === own; i++) {
          await new Promise((r) => setTimeout(r, 50));
          cg = cpuOf(w.pid!);
        }
        expect(cg).toBe(join(own, `loom-${spec.ref.uid}-a1-w0`));
        const layout = support.cgroups as { cpu: string };
        expect(
          readFileSync(join(layout.cpu, `loom-${spec.ref.uid}-a1-w0`, "cpu.shares"), "utf8").trim(),
        ).toBe("2048");
      } finally {
        await rt.release(spec.ref);
        await rt.close();
      }
    },
  );

  it("without a sandbox, runs one project's workloads at a time unless told --insecure-shared-user", async () => {
    const log = pino({ level: "silent" });
    const make = (insecureSharedUser: boolean) =>
      new LocalRuntime({
        dataDir: join(dir, insecureSharedUser ? "d2" : "d1"),
        instanceId: randomUUID(),
        cpuMillis: 1000,
        memoryBytes: 2 ** 30,
        gpus: [],
        log,
        sandbox: { privileged: false, unavailable: "test: no namespaces" },
        insecureSharedUser,
      });
    const strict = make(false);
    const a = gang("a");
    await strict.start(a);
    await expect(strict.start(gang("b"))).rejects.toThrow(/cannot sandbox.*--insecure-shared-user/);
    await strict.start(gang("a"));
    const loose = make(true);
    await loose.start(gang("a"));
    await expect(loose.start(gang("b"))).resolves.toBeUndefined();
    for (const rt of [strict, loose]) {
      for (const ref of await rt.list()) await rt.release(ref);
      await rt.close();
    }
  });
});

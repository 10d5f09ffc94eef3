import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  describeSandbox,
  detectSandbox,
  LAUNCHER_PATH,
  launcherArgv,
  type SandboxSpec,
  type SandboxSupport,
  sandboxedArgv,
} from "./sandbox.js";

/**
 * Loom's launcher (native/loom-sandbox.c) against bubblewrap's chain: the same arguments must
 * give the same sandbox, and every fence is tried from inside. The tests that run it need root
 * and the built launcher (`npm run build`); the argument tests run anywhere.
 */
const support = detectSandbox();
const both = !!support.launcher && !!support.bwrap && support.privileged;
const UID = 200_998;

describe("the sandbox launcher", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "loom-launcher-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("takes bubblewrap's options, and the shim's, nsenter's and setpriv's parts as its own", () => {
    const s: SandboxSupport = { privileged: true, bwrap: "/usr/bin/bwrap", launcher: "/l/loom-sandbox" };
    const spec: SandboxSpec = {
      uid: 7,
      rw: ["/w"],
      ro: ["/r"],
      network: { netns: "/run/netns/g" },
      cwd: "/w",
    };
    const argv = launcherArgv(s, spec, ["python3", "t.py"], {
      statusFile: "/a/exit",
      cgroupProcs: ["/m/cgroup.procs", "/c/cgroup.procs"],
    });
    expect(argv.slice(0, 13)).toEqual([
      "/l/loom-sandbox",
      "--status-file",
      "/a/exit",
      "--cgroup-procs",
      "/m/cgroup.procs",
      "--cgroup-procs",
      "/c/cgroup.procs",
      "--netns",
      "/run/netns/g",
      "--setuid",
      "7",
      "--setgid",
      "7",
    ]);
    expect(argv.join(" ")).toContain("--unshare-pid");
    expect(argv.join(" ")).toContain("--ro-bind-try /r /r");
    expect(argv.slice(-3)).toEqual(["--", "python3", "t.py"]);
    // No shell, nsenter, setpriv or env: one exec.
    expect(argv.some((a) => /\/(sh|nsenter|setpriv|env)$/.test(a))).toBe(false);
    expect(() => launcherArgv({ privileged: false, bwrap: "/usr/bin/bwrap" }, spec, ["true"])).toThrow(
      /no launcher/,
    );
    expect(describeSandbox({ ...s, cgroups: undefined })).toMatch(/^Loom's launcher \(mount, PID/);
    expect(describeSandbox({ privileged: true, bwrap: "/b", launcherUnavailable: "x" })).toMatch(
      /^bubblewrap \(Loom's launcher: x\)/,
    );
  });

  it.runIf(support.privileged && !!support.bwrap)("is found and used as root where it was built", () => {
    // Built (npm run build), it must pass its probe here: a launcher that fails on CI's kernel
    // would leave every start on bubblewrap's chain without a test noticing.
    if (existsSync(LAUNCHER_PATH)) expect(support.launcher, support.launcherUnavailable).toBe(LAUNCHER_PATH);
    else expect(support.launcherUnavailable).toMatch(/was not built/);
    expect(detectSandbox({ launcher: false }).launcher).toBeUndefined();
    expect(detectSandbox({ launcher: join(dir, "missing") }).launcherUnavailable).toMatch(/was not built/);
  });

  /** A spec with every kind of grant: read-only, writable, a file, shm, a device, the parents to make. */
  function fullSpec(): SandboxSpec {
    const data = join(dir, "data");
    const work = join(data, "workloads", "u", "work");
    const lent = join(dir, "lent");
    const shm = join(dir, "shm");
    for (const d of [work, lent, shm]) mkdirSync(d, { recursive: true });
    const heartbeat = join(data, "workloads", "u", "a1", "hb");
    mkdirSync(join(data, "workloads", "u", "a1"));
    writeFileSync(heartbeat, "");
    writeFileSync(join(data, "secret"), "s");
    spawnSync("chown", ["-R", `${UID}:${UID}`, work, shm, heartbeat]);
    chmodSync(data, 0o700);
    return {
      uid: UID,
      gid: UID,
      rw: [work, heartbeat],
      ro: [lent, join(dir, "absent")],
      shm,
      devices: ["/dev/fuse"],
      network: "none",
      cwd: work,
    };
  }

  function run(argv: string[]) {
    return spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", cwd: "/" });
  }

  it.runIf(both)("makes the same sandbox as bubblewrap's chain: mounts, ids, capabilities, signals", () => {
    const spec = fullSpec();
    const look = [
      "sh",
      "-c",
      // mount point, options, fs type, super options (sizes differ per mount, not per program),
      // sorted: the kernel lists mounts by when each was made, and the launcher copies its
      // sources first (one pivot_root), bwrap as it goes.
      "awk '{print $5, $6, $(NF-2), $(NF-1), $NF}' /proc/self/mountinfo | sed 's/,size=[^ ]*//;s/,nr_inodes=[^ ]*//' | sort;" +
        " grep -E '^(Uid|Gid|Groups|Cap|NoNewPrivs|Seccomp|SigIgn|SigBlk|NSpid)' /proc/self/status;" +
        ' hostname; pwd; echo "$PWD"; umask;' +
        " ls /proc | grep -c '^[0-9]'; ls -la / /dev /tmp | awk '{print $1, $3, $4, $NF}'",
    ];
    // The caller's umask is the workload's (a server's 027 stays 027).
    const masked = (argv: string[]) => ["/bin/sh", "-c", 'umask 027; exec "$@"', "x", ...argv];
    const bw = run(masked(sandboxedArgv(support, spec, look)));
    const ours = run(masked(launcherArgv(support, spec, look)));
    expect(bw.status, bw.stderr).toBe(0);
    expect(ours.status, ours.stderr).toBe(0);
    expect(ours.stdout).toBe(bw.stdout);
    expect(ours.stdout).toMatch(new RegExp(`^Uid:\\s+${UID}\\s+${UID}\\s+${UID}\\s+${UID}$`, "m"));
    expect(ours.stdout).toMatch(/^CapBnd:\s+0+$/m);
    expect(ours.stdout).toMatch(/^NoNewPrivs:\s+1$/m);
    expect(ours.stdout).toMatch(/^0027$/m);
  });

  it.runIf(both)("holds every fence against a workload that tries", () => {
    const spec = fullSpec();
    const data = join(dir, "data");
    const attempts = [
      `cat ${data}/secret && echo READ-DATA`,
      "touch /usr/x && echo WROTE-USR",
      "touch /etc/x && echo WROTE-ETC",
      "cat /etc/shadow && echo READ-SHADOW",
      "echo 1 > /proc/sysrq-trigger && echo SYSRQ",
      // Its own processes only: PID 1, sh, and this pipeline's ls, grep and awk (the host has hundreds).
      "ls /proc | grep -c '^[0-9]' | awk '$1 > 16 {print \"SEES-HOST-PIDS\"}'",
      "mount -t tmpfs t /tmp && echo MOUNTED",
      "hostname evil 2>/dev/null && echo RENAMED",
      "cat /sys/class/net/*/address >/dev/null; python3 -c 'import socket;socket.create_connection((\"1.1.1.1\",53),1)' 2>/dev/null && echo NET",
    ];
    const r = run(launcherArgv(support, spec, ["sh", "-c", `${attempts.join("; ")}; echo done`]));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe("done");
    // Its own dirs stay writable.
    const w = run(launcherArgv(support, spec, ["sh", "-c", "touch ./ok /tmp/ok /dev/shm/ok && echo ok"]));
    expect(w.stdout.trim(), w.stderr).toBe("ok");
  });

  it.runIf(both)("records the exit code (128 + N for a signal) and refuses what it does not know", () => {
    const spec = fullSpec();
    const status = join(dir, "exit");
    const r = run(launcherArgv(support, spec, ["sh", "-c", "exit 3"], { statusFile: status }));
    expect(r.status).toBe(3);
    expect(readFileSync(status, "utf8")).toMatch(/"exit-code": 3/);
    const k = run(launcherArgv(support, spec, ["sh", "-c", "kill -KILL $$"], { statusFile: status }));
    expect(k.status).toBe(137);
    expect(readFileSync(status, "utf8")).toMatch(/"exit-code": 137/);
    const bad = run([support.launcher!, "--status-file", status, "--bind-fd", "3", "/x", "--", "true"]);
    expect(bad.status).toBe(125);
    expect(bad.stderr).toMatch(/unknown option --bind-fd/);
    expect(readFileSync(status, "utf8")).toMatch(/"exit-code": 125/);
    // A cgroup it cannot join: nothing runs.
    const cg = run(
      launcherArgv(support, spec, ["sh", "-c", "echo RAN"], {
        statusFile: status,
        cgroupProcs: [join(dir, "no-such-cgroup", "cgroup.procs")],
      }),
    );
    expect(cg.status).toBe(125);
    expect(cg.stdout).toBe("");
  });

  // cgroup v1 (this host's): the launcher joins through each hierarchy's `tasks` (itself, "0"),
  // and every process it starts stays in that cgroup: a workload can neither leave it (back to
  // the root, where no limit holds) nor join another gang's.
  it.runIf(both && support.cgroups?.version === "v1")(
    "joins the worker's cgroups, which its workload can neither leave nor trade for another gang's",
    async () => {
      const spec = fullSpec();
      const memory = (support.cgroups as { memory: string }).memory;
      const own = join(memory, `test-${process.pid}-own`);
      const other = join(memory, `test-${process.pid}-other`);
      for (const d of [own, other]) mkdirSync(d, { recursive: true });
      try {
        const attempts = [
          `echo 0 > ${other}/tasks && echo JOINED-OTHER`,
          `echo 0 > ${other}/cgroup.procs && echo JOINED-OTHER-PROCS`,
          `echo 0 > /sys/fs/cgroup/memory/tasks && echo LEFT`,
          `echo 0 > ${memory}/tasks && echo LEFT-TO-LOOM`,
          `echo 1 > ${own}/memory.limit_in_bytes && echo SET-OWN-LIMIT`,
          `mkdir ${own}/escape && echo MADE-CHILD`,
        ];
        const argv = launcherArgv(
          support,
          spec,
          ["sh", "-c", `${attempts.join("; ")}; echo done; sleep 60`],
          {
            cgroupProcs: [join(own, "tasks")],
          },
        );
        const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        await new Promise<void>((resolve) =>
          child.stdout!.on("data", (d: Buffer) => {
            out += d.toString();
            if (out.includes("done")) resolve();
          }),
        );
        // The launcher, the sandbox's PID 1, the workload's shell and its sleep: all in its cgroup.
        const procs = readFileSync(join(own, "cgroup.procs"), "utf8").trim().split("\n");
        expect(procs).toContain(String(child.pid));
        expect(procs.length).toBeGreaterThanOrEqual(3);
        expect(readFileSync(join(other, "cgroup.procs"), "utf8")).toBe("");
        const code = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
        process.kill(-child.pid!, "SIGKILL");
        await code;
        expect(out.trim()).toBe("done");
      } finally {
        for (const d of [own, other])
          for (let i = 0; i < 50; i++) {
            try {
              rmdirSync(d);
              break;
            } catch {
              await new Promise((r) => setTimeout(r, 20));
            }
          }
      }
    },
  );

  it.runIf(both)(
    "outlives a stop's SIGTERM to its process group, which ends the workload by default",
    async () => {
      const spec = fullSpec();
      const status = join(dir, "exit");
      const argv = launcherArgv(support, spec, ["sh", "-c", "echo up; sleep 60"], { statusFile: status });
      const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ["ignore", "pipe", "inherit"] });
      await new Promise<void>((resolve) => child.stdout!.once("data", () => resolve()));
      const code = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
      process.kill(-child.pid!, "SIGTERM");
      expect(await code).toBe(143);
      expect(readFileSync(status, "utf8")).toMatch(/"exit-code": 143/);
    },
  );
});

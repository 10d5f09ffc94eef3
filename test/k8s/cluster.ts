import { execFileSync, spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { type LoomProcess, ROOT } from "../helpers.js";

/**
 * The shared test cluster: real kube-apiserver, etcd, controller-manager, scheduler and kwok
 * nodes, built from Go modules and started by test/k8s/up.sh (reused when already up).
 */
/**
 * The state dir of the contract suites' own cluster: beside the shared one, since a Loom
 * operator on the shared cluster (test/kubernetes.e2e.test.ts) reconciles every TrainingJob and
 * Project there, and the store contract must see the store alone.
 */
export function contractsState(): string {
  return `${process.env.LOOM_K8S_STATE ?? join(homedir(), ".cache/loom/k8s/run")}-contracts`;
}

export interface TestCluster {
  kubeconfig: string;
  bin: string;
  kubectl(
    args: string[],
    opts?: { input?: string; kubeconfig?: string },
  ): { code: number; stdout: string; stderr: string };
  userKubeconfig(name: string, ...groups: string[]): string;
}

/**
 * Starts (or reuses) a test cluster. `state` names a cluster of its own (a state dir other than
 * LOOM_K8S_STATE's); `nodes` its kwok nodes.
 */
export function upCluster(opts: { state?: string; nodes?: number } = {}): TestCluster {
  const env = {
    ...process.env,
    ...(opts.state ? { LOOM_K8S_STATE: opts.state } : {}),
    ...(opts.nodes !== undefined ? { LOOM_K8S_NODES: String(opts.nodes) } : {}),
  };
  // Two test files (vitest runs two at once) may ask for the same cluster together: up.sh reuses a
  // running cluster, but two starting one at once race (the second etcd fails). One at a time per
  // state dir, with util-linux's flock; -o: the daemons up.sh leaves running must not inherit
  // (and so hold) the lock.
  const state = env.LOOM_K8S_STATE ?? join(process.env.HOME ?? "/tmp", ".cache/loom/k8s/run"); // lib.sh's default
  const lock = `${state.replace(/\/+$/, "")}.lock`;
  const out = execFileSync("flock", ["-o", lock, "bash", join(ROOT, "test/k8s/up.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    env,
  });
  const kubeconfig = out.trim().split("\n").at(-1)!;
  const bin = execFileSync("bash", [join(ROOT, "test/k8s/build.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  })
    .trim()
    .split("\n")
    .at(-1)!;
  return {
    kubeconfig,
    bin,
    kubectl(args, opts = {}) {
      const r = spawnSync(join(bin, "kubectl"), ["--kubeconfig", opts.kubeconfig ?? kubeconfig, ...args], {
        encoding: "utf8",
        input: opts.input,
      });
      return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
    },
    userKubeconfig(name, ...groups) {
      // This cluster's CA (a file's own cluster has its own state dir).
      const o = execFileSync("bash", [join(ROOT, "test/k8s/user-kubeconfig.sh"), name, ...groups], {
        encoding: "utf8",
        env,
      });
      return o.trim().split("\n").at(-1)!;
    },
  };
}

/** The state dir of a test file's own cluster: beside LOOM_K8S_STATE's, named by `suffix`. */
export function ownState(suffix: string): string {
  return `${process.env.LOOM_K8S_STATE ?? join(homedir(), ".cache/loom/k8s/run")}-${suffix}`;
}

/**
 * A cluster of a test file's own (an operator on a shared one would reconcile its objects too),
 * with Loom's CRDs established and deploy/operator.yaml applied (its Deployment at zero: kwok
 * would only pretend to run it), and a kubeconfig of that Deployment's ServiceAccount, so the
 * operator the test starts makes every request under the least-privilege ClusterRole.
 */
export function operatorCluster(
  suffix: string,
  opts: { nodes?: number; crds?: string[] } = {},
): { cluster: TestCluster; operatorKubeconfig: string } {
  const cluster = upCluster({ state: ownState(suffix), nodes: opts.nodes ?? 2 });
  const crds = execFileSync(process.execPath, [join(ROOT, "bin/loom.js"), "crds"], { encoding: "utf8" });
  const must = (r: { code: number; stderr: string }, what: string) => {
    if (r.code !== 0) throw new Error(`${what} failed: ${r.stderr}`);
  };
  must(
    cluster.kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], { input: crds }),
    "applying the CRDs",
  );
  for (const crd of opts.crds ?? ["trainingjobs.loom.dev"])
    must(
      cluster.kubectl(["wait", "--for=condition=Established", `crd/${crd}`, "--timeout=60s"]),
      `waiting for ${crd}`,
    );
  must(cluster.kubectl(["apply", "-f", join(ROOT, "deploy/operator.yaml")]), "applying deploy/operator.yaml");
  cluster.kubectl(["scale", "deployment/loom-operator", "-n", "loom-system", "--replicas=0"]);
  const token = cluster
    .kubectl(["create", "token", "loom-operator", "-n", "loom-system", "--duration=1h"])
    .stdout.trim();
  const operatorKubeconfig = join(mkdtempSync(join(tmpdir(), "loom-sa-")), "kubeconfig");
  copyFileSync(cluster.kubeconfig, operatorKubeconfig);
  cluster.kubectl(["config", "set-credentials", "loom-operator", `--token=${token}`], {
    kubeconfig: operatorKubeconfig,
  });
  cluster.kubectl(["config", "set-context", "--current", "--user=loom-operator"], {
    kubeconfig: operatorKubeconfig,
  });
  return { cluster, operatorKubeconfig };
}

/** `loom operator` against the cluster, as its own process. */
export function startOperator(kubeconfig: string, extraArgs: string[] = []) {
  const proc = spawn(
    process.execPath,
    [join(ROOT, "bin/loom.js"), "operator", "--kubeconfig", kubeconfig, "--metrics-port", "0", ...extraArgs],
    {
      env: { ...process.env, LOOM_LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let log = "";
  proc.stderr.on("data", (d: Buffer) => {
    log += d.toString();
  });
  let out = "";
  const ready = new Promise<void>((ok, fail) => {
    proc.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("operator running")) ok();
    });
    proc.on("exit", (code) => fail(new Error(`operator exited with ${code}: ${log}`)));
  });
  return {
    proc,
    ready,
    log: () => log,
    stdout: () => out,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((ok) => proc.once("exit", ok));
      proc.kill(signal);
      await exited;
    },
  };
}

/** A Kubernetes fleet member of a test file's own, with its operator. */
export interface OperatorMember {
  name: string;
  cluster: TestCluster;
  operator: ReturnType<typeof startOperator>;
}

/**
 * Fleet members of a test file's own (issue 23): a kwok cluster per name (state
 * LOOM_K8S_STATE-PREFIX-NAME, one 8-GPU node) with Loom's CRDs and its own `loom operator`, an
 * earlier run's TrainingJobs deleted (they would hold its GPUs).
 */
export async function operatorMembers(prefix: string, names: string[]): Promise<OperatorMember[]> {
  const members: OperatorMember[] = [];
  for (const name of names) {
    const own = operatorCluster(`${prefix}-${name}`, { nodes: 1 });
    own.cluster.kubectl(["delete", "trainingjobs.loom.dev", "--all", "-A", "--timeout=60s"]);
    const operator = startOperator(own.operatorKubeconfig);
    await operator.ready;
    members.push({ name, cluster: own.cluster, operator });
  }
  return members;
}

/** A TrainingJob of `workers` sleeping workers with `gpu` GPUs each (1 CPU, 1Gi): a fleet test's gang. */
export function gpuJobYaml(name: string, gpu: number, workers = 1, extra = ""): string {
  return `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata: {name: ${name}}
spec:
  command: [sleep, "3600"]
  workers: ${workers}
  resources: {gpu: ${gpu}, cpu: 1, memory: 1Gi}
${extra}`;
}

/** Registers members on a control plane (`loom apply -f CLUSTER.yaml --kubeconfig-file`). */
export async function registerMembers(cp: LoomProcess, members: OperatorMember[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "loom-members-"));
  for (const m of members) {
    const file = join(dir, `${m.name}.yaml`);
    writeFileSync(
      file,
      `apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: ${m.name}}\nspec: {}\n`,
    );
    const r = await cp.cli(["apply", "-f", file, "--kubeconfig-file", m.cluster.kubeconfig]);
    if (r.code !== 0 || r.stderr !== "" || !r.stdout.includes(`cluster.loom.dev/${m.name} created`))
      throw new Error(`registering member ${m.name} failed (${r.code}): ${r.stdout}${r.stderr}`);
  }
}

export interface Selector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

/** A label selector's meaning, as the API server and network plugins apply it. */
export function selects(sel: Selector, labels: Record<string, string>): boolean {
  const ok = Object.entries(sel.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  return (
    ok &&
    (sel.matchExpressions ?? []).every((e) => {
      const has = e.key in labels;
      switch (e.operator) {
        case "In":
          return has && e.values!.includes(labels[e.key]!);
        case "NotIn":
          return !has || !e.values!.includes(labels[e.key]!);
        case "Exists":
          return has;
        case "DoesNotExist":
          return !has;
        default:
          throw new Error(`unknown selector operator ${e.operator}`);
      }
    })
  );
}

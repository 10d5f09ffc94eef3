import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { LoomProcess, until as waitUntil } from "./helpers.js";
import { operatorCluster, startOperator, type TestCluster } from "./k8s/cluster.js";
import { type CuttableProxy, proxiedKubeconfig } from "./proxy.js";

// biome-ignore lint/suspicious/noExplicitAny: objects as the API server returns them
type Obj = Record<string, any>;

/**
 * The operator's checkpoint vault (issue 23): `loom operator --data-dir` as the fleet's control
 * plane (a kwok cluster), one Kubernetes member m (another kwok cluster with its own operator)
 * that the control plane reaches through a proxy the test cuts.
 *
 * kwok runs no container, so both clusters get a ClusterExec: pods/exec runs the command on this
 * machine. Every pod's LOOM_CHECKPOINT_DIR (/loom/checkpoint in the pod) is then this machine's
 * /loom/checkpoint, which the test writes as m's worker would. What moves is Loom's own: m's
 * operator reads loom.json (`cat`) and reports the step on its copy, the control plane pulls the
 * files (`tar -c` in the copy's worker 0, through m's API server) into its vault in the data dir,
 * and when m is lost the job's first attempt on the control plane's own cluster has its pods wait
 * in the `checkpoint-seed` init container until the control plane writes the vault's files into
 * them (`tar -x` from stdin, through the control plane's own API server), with the attempt's mark.
 * What kwok cannot show: a worker that reads the seeded files and goes on from that step (kwok
 * keeps the init container "running" for the delay the job's annotation gives it, whatever the
 * mark says); test/fleet-realnode.suite.ts shows a real worker resume on a control plane's own
 * platform.
 */
// Each wait is bounded (`until`, 240 s) and says what the operators logged.
vi.setConfig({ testTimeout: 600_000 });

const CKPT = "/loom/checkpoint";

describe("fleet: the operator's checkpoint vault, and a job seeded from it on the operator's own cluster", () => {
  let cp: TestCluster;
  let m: TestCluster;
  let proxy: CuttableProxy;
  const operators: ReturnType<typeof startOperator>[] = [];
  const cli = new LoomProcess();
  const dir = mkdtempSync(join(tmpdir(), "loom-opvault-"));
  const dataDir = join(dir, "data");
  // This machine's /loom: made here (and removed after) unless it was there already.
  const madeLoom = !existsSync("/loom");
  const loom = (args: string[], input?: string) =>
    cli.cli(["--kubeconfig", cp.kubeconfig, ...args], input === undefined ? {} : { input });
  const until = <T>(what: string, probe: () => Promise<T | undefined> | T | undefined) =>
    waitUntil(what, async () => probe(), {
      ms: 240_000,
      every: 500,
      context: () =>
        `control plane's operator:\n${operators[1]?.log().slice(-5000) ?? ""}\nmember's operator:\n${operators[0]?.log().slice(-2500) ?? ""}`,
    });
  const kubectlOk = (c: TestCluster, args: string[], input?: string) => {
    const r = c.kubectl(args, input === undefined ? {} : { input });
    expect(r.code, `kubectl ${args.join(" ")}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  const apply = async (yaml: string, extra: string[] = []) => {
    const file = join(dir, `m-${randomBytes(4).toString("hex")}.yaml`);
    writeFileSync(file, yaml);
    const r = await loom(["apply", "-f", file, ...extra]);
    expect(r.code, r.stderr).toBe(0);
  };
  const job = async (): Promise<Obj | undefined> => {
    const r = await loom(["get", "tj", "train", "-o", "json"]);
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined;
  };
  /** A directory's regular files, by path relative to it (Loom's marks left out). */
  const filesOf = (root: string): Record<string, string> => {
    const out: Record<string, string> = {};
    const walk = (d: string) => {
      for (const name of readdirSync(d)) {
        const p = join(d, name);
        if (statSync(p).isDirectory()) walk(p);
        else if (!name.startsWith(".loom-seeded-"))
          out[relative(root, p)] = readFileSync(p).toString("base64");
      }
    };
    if (existsSync(root)) walk(root);
    return out;
  };
  const clearCheckpointDir = () => {
    rmSync(CKPT, { recursive: true, force: true });
    mkdirSync(CKPT, { recursive: true });
  };
  // pods/exec in kwok's pods runs here (the command on this machine, as root).
  const execHere = (c: TestCluster) =>
    kubectlOk(
      c,
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "kwok.x-k8s.io/v1alpha1",
        kind: "ClusterExec",
        metadata: { name: "loom-test-checkpoints" },
        spec: { selector: { matchNamespaces: ["loom-default"] }, execs: [{ local: {} }] },
      }),
    );

  beforeAll(async () => {
    const member = operatorCluster("opvault-m", { nodes: 1 });
    m = member.cluster;
    m.kubectl(["delete", "trainingjobs.loom.dev", "--all", "-A", "--timeout=60s"]);
    operators.push(startOperator(member.operatorKubeconfig));
    const own = operatorCluster("opvault-cp", {
      nodes: 1,
      crds: ["trainingjobs.loom.dev", "clusters.loom.dev"],
    });
    cp = own.cluster;
    // A reused cluster keeps an earlier run's objects.
    cp.kubectl(["delete", "clusters.loom.dev", "--all", "--timeout=60s"]);
    cp.kubectl(["delete", "trainingjobs.loom.dev", "--all", "-A", "--timeout=60s"]);
    operators.push(startOperator(own.operatorKubeconfig, ["--data-dir", dataDir, "--port", "0"]));
    await Promise.all(operators.map((o) => o.ready));
    execHere(m);
    execHere(cp);
    clearCheckpointDir();
    // The control plane's kubeconfig for m names the proxy.
    const proxied = join(dir, "m.kubeconfig");
    proxy = await proxiedKubeconfig(m.kubeconfig, proxied);
    // The job goes to m first: the operator's own cluster takes no work until m is lost.
    await apply(
      "apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: self}\nspec: {platform: self, unschedulable: true}\n",
    );
    await apply(
      "apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: m}\nspec: {clusterLostTimeout: 10s}\n",
      ["--kubeconfig-file", proxied],
    );
    await until("m Ready", async () =>
      /^m\s+Ready/m.test((await loom(["get", "clusters"])).stdout) ? true : undefined,
    );
  }, 600_000);

  afterAll(async () => {
    proxy?.heal();
    if (cp) await loom(["delete", "tj", "--all", "--timeout", "60"]).catch(() => undefined);
    for (const o of operators) await o.stop();
    proxy?.close();
    for (const c of [cp, m])
      c?.kubectl(["delete", "clusterexec", "loom-test-checkpoints", "--ignore-not-found"]);
    rmSync(madeLoom ? "/loom" : CKPT, { recursive: true, force: true });
  });

  it("m's copy reports a checkpoint → the vault in the data dir holds it, file for file; m lost → the job's new attempt here is seeded with it", async () => {
    await apply(
      `apiVersion: loom.dev/v1alpha1
kind: TrainingJob
metadata:
  name: train
  # kwok: a seeded worker's init container stays "running" (waiting for the mark, as a real one
  # would) instead of ending at once, so the control plane has a pod to write into.
  annotations:
    pod-init-container-completed.stage.kwok.x-k8s.io/delay: "600s"
    pod-init-container-completed.stage.kwok.x-k8s.io/jitter-delay: "600s"
spec:
  command: [sleep, "3600"]
  resources: {cpu: 1, memory: 256Mi}
`,
    );
    const placed = await until("train Running in m", async () => {
      const j = await job();
      return j?.status?.admission?.cluster === "m" && j.status.phase === "Running" ? j : undefined;
    });
    const uid = placed.metadata.uid as string;

    // m's worker checkpoints: step 12, a binary shard in a subdirectory, loom.json last.
    mkdirSync(join(CKPT, "shards"), { recursive: true });
    writeFileSync(join(CKPT, "shards", "w0.pt"), randomBytes(64 << 10));
    writeFileSync(join(CKPT, "optimizer.bin"), randomBytes(3000));
    writeFileSync(join(CKPT, "loom.json"), '{"step": 12}');
    const written = filesOf(CKPT);

    // m's operator reports the step on its copy; it is mirrored here and the files pulled into the vault.
    const held = join(dataDir, "fleet-checkpoints", uid, "current");
    await until("the vault holding step 12", async () => {
      const j = await job();
      const step = existsSync(join(held, "loom.json"))
        ? (JSON.parse(readFileSync(join(held, "loom.json"), "utf8")) as { step?: number }).step
        : undefined;
      return j?.status?.checkpoint?.step === 12 && step === 12 ? true : undefined;
    });
    expect(filesOf(held)).toEqual(written);
    expect(statSync(join(dataDir, "fleet-checkpoints")).mode & 0o077).toBe(0);

    // The job's next pods here start with an empty checkpoint directory (an emptyDir of their own).
    clearCheckpointDir();
    // (kubectl: the cluster loop writes self's status every probe, and a merge patch carries no
    // resourceVersion to conflict with.)
    kubectlOk(cp, [
      "patch",
      "clusters.loom.dev",
      "self",
      "--type",
      "merge",
      "-p",
      '{"spec":{"unschedulable":false}}',
    ]);
    proxy.partition();

    const seeded = await until("train back on the control plane's own cluster, seeded", async () => {
      const j = await job();
      // Back here, in an attempt after the one in m (its status written with the start).
      if (!j?.status?.admission || j.status.admission.cluster || !(j.status.attempts >= 2)) return undefined;
      const d = await loom(["describe", "tj", "train"]);
      return /CheckpointSeeded/.test(d.stdout) ? { job: j, describe: d.stdout } : undefined;
    });
    const attempt = seeded.job.status.attempts as number;
    expect(attempt).toBeGreaterThanOrEqual(2);
    expect(seeded.describe).toMatch(/ClusterLost/);
    expect(seeded.describe).toContain(
      `attempt ${attempt} resumes on the control plane's own cluster from the checkpoint synced from the member it ran in (step 12)`,
    );
    // The pods of that attempt wait in the seed container for that attempt's mark, and got the files.
    const pods = JSON.parse(
      kubectlOk(cp, ["get", "pods", "-n=loom-default", `-l=loom.dev/workload-uid=${uid}`, "-o=json"]),
    ) as Obj;
    const pod = (pods.items as Obj[]).find((p) => p.metadata.labels["loom.dev/attempt"] === String(attempt));
    expect(pod?.spec.initContainers?.map((c: Obj) => c.name)).toEqual(["checkpoint-seed"]);
    expect(
      existsSync(join(CKPT, `.loom-seeded-${uid}-${attempt}`)),
      `${readdirSync(CKPT).join(" ")}\n${JSON.stringify(
        pods.items.map((p: Obj) => [p.metadata.name, p.metadata.annotations, p.status]),
        null,
        1,
      )}\n${operators[1]?.log().slice(-6000)}`,
    ).toBe(true);
    expect(filesOf(CKPT)).toEqual(written);
    // Marked seeded: a later attempt here resumes from its own storage, not from the vault again.
    expect(readFileSync(join(dataDir, "fleet-checkpoints", uid, "seeded"), "utf8")).toBe("12");

    // Deleted: its checkpoints leave the vault with it (garbage collection at the next resync).
    proxy.heal();
    const deleted = await loom(["delete", "tj", "train", "--timeout", "60"]);
    expect(deleted.code, deleted.stderr).toBe(0);
    await until("the vault forgetting train", () =>
      existsSync(join(dataDir, "fleet-checkpoints", uid)) ? undefined : true,
    );
  });
});

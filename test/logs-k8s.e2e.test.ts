import { copyFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoomProcess, ROOT } from "./helpers.js";
import { startOperator, type TestCluster, upCluster } from "./k8s/cluster.js";

/**
 * `loom logs ws/NAME` on the real Kubernetes API server: Loom reads the replica pod's pods/log
 * (served by kwok from a file named in a kwok Logs object, as a kubelet serves a container's), and
 * says why when there is nothing to show (`--previous` before any container restarted). The
 * operator runs as deploy/operator.yaml's ServiceAccount. Its own cluster (beside LOOM_K8S_STATE's).
 */
const STATE = `${process.env.LOOM_K8S_STATE ?? join(homedir(), ".cache/loom/k8s/run")}-logs`;
const NS = "loom-default";

describe("loom logs of a workspace on Kubernetes", () => {
  let cluster: TestCluster;
  let operator: ReturnType<typeof startOperator>;
  const cli = new LoomProcess();
  const loom = (args: string[], input?: string) =>
    cli.cli(["--kubeconfig", cluster.kubeconfig, ...args], { input });

  async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
    for (let i = 0; i < 240; i++) {
      const v = await probe();
      if (v !== undefined) return v;
      await sleep(500);
    }
    throw new Error(`timed out waiting for ${what}\n${operator.log().slice(-3000)}`);
  }

  beforeAll(async () => {
    cluster = upCluster({ state: STATE, nodes: 1 });
    const crds = await cli.cli(["crds"]);
    expect(crds.code).toBe(0);
    cluster.kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], { input: crds.stdout });
    cluster.kubectl(["wait", "--for=condition=Established", "crd/workspaces.loom.dev", "--timeout=60s"]);
    const deployed = cluster.kubectl(["apply", "-f", join(ROOT, "deploy/operator.yaml")]);
    expect(deployed.code, deployed.stderr).toBe(0);
    cluster.kubectl(["scale", "deployment/loom-operator", "-n", "loom-system", "--replicas=0"]);
    const token = cluster
      .kubectl(["create", "token", "loom-operator", "-n", "loom-system", "--duration=1h"])
      .stdout.trim();
    const saConfig = join(mkdtempSync(join(tmpdir(), "loom-sa-")), "kubeconfig");
    copyFileSync(cluster.kubeconfig, saConfig);
    cluster.kubectl(["config", "set-credentials", "loom-operator", `--token=${token}`], {
      kubeconfig: saConfig,
    });
    cluster.kubectl(["config", "set-context", "--current", "--user=loom-operator"], { kubeconfig: saConfig });
    operator = startOperator(saConfig);
    await operator.ready;
    await until("namespace loom-default", () =>
      cluster.kubectl(["get", "ns", NS]).code === 0 ? true : undefined,
    );
  }, 300_000);

  afterAll(async () => {
    await loom(["delete", "ws", "--all", "--timeout", "60"]).catch(() => undefined);
    await operator?.stop();
    await cli.stop();
  });

  it("shows the replica pod's container log through the API server; --previous says none restarted", async () => {
    const applied = await loom(
      ["apply", "-f", "-"],
      `apiVersion: loom.dev/v1alpha1
kind: Workspace
metadata: {name: talk}
spec:
  ide: none
  command: [sh, -c, 'echo hello from the pod; exec python3 -m http.server $PORT']
  image: python:3.12-slim
  resources: {cpu: 100m, memory: 128Mi}
`,
    );
    expect(applied.code, applied.stderr).toBe(0);
    const pod = await until("the workspace's pod", () => {
      const r = cluster.kubectl(["get", "pods", "-n", NS, "-o", "jsonpath={.items[*].metadata.name}"]);
      return (
        r.stdout
          .trim()
          .split(/\s+/)
          .find((n) => n.startsWith("talk-")) || undefined
      );
    });
    // The container's log as a kubelet keeps it (CRI format), served by kwok for this pod.
    const file = join(mkdtempSync(join(tmpdir(), "loom-podlog-")), "model.log");
    const at = new Date().toISOString().replace("Z", "000Z");
    writeFileSync(file, `${at} stdout F hello from the pod\n${at} stderr F cannot find config.yaml\n`);
    const logs = cluster.kubectl(["apply", "-f", "-"], {
      input: `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Logs
metadata: {name: ${pod}, namespace: ${NS}}
spec:
  logs:
    - containers: [model]
      logsFile: ${file}
`,
    });
    expect(logs.code, logs.stderr).toBe(0);
    const out = await until("loom logs ws/talk", async () => {
      const r = await loom(["logs", "ws/talk"]);
      return r.code === 0 && r.stdout.includes("cannot find config.yaml") ? r.stdout : undefined;
    });
    expect(out).toContain("hello from the pod");
    const byName = await loom(["logs", "ws/talk", "--replica", pod]);
    expect(byName.stdout).toContain("cannot find config.yaml");
    const prev = await loom(["logs", "ws/talk", "--previous"]);
    expect(prev.code).not.toBe(0);
    expect(prev.stderr).toMatch(/Workspace talk has no output: no replica has exited yet; it is \w+/);
    const other = await loom(["logs", "ws/talk", "--replica", "talk-nope"]);
    expect(other.stderr).toContain(`no running replica talk-nope; the running ones are 0 (${pod})`);
  });
});

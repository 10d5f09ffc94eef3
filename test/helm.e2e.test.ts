import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { ROOT } from "./helpers.js";
import { ownState, type TestCluster, upCluster } from "./k8s/cluster.js";

const CHART = join(ROOT, "deploy/helm/loom");

interface Obj {
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    generation?: number;
    annotations?: Record<string, string>;
  };
  spec?: Record<string, unknown> & {
    template?: {
      spec: {
        containers: { command?: string[]; args?: string[]; image: string; env?: { name: string }[] }[];
      };
    };
  };
  [k: string]: unknown;
}

/** helm, built from its Go module into the cache (scripts/helm-build.sh). */
function helmBin(): string {
  return execFileSync("bash", [join(ROOT, "scripts/helm-build.sh")], { encoding: "utf8" })
    .trim()
    .split("\n")
    .at(-1)!;
}

/**
 * The chart deploy/helm/loom: lint, what it renders (with its documented values), the plain
 * manifests in deploy/ being its current rendering, and install and upgrade against a real
 * kube-apiserver (kwok nodes: the pods are scheduled, not run).
 */
describe("the Helm chart", () => {
  let helm: string;
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const r = spawnSync(helm, args, { encoding: "utf8", env: { ...process.env, ...env } });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  const template = (...args: string[]): Obj[] => {
    const r = run(["template", "loom", CHART, "--namespace", "loom-system", ...args]);
    expect(r.code, r.stderr).toBe(0);
    return parseAllDocuments(r.stdout)
      .map((d) => d.toJS() as Obj | null)
      .filter((o): o is Obj => !!o);
  };
  const find = (objs: Obj[], kind: string, name: string) =>
    objs.find((o) => o.kind === kind && o.metadata.name === name);

  beforeAll(() => {
    helm = helmBin();
  }, 1_800_000);

  it("lints clean, and its version is the package's", () => {
    const r = run(["lint", CHART, "--namespace", "loom-system", "--strict"]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string })
      .version;
    const chart = readFileSync(join(CHART, "Chart.yaml"), "utf8");
    expect(chart).toContain(`\nversion: ${version}\n`);
    expect(chart).toContain(`\nappVersion: "${version}"\n`);
  });

  it("renders the whole of Loom: the operator with its API on a claim, the gateway, RBAC, NetworkPolicies", () => {
    const objs = template();
    const op = find(objs, "Deployment", "loom-operator")!;
    const c = op.spec!.template!.spec.containers[0]!;
    expect(c.image).toBe("loom:0.1.0");
    expect(c.command).toEqual(["node", "/opt/loom/bin/loom.js", "operator"]);
    expect(c.args).toEqual(
      expect.arrayContaining([
        "--data-dir=/var/lib/loom",
        "--host=0.0.0.0",
        "--leader-elect",
        "--default-image=loom-python:0.1.0",
        "--tracking-url=http://loom-api.loom-system.svc:7470",
      ]),
    );
    expect(c.args!.some((a) => a.startsWith("--tracking-db"))).toBe(false);
    expect(op.spec!.strategy).toEqual({ type: "Recreate" });
    const pvc = find(objs, "PersistentVolumeClaim", "loom-data")!;
    expect(pvc.metadata.annotations?.["helm.sh/resource-policy"]).toBe("keep");
    expect(find(objs, "Service", "loom-api")).toBeDefined();
    expect(find(objs, "Deployment", "loom-gateway")).toBeDefined();
    expect(find(objs, "Service", "loom-gateway")).toBeDefined();
    expect(find(objs, "ClusterRole", "loom-operator")).toBeDefined();
    const role = find(objs, "Role", "loom-operator-leader-election") as unknown as {
      rules: { resources: string[] }[];
    };
    expect(role.rules[0]!.resources).toEqual(["leases"]);
    expect(
      objs
        .filter((o) => o.kind === "NetworkPolicy")
        .map((o) => o.metadata.name)
        .sort(),
    ).toEqual(["loom-api", "loom-default-deny", "loom-gateway"]);
    // Helm users pass --create-namespace; the plain manifests make it (restricted Pod Security).
    expect(find(objs, "Namespace", "loom-system")).toBeUndefined();
  });

  it("keeps tracking in PostgreSQL when given one, the URL in a Secret rather than in the pod spec", () => {
    const url = "postgres://loom:pw@db.example:5432/loom";
    const objs = template("--set", `tracking.postgres.url=${url}`);
    const secret = find(objs, "Secret", "loom-tracking-db") as unknown as { stringData: { url: string } };
    expect(secret.stringData.url).toBe(url);
    const c = find(objs, "Deployment", "loom-operator")!.spec!.template!.spec.containers[0]!;
    expect(c.args).toContain("--tracking-db=$(LOOM_TRACKING_DB)");
    expect(c.env!.map((e) => e.name)).toContain("LOOM_TRACKING_DB");
    expect(JSON.stringify(find(objs, "Deployment", "loom-operator"))).not.toContain("pw@");
  });

  it("places the gateway by its own nodeSelector and tolerations, and points it at the API by apiUrl when given", () => {
    const objs = template(
      "--set",
      "gateway.nodeSelector.pool=serving",
      "--set",
      "gateway.tolerations[0].key=serving",
      "--set",
      "gateway.tolerations[0].operator=Exists",
      "--set",
      "gateway.apiUrl=http://$(LOOM_API_SERVICE_HOST):7470",
    );
    const gw = find(objs, "Deployment", "loom-gateway")!.spec!.template!.spec as unknown as {
      nodeSelector: Record<string, string>;
      tolerations: unknown[];
      containers: { args: string[] }[];
    };
    expect(gw.nodeSelector).toEqual({ pool: "serving" });
    expect(gw.tolerations).toEqual([{ key: "serving", operator: "Exists" }]);
    expect(gw.containers[0]!.args).toContain("--api=http://$(LOOM_API_SERVICE_HOST):7470");
    const byDefault = find(template(), "Deployment", "loom-gateway")!.spec!.template!.spec as unknown as {
      nodeSelector?: unknown;
      containers: { args: string[] }[];
    };
    expect(byDefault.nodeSelector).toBeUndefined();
    expect(byDefault.containers[0]!.args).toContain("--api=http://loom-api.loom-system.svc:7470");
  });

  it("refuses another namespace, saying why and what to run", () => {
    const r = run(["template", "loom", CHART, "--namespace", "ml"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('install Loom into the namespace loom-system, not "ml"');
    expect(r.stderr).toContain("-n loom-system --create-namespace");
  });

  it("deploy/operator.yaml, deploy/gateway.yaml and the chart's CRDs are its current rendering", () => {
    const r = spawnSync("bash", [join(ROOT, "scripts/helm-render.sh"), "--check"], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
  });

  describe("install and upgrade on a real API server", () => {
    let cluster: TestCluster;
    const kube = () => ({ KUBECONFIG: cluster.kubeconfig });
    const getJson = (args: string[]) => {
      const r = cluster.kubectl(["get", ...args, "-o", "json"]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Obj & { items: Obj[] };
    };

    beforeAll(() => {
      cluster = upCluster({ state: ownState("helm"), nodes: 2 });
    }, 3_600_000);

    afterAll(() => {
      if (cluster) run(["uninstall", "loom", "-n", "loom-system", "--wait=false"], kube());
    });

    it("helm install creates Loom's objects, CRDs included; helm upgrade rolls the operator and keeps its data claim", async () => {
      const install = run(
        ["install", "loom", CHART, "-n", "loom-system", "--create-namespace", "--set", "operator.replicas=2"],
        kube(),
      );
      expect(install.code, install.stderr).toBe(0);
      expect(install.stdout).toContain("loom-gateway-token");
      for (const crd of ["projects", "trainingjobs", "sweeps"])
        expect(cluster.kubectl(["get", "crd", `${crd}.loom.dev`]).code).toBe(0);
      for (const [kind, name] of [
        ["deployment", "loom-operator"],
        ["deployment", "loom-gateway"],
        ["service", "loom-api"],
        ["service", "loom-gateway"],
        ["networkpolicy", "loom-default-deny"],
        ["serviceaccount", "loom-operator"],
        ["role", "loom-operator-leader-election"],
      ])
        expect(cluster.kubectl(["get", kind!, name!, "-n", "loom-system"]).code, `${kind}/${name}`).toBe(0);
      expect(cluster.kubectl(["get", "clusterrole", "loom-operator"]).code).toBe(0);
      const pvc = getJson(["pvc", "loom-data", "-n", "loom-system"]);
      const before = getJson(["deployment", "loom-operator", "-n", "loom-system"]);
      // kube-controller-manager makes the operator's ReplicaSet and its two pods (kwok "runs" them).
      for (
        let i = 0;
        i < 120 &&
        getJson(["pods", "-n", "loom-system", "-l", "app.kubernetes.io/name=loom-operator"]).items.length < 2;
        i++
      )
        await sleep(500);
      expect(
        getJson(["pods", "-n", "loom-system", "-l", "app.kubernetes.io/name=loom-operator"]).items,
      ).toHaveLength(2);

      const upgrade = run(
        ["upgrade", "loom", CHART, "-n", "loom-system", "--reuse-values", "--set", "image.tag=0.1.1"],
        kube(),
      );
      expect(upgrade.code, upgrade.stderr).toBe(0);
      const after = getJson(["deployment", "loom-operator", "-n", "loom-system"]);
      expect(after.metadata.generation).toBeGreaterThan(before.metadata.generation!);
      expect(after.spec!.template!.spec.containers[0]!.image).toBe("loom:0.1.1");
      expect(after.spec!.replicas).toBe(2); // --reuse-values kept the install's setting
      // The data claim is the same object: upgrade neither replaced nor recreated it.
      expect(getJson(["pvc", "loom-data", "-n", "loom-system"]).metadata.uid).toBe(pvc.metadata.uid);
      // Rolled: a new ReplicaSet with the new image takes the pods (Recreate: the old one goes to zero).
      let images: string[] = [];
      for (let i = 0; i < 120; i++) {
        const pods = getJson(["pods", "-n", "loom-system", "-l", "app.kubernetes.io/name=loom-operator"])
          .items as unknown as {
          metadata: { deletionTimestamp?: string };
          spec: { containers: { image: string }[] };
        }[];
        images = pods.filter((p) => !p.metadata.deletionTimestamp).map((p) => p.spec.containers[0]!.image);
        if (images.length === 2 && images.every((im) => im === "loom:0.1.1")) break;
        await sleep(500);
      }
      expect(images).toEqual(["loom:0.1.1", "loom:0.1.1"]);
      const sets = getJson([
        "replicasets",
        "-n",
        "loom-system",
        "-l",
        "app.kubernetes.io/name=loom-operator",
      ]).items;
      expect(sets).toHaveLength(2);

      // Uninstall leaves the data (helm.sh/resource-policy: keep).
      const un = run(["uninstall", "loom", "-n", "loom-system"], kube());
      expect(un.code, un.stderr).toBe(0);
      expect(getJson(["pvc", "loom-data", "-n", "loom-system"]).metadata.uid).toBe(pvc.metadata.uid);
      // The claim is the only thing left; drop it so the cluster is as before.
      cluster.kubectl(["delete", "pvc", "loom-data", "-n", "loom-system", "--wait=false"]);
    }, 600_000);
  });
});

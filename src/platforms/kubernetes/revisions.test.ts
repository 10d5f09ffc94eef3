import { describe, expect, it } from "vitest";
import type { RevisionSpec } from "../../ports/runtime.js";
import type { KubeClient, RequestOptions } from "./client.js";
import { HOME_MOUNT, kubernetesRevisions } from "./revisions.js";

/** A workspace's revision on Kubernetes: its persistent home is a claim that outlives the Deployment. */

function recorder() {
  const calls: { method: string; path: string; body: unknown }[] = [];
  const client = {
    request: async (method: string, path: string, opts: RequestOptions = {}) => {
      calls.push({ method, path, body: opts.body });
      return {};
    },
  } as unknown as KubeClient;
  return { calls, client };
}

const spec: RevisionSpec = {
  service: { kind: "Workspace", project: "team-a", name: "nb", uid: "uid-ws" },
  revision: "nb-wsabc123",
  replicas: 1,
  worker: {
    command: ["/bin/sh", "-c", 'exec "$@"', "x", "jupyter", "lab"],
    image: "jupyter:1",
    env: { HOST: "127.0.0.1" },
    allocation: { node: "", cpuMillis: 0, memoryBytes: 0, gpus: [] },
  },
  port: 8888,
  readinessPath: "/api",
  readinessTimeoutSeconds: 600,
  preemptible: false,
  home: { name: "nb", size: "20Gi", storageClassName: "fast" },
};

describe("kubernetesRevisions with a persistent home", () => {
  it("makes a claim owned by the workspace and mounts it as the working directory and HOME", async () => {
    const { calls, client } = recorder();
    await kubernetesRevisions(client, "img:default").applyRevision(spec);
    const claim = calls.find((c) => c.path.includes("/persistentvolumeclaims/"))?.body as {
      metadata: { name: string; ownerReferences: { uid: string }[] };
      spec: Record<string, unknown>;
    };
    expect(claim.metadata.name).toBe("nb-home");
    expect(claim.metadata.ownerReferences[0]?.uid).toBe("uid-ws");
    expect(claim.spec).toEqual({
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: "20Gi" } },
      storageClassName: "fast",
    });
    const deployment = calls.find((c) => c.path.includes("/deployments/"))?.body as {
      spec: { template: { spec: Record<string, unknown> & { containers: Record<string, unknown>[] } } };
    };
    const pod = deployment.spec.template.spec;
    expect(pod.volumes).toContainEqual({ name: "home", persistentVolumeClaim: { claimName: "nb-home" } });
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, fsGroup: 1000 });
    const c = pod.containers[0]!;
    expect(c.volumeMounts).toContainEqual({ name: "home", mountPath: HOME_MOUNT });
    expect(c.workingDir).toBe(HOME_MOUNT);
    expect(c.env).toContainEqual({ name: "HOME", value: HOME_MOUNT });
    // The platform's address wins over the worker's loopback default: the Service must reach it.
    expect(c.env).toContainEqual({ name: "HOST", value: "0.0.0.0" });
  });

  it("deleting the revision (a changed spec) leaves the claim: the home outlives it", async () => {
    const { calls, client } = recorder();
    await kubernetesRevisions(client, undefined).deleteRevision(spec.service, spec.revision);
    expect(calls.every((c) => !c.path.includes("persistentvolumeclaims"))).toBe(true);
  });

  it("a model revision (no home) gets no claim", async () => {
    const { calls, client } = recorder();
    const { home: _home, ...model } = spec;
    await kubernetesRevisions(client, undefined).applyRevision(model);
    expect(calls.some((c) => c.path.includes("persistentvolumeclaims"))).toBe(false);
  });
});

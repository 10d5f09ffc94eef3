import { describe, expect, it } from "vitest";
import { BadRequestError, NotFoundError } from "../../api/errors.js";
import { KubeClient, type RequestOptions } from "./client.js";
import { KubeSecretStore } from "./secrets.js";

/** A fake API server holding Secrets by path, as the real one answers. */
function fakeClient(secrets: Map<string, Record<string, string>>, namespaces = ["loom-system"]) {
  const calls: string[] = [];
  const client = {
    request: async (method: string, path: string, opts: RequestOptions = {}) => {
      calls.push(`${method} ${path}`);
      const ns = /namespaces\/([^/]+)/.exec(path)?.[1] ?? "";
      if (!namespaces.includes(ns)) throw new NotFoundError(`namespaces "${ns}" not found`);
      if (method === "PATCH") {
        secrets.set(path, (opts.body as { data: Record<string, string> }).data);
        return {};
      }
      const data = secrets.get(path);
      if (!data) throw new NotFoundError("not found");
      if (method === "DELETE") secrets.delete(path);
      return { data };
    },
  } as unknown as KubeClient;
  return { client, calls };
}

const b64 = (s: string) => Buffer.from(s).toString("base64");

describe("member kubeconfigs as Secrets in Loom's namespace", () => {
  it("writes key kubeconfig by server-side apply, reads it back, deletes it (twice is no error)", async () => {
    const held = new Map<string, Record<string, string>>();
    const { client, calls } = fakeClient(held);
    const store = new KubeSecretStore(client);
    await store.put("cluster-b-kubeconfig", "clusters: []\n");
    expect(calls).toEqual(["PATCH /api/v1/namespaces/loom-system/secrets/cluster-b-kubeconfig"]);
    expect(held.get("/api/v1/namespaces/loom-system/secrets/cluster-b-kubeconfig")).toEqual({
      kubeconfig: b64("clusters: []\n"),
    });
    expect(await store.get("cluster-b-kubeconfig")).toBe("clusters: []\n");
    expect(await store.get("nope")).toBeUndefined();
    await store.delete("cluster-b-kubeconfig");
    await store.delete("cluster-b-kubeconfig");
    expect(await store.get("cluster-b-kubeconfig")).toBeUndefined();
  });

  it("reads a Secret a kubectl user made with --from-file=kubeconfig=FILE", async () => {
    const held = new Map([["/api/v1/namespaces/ops/secrets/b", { kubeconfig: b64("clusters: [x]") }]]);
    const store = new KubeSecretStore(fakeClient(held, ["ops"]).client, "ops");
    expect(await store.get("b")).toBe("clusters: [x]");
  });

  it("never reads a Secret without a kubeconfig key, nor says what it holds", async () => {
    const held = new Map<string, Record<string, string>>([
      ["/api/v1/namespaces/loom-system/secrets/db", { password: b64("hunter2") }],
      ["/api/v1/namespaces/loom-system/secrets/tls", { "tls.key": b64("hunter2"), "tls.crt": b64("x") }],
    ]);
    const store = new KubeSecretStore(fakeClient(held).client);
    for (const name of ["db", "tls"]) {
      const err = await store.get(name).catch((e: Error) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toMatch(
        /has no "kubeconfig" key: make it with kubectl create secret generic/,
      );
      expect((err as Error).message).not.toMatch(/hunter2|password|tls\.key/);
    }
  });

  it("a name cannot leave the namespace's secrets", async () => {
    const { client, calls } = fakeClient(new Map());
    await new KubeSecretStore(client).get("../../pods/x");
    expect(calls).toEqual(["GET /api/v1/namespaces/loom-system/secrets/..%2F..%2Fpods%2Fx"]);
  });

  it("says to install the operator when Loom's namespace is missing", async () => {
    const store = new KubeSecretStore(fakeClient(new Map(), []).client);
    const err = await store.put("a", "clusters: []").catch((e: Error) => e);
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as Error).message).toMatch(/no namespace loom-system .*install Loom's operator/);
  });

  it("a kubeconfig that is not YAML is refused without quoting it", () => {
    expect(() => KubeClient.fromKubeconfigText("a: [b\n c: hunter2")).toThrow(
      /^the kubeconfig is not valid YAML \(line 2\)$/,
    );
    expect(() =>
      KubeClient.fromKubeconfigText(
        "clusters: [{name: x, cluster: {server: 'hunter2 ://'}}]\ncontexts: [{name: c, context: {cluster: x, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {}}]\n",
      ),
    ).toThrow(/^the kubeconfig's cluster x has no valid server URL$/);
  });
});

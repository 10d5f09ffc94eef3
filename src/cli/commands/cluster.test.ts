import { describe, expect, it } from "vitest";
import { prepare } from "../manifests.js";
import { defaultKubeconfigSecrets } from "./cluster.js";

const cluster = (spec: Record<string, unknown>) =>
  prepare(
    {
      source: "b.yaml",
      body: { apiVersion: "loom.dev/v1alpha1", kind: "Cluster", metadata: { name: "b" }, spec },
    },
    "default",
  );

describe("defaultKubeconfigSecrets", () => {
  it("gives a re-applied member without a secret the one --kubeconfig-file stored its kubeconfig in", () => {
    const p = [cluster({ unschedulable: true })];
    defaultKubeconfigSecrets(p);
    expect(p[0]!.body.spec).toEqual({
      unschedulable: true,
      kubeconfigSecret: { name: "cluster-b-kubeconfig" },
    });
  });

  it("leaves the self member and a named secret alone", () => {
    const p = [cluster({ platform: "self" }), cluster({ kubeconfigSecret: { name: "mine" } })];
    defaultKubeconfigSecrets(p);
    expect(p[0]!.body.spec).toEqual({ platform: "self" });
    expect(p[1]!.body.spec).toEqual({ kubeconfigSecret: { name: "mine" } });
  });
});

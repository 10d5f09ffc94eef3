import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "vitest";
import type { TestCluster } from "./cluster.js";

/**
 * What the real-node suites (test/realnode.suite.ts, test/helm-realnode.suite.ts) share: waiting
 * on pods of real-0 and kubectl that must succeed (images: python-image.ts).
 */

/** The fields of a pod the real-node suites read. */
export interface RealPod {
  metadata: { name: string; uid: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec: {
    nodeName?: string;
    containers: { image: string; env?: { name: string; value: string }[] }[];
    tolerations?: { key?: string; operator?: string; value?: string; effect?: string }[];
  };
  status: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
    containerStatuses?: {
      restartCount: number;
      ready: boolean;
      state?: { terminated?: { exitCode: number } };
    }[];
  };
}

/** Whether a pod's Ready condition is True. */
export const podReady = (p: RealPod) =>
  p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;

/**
 * Pod waits over a cluster a suite starts in its beforeAll (hence the getter); `diagnose` adds
 * what helps most when a wait times out (the operator's log, the pods).
 */
export function realNodeWaits(opts: {
  cluster: () => TestCluster;
  diagnose: () => string;
  /** The namespace of getPod and finished when none is given. */
  namespace?: string;
}) {
  const { cluster, diagnose } = opts;
  const ns0 = opts.namespace ?? "default";
  /** Polls `probe` every half second until it gives a value; fails naming `what` after `seconds`. */
  async function until<T>(
    what: string,
    probe: () => T | undefined | Promise<T | undefined>,
    seconds = 180,
  ): Promise<T> {
    for (let i = 0; i < seconds * 2; i++) {
      const v = await probe();
      if (v !== undefined) return v;
      await sleep(500);
    }
    throw new Error(`timed out waiting for ${what}\n${diagnose()}`);
  }
  /** kubectl that must succeed: its stdout. */
  const kubectl = (args: string[], input?: string) => {
    const r = cluster().kubectl(args, input === undefined ? {} : { input });
    expect(r.code, `kubectl ${args.join(" ")}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  const getPod = (name: string, ns = ns0) =>
    JSON.parse(kubectl(["get", "pod", name, "-n", ns, "-o", "json"])) as RealPod;
  /** A selector's pods, not those being deleted, by name. */
  const pods = (ns: string, selector: string) =>
    (
      JSON.parse(kubectl(["get", "pods", "-n", ns, "-l", selector, "-o", "json"])) as { items: RealPod[] }
    ).items
      .filter((p) => !p.metadata.deletionTimestamp)
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  /** Waits for a pod to end (Succeeded or Failed) and returns it. */
  const finished = (name: string, ns = ns0) =>
    until(`pod ${ns}/${name} to finish`, () => {
      const p = getPod(name, ns);
      return p.status.phase === "Succeeded" || p.status.phase === "Failed" ? p : undefined;
    });
  return { until, kubectl, getPod, pods, finished };
}

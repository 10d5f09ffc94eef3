import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { KubeClient } from "./client.js";
import type { Pod } from "./pods.js";
import { kubernetesReplicaLogs } from "./replicalogs.js";

/**
 * The operator's side of `loom logs ws/NAME` on Kubernetes: which pod's pods/log it asks the API
 * server for, with which container, follow and previous (the request kubectl logs would make).
 */

const service = { kind: "Workspace", project: "team-a", name: "nb", uid: "uid-ws" };

function pod(
  name: string,
  revision: string,
  o: { ready?: boolean; start?: string; restarts?: number; finished?: string } = {},
): Pod {
  return {
    metadata: { name, namespace: "loom-team-a", labels: { "loom.dev/revision": revision } },
    status: {
      startTime: o.start ?? "2026-01-01T00:00:00Z",
      conditions: [{ type: "Ready", status: o.ready ? "True" : "False" }],
      containerStatuses: [
        {
          name: "model",
          restartCount: o.restarts ?? 0,
          ...(o.finished ? { lastState: { terminated: { finishedAt: o.finished } } } : {}),
        },
      ],
    },
  } as unknown as Pod;
}

function fake(pods: Pod[]) {
  const lists: unknown[] = [];
  const streams: { path: string; query: unknown }[] = [];
  const client = {
    request: async (_m: string, path: string, opts: { query?: unknown }) => {
      lists.push({ path, query: opts.query });
      return { items: pods };
    },
    stream: async (path: string, query: unknown) => {
      streams.push({ path, query });
      return Readable.from(["out\n"]);
    },
  } as unknown as KubeClient;
  return { client, lists, streams };
}

const pods = [
  pod("nb-new-b", "nb-new", { start: "2026-01-01T00:02:00Z" }),
  pod("nb-new-a", "nb-new", { start: "2026-01-01T00:01:00Z", restarts: 4, finished: "2026-01-01T00:03:00Z" }),
  pod("nb-old-a", "nb-old", { ready: true }),
  pod("other-a", "other"),
];

describe("kubernetesReplicaLogs", () => {
  it("lists the service's pods by its uid and reads the first ready one's model container", async () => {
    const f = fake(pods);
    const log = await kubernetesReplicaLogs(f.client, service, ["nb-new", "nb-old"], {});
    expect(f.lists).toEqual([
      {
        path: "/api/v1/namespaces/loom-team-a/pods",
        query: { labelSelector: "loom.dev/workload-uid=uid-ws" },
      },
    ]);
    expect(log?.replica).toBe("nb-old-a");
    expect(f.streams).toEqual([
      {
        path: "/api/v1/namespaces/loom-team-a/pods/nb-old-a/log",
        query: { container: "model", follow: undefined, previous: undefined },
      },
    ]);
  });

  it("none ready: the newest; -f follows", async () => {
    const f = fake(pods.filter((p) => p.metadata.name !== "nb-old-a"));
    const log = await kubernetesReplicaLogs(f.client, service, ["nb-new", "nb-old"], { follow: true });
    expect(log?.replica).toBe("nb-new-b");
    expect(f.streams[0]!.query).toEqual({ container: "model", follow: "true", previous: undefined });
  });

  it("--previous: the pod whose container restarted, with previous=true (the kubelet keeps it)", async () => {
    const f = fake(pods);
    const log = await kubernetesReplicaLogs(f.client, service, ["nb-new", "nb-old"], { previous: true });
    expect(log).toMatchObject({ replica: "nb-new-a", previous: true });
    expect(f.streams[0]).toEqual({
      path: "/api/v1/namespaces/loom-team-a/pods/nb-new-a/log",
      query: { container: "model", follow: undefined, previous: "true" },
    });
    const none = fake([pod("nb-new-b", "nb-new")]);
    expect(await kubernetesReplicaLogs(none.client, service, ["nb-new"], { previous: true })).toBeUndefined();
  });

  it("--replica by index (newest revision first) or pod name; another revision's pod is never one", async () => {
    const f = fake(pods);
    expect(
      (await kubernetesReplicaLogs(f.client, service, ["nb-new", "nb-old"], { replica: "2" }))?.replica,
    ).toBe("nb-old-a");
    expect(
      (await kubernetesReplicaLogs(f.client, service, ["nb-new", "nb-old"], { replica: "nb-new-b" }))
        ?.replica,
    ).toBe("nb-new-b");
    await expect(
      kubernetesReplicaLogs(f.client, service, ["nb-new"], { replica: "other-a" }),
    ).rejects.toThrow("no running replica other-a; the running ones are 0 (nb-new-a), 1 (nb-new-b)");
  });

  it("no pod yet: undefined (the route says the phase and why)", async () => {
    expect(await kubernetesReplicaLogs(fake([]).client, service, ["nb-new"], {})).toBeUndefined();
  });
});

import { namespaceOf } from "../store/kube/resources.js";
import type { EventRecorder, EventRef, ObjectEvent } from "../store/port.js";
import type { KubeClient } from "./client.js";

interface KubeEvent {
  metadata: { name: string; resourceVersion?: string };
  type: string;
  reason: string;
  message: string;
  count?: number;
  firstTimestamp?: string;
  lastTimestamp?: string;
}

/** Events as core/v1 Events in the project's namespace, so `kubectl describe` shows them too. */
export class KubeEventRecorder implements EventRecorder {
  constructor(
    private readonly client: KubeClient,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async record(ref: EventRef, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const ns = namespaceOf(ref.project);
    const ts = this.now().toISOString();
    const existing = (await this.find(ref, 50)).find(
      (e) => e.reason === reason && e.message === message && e.type === type,
    );
    if (existing) {
      await this.client.request("PATCH", `/api/v1/namespaces/${ns}/events/${existing.metadata.name}`, {
        body: { count: (existing.count ?? 1) + 1, lastTimestamp: ts },
        contentType: "application/merge-patch+json",
      });
      return;
    }
    await this.client.request("POST", `/api/v1/namespaces/${ns}/events`, {
      body: {
        apiVersion: "v1",
        kind: "Event",
        metadata: { generateName: `${ref.name}.`, namespace: ns },
        involvedObject: {
          apiVersion: "loom.dev/v1alpha1",
          kind: ref.kind,
          name: ref.name,
          namespace: ns,
          uid: ref.uid,
        },
        type,
        reason,
        message,
        count: 1,
        firstTimestamp: ts,
        lastTimestamp: ts,
        source: { component: "loom" },
        reportingComponent: "loom",
        reportingInstance: "loom-operator",
      },
    });
  }

  async listFor(ref: Omit<EventRef, "uid"> & { uid?: string }, limit = 20): Promise<ObjectEvent[]> {
    const events = await this.find(ref, limit);
    // Event timestamps have second precision: the API server's revision orders events within a second.
    return [...events]
      .sort((a, b) => Number(a.metadata.resourceVersion ?? 0) - Number(b.metadata.resourceVersion ?? 0))
      .map((e) => ({
        type: e.type as ObjectEvent["type"],
        reason: e.reason,
        message: e.message,
        count: e.count ?? 1,
        firstTimestamp: e.firstTimestamp ?? "",
        lastTimestamp: e.lastTimestamp ?? "",
      }))
      .slice(-limit);
  }

  private async find(ref: Omit<EventRef, "uid"> & { uid?: string }, limit: number): Promise<KubeEvent[]> {
    const selector = [`involvedObject.kind=${ref.kind}`, `involvedObject.name=${ref.name}`];
    if (ref.uid) selector.push(`involvedObject.uid=${ref.uid}`);
    const list = await this.client.request<{ items: KubeEvent[] }>(
      "GET",
      `/api/v1/namespaces/${namespaceOf(ref.project)}/events`,
      {
        query: { fieldSelector: selector.join(","), limit: Math.max(limit, 50) },
      },
    );
    return list.items;
  }
}

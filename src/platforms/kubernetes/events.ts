import { NotFoundError } from "../../api/errors.js";
import type { EventRecorder, EventRef, ObjectEvent } from "../../ports/store.js";
import type { KubeClient } from "./client.js";
import { namespaceOf } from "./naming.js";

interface KubeEvent {
  metadata: { name: string; resourceVersion?: string };
  type: string;
  reason: string;
  message: string;
  count?: number;
  firstTimestamp?: string;
  lastTimestamp?: string;
}

/**
 * Events as core/v1 Events in the project's namespace, so `kubectl describe` shows them too.
 *
 * Repeats of the same event are folded into one Event with a count, as client-go's
 * EventCorrelator does: the recorder remembers which Event it wrote for (object, type, reason,
 * message) in a bounded in-memory cache and PATCHes its count, instead of LISTing events before
 * every write (that LIST was the most expensive request of a job's life in bench:k8s). After a
 * restart the cache is empty and the first repeat starts a new Event — the same trade client-go makes.
 */
export class KubeEventRecorder implements EventRecorder {
  private readonly written = new Map<string, { name: string; count: number }>();

  constructor(
    private readonly client: KubeClient,
    private readonly now: () => Date = () => new Date(),
    private readonly cacheSize = 4096,
  ) {}

  async record(ref: EventRef, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const ns = eventNamespace(ref.project);
    const ts = this.now().toISOString();
    const key = [ns, ref.kind, ref.name, ref.uid, type, reason, message].join("\u0000");
    const seen = this.written.get(key);
    if (seen) {
      try {
        await this.client.request("PATCH", `/api/v1/namespaces/${ns}/events/${seen.name}`, {
          body: { count: seen.count + 1, lastTimestamp: ts },
          contentType: "application/merge-patch+json",
        });
        this.remember(key, { name: seen.name, count: seen.count + 1 });
        return;
      } catch (err) {
        // The Event expired (the API server's event TTL) or was deleted: write a new one.
        if (!(err instanceof NotFoundError)) throw err;
        this.written.delete(key);
      }
    }
    const created = await this.client.request<KubeEvent>("POST", `/api/v1/namespaces/${ns}/events`, {
      body: {
        apiVersion: "v1",
        kind: "Event",
        metadata: { generateName: `${ref.name}.`, namespace: ns },
        involvedObject: {
          apiVersion: "loom.dev/v1alpha1",
          kind: ref.kind,
          name: ref.name,
          ...(ref.project ? { namespace: ns } : {}),
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
    this.remember(key, { name: created.metadata.name, count: 1 });
  }

  /** Least recently written entries go first once the cache is full. */
  private remember(key: string, entry: { name: string; count: number }): void {
    this.written.delete(key);
    this.written.set(key, entry);
    if (this.written.size > this.cacheSize) {
      const oldest = this.written.keys().next().value;
      if (oldest !== undefined) this.written.delete(oldest);
    }
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
      `/api/v1/namespaces/${eventNamespace(ref.project)}/events`,
      {
        query: { fieldSelector: selector.join(","), limit: Math.max(limit, 50) },
      },
    );
    return list.items;
  }
}

/**
 * Where an object's events go: its project's namespace; a cluster-scoped object's (a fleet's
 * Cluster) in "default", where Kubernetes keeps a Node's, with no namespace on the involved object.
 */
function eventNamespace(project: string): string {
  return project ? namespaceOf(project) : "default";
}

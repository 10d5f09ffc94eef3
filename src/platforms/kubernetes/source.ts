import type { Logger } from "pino";
import type { InformerEventType, ListWatchSource } from "../../reconcile/informer.js";
import type { KubeClient } from "./client.js";
import { watchCollection } from "./watch.js";

export interface KubeObjectMeta {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
}

/**
 * A raw Kubernetes collection (pods, nodes) as an informer source: paginated LIST, then our own
 * watch loop from the list's revision. Keyed "namespace/name" (or "name" when cluster-scoped).
 */
export function kubeCollectionSource<T extends KubeObjectMeta>(
  client: KubeClient,
  log: Logger,
  kind: string,
  path: string,
  labelSelector?: string,
): ListWatchSource<T> {
  return {
    kind,
    keyOf: objectKey,
    async list() {
      const items: T[] = [];
      let cont: string | undefined;
      let resourceVersion = "";
      do {
        const page = await client.request<{
          metadata: { resourceVersion: string; continue?: string };
          items: T[];
        }>("GET", path, { query: { labelSelector, limit: 500, continue: cont } });
        resourceVersion = page.metadata.resourceVersion;
        cont = page.metadata.continue || undefined;
        items.push(...page.items);
      } while (cont);
      return { items, resourceVersion };
    },
    async watch(resourceVersion, onEvent, onEnd) {
      return watchCollection<T>(
        client,
        log,
        path,
        { resourceVersion, labelSelector },
        (e) => onEvent({ type: e.type as InformerEventType, object: e.object }),
        onEnd,
      );
    },
  };
}

export function objectKey(o: KubeObjectMeta): string {
  return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
}

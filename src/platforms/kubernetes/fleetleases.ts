import type { FleetLease, FleetLeases } from "../../ports/fleet.js";
import type { KubeClient } from "./client.js";
import { microTime, readOrCreateLease } from "./lease.js";

/** The label of the fleet's leases (a namespace holds other leases: leader election's). */
const FLEET_LEASE_LABEL = "loom.dev/fleet-lease";

interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> };
  spec?: { holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: string };
}

/** The Lease's name for a control plane: a DNS label, whatever its host's name. */
export function fleetLeaseName(holder: string): string {
  const clean = holder
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 50);
  return `loom-fleet-${clean || "control-plane"}`;
}

/**
 * The fleet's leases in a Kubernetes member: one coordination.k8s.io/v1 Lease per control plane
 * in Loom's namespace (loom-system), as the kubelet's node leases are. The control plane renews
 * it through the member's API server with the kubeconfig it holds; the member's operator lists
 * them and watches each one's resourceVersion change (never its renewTime against its own clock).
 */
export class KubeFleetLeases implements FleetLeases {
  private readonly path: string;

  constructor(
    private readonly client: KubeClient,
    namespace: string,
  ) {
    this.path = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases`;
  }

  async list(): Promise<FleetLease[]> {
    const r = await this.client.request<{ items: Lease[] }>(
      "GET",
      `${this.path}?labelSelector=${encodeURIComponent(`${FLEET_LEASE_LABEL}=true`)}`,
    );
    return r.items
      .filter((l) => l.spec?.holderIdentity)
      .map((l) => ({
        holder: l.spec!.holderIdentity!,
        durationSeconds: l.spec?.leaseDurationSeconds ?? 15,
        renewal: l.metadata.resourceVersion ?? "",
      }));
  }

  async renew(holder: string, durationSeconds: number): Promise<void> {
    const name = fleetLeaseName(holder);
    const spec = {
      holderIdentity: holder,
      leaseDurationSeconds: durationSeconds,
      renewTime: microTime(new Date()),
    };
    const lease = await readOrCreateLease<Lease>(this.client, this.path, {
      metadata: { name, labels: { [FLEET_LEASE_LABEL]: "true" } },
      spec,
    });
    if (!lease) return;
    // The resourceVersion read rides along; a conflict is a renewal by the same holder racing:
    // the next probe renews again.
    await this.client.request("PUT", `${this.path}/${name}`, {
      body: {
        ...lease,
        metadata: { ...lease.metadata, labels: { ...lease.metadata.labels, [FLEET_LEASE_LABEL]: "true" } },
        spec: { ...lease.spec, ...spec },
      },
    });
  }
}

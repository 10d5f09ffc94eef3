import type { FastifyInstance } from "fastify";
import { kubeconfigSecretName } from "../../api/cluster.js";
import { BadRequestError } from "../../api/errors.js";
import type { FleetLeases } from "../../ports/fleet.js";
import type { SecretStore } from "../../ports/secrets.js";
import type { ResourceService } from "../resources.js";
import { route, rule } from "../routetable.js";
import { BASE, dryRun, type Params, type Query } from "./params.js";
import type { ListOrWatch } from "./watch.js";

export interface ClusterRoutesDeps {
  resources: ResourceService;
  listOrWatch: ListOrWatch;
  /** Where member kubeconfigs are kept; absent: this control plane takes none (only `self`). */
  secrets?: SecretStore;
  /** The leases control planes renew here (this platform as a fleet member); absent: none taken. */
  leases?: FleetLeases;
}

type G = { Params: Params; Querystring: Query };

/** The largest kubeconfig taken: real ones are a few KiB; a bigger body is a mistake. */
const MAX_KUBECONFIG_BYTES = 256 * 1024;

/**
 * Members of the fleet (issue 23): cluster-scoped and an unscoped admin's alone, reads included
 * (a member's name, version and capacity say where the installation runs). Before the generic
 * `/:plural` list, which any unscoped token may read. A member's kubeconfig is written here and
 * kept as a secret: no route reads it back.
 */
export function clusterRoutes(app: FastifyInstance, deps: ClusterRoutesDeps): void {
  const { resources, listOrWatch } = deps;
  const clusters = () => resources.kind("clusters");
  route<G>(app, {
    method: "GET",
    url: `${BASE}/clusters`,
    rule: rule.admin("clusters", "read"),
    handler: (req, reply) => listOrWatch(req, reply, "clusters", undefined),
  });
  route<G>(app, {
    method: "POST",
    url: `${BASE}/clusters`,
    rule: rule.admin("clusters"),
    handler: async (req, reply) =>
      reply.code(201).send(await resources.create(clusters(), undefined, req.body, dryRun(req.query))),
  });
  route<G>(app, {
    method: "GET",
    url: `${BASE}/clusters/:name`,
    rule: rule.admin("clusters", "read"),
    handler: async (req) => resources.get(clusters(), undefined, req.params.name!),
  });
  route<G>(app, {
    method: "PUT",
    url: `${BASE}/clusters/:name`,
    rule: rule.admin("clusters"),
    handler: async (req) =>
      resources.update(clusters(), undefined, req.params.name!, req.body, dryRun(req.query)),
  });
  route<G>(app, {
    method: "PATCH",
    url: `${BASE}/clusters/:name`,
    rule: rule.admin("clusters"),
    handler: async (req) =>
      resources.patch(clusters(), undefined, req.params.name!, req.body, dryRun(req.query)),
  });
  route<G>(app, {
    method: "DELETE",
    url: `${BASE}/clusters/:name`,
    rule: rule.admin("clusters"),
    handler: async (req) =>
      resources.delete(clusters(), undefined, req.params.name!, req.query.resourceVersion),
  });
  route<G>(app, {
    method: "PUT",
    url: `${BASE}/clusters/:name/kubeconfig`,
    rule: rule.admin("clusters"),
    handler: async (req, reply) => {
      if (!deps.secrets)
        throw new BadRequestError(
          "this control plane keeps no secrets, so it cannot take a member's kubeconfig; register members on `loom up` or `loom operator`",
        );
      const body = req.body as { kubeconfig?: unknown } | undefined;
      const text = body?.kubeconfig;
      if (typeof text !== "string" || !/\bclusters\s*:/.test(text))
        throw new BadRequestError(
          'send {"kubeconfig": "<the kubeconfig file\'s text>"} (loom apply -f cluster.yaml --kubeconfig-file FILE does)',
        );
      if (Buffer.byteLength(text) > MAX_KUBECONFIG_BYTES)
        throw new BadRequestError(`a kubeconfig of more than ${MAX_KUBECONFIG_BYTES} bytes is refused`);
      const name = kubeconfigSecretName(req.params.name!);
      if (!dryRun(req.query)) await deps.secrets.put(name, text);
      // The secret's name only: its data is never sent back.
      return reply.code(200).send({ kind: "Secret", metadata: { name } });
    },
  });
  route<G>(app, {
    method: "PUT",
    url: `${BASE}/fleetleases/:name`,
    rule: rule.admin("clusters"),
    handler: async (req) => renewLease(deps.leases, req.params.name!, req.body),
  });
}

/** The longest lease taken: a control plane renews every few seconds. */
const MAX_LEASE_SECONDS = 3600;

/**
 * A control plane renews its lease in this member (self-fencing, issue 23): the copies it placed
 * here stop when this member has not seen it renewed for leaseDurationSeconds.
 */
async function renewLease(leases: FleetLeases | undefined, holder: string, body: unknown) {
  if (!leases)
    throw new BadRequestError(
      "this server takes no fleet leases (it runs no controllers): register a server that runs them as the member",
    );
  const seconds = (body as { leaseDurationSeconds?: unknown } | undefined)?.leaseDurationSeconds;
  if (typeof seconds !== "number" || !Number.isInteger(seconds) || seconds < 1 || seconds > MAX_LEASE_SECONDS)
    throw new BadRequestError(
      `send {"leaseDurationSeconds": N} with a whole number of seconds from 1 to ${MAX_LEASE_SECONDS}`,
    );
  if (holder.length > 253) throw new BadRequestError("a lease holder's name has at most 253 characters");
  await leases.renew(holder, seconds);
  return { kind: "FleetLease", holder, leaseDurationSeconds: seconds };
}

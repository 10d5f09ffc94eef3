import { type IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { FastifyInstance } from "fastify";
import { BadRequestError, LoomError, NotFoundError } from "../../api/errors.js";
import { WORKSPACE } from "../../api/kinds.js";
import type { Runtime, WorkloadRef } from "../../ports/runtime.js";
import type { WorkspaceDirectory } from "../../ports/workspaces.js";
import type { ResourceService } from "../resources.js";
import { route, rule } from "../routetable.js";
import { touchOnTraffic } from "../workspaces/activity.js";
import { BASE, type Params, type Query } from "./params.js";

/**
 * `GET .../projects/P/PLURAL/NAME/portforward?port=N[&worker=K]` with `Connection: Upgrade,
 * Upgrade: loom-portforward`: after `101 Switching Protocols` the connection carries raw TCP
 * bytes to and from port N of the workload, both ways, as `kubectl port-forward` does through
 * the API server. One connection is one tunnel; `loom port-forward` opens one per local client.
 *
 * Node's http server hands requests with an Upgrade header to its 'upgrade' listeners, not to
 * Fastify; `acceptUpgrades` routes them through Fastify all the same (a ServerResponse on the
 * socket), so the guard authenticates and authorizes them by this route's rule like any other
 * request, and every refusal is an ordinary HTTP answer. Only this route takes the socket over.
 */

/** The Upgrade token of Loom's tunnel. */
export const PORTFORWARD_PROTOCOL = "loom-portforward";

const upgrades = new WeakMap<IncomingMessage, { socket: Duplex; head: Buffer }>();

export interface PortForwardDeps {
  resources: ResourceService;
  runtime: Pick<Runtime, "list" | "observe" | "listeningPorts" | "connectPort">;
  /** Workspaces' activity record (idle culling): forwarded traffic counts as use. */
  workspaces?: Pick<WorkspaceDirectory, "touch">;
}

/** A workload's worker the runtime can reach: a gang's worker, or a service's replica (worker 0). */
interface Target {
  ref: WorkloadRef;
  worker: number;
}

/**
 * What of an object the runtime runs, in order (`?worker=K` picks the K-th): the gang made for
 * the object itself (its uid: TrainingJobs, Workspaces), one per worker; or, for a service, its
 * replicas, one-worker workloads of the same kind named REVISION-rK with REVISION NAME-N.
 */
export async function targetsOf(
  runtime: PortForwardDeps["runtime"],
  obj: { kind: string; project: string; name: string; uid: string },
): Promise<Target[]> {
  const escaped = obj.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const replica = new RegExp(`^${escaped}-\\d+-r\\d+$`);
  // A workspace's one replica runs through the serving path: NAME-wsHASH-rK, of the platform's kind.
  const wsReplica = new RegExp(`^${escaped}-ws[0-9a-f]{6}-r\\d+$`);
  const refs = (await runtime.list())
    .filter((r) => r.project === obj.project)
    .filter(
      (r) =>
        (r.kind === obj.kind && (r.uid === obj.uid || replica.test(r.name))) ||
        (obj.kind === WORKSPACE && wsReplica.test(r.name)),
    )
    .sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true }));
  const out: Target[] = [];
  for (const ref of refs) {
    const seen = await runtime.observe(ref);
    for (const w of seen?.workers ?? []) if (w.state === "Running") out.push({ ref, worker: w.index });
  }
  return out;
}

/** Registers the port-forward route (an upgrade; see acceptUpgrades). */
export function portForwardRoutes(app: FastifyInstance, deps: PortForwardDeps): void {
  route<{ Params: Params; Querystring: Query }>(app, {
    method: "GET",
    url: `${BASE}/projects/:project/:plural/:name/portforward`,
    // Reaching inside a workload is changing it as far as trust goes: editors and admins only.
    rule: rule.project("portforward", "write"),
    handler: async (req, reply) => {
      const upgrade = upgrades.get(req.raw);
      const wanted = req.headers.upgrade?.toLowerCase() === PORTFORWARD_PROTOCOL;
      if (!upgrade || !wanted)
        throw new BadRequestError(
          `port-forward is an HTTP upgrade: send 'Connection: Upgrade' and 'Upgrade: ${PORTFORWARD_PROTOCOL}' (loom port-forward KIND/NAME PORT does)`,
        );
      const port = Number(req.query.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw new BadRequestError("port must be a TCP port number, 1 to 65535 (?port=N)");
      const index = req.query.worker === undefined || req.query.worker === "" ? 0 : Number(req.query.worker);
      if (!Number.isInteger(index) || index < 0) throw new BadRequestError("worker must be 0 or more");
      const def = deps.resources.namespacedKind(req.params.plural!);
      const project = req.params.project!;
      const obj = await deps.resources.get(def, project, req.params.name!);
      const { listeningPorts, connectPort } = deps.runtime;
      if (!connectPort)
        throw new BadRequestError(
          "this platform's runtime cannot forward ports through Loom (on Kubernetes: run loom operator with --data-dir, or kubectl port-forward to the workload's pod)",
        );
      const what = `${def.kind} ${req.params.name}`;
      const targets = await targetsOf(deps.runtime, {
        kind: def.kind,
        project,
        name: req.params.name!,
        uid: obj.metadata.uid,
      });
      if (targets.length === 0)
        throw new NotFoundError(`${what} has nothing running to forward to: wait until it runs (loom get)`);
      const target = targets[index];
      if (!target)
        throw new BadRequestError(
          `worker must be between 0 and ${targets.length - 1}: ${what} runs ${targets.length}`,
        );
      // Where the runtime sees listening ports (embedded), only those; on Kubernetes the pod's
      // own answer through pods/portforward says whether anything listens.
      const ports = listeningPorts
        ? await listeningPorts.call(deps.runtime, target.ref, target.worker)
        : [port];
      if (!ports.includes(port))
        throw new BadRequestError(
          `${what} (worker ${index}) does not listen on port ${port}; it listens on ${ports.length ? ports.join(", ") : "no port"}`,
        );
      let upstream: Duplex;
      try {
        upstream = await connectPort.call(deps.runtime, target.ref, target.worker, port);
      } catch (err) {
        throw new LoomError(
          "BadGateway",
          502,
          `cannot connect to port ${port} of ${what}: ${(err as Error).message}`,
        );
      }
      reply.hijack();
      splice(upgrade.socket, upgrade.head, upstream);
      if (def.kind === WORKSPACE && deps.workspaces?.touch) {
        const touch = deps.workspaces.touch.bind(deps.workspaces, project, req.params.name!);
        touch(new Date());
        touchOnTraffic([upgrade.socket, upstream], () => touch(new Date()));
      }
    },
  });
}

/** 101, then bytes both ways; either side's end or error ends the other. */
function splice(client: Duplex, head: Buffer, upstream: Duplex): void {
  client.write(
    `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${PORTFORWARD_PROTOCOL}\r\n\r\n`,
  );
  if (head.length) upstream.write(head);
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", close);
  upstream.on("error", close);
  client.on("close", () => upstream.destroy());
  upstream.on("close", () => client.destroy());
  // End for end: a client that half-closes (sent everything) still reads the rest.
  client.pipe(upstream);
  upstream.pipe(client);
}

/**
 * Sends the server's upgrade requests through Fastify's routing (see the module comment): a
 * route that does not take the socket over answers on it as usual, and the connection ends.
 */
export function acceptUpgrades(app: FastifyInstance): void {
  app.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgrades.set(req, { socket, head });
    const res = new ServerResponse(req);
    res.assignSocket(socket as import("node:net").Socket);
    res.shouldKeepAlive = false;
    res.on("finish", () => socket.end());
    socket.on("error", () => socket.destroy());
    app.routing(req, res);
  });
}

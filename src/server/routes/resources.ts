import type { FastifyInstance } from "fastify";
import { BadRequestError } from "../../api/errors.js";
import { TRAININGJOB } from "../../api/kinds.js";
import type { Resource } from "../../api/meta.js";
import { isFinished, type TrainingJob } from "../../api/trainingjob.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { ResourceService } from "../resources.js";
import { route, rule } from "../routetable.js";
import type { SchedulingView } from "../scheduling.js";
import { BASE, dryRun, type Params, type Query } from "./params.js";
import type { ListOrWatch } from "./watch.js";

export interface ResourceRoutesDeps {
  store: ResourceStore;
  events: EventRecorder;
  resources: ResourceService;
  listOrWatch: ListOrWatch;
  /** What `loom apply --dry-run` asks of the scheduler. */
  scheduling: Pick<SchedulingView, "preview">;
}

type G = { Params: Params; Querystring: Query };

/**
 * Objects inside a project: CRUD, their status subresource, their events, and one kind across
 * every project. Status belongs to the platform (as Kubernetes grants *\/status to controllers
 * only): members read it; writes over HTTP need a platform principal, and a status in a PUT,
 * PATCH or POST of the object itself is ignored (validateManifest keeps spec and metadata only).
 */
export function resourceRoutes(app: FastifyInstance, deps: ResourceRoutesDeps): void {
  const { resources, listOrWatch } = deps;
  const list = `${BASE}/projects/:project/:plural`;
  const one = `${list}/:name`;
  const kindOf = (req: { params: Params }) => resources.namespacedKind(req.params.plural!);
  /**
   * `loom apply --dry-run` of a TrainingJob (a create, or an update of a job that still waits):
   * would it start now, where, and what would it preempt? An admitted or finished job keeps what
   * it has, so a dry run of it schedules nothing.
   */
  const withPreview = async (req: { query: Query }, def: { kind: string }, obj: Resource) => {
    if (!dryRun(req.query) || req.query.preview !== "admission" || def.kind !== TRAININGJOB) return obj;
    const job = obj as TrainingJob;
    if (job.status?.admission || isFinished(job) || job.metadata.deletionTimestamp) return obj;
    const admissionPreview = await deps.scheduling.preview(job);
    return { ...job, status: { ...job.status, phase: job.status?.phase ?? "Pending", admissionPreview } };
  };
  route<G>(app, {
    method: "GET",
    url: `${BASE}/projects/:project/events`,
    rule: rule.project("events", "read"),
    handler: async (req) => {
      const { kind, name } = req.query;
      if (!kind || !name) throw new BadRequestError("events need ?kind=KIND&name=NAME");
      const limit = Number(req.query.limit ?? 20);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
        throw new BadRequestError("limit must be a whole number from 1 to 1000");
      }
      const items = await deps.events.listFor({ kind, project: req.params.project!, name }, limit);
      return { kind: "EventList", items };
    },
  });
  route<G>(app, {
    method: "GET",
    url: list,
    rule: rule.project("objects", "read"),
    handler: (req, reply) => listOrWatch(req, reply, req.params.plural!, req.params.project, true),
  });
  route<G>(app, {
    method: "POST",
    url: list,
    rule: rule.project("objects", "write"),
    handler: async (req, reply) => {
      const def = kindOf(req);
      const created = await resources.create(def, req.params.project, req.body, dryRun(req.query));
      return reply.code(201).send(await withPreview(req, def, created));
    },
  });
  route<G>(app, {
    method: "GET",
    url: one,
    rule: rule.project("objects", "read", { workload: "own-object" }),
    handler: async (req) => resources.get(kindOf(req), req.params.project, req.params.name!),
  });
  route<G>(app, {
    method: "PUT",
    url: one,
    rule: rule.project("objects", "write"),
    handler: async (req) => {
      const def = kindOf(req);
      const updated = await resources.update(
        def,
        req.params.project,
        req.params.name!,
        req.body,
        dryRun(req.query),
      );
      return withPreview(req, def, updated);
    },
  });
  route<G>(app, {
    method: "PATCH",
    url: one,
    rule: rule.project("objects", "write"),
    handler: async (req) =>
      resources.patch(kindOf(req), req.params.project, req.params.name!, req.body, dryRun(req.query)),
  });
  route<G>(app, {
    method: "DELETE",
    url: one,
    rule: rule.project("objects", "write"),
    handler: async (req) =>
      resources.delete(kindOf(req), req.params.project, req.params.name!, req.query.resourceVersion),
  });
  route<G>(app, {
    method: "GET",
    url: `${one}/status`,
    rule: rule.project("status", "read", { workload: "own-object" }),
    handler: async (req) => resources.get(kindOf(req), req.params.project, req.params.name!),
  });
  route<G>(app, {
    method: "PUT",
    url: `${one}/status`,
    rule: rule.platform("status"),
    handler: async (req) => {
      const def = kindOf(req);
      const body = req.body as { metadata?: { resourceVersion?: string }; status?: unknown };
      const current = await resources.get(def, req.params.project!, req.params.name!);
      const st = def.status.safeParse(body?.status ?? {});
      if (!st.success)
        throw new BadRequestError(
          `invalid status: ${st.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`,
        );
      return deps.store.updateStatus({
        ...current,
        metadata: { ...current.metadata, resourceVersion: body?.metadata?.resourceVersion ?? "" },
        status: st.data,
      });
    },
  });
  // Listing one kind across every project (loom get tj -A).
  route<G>(app, {
    method: "GET",
    url: `${BASE}/:plural`,
    rule: rule.global("objects"),
    handler: (req, reply) => listOrWatch(req, reply, req.params.plural!, undefined),
  });
}

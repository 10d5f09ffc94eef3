import type { FastifyInstance } from "fastify";
import { BadRequestError } from "../../api/errors.js";
import { TRAININGJOB } from "../../api/kinds.js";
import type { TrainingJob } from "../../api/trainingjob.js";
import type { EventRecorder, ResourceStore } from "../../ports/store.js";
import type { ResourceService } from "../resources.js";
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

/** Objects inside a project: CRUD, their status subresource, their events, and one kind across every project. */
export function resourceRoutes(app: FastifyInstance, deps: ResourceRoutesDeps): void {
  const { resources, listOrWatch } = deps;
  app.get<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/events`, async (req) => {
    const { kind, name } = req.query;
    if (!kind || !name) throw new BadRequestError("events need ?kind=KIND&name=NAME");
    const limit = Number(req.query.limit ?? 20);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new BadRequestError("limit must be a whole number from 1 to 1000");
    }
    const items = await deps.events.listFor({ kind, project: req.params.project!, name }, limit);
    return { kind: "EventList", items };
  });

  app.get<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/:plural`, (req, reply) =>
    listOrWatch(req, reply, req.params.plural!, req.params.project, true),
  );
  app.post<{ Params: Params; Querystring: Query }>(
    `${BASE}/projects/:project/:plural`,
    async (req, reply) => {
      const def = resources.namespacedKind(req.params.plural!);
      const created = await resources.create(def, req.params.project, req.body, dryRun(req.query));
      // `loom apply --dry-run`: would it start now, and what would it preempt?
      if (dryRun(req.query) && req.query.preview === "admission" && def.kind === TRAININGJOB) {
        const preview = await deps.scheduling.preview(created as TrainingJob);
        return reply.code(201).send({ ...created, status: { phase: "Pending", admissionPreview: preview } });
      }
      return reply.code(201).send(created);
    },
  );
  app.get<{ Params: Params }>(`${BASE}/projects/:project/:plural/:name`, async (req) =>
    resources.get(resources.namespacedKind(req.params.plural!), req.params.project, req.params.name!),
  );
  app.put<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/:plural/:name`, async (req) =>
    resources.update(
      resources.namespacedKind(req.params.plural!),
      req.params.project,
      req.params.name!,
      req.body,
      dryRun(req.query),
    ),
  );
  app.patch<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/:plural/:name`, async (req) =>
    resources.patch(
      resources.namespacedKind(req.params.plural!),
      req.params.project,
      req.params.name!,
      req.body,
      dryRun(req.query),
    ),
  );
  app.delete<{ Params: Params; Querystring: Query }>(`${BASE}/projects/:project/:plural/:name`, async (req) =>
    resources.delete(
      resources.namespacedKind(req.params.plural!),
      req.params.project,
      req.params.name!,
      req.query.resourceVersion,
    ),
  );
  app.get<{ Params: Params }>(`${BASE}/projects/:project/:plural/:name/status`, async (req) =>
    resources.get(resources.namespacedKind(req.params.plural!), req.params.project, req.params.name!),
  );
  app.put<{ Params: Params }>(`${BASE}/projects/:project/:plural/:name/status`, async (req) => {
    const def = resources.namespacedKind(req.params.plural!);
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
  });

  // Listing one kind across every project (loom get tj -A).
  app.get<{ Params: Params; Querystring: Query }>(`${BASE}/:plural`, (req, reply) =>
    listOrWatch(req, reply, req.params.plural!, undefined),
  );
}

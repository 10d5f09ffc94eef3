import type { FastifyInstance, InjectOptions } from "fastify";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type RouteApp, routeApp } from "../../test/routeapp.js";
import type { SqliteEventRecorder } from "../platforms/embedded/events.js";
import type { SqliteResourceStore } from "../platforms/embedded/store.js";

const BASE = "/apis/loom.dev/v1alpha1";
const JOBS = `${BASE}/projects/default/trainingjobs`;

function job(
  name: string,
  spec: Record<string, unknown> = { command: ["python", "train.py"] },
  metadata: Record<string, unknown> = {},
) {
  return { apiVersion: "loom.dev/v1alpha1", kind: "TrainingJob", metadata: { name, ...metadata }, spec };
}

describe("HTTP API", () => {
  let r: RouteApp;
  let store: SqliteResourceStore;
  let app: FastifyInstance;
  let token: string;
  let events: SqliteEventRecorder;

  /** An authenticated request; the body is sent as JSON. */
  const call = (
    method: InjectOptions["method"],
    url: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => r.call(token, method, url, body, headers);

  beforeEach(async () => {
    r = await routeApp({ name: "app" });
    ({ app, store, events, admin: token } = r);
  });

  afterEach(() => r.close());

  describe("authentication", () => {
    it("serves /healthz without a token", async () => {
      const res = await app.inject({ method: "GET", url: "/healthz" });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ status: "ok" });
    });

    it.each([
      "/metrics",
      "/openapi.json",
      "/version",
      `${BASE}/projects`,
      JOBS,
      "/no/such/route",
      "/healthzz",
    ])("rejects %s without a token", async (url) => {
      const res = await app.inject({ method: "GET", url });
      expect(res.statusCode).toBe(401);
      expect(res.json()).toMatchObject({
        kind: "Status",
        status: "Failure",
        reason: "Unauthorized",
        code: 401,
      });
      expect(res.json().message).toMatch(/missing bearer token/);
    });

    it("rejects a wrong token", async () => {
      for (const authorization of [`Bearer ${token}x`, "Bearer ", `Basic ${token}`]) {
        const res = await app.inject({ method: "GET", url: `${BASE}/projects`, headers: { authorization } });
        expect(res.statusCode).toBe(401);
        expect(res.json()).toMatchObject({ kind: "Status", reason: "Unauthorized", code: 401 });
      }
      const wrong = await app.inject({
        method: "POST",
        url: JOBS,
        headers: { authorization: "Bearer loom_nope" },
        payload: job("a"),
      });
      expect(wrong.statusCode).toBe(401);
      expect(wrong.json().message).toMatch(/invalid token/);
      expect((await store.list("TrainingJob")).items).toEqual([]);
    });

    it("accepts the right token", async () => {
      const res = await call("GET", "/version");
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ version: "0.0.0-test", apiVersion: "loom.dev/v1alpha1" });
    });
  });

  describe("resources", () => {
    it("has the default project", async () => {
      const res = await call("GET", `${BASE}/projects/default`);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ kind: "Project", metadata: { name: "default" } });
      const list = await call("GET", `${BASE}/projects`);
      expect(list.json()).toMatchObject({ kind: "ProjectList", items: [{ metadata: { name: "default" } }] });
    });

    it("creates a TrainingJob with defaults, then reads and lists it", async () => {
      const res = await call("POST", JOBS, job("train"));
      expect(res.statusCode).toBe(201);
      const created = res.json();
      expect(created.metadata).toMatchObject({ name: "train", project: "default", generation: 1 });
      expect(created.metadata.uid).toBeTruthy();
      expect(created.spec).toMatchObject({ workers: 1, terminationGracePeriodSeconds: 30 });
      expect((await call("GET", `${JOBS}/train`)).json()).toEqual(created);
      const list = (await call("GET", JOBS)).json();
      expect(list).toMatchObject({
        kind: "TrainingJobList",
        metadata: { resourceVersion: created.metadata.resourceVersion },
      });
      expect(list.items).toEqual([created]);
      expect((await call("GET", `${BASE}/trainingjobs`)).json().items).toEqual([created]);
      const dup = await call("POST", JOBS, job("train"));
      expect(dup.statusCode).toBe(409);
      expect(dup.json().reason).toBe("AlreadyExists");
    });

    it("rejects a TrainingJob without a command with 422 naming spec.command, storing nothing", async () => {
      const res = await call("POST", JOBS, job("train", {}));
      expect(res.statusCode).toBe(422);
      const body = res.json();
      expect(body).toMatchObject({ kind: "Status", reason: "Invalid", code: 422 });
      expect(body.details.causes).toContainEqual({
        field: "spec.command",
        message: "required field is missing",
      });
      expect(body.message).toContain("spec.command");
      expect((await call("GET", JOBS)).json().items).toEqual([]);
      expect((await store.list("TrainingJob")).items).toEqual([]);
    });

    it("rejects a body of another kind or for another project", async () => {
      const project = { apiVersion: "loom.dev/v1alpha1", kind: "Project", metadata: { name: "p" } };
      const wrongKind = await call("POST", JOBS, project);
      expect(wrongKind.statusCode).toBe(400);
      expect(wrongKind.json().message).toMatch(/\/projects/);
      const wrongProject = await call("POST", JOBS, job("a", undefined, { project: "other" }));
      expect(wrongProject.statusCode).toBe(400);
      expect(wrongProject.json().message).toMatch(/does not match/);
      expect((await store.list("TrainingJob")).items).toEqual([]);
    });

    it("rejects malformed JSON with a 400 Status", async () => {
      const res = await call("POST", JOBS, "{not json", { "content-type": "application/json" });
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ kind: "Status", code: 400 });
    });

    it("returns 404 naming the project when it does not exist", async () => {
      const res = await call("POST", `${BASE}/projects/nope/trainingjobs`, job("a"));
      expect(res.statusCode).toBe(404);
      expect(res.json()).toMatchObject({ kind: "Status", reason: "NotFound", code: 404 });
      expect(res.json().message).toContain('project "nope"');
      const list = await call("GET", `${BASE}/projects/nope/trainingjobs`);
      expect(list.statusCode).toBe(404);
      expect(list.json().message).toContain('project "nope"');
      expect((await store.list("TrainingJob")).items).toEqual([]);
    });

    it("creates a job in a new project", async () => {
      const p = await call("POST", `${BASE}/projects`, {
        apiVersion: "loom.dev/v1alpha1",
        kind: "Project",
        metadata: { name: "team" },
      });
      expect(p.statusCode).toBe(201);
      const res = await call("POST", `${BASE}/projects/team/trainingjobs`, job("a"));
      expect(res.statusCode).toBe(201);
      expect(res.json().metadata.project).toBe("team");
      expect((await call("GET", JOBS)).json().items).toEqual([]);
      // A project with jobs cannot be deleted.
      const del = await call("DELETE", `${BASE}/projects/team`);
      expect(del.statusCode).toBe(409);
      expect(del.json().message).toMatch(/1 trainingjobs/);
    });

    it("rejects a PUT with a stale resourceVersion with 409 Conflict", async () => {
      const v1 = (await call("POST", JOBS, job("train"))).json();
      const put = await call("PUT", `${JOBS}/train`, { ...v1, spec: { command: ["v2"] } });
      expect(put.statusCode).toBe(200);
      const v2 = put.json();
      expect(v2.metadata.generation).toBe(2);
      expect(Number(v2.metadata.resourceVersion)).toBeGreaterThan(Number(v1.metadata.resourceVersion));
      const stale = await call("PUT", `${JOBS}/train`, { ...v1, spec: { command: ["v3"] } });
      expect(stale.statusCode).toBe(409);
      expect(stale.json()).toMatchObject({ kind: "Status", reason: "Conflict", code: 409 });
      expect((await call("GET", `${JOBS}/train`)).json().spec.command).toEqual(["v2"]);
    });

    it("rejects a PUT whose body names another object", async () => {
      const v1 = (await call("POST", JOBS, job("train"))).json();
      const res = await call("PUT", `${JOBS}/other`, v1);
      expect(res.statusCode).toBe(400);
      expect(res.json().message).toMatch(/does not match/);
    });

    it("merge-patches labels", async () => {
      await call("POST", JOBS, job("train", undefined, { labels: { keep: "yes", drop: "me" } }));
      const headers = { "content-type": "application/merge-patch+json" };
      const res = await call(
        "PATCH",
        `${JOBS}/train`,
        JSON.stringify({ metadata: { labels: { team: "nlp", drop: null } } }),
        headers,
      );
      expect(res.statusCode).toBe(200);
      expect(res.json().metadata.labels).toEqual({ keep: "yes", team: "nlp" });
      expect(res.json().metadata.generation).toBe(1);
      expect((await call("GET", `${JOBS}/train`)).json().metadata.labels).toEqual({
        keep: "yes",
        team: "nlp",
      });
      const byLabel = await call("GET", `${JOBS}?labelSelector=team%3Dnlp`);
      expect(byLabel.json().items.map((o: { metadata: { name: string } }) => o.metadata.name)).toEqual([
        "train",
      ]);
      // A patch that makes the spec invalid is rejected like any write.
      const bad = await call("PATCH", `${JOBS}/train`, JSON.stringify({ spec: { workers: 0 } }), headers);
      expect(bad.statusCode).toBe(422);
      expect(bad.json().details.causes[0].field).toBe("spec.workers");
      const notObject = await call("PATCH", `${JOBS}/train`, "[1]", headers);
      expect(notObject.statusCode).toBe(400);
    });

    it("stores nothing with ?dryRun=All", async () => {
      const res = await call("POST", `${JOBS}?dryRun=All`, job("train"));
      expect(res.statusCode).toBe(201);
      expect(res.json()).toMatchObject({
        kind: "TrainingJob",
        metadata: { name: "train" },
        spec: { workers: 1 },
      });
      expect((await call("GET", JOBS)).json().items).toEqual([]);
      expect((await call("GET", `${JOBS}/train`)).statusCode).toBe(404);

      const created = (await call("POST", JOBS, job("train"))).json();
      const put = await call("PUT", `${JOBS}/train?dryRun=All`, {
        ...created,
        spec: { command: ["changed"] },
      });
      expect(put.statusCode).toBe(200);
      expect(put.json().spec.command).toEqual(["changed"]);
      expect((await call("GET", `${JOBS}/train`)).json()).toEqual(created);
    });

    it("answers a dry-run create of an object that exists as the create would: 409 AlreadyExists", async () => {
      // `loom apply --dry-run` reads this as "it would be an update", as apply does; it said
      // "would start now" of a job that had long succeeded.
      await call("POST", JOBS, job("train"));
      const dry = await call("POST", `${JOBS}?dryRun=All`, job("train"));
      expect(dry.statusCode).toBe(409);
      expect(dry.json()).toMatchObject({ reason: "AlreadyExists" });
      expect(dry.json().message).toContain('"default/train" already exists');
      // Validation still comes first: an invalid body is invalid whether or not it exists.
      const bad = await call("POST", `${JOBS}?dryRun=All`, { ...job("train"), spec: { workers: 0 } });
      expect(bad.statusCode).toBe(422);
    });

    it("deletes a job", async () => {
      await call("POST", JOBS, job("train"));
      const res = await call("DELETE", `${JOBS}/train`);
      expect(res.statusCode).toBe(200);
      expect(res.json().metadata.name).toBe("train");
      const gone = await call("GET", `${JOBS}/train`);
      expect(gone.statusCode).toBe(404);
      expect(gone.json().message).toMatch(/"train" not found/);
    });

    it("refuses to delete the default project with 403", async () => {
      const res = await call("DELETE", `${BASE}/projects/default`);
      expect(res.statusCode).toBe(403);
      expect(res.json()).toMatchObject({ kind: "Status", reason: "Forbidden", code: 403 });
      expect((await call("GET", `${BASE}/projects/default`)).statusCode).toBe(200);
    });

    it.each([
      ["trainingjobs", "TrainingJob", { command: ["python", "train.py"] }],
      [
        "sweeps",
        "Sweep",
        {
          objective: { metric: "val_loss", goal: "minimize" },
          parameters: [{ name: "lr", logUniform: { min: 1e-5, max: 1e-1 } }],
          template: { command: ["python", "train.py"] },
        },
      ],
      ["inferenceservices", "InferenceService", { model: "/models/tiny", runtime: "loom-tinygpt" }],
    ] as const)(
      "refuses to delete a project that still holds only %s, saying what to delete first",
      async (plural, kind, spec) => {
        const project = { apiVersion: "loom.dev/v1alpha1", kind: "Project", metadata: { name: "lab" } };
        expect((await call("POST", `${BASE}/projects`, project)).statusCode).toBe(201);
        const made = await call("POST", `${BASE}/projects/lab/${plural}`, {
          apiVersion: "loom.dev/v1alpha1",
          kind,
          metadata: { name: "only" },
          spec,
        });
        expect(made.statusCode, made.body).toBe(201);

        const refused = await call("DELETE", `${BASE}/projects/lab`);
        expect(refused.statusCode).toBe(409);
        expect(refused.json()).toMatchObject({ kind: "Status", reason: "Conflict", code: 409 });
        expect(refused.json().message).toContain(`project "lab" still has 1 ${plural}`);
        expect(refused.json().message).toContain(`loom delete ${plural} --all -p lab`);
        expect((await call("GET", `${BASE}/projects/lab`)).statusCode).toBe(200);
        expect((await call("GET", `${BASE}/projects/lab/${plural}/only`)).statusCode).toBe(200);

        expect((await call("DELETE", `${BASE}/projects/lab/${plural}/only`)).statusCode).toBe(200);
        expect((await call("DELETE", `${BASE}/projects/lab`)).statusCode).toBe(200);
      },
    );

    it.each([
      ["GET", `${BASE}/projects/default/widgets`],
      ["POST", `${BASE}/projects/default/widgets`],
      ["GET", `${BASE}/projects/default/widgets/x`],
      ["GET", `${BASE}/widgets`],
      ["GET", `${BASE}/projects/default/tj`],
    ] as const)("returns 404 for an unknown resource type: %s %s", async (method, url) => {
      const res = await call(method, url, method === "POST" ? job("a") : undefined);
      expect(res.statusCode).toBe(404);
      expect(res.json()).toMatchObject({ kind: "Status", reason: "NotFound", code: 404 });
      expect(res.json().message).toMatch(/unknown resource type/);
      expect(res.json().message).toContain("trainingjobs");
    });

    it("does not serve the cluster-scoped projects under a project", async () => {
      const res = await call("GET", `${BASE}/projects/default/projects`);
      expect(res.statusCode).toBe(404);
    });

    it("rejects a non-numeric events limit with 400", async () => {
      const res = await call("GET", `${BASE}/projects/default/events?kind=TrainingJob&name=x&limit=abc`);
      expect(res.statusCode).toBe(400);
    });

    it("lists events for an object", async () => {
      const ref = { kind: "TrainingJob", project: "default", name: "x", uid: "u1" };
      await events.record(ref, "Warning", "InsufficientCapacity", "waiting");
      await events.record(ref, "Warning", "InsufficientCapacity", "waiting");
      await events.record({ ...ref, name: "y" }, "Normal", "Admitted", "other object");
      const res = await call("GET", `${BASE}/projects/default/events?kind=TrainingJob&name=x`);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({
        kind: "EventList",
        items: [{ type: "Warning", reason: "InsufficientCapacity", message: "waiting", count: 2 }],
      });
      expect(res.json().items).toHaveLength(1);
      expect((await call("GET", `${BASE}/projects/default/events`)).statusCode).toBe(400);
    });

    it("returns a 404 Status for a route that does not exist", async () => {
      const res = await call("GET", "/nothing/here");
      expect(res.statusCode).toBe(404);
      expect(res.json()).toMatchObject({ kind: "Status", reason: "NotFound" });
    });
  });

  describe("discovery and metrics", () => {
    it("describes trainingjobs in /openapi.json", async () => {
      const res = await call("GET", "/openapi.json");
      expect(res.statusCode).toBe(200);
      const doc = res.json();
      expect(doc.openapi).toBe("3.1.0");
      expect(doc.info.version).toBe("0.0.0-test");
      const collection = doc.paths[`${BASE}/projects/{project}/trainingjobs`];
      expect(collection.get).toBeDefined();
      expect(collection.post).toBeDefined();
      const item = doc.paths[`${BASE}/projects/{project}/trainingjobs/{name}`];
      for (const m of ["get", "put", "patch", "delete"]) expect(item[m]).toBeDefined();
      expect(doc.components.schemas.TrainingJob.properties.spec.properties.command).toBeDefined();
    });

    it("counts requests in /metrics", async () => {
      await app.inject({ method: "GET", url: "/healthz" });
      await app.inject({ method: "GET", url: "/healthz" });
      await app.inject({ method: "GET", url: JOBS });
      const res = await call("GET", "/metrics");
      expect(res.statusCode).toBe(200);
      expect(res.headers["content-type"]).toMatch(/text\/plain/);
      expect(res.body).toContain('loom_http_requests_total{method="GET",route="/healthz",code="200"} 2');
      expect(res.body).toContain(
        `loom_http_requests_total{method="GET",route="${BASE}/projects/:project/:plural",code="401"} 1`,
      );
      expect(res.body).toContain("loom_http_request_duration_seconds_bucket");
    });
  });
});

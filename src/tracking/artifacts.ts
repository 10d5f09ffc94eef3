import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, normalize, sep } from "node:path";
import { performance } from "node:perf_hooks";
import { pipeline } from "node:stream/promises";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { authz, rule } from "../server/routetable.js";
import { invalidParameter, MlflowError, notFound } from "./errors.js";
import type { TrackingStore } from "./store.js";
import { authorize } from "./tenancy.js";

export interface ArtifactRoutesDeps {
  store: TrackingStore;
  /** Artifacts live under DIR/PROJECT/<experiment id>/… */
  dir: string;
  projectExists(project: string): Promise<boolean>;
  /** The spans of a trace Loom wrote itself (kept in its record, not as a file), if it is one. */
  traceSpans?: (project: string, traceId: string) => Promise<string | undefined>;
  /** Maps errors of this scope to MLflow's JSON (shared with the tracking routes). */
  errorHandler: Parameters<FastifyInstance["setErrorHandler"]>[0];
}

/** EXP/traces/ID/artifacts/traces.json: where the client reads a trace's spans. */
const TRACE_SPANS = /^\d+\/traces\/([^/]+)\/artifacts\/traces\.json$/;

/** Uploads: a workload's credential writes under its own runs (and the models they logged) only. */
const WRITE = rule.project("mlflow-artifacts", "write", { workload: "own-run-artifact" });
const READ = rule.project("mlflow-artifacts", "read", { workload: "read" });

/**
 * MLflow's artifact proxy (`mlflow-artifacts:/EXP/RUN/artifacts/...`) on a local store under the
 * data dir: upload (PUT, streamed to disk), download (GET) and list (GET ?path=). The first path
 * segment is an experiment id, which must be the project's: another project's files are not there.
 */
export async function artifactRoutes(app: FastifyInstance, deps: ArtifactRoutesDeps): Promise<void> {
  // An upload cut off by a crash (not by its client, whose abort removes the file) left its temp
  // file: nothing else would ever remove it, and a large model upload can leave gigabytes.
  const swept = await sweepInterruptedUploads(deps.dir);
  if (swept.removed > 0 || swept.failed > 0)
    app.log.info(
      { dir: deps.dir, removed: swept.removed, failed: swept.failed },
      `removed ${swept.removed} temp file(s) of artifact uploads interrupted before this start`,
    );
  async function resolve(req: FastifyRequest, project: string, rel: string): Promise<string> {
    authorize(
      req.principal,
      project,
      req.method === "PUT" || req.method === "POST" || req.method === "DELETE",
    );
    if (!(await deps.projectExists(project))) throw notFound(`project ${project} does not exist`);
    // A NUL ends a name on the file system: refused, as Node would throw on it.
    if (rel.includes("\u0000")) throw invalidParameter("Invalid path: it contains a NUL byte");
    const clean = normalize(rel.replace(/^\/+/, ""));
    if (clean === "." || clean === "") return "";
    if (clean.startsWith("..") || clean.split(sep).includes(".."))
      throw invalidParameter(`Invalid path '${rel}': '..' is not allowed`);
    const experiment = clean.split(sep)[0]!;
    await deps.store.getExperiment(project, experiment); // 404 when not the project's
    return clean;
  }
  const root = (project: string) => join(deps.dir, project);
  const projectOf = (req: FastifyRequest) => (req.params as { project?: string }).project ?? "default";

  for (const prefix of ["/api/2.0/mlflow-artifacts", "/mlflow/projects/:project/api/2.0/mlflow-artifacts"]) {
    await app.register(
      async (scope) => {
        scope.setErrorHandler(deps.errorHandler);
        // Uploads are streamed to disk as they come, whatever their type (models are large).
        scope.removeAllContentTypeParsers();
        scope.addContentTypeParser("*", (_req, _payload, done) => done(null));
        scope.put("/artifacts/*", authz(WRITE), async (req, reply) => {
          const rel = await resolve(req, projectOf(req), (req.params as { "*": string })["*"]);
          if (!rel) throw invalidParameter("an artifact upload needs a path");
          // The temp files' names: reserved, or a start-up sweep could take a real artifact for one.
          if (UPLOAD_TEMP.test(basename(rel)))
            throw invalidParameter(
              `Invalid path '${rel}': names ending in .upload-N-N are reserved for uploads in flight`,
            );
          const file = join(root(projectOf(req)), rel);
          const tmp = uploadTempName(file);
          try {
            await mkdir(dirname(file), { recursive: true });
            await pipeline(req.raw, createWriteStream(tmp));
            await rename(tmp, file);
          } catch (err) {
            // A cut-off upload (or one that cannot land) leaves no temp file behind.
            await rm(tmp, { force: true }).catch(() => {});
            throw fsError(err, rel);
          }
          return reply.code(200).send();
        });
        scope.get("/artifacts", authz(READ), async (req, reply) =>
          list(req, reply, (req.query as { path?: string }).path ?? ""),
        );
        scope.get("/artifacts/*", authz(READ), async (req, reply) => {
          const rel = await resolve(req, projectOf(req), (req.params as { "*": string })["*"]);
          const file = join(root(projectOf(req)), rel);
          const info = await stat(file).catch(() => undefined);
          if (!info?.isFile()) {
            // A gateway-recorded trace's spans: served from its record, as the file would be.
            const traceId = TRACE_SPANS.exec(rel)?.[1];
            const spans = traceId && (await deps.traceSpans?.(projectOf(req), traceId));
            if (spans) return reply.type("text/plain").send(spans);
            throw notFound(`No such artifact: '${rel}'`);
          }
          const type = /\.(txt|json|ya?ml|md|csv)$|MLmodel$/.test(rel)
            ? "text/plain"
            : "application/octet-stream";
          return reply.type(type).header("content-length", info.size).send(createReadStream(file));
        });
        scope.post("/mpu/*", authz(rule.project("mlflow-artifacts", "write")), async (req) => {
          authorize(req.principal, projectOf(req), true);
          throw new MlflowError(
            "NOT_IMPLEMENTED",
            "Multipart upload is not supported for the current artifact repository",
          );
        });
      },
      { prefix },
    );
  }

  async function list(req: FastifyRequest, reply: FastifyReply, path: string) {
    const rel = await resolve(req, projectOf(req), path);
    if (!rel) return reply.send({}); // experiments are listed through the tracking API
    const dir = join(root(projectOf(req)), rel);
    const info = await stat(dir).catch(() => undefined);
    // A file or nothing lists as {}, as MLflow's server answers.
    if (!info?.isDirectory()) return reply.send({});
    const entries = await readdir(dir, { withFileTypes: true });
    const files = await Promise.all(
      entries
        .filter((e) => !e.name.includes(".upload-"))
        .sort((a, b) => a.name.localeCompare(b.name))
        .map(async (e) =>
          e.isDirectory()
            ? { path: e.name, is_dir: true }
            : { path: e.name, is_dir: false, file_size: (await stat(join(dir, e.name))).size },
        ),
    );
    return reply.send(files.length ? { files } : {});
  }
}

/** The temp file an upload streams into before it is renamed into place (listings hide these). */
function uploadTempName(file: string): string {
  return `${file}.upload-${process.pid}-${Date.now()}`;
}

const UPLOAD_TEMP = /\.upload-\d+-\d+$/;

/**
 * Removes the temp files (uploadTempName) that uploads interrupted by a crash left under `dir`:
 * those last written before this process started (`startedAt`, ms since the epoch). This
 * process's own uploads are all newer, and one in flight elsewhere (a server sharing the
 * directory) is written to as it streams, so neither is touched. Not by pid: a restarted
 * container's server is often pid 1 again. Counts what it removed and what it could not.
 */
export async function sweepInterruptedUploads(
  dir: string,
  startedAt: number = performance.timeOrigin,
): Promise<{ removed: number; failed: number }> {
  let names: string[];
  try {
    names = await readdir(dir, { recursive: true });
  } catch {
    return { removed: 0, failed: 0 }; // no artifacts yet
  }
  let removed = 0;
  let failed = 0;
  for (const name of names) {
    if (!UPLOAD_TEMP.test(basename(name))) continue;
    const path = join(dir, name);
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile() || info.mtimeMs >= startedAt) continue;
    try {
      await rm(path);
      removed++;
    } catch {
      failed++;
    }
  }
  return { removed, failed };
}

/** A file-system refusal the path caused (a file where a directory is, a name too long) as a 400. */
function fsError(err: unknown, rel: string): unknown {
  const code = (err as { code?: string }).code;
  if (code === "ENOTDIR" || code === "EISDIR" || code === "EEXIST" || code === "ENAMETOOLONG")
    return invalidParameter(
      `Cannot write artifact '${rel}': ${code} (a file and a directory share a name, or the name is too long)`,
    );
  return err;
}

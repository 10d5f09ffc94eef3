import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import { availableParallelism, homedir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Command, Option } from "commander";
import { findKind, type KindDef, knownKindsText } from "../api/kinds.js";
import { API_VERSION, type Resource } from "../api/meta.js";
import { DEFAULT_PROJECT } from "../api/project.js";
import { createLogger } from "../lib/log.js";
import { VERSION } from "../lib/version.js";
import type { ObjectEvent } from "../ports/store.js";
import { ApiClient, ApiError } from "./client.js";
import { configPath, resolveContext, saveContext } from "./config.js";
import { CliError } from "./errors.js";
import { type ManifestDoc, readManifests } from "./manifests.js";
import {
  describe,
  type NodeUsageView,
  nodeTable,
  type ProjectUsageView,
  resourceTable,
  topText,
  toYaml,
  trialTable,
} from "./print.js";

const BASE = `/apis/${API_VERSION}`;

interface GlobalOpts {
  context?: string;
  kubeconfig?: string;
  kubeContext?: string;
}

/** Set when the CLI targets a cluster: Loom's API served in this process for its lifetime. */
let clusterContext: { url: string; token: string } | undefined;
const closers: (() => Promise<void>)[] = [];

function client(program: Command): { api: ApiClient; defaultProject: string } {
  if (clusterContext)
    return { api: new ApiClient({ name: "kubernetes", ...clusterContext }), defaultProject: DEFAULT_PROJECT };
  const ctx = resolveContext((program.opts() as GlobalOpts).context);
  return { api: new ApiClient(ctx), defaultProject: ctx.project ?? DEFAULT_PROJECT };
}

/** Commands that talk to a platform; with --kubeconfig they talk to the cluster. */
const CLUSTER_COMMANDS = new Set(["apply", "get", "describe", "logs", "delete", "top"]);

async function targetCluster(program: Command, command: string, args: string[] = []): Promise<void> {
  const opts = program.opts() as GlobalOpts;
  const kubeconfig = opts.kubeconfig ?? process.env.LOOM_KUBECONFIG;
  if (!kubeconfig || !CLUSTER_COMMANDS.has(command)) return;
  const { startKubeApi } = await import("../main/kubeapi.js");
  const api = await startKubeApi({
    kubeconfig,
    context: opts.kubeContext,
    // Capacity views count every pod on the nodes, not only Loom's: list them once.
    watchPods: command === "top" || (command === "get" && ["nodes", "node", "no"].includes(args[0] ?? "")),
    // Only warnings: the in-process API must not mix its logs into command output.
    log: createLogger("warn"),
  });
  clusterContext = api;
  closers.push(() => api.close());
}

function kindOf(name: string): KindDef {
  const def = findKind(name);
  if (!def) throw new CliError(`unknown kind "${name}"; known kinds: ${knownKindsText()}`);
  return def;
}

/** URL of a collection (project undefined + namespaced = across all projects). */
function collectionPath(def: KindDef, project: string | undefined): string {
  if (!def.namespaced || project === undefined) return `${BASE}/${def.plural}`;
  return `${BASE}/projects/${encodeURIComponent(project)}/${def.plural}`;
}

function itemPath(def: KindDef, project: string, name: string): string {
  return def.namespaced
    ? `${BASE}/projects/${encodeURIComponent(project)}/${def.plural}/${encodeURIComponent(name)}`
    : `${BASE}/${def.plural}/${encodeURIComponent(name)}`;
}

function ref(def: KindDef, name: string): string {
  return `${def.singular}.loom.dev/${name}`;
}

/** Resolves "tj/hello" or ("tj", "hello") to a kind and name. */
function kindAndName(a: string, b: string | undefined): { def: KindDef; name: string } {
  if (a.includes("/")) {
    const [k, n] = a.split("/", 2) as [string, string];
    if (b) throw new CliError(`give either KIND/NAME or KIND NAME, not both ("${a}" "${b}")`);
    return { def: kindOf(k), name: n };
  }
  if (!b) throw new CliError(`name the ${a}: loom ... ${a} NAME (or ${a}/NAME)`);
  return { def: kindOf(a), name: b };
}

async function apply(
  program: Command,
  files: string[],
  projectOpt: string | undefined,
  dryRunOnly = false,
): Promise<void> {
  const { api, defaultProject } = client(program);
  const docs = readManifests(files);
  const prepared = docs.map((d) => prepare(d, projectOpt ?? defaultProject));
  // Validate everything first (server-side dry run), so a bad document stores nothing.
  const problems: string[] = [];
  const previews = new Map<Prepared, string | undefined>();
  await Promise.all(
    prepared.map(async (p) => {
      try {
        const answer = await api.request<{ status?: { admissionPreview?: { message: string } } }>(
          "POST",
          `${collectionPath(p.def, p.project)}?dryRun=All${dryRunOnly ? "&preview=admission" : ""}`,
          p.body,
        );
        previews.set(p, answer?.status?.admissionPreview?.message);
      } catch (err) {
        if (err instanceof ApiError && err.status !== 401 && err.status < 500) {
          for (const line of err.message.split("\n"))
            problems.push(`${p.source}: ${p.def.kind} "${p.name}": ${line}`);
        } else throw err;
      }
    }),
  );
  if (problems.length > 0) throw new CliError(`nothing was applied:\n${problems.join("\n")}`);
  if (dryRunOnly) {
    for (const p of prepared) {
      const preview = previews.get(p);
      process.stdout.write(`${ref(p.def, p.name)} valid (dry run)${preview ? `: ${preview}` : ""}\n`);
    }
    return;
  }
  for (const p of prepared) {
    const outcome = await createOrUpdate(api, p);
    process.stdout.write(`${ref(p.def, p.name)} ${outcome}\n`);
  }
}

interface Prepared {
  source: string;
  def: KindDef;
  name: string;
  project: string;
  body: Record<string, unknown>;
}

function prepare(doc: ManifestDoc, project: string): Prepared {
  const kind = doc.body.kind;
  if (typeof kind !== "string") throw new CliError(`${doc.source}: kind: required field is missing`);
  const def = findKind(kind);
  if (!def || def.kind !== kind)
    throw new CliError(`${doc.source}: kind: unknown kind "${kind}"; known kinds: ${knownKindsText()}`);
  const meta = (doc.body.metadata ?? {}) as Record<string, unknown>;
  const name = typeof meta.name === "string" ? meta.name : "";
  if (!name) throw new CliError(`${doc.source}: metadata.name: required field is missing`);
  const proj = typeof meta.project === "string" ? meta.project : project;
  const body = structuredClone(doc.body);
  const bodyMeta = (body.metadata ?? {}) as Record<string, unknown>;
  // A manifest from `get -o yaml` carries a resourceVersion; apply means "make it so", not "if unchanged".
  delete bodyMeta.resourceVersion;
  if (def.namespaced) bodyMeta.project = proj;
  body.metadata = bodyMeta;
  return { source: doc.source, def, name, project: proj, body };
}

async function createOrUpdate(api: ApiClient, p: Prepared): Promise<string> {
  for (let i = 0; i < 10; i++) {
    try {
      await api.request("POST", collectionPath(p.def, p.project), p.body);
      return "created";
    } catch (err) {
      if (!(err instanceof ApiError && err.reason === "AlreadyExists")) throw err;
    }
    const current = await api.request<Resource>("GET", itemPath(p.def, p.project, p.name));
    const body = {
      ...p.body,
      metadata: { ...(p.body.metadata as object), resourceVersion: current.metadata.resourceVersion },
    };
    try {
      const updated = await api.request<Resource>("PUT", itemPath(p.def, p.project, p.name), body);
      return updated.metadata.resourceVersion === current.metadata.resourceVersion
        ? "unchanged"
        : "configured";
    } catch (err) {
      if (err instanceof ApiError && (err.reason === "Conflict" || err.reason === "NotFound")) continue;
      throw err;
    }
  }
  throw new CliError(`${ref(p.def, p.name)}: gave up after repeated conflicting writes; try again`);
}

function output(
  items: Resource[],
  def: KindDef,
  format: string | undefined,
  allProjects: boolean,
  single: boolean,
): string {
  switch (format) {
    case "json":
      return `${JSON.stringify(single ? items[0] : { apiVersion: API_VERSION, kind: `${def.kind}List`, items }, null, 2)}\n`;
    case "yaml":
      return toYaml(single ? items[0] : { apiVersion: API_VERSION, kind: `${def.kind}List`, items });
    case "name":
      return items.map((o) => `${ref(def, o.metadata.name)}\n`).join("");
    case undefined:
    case "wide":
      if (items.length === 0) return "";
      return resourceTable(def, items, { wide: format === "wide", allProjects });
    default:
      throw new CliError(`unknown output format "${format}": use wide, json, yaml or name`);
  }
}

export function buildProgram(): Command {
  const program: Command = new Command("loom")
    .description("Loom: the generative-AI lifecycle on Kubernetes, or embedded on this machine.")
    .option("--context <name>", "use this context from the config file")
    .option(
      "--kubeconfig <file>",
      "target a Kubernetes cluster (Loom's CRDs and operator installed) instead of loom up",
    )
    .option("--kube-context <name>", "context in the kubeconfig")
    .hook("preAction", async (_program: Command, action: Command) =>
      targetCluster(program, action.name(), action.args),
    )
    .showHelpAfterError()
    .configureOutput({ outputError: (s, write) => write(s) });

  program
    .command("up")
    .description("run the embedded platform in the foreground (API, controllers, local runtime)")
    .option(
      "--data-dir <dir>",
      "where state, logs and the database live",
      process.env.LOOM_DATA_DIR ?? join(homedir(), ".loom", "data"),
    )
    .option("--port <port>", "port to listen on (0 picks a free one)", "7470")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .addOption(new Option("--gpus <n>", "declare N virtual GPUs instead of detecting them with nvidia-smi"))
    .option(
      "--tracking-db <url>",
      "keep MLflow tracking in PostgreSQL (postgres://user@host:5432/db) instead of the data dir's SQLite",
    )
    .action(
      async (opts: { dataDir: string; port: string; host: string; gpus?: string; trackingDb?: string }) => {
        const port = Number(opts.port);
        if (!Number.isInteger(port) || port < 0 || port > 65535)
          throw new CliError(`--port must be 0-65535, got "${opts.port}"`);
        const gpus = opts.gpus === undefined ? undefined : Number(opts.gpus);
        if (gpus !== undefined && (!Number.isInteger(gpus) || gpus < 0))
          throw new CliError(`--gpus must be a whole number, got "${opts.gpus}"`);
        if (opts.trackingDb !== undefined && !/^postgres(ql)?:\/\//i.test(opts.trackingDb))
          throw new CliError("--tracking-db must be a postgres:// or postgresql:// URL");
        const { startEmbedded } = await import("../main/embedded.js");
        const log = createLogger();
        let server: Awaited<ReturnType<typeof startEmbedded>>;
        try {
          server = await startEmbedded({
            dataDir: resolve(opts.dataDir),
            port,
            host: opts.host,
            gpus,
            log,
            ...(opts.trackingDb ? { trackingDb: opts.trackingDb } : {}),
          });
        } catch (err) {
          const e = err as NodeJS.ErrnoException;
          if (e.code === "EADDRINUSE")
            throw new CliError(`port ${port} is in use: stop what uses it or pass --port`);
          if (e.message?.startsWith("data dir") || e.message?.startsWith("tracking database"))
            throw new CliError(e.message);
          throw err;
        }
        saveContext({ name: "embedded", url: server.url, token: server.adminToken });
        process.stdout.write(
          `Loom ${VERSION} is up at ${server.url}\n` +
            `data dir:    ${resolve(opts.dataDir)}\n` +
            `admin token: ${server.adminToken}\n` +
            `CLI context "embedded" written to ${configPath()}; try: loom apply -f examples/hello/\n`,
        );
        await new Promise<void>((done) => {
          const stop = (signal: string) => {
            log.info(
              { signal },
              "stopping; running workloads keep running and are re-adopted by the next loom up",
            );
            server.close().then(done, (err) => {
              log.error({ err }, "error while stopping");
              done();
            });
          };
          process.once("SIGINT", () => stop("SIGINT"));
          process.once("SIGTERM", () => stop("SIGTERM"));
        });
        process.stdout.write("Loom stopped\n");
      },
    );

  program
    .command("apply")
    .description("create or update the objects in manifests (multi-document YAML or JSON)")
    .requiredOption("-f, --filename <path...>", "file, directory or - for stdin")
    .option("-p, --project <project>", "project for objects that do not name one")
    .option(
      "--dry-run",
      "validate and change nothing; for TrainingJobs, say whether each would start now and what it would preempt",
    )
    .action(async (opts: { filename: string[]; project?: string; dryRun?: boolean }) =>
      apply(program, opts.filename, opts.project, !!opts.dryRun),
    );

  program
    .command("get")
    .description("list objects of a kind, or show one")
    .argument("<kind>", `one of: ${knownKindsText()}, or nodes`)
    .argument("[name]")
    .option("-p, --project <project>", "project to look in")
    .option("-A, --all-projects", "list across every project")
    .option("-l, --selector <selector>", "label selector, e.g. team=nlp,tier!=dev")
    .option("-o, --output <format>", "wide, json, yaml or name")
    .option("-w, --watch", "after listing, print each change as it happens (Ctrl-C to stop)")
    .action(
      async (
        kindArg: string,
        name: string | undefined,
        opts: {
          project?: string;
          allProjects?: boolean;
          selector?: string;
          output?: string;
          watch?: boolean;
        },
      ) => {
        if (["nodes", "node", "no"].includes(kindArg)) {
          const { api } = client(program);
          const nodes = await api.request<{ items: NodeUsageView[] }>("GET", `${BASE}/nodes`);
          const items = name ? nodes.items.filter((x) => x.name === name) : nodes.items;
          if (name && items.length === 0) throw new CliError(`node "${name}" not found`);
          if (opts.output === "json")
            process.stdout.write(`${JSON.stringify(name ? items[0] : nodes, null, 2)}\n`);
          else process.stdout.write(nodeTable(items, opts.output === "wide"));
          return;
        }
        const { def, name: n } = kindArg.includes("/")
          ? kindAndName(kindArg, name)
          : { def: kindOf(kindArg), name };
        const { api, defaultProject } = client(program);
        const project = opts.project ?? defaultProject;
        if (n && !opts.watch) {
          const obj = await api.request<Resource>("GET", itemPath(def, project, n));
          process.stdout.write(output([obj], def, opts.output, false, true));
          // A sweep's trials, as Katib's UI shows them: the question after "how is it going?".
          if (def.kind === "Sweep" && (opts.output === undefined || opts.output === "wide"))
            process.stdout.write(`\n${trialTable(obj)}`);
          return;
        }
        const all = !!opts.allProjects || !def.namespaced;
        const q = opts.selector ? `labelSelector=${encodeURIComponent(opts.selector)}` : "";
        const path = collectionPath(def, all ? undefined : project);
        const list = await api.request<{ items: Resource[]; metadata: { resourceVersion: string } }>(
          "GET",
          `${path}?${q}`,
        );
        if (n) list.items = list.items.filter((o) => o.metadata.name === n);
        if (opts.watch) {
          const wide = all && def.namespaced;
          const line = (o: Resource) =>
            opts.output === "json"
              ? `${JSON.stringify(o)}\n`
              : output([o], def, opts.output, wide, false).split("\n").slice(1).join("\n");
          process.stdout.write(
            output(list.items, def, opts.output === "json" ? "wide" : opts.output, wide, false),
          );
          const stream = await api.stream(
            `${path}?watch=1&resourceVersion=${list.metadata.resourceVersion}&${q}`,
          );
          let buffered = "";
          for await (const chunk of stream) {
            buffered += (chunk as Buffer).toString();
            let i = buffered.indexOf("\n");
            while (i >= 0) {
              const event = JSON.parse(buffered.slice(0, i)) as { type: string; object: Resource };
              buffered = buffered.slice(i + 1);
              i = buffered.indexOf("\n");
              if (event.type === "ERROR")
                throw new CliError(
                  `watch ended: ${(event.object as unknown as { message: string }).message}`,
                );
              if (n && event.object.metadata.name !== n) continue;
              process.stdout.write(line(event.object));
            }
          }
          return;
        }
        const text = output(list.items, def, opts.output, all && def.namespaced, false);
        if (text === "" && (opts.output === undefined || opts.output === "wide")) {
          process.stderr.write(
            def.namespaced && !all
              ? `No ${def.plural} found in project ${project}.\n`
              : `No ${def.plural} found.\n`,
          );
        }
        process.stdout.write(text);
      },
    );

  program
    .command("top")
    .description("GPUs, CPU and memory each project holds against its quota, and the cluster's use")
    .action(async () => {
      const { api } = client(program);
      const [projects, nodes] = await Promise.all([
        api.request<{ items: ProjectUsageView[] }>("GET", `${BASE}/usage/projects`),
        api.request<{ items: NodeUsageView[] }>("GET", `${BASE}/nodes`),
      ]);
      process.stdout.write(topText(projects.items, nodes.items));
    });

  program
    .command("describe")
    .description("show an object in detail: spec, status, conditions and recent events")
    .argument("<kind>")
    .argument("[name]")
    .option("-p, --project <project>", "project to look in")
    .action(async (kindArg: string, nameArg: string | undefined, opts: { project?: string }) => {
      const { def, name } = kindAndName(kindArg, nameArg);
      const { api, defaultProject } = client(program);
      const project = opts.project ?? defaultProject;
      const obj = await api.request<Resource>("GET", itemPath(def, project, name));
      const events = def.namespaced
        ? (
            await api.request<{ items: ObjectEvent[] }>(
              "GET",
              `${BASE}/projects/${encodeURIComponent(project)}/events?kind=${def.kind}&name=${encodeURIComponent(name)}`,
            )
          ).items
        : [];
      process.stdout.write(describe(def, obj, events));
    });

  program
    .command("logs")
    .description("print a worker's output (KIND/NAME, e.g. tj/hello)")
    .argument("<target>", "KIND/NAME")
    .argument("[name]")
    .option("-p, --project <project>", "project to look in")
    .option("--worker <n>", "only this worker (default: every worker, each line prefixed [worker K])")
    .option("--attempt <n>", "attempt number (default: the latest)")
    .option("-f, --follow", "keep printing until the worker exits")
    .action(
      async (
        target: string,
        nameArg: string | undefined,
        opts: { project?: string; worker?: string; attempt?: string; follow?: boolean },
      ) => {
        const { def, name } = kindAndName(target, nameArg);
        const { api, defaultProject } = client(program);
        const q = new URLSearchParams();
        if (opts.worker !== undefined) q.set("worker", opts.worker);
        if (opts.attempt) q.set("attempt", opts.attempt);
        if (opts.follow) q.set("follow", "true");
        const stream = await api.stream(`${itemPath(def, opts.project ?? defaultProject, name)}/log?${q}`);
        for await (const chunk of stream) process.stdout.write(chunk as Buffer);
      },
    );

  program
    .command("delete")
    .description("delete objects by kind and name, or those in manifests; waits until they are gone")
    .argument("[kind]")
    .argument("[names...]")
    .option("-f, --filename <path...>", "delete the objects in these manifests")
    .option("-p, --project <project>", "project to look in")
    .option("--all", "delete every object of the kind in the project")
    .option("--wait <bool>", "wait until the objects are gone (workers stopped)", "true")
    .option("--timeout <seconds>", "how long to wait", "120")
    .action(
      async (
        kindArg: string | undefined,
        names: string[],
        opts: { filename?: string[]; project?: string; all?: boolean; wait: string; timeout: string },
      ) => {
        const { api, defaultProject } = client(program);
        const project = opts.project ?? defaultProject;
        const targets: { def: KindDef; project: string; name: string }[] = [];
        if (opts.filename) {
          for (const p of readManifests(opts.filename).map((d) => prepare(d, project)))
            targets.push({ def: p.def, project: p.project, name: p.name });
        } else {
          if (!kindArg)
            throw new CliError(
              "name what to delete: loom delete KIND NAME, loom delete KIND --all, or loom delete -f FILE",
            );
          if (kindArg.includes("/")) {
            const { def, name } = kindAndName(kindArg, undefined);
            targets.push({ def, project, name });
          } else {
            const def = kindOf(kindArg);
            if (opts.all) {
              const list = await api.request<{ items: Resource[] }>(
                "GET",
                collectionPath(def, def.namespaced ? project : undefined),
              );
              for (const o of list.items) targets.push({ def, project, name: o.metadata.name });
            } else if (names.length === 0)
              throw new CliError(`name the ${def.singular} to delete, or pass --all`);
            for (const n of names) targets.push({ def, project, name: n });
          }
        }
        let failed = false;
        for (const t of targets) {
          try {
            await api.request("DELETE", itemPath(t.def, t.project, t.name));
            process.stdout.write(`${ref(t.def, t.name)} deleted\n`);
          } catch (err) {
            if (!(err instanceof ApiError)) throw err;
            process.stderr.write(`error: ${err.message}\n`);
            failed = true;
          }
        }
        if (opts.wait !== "false") {
          const deadline = Date.now() + Number(opts.timeout) * 1000;
          for (const t of targets) {
            while (true) {
              try {
                await api.request("GET", itemPath(t.def, t.project, t.name));
              } catch (err) {
                if (err instanceof ApiError && err.status === 404) break;
                throw err;
              }
              if (Date.now() > deadline)
                throw new CliError(
                  `timed out waiting for ${ref(t.def, t.name)} to be deleted; its workers may still be stopping`,
                );
              await sleep(200);
            }
          }
        }
        if (failed) throw new CliError("some objects were not deleted", 1);
      },
    );

  program
    .command("operator")
    .description("run Loom's controllers against a Kubernetes cluster (in or out of it)")
    .option("--metrics-port <port>", "serve /metrics and /healthz on 127.0.0.1:PORT", "9470")
    .option("--default-image <image>", "image for workloads that name none", "python:3.11-slim")
    .option(
      "--data-dir <dir>",
      "also serve Loom's API with MLflow tracking and the model registry, stored in this directory",
    )
    .option("--host <host>", "address the API listens on (with --data-dir)", "127.0.0.1")
    .option("--port <port>", "port of the API (with --data-dir; 0 picks one)", "7470")
    .option(
      "--tracking-url <url>",
      "the MLFLOW_TRACKING_URI pods get (in a cluster: the Service in front of the operator); default: where the API listens",
    )
    .option(
      "--tracking-db <url>",
      "with --data-dir: keep MLflow tracking in PostgreSQL (postgres://user@host:5432/db) instead of the data dir's SQLite",
    )
    .action(
      async (opts: {
        metricsPort: string;
        defaultImage: string;
        dataDir?: string;
        host: string;
        port: string;
        trackingUrl?: string;
        trackingDb?: string;
      }) => {
        if (opts.trackingDb !== undefined) {
          if (!opts.dataDir)
            throw new CliError("--tracking-db needs --data-dir (the API that serves tracking)");
          if (!/^postgres(ql)?:\/\//i.test(opts.trackingDb))
            throw new CliError("--tracking-db must be a postgres:// or postgresql:// URL");
        }
        const g = program.opts() as GlobalOpts;
        const { startOperator } = await import("../main/operator.js");
        const log = createLogger();
        const operator = await startOperator({
          kubeconfig: g.kubeconfig ?? process.env.LOOM_KUBECONFIG ?? process.env.KUBECONFIG,
          context: g.kubeContext,
          log,
          metricsPort: Number(opts.metricsPort),
          defaultImage: opts.defaultImage,
          ...(opts.dataDir
            ? {
                dataDir: opts.dataDir,
                host: opts.host,
                port: Number(opts.port),
                trackingUrl: opts.trackingUrl,
                ...(opts.trackingDb ? { trackingDb: opts.trackingDb } : {}),
              }
            : {}),
        });
        const api = operator.url
          ? `; API and MLflow tracking at ${operator.url} (admin token in ${operator.adminTokenFile})`
          : "";
        process.stdout.write(
          `Loom operator running${operator.metricsUrl ? `; metrics at ${operator.metricsUrl}/metrics` : ""}${api}\n`,
        );
        await new Promise<void>((done) => {
          const stop = () => operator.close().then(done, done);
          process.once("SIGINT", stop);
          process.once("SIGTERM", stop);
        });
        process.stdout.write("Loom operator stopped\n");
      },
    );

  program
    .command("gateway")
    .description(
      "run one more inference gateway replica against Loom's API (on Kubernetes: the loom-gateway Deployment)",
    )
    .requiredOption("--api <url>", "Loom's API: `loom up`'s URL, or the operator's Service")
    .option("--token-file <file>", "a file holding an admin token (default: LOOM_TOKEN)")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on (0 picks one)", "7480")
    .option(
      "--workers <n>",
      "processes sharing the port (node:cluster), each a gateway replica of its own; 0: one per CPU",
      "1",
    )
    .action(
      async (opts: { api: string; tokenFile?: string; host: string; port: string; workers: string }) => {
        const token = opts.tokenFile ? readFileSync(opts.tokenFile, "utf8").trim() : process.env.LOOM_TOKEN;
        if (!token)
          throw new CliError(
            "the gateway needs an admin token for Loom's API: --token-file FILE or LOOM_TOKEN (loom token create gateway --role admin)",
          );
        const workers = opts.workers === "0" ? availableParallelism() : Number(opts.workers);
        if (!Number.isInteger(workers) || workers < 1)
          throw new CliError(
            `--workers must be a whole number of processes (0: one per CPU), not "${opts.workers}"`,
          );
        if (workers > 1 && opts.port === "0")
          throw new CliError("--workers needs a fixed --port: the workers share it");
        if (workers > 1 && cluster.isPrimary) {
          // The primary only hands connections out; each worker follows the API and reports its
          // own load, so the API's autoscaler sees all of them.
          for (let i = 0; i < workers; i++) cluster.fork();
          process.stdout.write(
            `Loom gateway serving at http://${opts.host}:${opts.port}, following ${opts.api} with ${workers} workers\n`,
          );
          await new Promise<void>((done) => {
            let left = workers;
            cluster.on("exit", (w, code) => {
              if (code !== 0) process.stderr.write(`gateway worker ${w.process.pid} exited with ${code}\n`);
              if (--left === 0) done();
            });
            const stop = () => {
              for (const w of Object.values(cluster.workers ?? {})) w?.kill("SIGTERM");
              setTimeout(() => {
                for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGKILL");
              }, 15_000).unref();
            };
            process.once("SIGINT", stop);
            process.once("SIGTERM", stop);
          });
          return;
        }
        const { startGatewayNode } = await import("../main/gatewaynode.js");
        const node = await startGatewayNode({
          apiUrl: opts.api,
          token,
          host: opts.host,
          port: Number(opts.port),
          log: createLogger(),
        });
        if (cluster.isPrimary)
          process.stdout.write(`Loom gateway serving at ${node.url}, following ${opts.api}\n`);
        await new Promise<void>((done) => {
          const stop = () => {
            setTimeout(done, 10_000).unref(); // in-flight requests get 10 s, then the process ends
            node.close().then(done, done);
          };
          process.once("SIGINT", stop);
          process.once("SIGTERM", stop);
        });
        // Pooled sockets (and a worker's channel to its primary) would keep the process alive.
        process.exit(0);
      },
    );

  program
    .command("crds")
    .description("print Loom's CustomResourceDefinitions (kubectl apply -f - installs them)")
    .option("-o, --output <format>", "yaml or json", "yaml")
    .action(async (opts: { output: string }) => {
      const { allCrds } = await import("../api/crds.js");
      const crds = allCrds();
      if (opts.output === "json")
        process.stdout.write(`${JSON.stringify({ apiVersion: "v1", kind: "List", items: crds }, null, 2)}\n`);
      else if (opts.output === "yaml") process.stdout.write(crds.map((c) => toYaml(c)).join("---\n"));
      else throw new CliError(`unknown output format "${opts.output}": use yaml or json`);
    });

  program
    .command("token")
    .description("create an API token (admin): loom token create NAME [--role R] [-p PROJECT]")
    .argument("<action>", "create")
    .argument("<name>", "who or what the token is for")
    .option("--role <role>", "admin, editor or viewer", "editor")
    .option("-p, --project <project>", "the one project the token reaches (default: every project)")
    .action(async (action: string, name: string, opts: { role: string; project?: string }) => {
      if (action !== "create") throw new Error(`unknown action "${action}": use loom token create NAME`);
      const { api } = client(program);
      const created = await api.request<{ token: string }>("POST", `${BASE}/tokens`, {
        name,
        role: opts.role,
        ...(opts.project ? { project: opts.project } : {}),
      });
      process.stdout.write(`${created.token}\n`);
    });

  program
    .command("chat")
    .description('ask an InferenceService through the gateway, streaming the answer: loom chat NAME "prompt"')
    .argument("<service>", "the InferenceService (its name is the model name)")
    .argument("<prompt...>", "what to say")
    .option("-p, --project <project>", "project of the service")
    .option("--max-tokens <n>", "most tokens to generate", "64")
    .option("--temperature <t>", "sampling temperature (0: greedy)", "0.8")
    .action(
      async (
        service: string,
        words: string[],
        opts: { project?: string; maxTokens: string; temperature: string },
      ) => {
        const { api, defaultProject } = client(program);
        const project = opts.project ?? defaultProject;
        const stream = await api.stream("/v1/chat/completions", {
          model: `${project}/${service}`,
          messages: [{ role: "user", content: words.join(" ") }],
          max_tokens: Number(opts.maxTokens),
          temperature: Number(opts.temperature),
          stream: true,
        });
        let buffered = "";
        for await (const chunk of stream) {
          buffered += (chunk as Buffer).toString();
          let i = buffered.indexOf("\n\n");
          while (i >= 0) {
            const event = buffered.slice(0, i);
            buffered = buffered.slice(i + 2);
            i = buffered.indexOf("\n\n");
            const data = event.replace(/^data: ?/, "");
            if (data === "[DONE]") continue;
            const parsed = JSON.parse(data) as { choices?: { delta?: { content?: string } }[] };
            process.stdout.write(parsed.choices?.[0]?.delta?.content ?? "");
          }
        }
        process.stdout.write("\n");
      },
    );

  program
    .command("apikey")
    .description("create a project API key for the inference gateway: loom apikey create NAME -p PROJECT")
    .argument("<action>", "create")
    .argument("<name>", "who or what the key is for")
    .option("-p, --project <project>", "the project whose endpoints the key reaches")
    .option("--service <name...>", "only these InferenceServices (default: every one of the project)")
    .action(async (action: string, name: string, opts: { project?: string; service?: string[] }) => {
      if (action !== "create")
        throw new CliError(`unknown action "${action}": use loom apikey create NAME -p PROJECT`);
      const { api, defaultProject } = client(program);
      const project = opts.project ?? defaultProject;
      const created = await api.request<{ key: string }>(
        "POST",
        `${BASE}/projects/${encodeURIComponent(project)}/apikeys`,
        { name, ...(opts.service ? { services: opts.service } : {}) },
      );
      process.stdout.write(`${created.key}\n`);
    });

  program
    .command("version")
    .description("print the CLI's and the server's version")
    .action(async () => {
      process.stdout.write(`Client: ${VERSION}\n`);
      try {
        const { api } = client(program);
        const v = await api.request<{ version: string }>("GET", "/version");
        process.stdout.write(`Server: ${v.version}\n`);
      } catch (err) {
        process.stdout.write(`Server: unavailable (${(err as Error).message})\n`);
      }
    });

  return program;
}

/** Runs the CLI; user errors become one line on stderr and exit code 1. */
export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await run(program, argv);
  } finally {
    for (const close of closers.splice(0)) await close().catch(() => undefined);
  }
}

async function run(program: Command, argv: string[]): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number };
    if (typeof e.code === "string" && e.code.startsWith("commander.")) {
      process.exitCode = e.exitCode ?? 1;
      return;
    }
    if (err instanceof CliError) {
      const lines = err.message.split("\n");
      process.stderr.write(`error: ${lines.join("\n")}\n`);
      process.exitCode = err.exitCode;
      return;
    }
    process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 2;
  }
}

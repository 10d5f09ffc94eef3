import http from "node:http";
import type { Logger } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { validateManifest } from "../api/kinds.js";
import { DEFAULT_PROJECT } from "../api/project.js";
import { ControllerManager } from "../controllers/manager.js";
import { lastEventGauge } from "../controllers/metrics.js";
import { NotFoundError } from "../errors.js";
import { KubeClient } from "../kube/client.js";
import { KubeEventRecorder } from "../kube/events.js";
import { KubernetesRuntime } from "../runtime/kubernetes/runtime.js";
import { coreScheduler } from "../scheduler/port.js";
import { KubeResourceStore } from "../store/kube/resources.js";

export interface OperatorOptions {
  kubeconfig?: string;
  context?: string;
  log: Logger;
  /** Prometheus metrics and /healthz on 127.0.0.1:port (0 picks one, undefined serves none). */
  metricsPort?: number;
  resyncMs?: number;
  defaultImage?: string;
}

export interface Operator {
  metricsUrl?: string;
  close(): Promise<void>;
}

/**
 * The composition root of `loom operator`: the same controllers and scheduler as embedded, over
 * the Kubernetes store and runtime. Runs in or out of the cluster; state lives in the API server,
 * so stopping and starting it loses nothing.
 */
export async function startOperator(opts: OperatorOptions): Promise<Operator> {
  const log = opts.log;
  const client = KubeClient.fromKubeconfig(opts.kubeconfig, opts.context);
  const store = new KubeResourceStore(client, log.child({ component: "store/kube" }));
  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics, prefix: "loom_process_" });
  const runtime = new KubernetesRuntime({
    client,
    log: log.child({ component: "runtime/kubernetes" }),
    defaultImage: opts.defaultImage,
    metrics: { lastEventTimestamp: lastEventGauge(metrics) },
  });
  const events = new KubeEventRecorder(client);
  await ensureDefaultProject(store);
  await runtime.watchPods();
  const manager = new ControllerManager({
    store,
    runtime,
    scheduler: coreScheduler,
    events,
    log,
    metrics,
    now: () => new Date(),
    resyncMs: opts.resyncMs,
  });
  await manager.start();
  let server: http.Server | undefined;
  let metricsUrl: string | undefined;
  if (opts.metricsPort !== undefined) {
    server = http.createServer(async (req, res) => {
      if (req.url === "/healthz") return res.end("ok");
      if (req.url === "/metrics") {
        res.setHeader("content-type", metrics.contentType);
        return res.end(await metrics.metrics());
      }
      res.statusCode = 404;
      res.end();
    });
    const s = server;
    await new Promise<void>((ok) => s.listen(opts.metricsPort, "127.0.0.1", ok));
    const addr = s.address();
    metricsUrl = typeof addr === "object" && addr ? `http://127.0.0.1:${addr.port}` : undefined;
  }
  log.info({ metricsUrl }, "operator started");
  return {
    metricsUrl,
    async close() {
      await manager.stop();
      await runtime.close();
      await new Promise<void>((ok) => (server ? server.close(() => ok()) : ok()));
    },
  };
}

async function ensureDefaultProject(store: KubeResourceStore): Promise<void> {
  try {
    await store.get("Project", "", DEFAULT_PROJECT);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
    await store.create(
      validateManifest({
        apiVersion: "loom.dev/v1alpha1",
        kind: "Project",
        metadata: { name: DEFAULT_PROJECT },
        spec: {},
      }).object,
    );
  }
}

import type { TrainingJobSpec } from "../../api/trainingjob.js";
import type { MpiHost, WorkerEndpoint } from "../../ports/runtime.js";

/**
 * How the workers of one attempt find each other, per framework: the environment and command
 * each worker gets. Pure: the platform only supplies the addresses (loopback ports embedded,
 * stable pod names behind a headless Service on Kubernetes) and its way to run an MPI host.
 */

export interface GangContext {
  /** Identifies the attempt's rendezvous: "<uid>-a<attempt>". */
  rendezvousId: string;
  endpoints: WorkerEndpoint[];
  mpiHost: MpiHost;
}

export interface PlannedWorker {
  index: number;
  command: string[];
  env: Record<string, string>;
}

export interface GangPlan {
  workers: PlannedWorker[];
  /**
   * Who decides that the job is over. "all": every worker exits 0 (SPMD: torchrun, TF, none).
   * "leader": worker 0 (the MPI launcher, the Ray head running the entrypoint); the others are
   * hosts that serve it and are stopped when it is done.
   */
  completion: "all" | "leader";
}

/** Ports each worker's endpoint carries, by framework (embedded, every one is distinct). */
export function portsPerWorker(framework: TrainingJobSpec["framework"]): number {
  // Ray node: GCS (head) or node manager, object manager, metrics, dashboard agent (grpc and
  // http), runtime env agent. Its worker processes take free ports from Ray's own range.
  return framework === "ray" ? 6 : 1;
}

type Spec = Pick<TrainingJobSpec, "framework" | "launcher" | "procsPerWorker" | "command">;

/** See GangPlan.completion. */
export function completionOf(framework: TrainingJobSpec["framework"]): GangPlan["completion"] {
  return framework === "mpi" || framework === "ray" ? "leader" : "all";
}

export function planGang(spec: Spec, ctx: GangContext): GangPlan {
  const n = ctx.endpoints.length;
  const peers = ctx.endpoints.map((e) => `${e.host}:${e.ports[0]}`);
  const base = (index: number): Record<string, string> => ({
    LOOM_WORKER_INDEX: String(index),
    LOOM_WORKERS: String(n),
    LOOM_PEERS: peers.join(","),
    LOOM_RENDEZVOUS_ID: ctx.rendezvousId,
  });
  const workers = (f: (index: number) => Omit<PlannedWorker, "index">): PlannedWorker[] =>
    ctx.endpoints.map((_, index) => ({ index, ...f(index) }));
  switch (spec.framework) {
    case "pytorch":
      return { completion: "all", workers: workers((i) => pytorch(spec, ctx, i, base(i))) };
    case "tensorflow":
      return {
        completion: "all",
        workers: workers((i) => ({
          command: spec.command,
          env: {
            ...base(i),
            TF_CONFIG: JSON.stringify({ cluster: { worker: peers }, task: { type: "worker", index: i } }),
          },
        })),
      };
    case "mpi":
      return { completion: "leader", workers: workers((i) => mpi(spec, ctx, i, base(i))) };
    case "ray":
      return { completion: "leader", workers: workers((i) => ray(spec, ctx, i, base(i))) };
    default:
      return { completion: "all", workers: workers((i) => ({ command: spec.command, env: base(i) })) };
  }
}

function pytorch(spec: Spec, ctx: GangContext, i: number, env: Record<string, string>) {
  const n = ctx.endpoints.length;
  const master = ctx.endpoints[0]!;
  const procs = spec.procsPerWorker;
  const common = {
    ...env,
    MASTER_ADDR: master.host,
    MASTER_PORT: String(master.ports[0]),
    NODE_RANK: String(i),
    GROUP_RANK: String(i),
    LOCAL_WORLD_SIZE: String(procs),
    WORLD_SIZE: String(n * procs),
  };
  if (spec.launcher === "torchrun") {
    return {
      // Static rendezvous: Loom has already placed the gang and numbered its nodes, and it
      // restarts the whole gang itself (--max-restarts 0), so torchrun must not re-rendezvous.
      command: [
        "python3",
        "-m",
        "torch.distributed.run",
        `--nnodes=${n}`,
        `--node_rank=${i}`,
        `--nproc_per_node=${procs}`,
        "--rdzv_backend=static",
        `--rdzv_endpoint=${master.host}:${master.ports[0]}`,
        `--rdzv_id=${ctx.rendezvousId}`,
        `--master_addr=${master.host}`,
        `--master_port=${master.ports[0]}`,
        "--max_restarts=0",
        // No redirection, written as a map that names no local rank: a plain "0" (the default)
        // crashes PyTorch 1.13's torchrun on Python 3.11 (Debian bookworm's python3-torch).
        `--redirects=${procs}:0`,
        `--tee=${procs}:0`,
        "--no_python",
        ...spec.command,
      ],
      env: common,
    };
  }
  return { command: spec.command, env: { ...common, RANK: String(i), LOCAL_RANK: "0" } };
}

/**
 * Worker 0 writes the hostfile and runs mpirun over every worker's slots; the other workers
 * are hosts the launcher starts ranks on (the platform's way: local processes embedded, sshd in
 * the image on Kubernetes, as with Kubeflow's MPIJob). A host is listed once per slot, without
 * "slots=": Open MPI counts repeated lines as slots and merges them when several workers share a
 * machine (with "slots=" on each it refuses the duplicate).
 */
function mpi(spec: Spec, ctx: GangContext, i: number, env: Record<string, string>) {
  const procs = spec.procsPerWorker;
  const np = ctx.endpoints.length * procs;
  const hostfile = ctx.endpoints.flatMap((e) => Array.from({ length: procs }, () => e.host)).join("\n");
  const mpiEnv = {
    ...env,
    LOOM_MPI_HOSTFILE_CONTENT: hostfile,
    OMPI_ALLOW_RUN_AS_ROOT: "1",
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1",
    ...ctx.mpiHost.env,
  };
  if (i > 0) return { command: ctx.mpiHost.command, env: mpiEnv };
  const script = [
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
    'hostfile="${TMPDIR:-/tmp}/loom-hostfile-$LOOM_RENDEZVOUS_ID"',
    'printf "%s\\n" "$LOOM_MPI_HOSTFILE_CONTENT" > "$hostfile"',
    'export LOOM_MPI_HOSTFILE="$hostfile"',
    `exec mpirun --hostfile "$hostfile" -np ${np} "$@"`,
  ].join("; ");
  return { command: ["/bin/sh", "-c", script, "loom-mpi-launcher", ...spec.command], env: mpiEnv };
}

/** Waits until host:port accepts connections (Python is there: Ray needs it). */
function waitForPort(host: string, port: number, seconds: number, what: string): string {
  return `python3 -c 'import socket, sys, time
for _ in range(${seconds * 2}):
    try:
        socket.create_connection(("${host}", ${port}), 1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit("ray: ${what} at ${host}:${port} did not answer within ${seconds} s")'`;
}

/**
 * The KubeRay pattern: worker 0 starts the Ray head, waits until every worker's node has
 * joined, runs the entrypoint against it (RAY_ADDRESS) and stops its head; the others join the
 * head and serve it until Loom stops them. Never `ray stop`: it kills every Ray process on the
 * machine, other jobs' too. Each node stops its own `ray start --block` with SIGTERM instead.
 */
function ray(spec: Spec, ctx: GangContext, i: number, env: Record<string, string>) {
  const n = ctx.endpoints.length;
  const head = ctx.endpoints[0]!;
  const me = ctx.endpoints[i]!;
  const [main, objectManager, metrics, agentGrpc, agentHttp, runtimeEnvAgent] = me.ports as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const gcs = `${head.host}:${head.ports[0]}`;
  // Every port explicit: several nodes (and jobs) share one machine embedded.
  const common = [
    `--object-manager-port=${objectManager}`,
    `--metrics-export-port=${metrics}`,
    `--dashboard-agent-grpc-port=${agentGrpc}`,
    `--dashboard-agent-listen-port=${agentHttp}`,
    `--runtime-env-agent-port=${runtimeEnvAgent}`,
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
    '--temp-dir="${LOOM_RAY_TEMP_DIR:-/tmp/ray}"',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
    "${LOOM_RAY_OBJECT_STORE_BYTES:+--object-store-memory=$LOOM_RAY_OBJECT_STORE_BYTES}",
    "--disable-usage-stats",
  ].join(" ");
  const rayEnv = { ...env, RAY_ADDRESS: gcs, LOOM_RAY_HEAD: gcs };
  if (i === 0) {
    const script = [
      "set -u",
      `ray start --head --block --port=${main} --include-dashboard=false ${common} &`,
      "node=$!",
      "trap 'kill -TERM $node 2>/dev/null; wait $node; exit 143' TERM INT",
      `${waitForPort(head.host, head.ports[0]!, 120, "the head")} || { kill -TERM $node; wait $node; exit 1; }`,
      // Every worker's node first: the entrypoint may need all of them.
      `python3 -c 'import ray, sys, time
ray.init(address="${gcs}", logging_level="ERROR")
for _ in range(600):
    if sum(1 for x in ray.nodes() if x["Alive"]) >= ${n}: sys.exit(0)
    time.sleep(0.2)
sys.exit("ray: not every worker joined the head within 120 s")' || { kill -TERM $node; wait $node; exit 1; }`,
      '"$@"',
      "code=$?",
      "kill -TERM $node 2>/dev/null; wait $node",
      "exit $code",
    ].join("\n");
    return { command: ["/bin/sh", "-c", script, "loom-ray-head", ...spec.command], env: rayEnv };
  }
  const script = [
    "set -u",
    `${waitForPort(head.host, head.ports[0]!, 120, "the head")} || exit 1`,
    `ray start --block --address=${gcs} --node-manager-port=${main} ${common} &`,
    "node=$!",
    "trap 'kill -TERM $node 2>/dev/null; wait $node; exit 0' TERM INT",
    "wait $node",
    "code=$?",
    // The head went away (its entrypoint is done): that is how a worker's part ends.
    `${waitForPort(head.host, head.ports[0]!, 1, "the head")} 2>/dev/null || exit 0`,
    "exit $code",
  ].join("\n");
  // A worker whose head is gone gives up after 10 s instead of Ray's 60.
  return {
    command: ["/bin/sh", "-c", script, "loom-ray-worker"],
    env: { ...rayEnv, RAY_gcs_rpc_server_reconnect_timeout_s: "10" },
  };
}

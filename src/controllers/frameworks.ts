import type { TrainingJobSpec } from "../api/trainingjob.js";
import type { MpiHost, WorkerEndpoint } from "../runtime/port.js";

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
  // http), runtime env agent, client server, and a range base for its worker processes.
  return framework === "ray" ? RAY_PORTS : 1;
}

const RAY_PORTS = 8;
/** Worker processes a Ray node may start, each on its own port from its range. */
const RAY_WORKER_PORTS = 50;

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
 * the image on Kubernetes, as with Kubeflow's MPIJob).
 */
function mpi(spec: Spec, ctx: GangContext, i: number, env: Record<string, string>) {
  const procs = spec.procsPerWorker;
  const np = ctx.endpoints.length * procs;
  const hostfile = ctx.endpoints.map((e) => `${e.host} slots=${procs}`).join("\n");
  const mpiEnv = {
    ...env,
    LOOM_MPI_HOSTFILE_CONTENT: hostfile,
    OMPI_ALLOW_RUN_AS_ROOT: "1",
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1",
    OMPI_MCA_rmaps_base_oversubscribe: "1",
    ...ctx.mpiHost.env,
  };
  if (i > 0) return { command: ctx.mpiHost.command, env: mpiEnv };
  const script = [
    'hostfile="${TMPDIR:-/tmp}/loom-hostfile-$LOOM_RENDEZVOUS_ID"',
    'printf "%s\\n" "$LOOM_MPI_HOSTFILE_CONTENT" > "$hostfile"',
    'export LOOM_MPI_HOSTFILE="$hostfile"',
    `exec mpirun --hostfile "$hostfile" -np ${np} "$@"`,
  ].join("; ");
  return { command: ["/bin/sh", "-c", script, "loom-mpi-launcher", ...spec.command], env: mpiEnv };
}

/**
 * The KubeRay pattern: worker 0 starts the Ray head, waits until every worker's node has
 * joined, runs the entrypoint against it (RAY_ADDRESS) and stops Ray; the others join the head
 * and serve it until stopped.
 */
function ray(spec: Spec, ctx: GangContext, i: number, env: Record<string, string>) {
  const n = ctx.endpoints.length;
  const head = ctx.endpoints[0]!;
  const me = ctx.endpoints[i]!;
  const [main, objectManager, metrics, agentGrpc, agentHttp, runtimeEnvAgent, clientServer, workerBase] =
    me.ports as [number, number, number, number, number, number, number, number];
  const gcs = `${head.host}:${head.ports[0]}`;
  const common = [
    `--node-ip-address=${me.host}`,
    `--object-manager-port=${objectManager}`,
    `--metrics-export-port=${metrics}`,
    `--dashboard-agent-grpc-port=${agentGrpc}`,
    `--dashboard-agent-listen-port=${agentHttp}`,
    `--runtime-env-agent-port=${runtimeEnvAgent}`,
    `--min-worker-port=${workerBase}`,
    `--max-worker-port=${workerBase + RAY_WORKER_PORTS - 1}`,
    '--temp-dir="${LOOM_RAY_TEMP_DIR:-/tmp/ray}"',
    "--disable-usage-stats",
  ].join(" ");
  const rayEnv = { ...env, RAY_ADDRESS: gcs, LOOM_RAY_HEAD: gcs };
  if (i === 0) {
    const script = [
      "set -u",
      `ray start --head --port=${main} --ray-client-server-port=${clientServer} --include-dashboard=false ${common} || exit 1`,
      // Wait for every worker's node (the entrypoint may need all of them).
      `python3 -c 'import ray, time, sys\nray.init(address="${gcs}", logging_level="ERROR")\nfor _ in range(600):\n    if sum(1 for x in ray.nodes() if x["Alive"]) >= ${n}: sys.exit(0)\n    time.sleep(0.2)\nsys.exit("ray: not every worker joined the head within 120 s")' || { ray stop --force; exit 1; }`,
      '"$@"',
      "code=$?",
      "ray stop --force >/dev/null 2>&1",
      "exit $code",
    ].join("\n");
    return { command: ["/bin/sh", "-c", script, "loom-ray-head", ...spec.command], env: rayEnv };
  }
  // The head may not be up yet: keep trying to join, then block until the head goes away.
  const script = [
    `for i in $(seq 1 120); do ray start --address=${gcs} --node-manager-port=${main} ${common} && break; sleep 1; done`,
    "trap 'ray stop --force >/dev/null 2>&1; exit 0' TERM INT",
    `while python3 -c 'import socket,sys; s=socket.create_connection(("${head.host}", ${head.ports[0]}), 2)' 2>/dev/null; do sleep 2 & wait $!; done`,
    "ray stop --force >/dev/null 2>&1",
    "exit 0",
  ].join("\n");
  return { command: ["/bin/sh", "-c", script, "loom-ray-worker"], env: rayEnv };
}

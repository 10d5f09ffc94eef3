import { z } from "zod";
import { type Condition, ConditionSchema, type Resource } from "./meta.js";
import { parseCpuMillis, parseMemoryBytes } from "./quantity.js";

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

// Whole numbers or strings, as Kubernetes quantities are (int-or-string): the same manifest then
// validates the same way embedded and against a CRD. Fractions are strings: "0.5" or "500m".
export const CpuQuantity = z
  .union([z.number().int('write fractional CPUs as a string such as "0.5" or "500m"').min(0), z.string()])
  .refine((v) => parseCpuMillis(v) !== undefined, 'must be a CPU quantity such as 2, "0.5" or "500m"')
  .describe('CPU cores: a whole number or a quantity such as "0.5" or "500m".');

export const MemoryQuantity = z
  .union([z.number().int().min(0), z.string()])
  .refine(
    (v) => parseMemoryBytes(v) !== undefined,
    'must be a memory quantity such as "512Mi", "4Gi" or bytes',
  )
  .describe('Memory: bytes or a quantity such as "512Mi" or "4Gi".');

export const Resources = z
  .strictObject({
    cpu: CpuQuantity.optional(),
    memory: MemoryQuantity.optional(),
    gpu: z
      .number()
      .min(0)
      .refine(
        (g) => g < 1 || Number.isInteger(g),
        "must be a whole number of GPUs, or a fraction of one GPU below 1 (such as 0.5)",
      )
      .optional()
      .describe("GPUs per worker: whole devices (1, 2, …) or a share of one device (0.25, 0.5)."),
    gpuMemory: MemoryQuantity.optional().describe(
      'A share of one GPU sized by memory, such as "20Gi": the share is this over the device\'s memory.',
    ),
  })
  .refine((r) => !(r.gpu && r.gpuMemory !== undefined), {
    message: "set either gpu or gpuMemory, not both",
    path: ["gpuMemory"],
  })
  .describe("What each worker requests. Requests are reserved by the scheduler; unset means none.");

const SIGNAL_NAME = /^SIG[A-Z0-9]+$/;

export const FailureRule = z
  .strictObject({
    exitCodes: z
      .array(z.number().int().min(0).max(255))
      .min(1)
      .optional()
      .describe("Worker exit codes this rule matches (e.g. [2] for a usage error)."),
    signals: z
      .array(z.string().regex(SIGNAL_NAME, 'signal names are written like "SIGKILL" or "SIGSEGV"'))
      .min(1)
      .optional()
      .describe('Signals that killed the worker, e.g. ["SIGKILL"] (the out-of-memory killer sends it).'),
    action: z
      .enum(["Restart", "Fail", "RestartWithoutCounting"])
      .describe(
        "Restart: restart the gang, using one of maxRestarts. Fail: fail the job at once. RestartWithoutCounting: restart without using a restart (infrastructure faults).",
      ),
  })
  .refine((r) => r.exitCodes !== undefined || r.signals !== undefined, {
    message: "a rule matches exitCodes, signals or both: set at least one",
  });

export const FailurePolicy = z
  .strictObject({
    maxRestarts: z
      .number()
      .int()
      .min(0)
      .default(0)
      .describe("How many times a failed attempt is restarted before the job is Failed."),
    rules: z
      .array(FailureRule)
      .default([])
      .describe(
        "Checked in order against the first worker that failed; the first match decides. No match: Restart.",
      ),
  })
  .describe(
    "What happens when a worker fails: the whole gang stops, then restarts with backoff or fails. Preemption and node loss never use up restarts.",
  );

/** A duration as seconds, or text such as "90s", "5m", "1h". */
const Duration = z
  .union([z.number().int().min(1), z.string()])
  .refine(
    (v) => parseDurationSeconds(v) !== undefined,
    'must be seconds or a duration such as "90s", "5m" or "1h"',
  );

export function parseDurationSeconds(v: number | string): number | undefined {
  if (typeof v === "number") return Number.isInteger(v) && v > 0 ? v : undefined;
  const m = /^(\d+)(s|m|h)?$/.exec(v.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * ({ s: 1, m: 60, h: 3600 } as const)[(m[2] ?? "s") as "s" | "m" | "h"];
  return n > 0 ? n : undefined;
}

export const WorkerCount = z
  .union(
    [
      z.number().int().min(1, "must be at least 1"),
      z
        .strictObject({
          min: z.number().int().min(1, "must be at least 1"),
          max: z.number().int().min(1, "must be at least 1"),
        })
        .refine((r) => r.min <= r.max, { message: "min must not exceed max", path: ["min"] }),
    ],
    { error: "must be a whole number of workers, or {min, max} for an elastic job" },
  )
  .describe(
    "Workers started together as a gang: a number, or {min, max} for an elastic job that starts with what fits (at least min) and grows toward max.",
  );

export const TOLERATION_KEY_RULE =
  "a toleration with operator Equal needs a key (only Exists may leave it empty, to tolerate every taint)";
const TaintEffect = z.enum(["NoSchedule", "PreferNoSchedule", "NoExecute"]);

/** A toleration of node taints, in Kubernetes' shape. */
export const Toleration = z
  .strictObject({
    key: z.string().min(1).optional(),
    operator: z.enum(["Exists", "Equal"]).default("Equal"),
    value: z.string().optional(),
    effect: TaintEffect.optional().describe("Unset: every effect."),
  })
  .refine((t) => t.operator === "Exists" || t.key !== undefined, { message: TOLERATION_KEY_RULE })
  .describe("Tolerate node taints matching this, as on Kubernetes.");

export const PythonEnvironment = z
  .union(
    [
      z.strictObject({
        venv: z
          .string()
          .min(1)
          .describe("An existing virtual environment (its directory) to run the workers in."),
      }),
      z.strictObject({
        interpreter: z
          .string()
          .min(1)
          .default("python3")
          .describe(
            'The Python the environment is made from, e.g. "/usr/bin/python3" for Debian\'s packages.',
          ),
        requirements: z
          .array(z.string().min(1))
          .default([])
          .describe('pip requirements, e.g. ["numpy==2.1.3"]: installed once, cached by content.'),
        systemSitePackages: z
          .boolean()
          .default(false)
          .describe("Let the environment see the interpreter's own packages (e.g. Debian's python3-torch)."),
      }),
    ],
    {
      error:
        "either venv (an existing virtual environment) or interpreter/requirements/systemSitePackages (one Loom builds), not both",
    },
  )
  .describe(
    "Embedded: the Python environment workers run in, built once into a cache keyed by its content. Ignored on Kubernetes (the image is the environment).",
  );

export const TrainingJobSpec = z
  .strictObject({
    command: z
      .array(z.string())
      .min(1, "must name the program to run, e.g. [python, train.py]")
      .describe("The program and its arguments, run for every worker (not through a shell)."),
    workers: WorkerCount.default(1),
    procsPerWorker: z
      .number()
      .int()
      .min(1)
      .default(1)
      .describe(
        "Processes per worker (one per GPU, typically); with launcher torchrun, its --nproc_per_node.",
      ),
    framework: z
      .enum(["none", "pytorch", "tensorflow", "mpi", "ray"])
      .default("none")
      .describe(
        "How workers find each other: pytorch (MASTER_ADDR, RANK…), tensorflow (TF_CONFIG), mpi (hostfile, mpirun from worker 0), ray (head and workers), none (LOOM_PEERS).",
      ),
    launcher: z
      .enum(["torchrun"])
      .optional()
      .describe("pytorch only: run the command under torchrun with the gang's rendezvous settings."),
    env: z
      .record(
        z.string().regex(ENV_NAME, "environment variable names are letters, digits and '_'"),
        z.string(),
      )
      .default({})
      .describe("Extra environment variables for every worker."),
    image: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Container image of every worker on Kubernetes. Embedded, the command runs on this machine and image is ignored.",
      ),
    workingDir: z
      .string()
      .optional()
      .describe(
        "Working directory of every worker. Embedded default: the job's own directory under the data dir.",
      ),
    fromWorkspace: z
      .string()
      .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, "must name a Workspace of the job's project")
      .optional()
      .describe(
        "Run from a Workspace of the same project: its python/image and env (the job's own come first), and a read-only snapshot of its home taken when the job is created, as the working directory (`loom run --from ws/NAME`).",
      ),
    resources: Resources.default({}),
    priority: z
      .number()
      .int()
      .min(-1000)
      .max(1000)
      .default(0)
      .describe(
        "Higher runs first within the project and may preempt the project's lower-priority preemptible work.",
      ),
    preemptible: z
      .boolean()
      .default(true)
      .describe(
        "May be stopped (SIGTERM, then the grace period) to give capacity back; non-preemptible work must fit within the project's deserved quota.",
      ),
    nodePool: z
      .string()
      .min(1)
      .optional()
      .describe("Run only on nodes of this pool (label loom.dev/node-pool)."),
    gpuModel: z
      .string()
      .min(1)
      .optional()
      .describe('Run only on nodes with this GPU model (label nvidia.com/gpu.product), e.g. "H100".'),
    tolerations: z
      .array(Toleration)
      .max(32)
      .optional()
      .describe(
        "Node taints the workers tolerate (Kubernetes' shape); NoSchedule/NoExecute-tainted nodes take only work that tolerates them. Naming a node pool tolerates its nodes' loom.dev/ taints.",
      ),
    clusters: z
      .array(z.string().min(1))
      .optional()
      .describe("Run only in these member clusters of the fleet (loom get clusters); unset means any."),
    clusterSelector: z
      .record(z.string(), z.string())
      .optional()
      .describe("Run only in member clusters whose labels match all of these."),
    placement: z
      .enum(["binpack", "spread"])
      .default("binpack")
      .describe(
        "binpack fills partly used nodes first (keeps whole nodes for big gangs); spread does the opposite.",
      ),
    failurePolicy: FailurePolicy.default({ maxRestarts: 0, rules: [] }),
    terminationGracePeriodSeconds: z
      .number()
      .int()
      .min(0)
      .default(30)
      .describe("Seconds between SIGTERM and SIGKILL when Loom stops a worker: time to write a checkpoint."),
    progressTimeout: Duration.optional().describe(
      'Fail the attempt (and restart per failurePolicy) when no worker has written a log line or heartbeat for this long, e.g. "10m".',
    ),
    python: PythonEnvironment.optional(),
    experiment: z
      .string()
      .min(1)
      .optional()
      .describe(
        "The tracking experiment the job's run goes in (MLFLOW_EXPERIMENT_NAME); default: the job's name.",
      ),
    initCheckpointFrom: z
      .string()
      .min(1)
      // A job's name, in this job's project: no project/name, no path.
      .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, {
        message:
          "must name a TrainingJob of this project (a name such as pretrain, not a path or project/name)",
      })
      .optional()
      .describe(
        "Start from another TrainingJob's checkpoints (same project): its LOOM_CHECKPOINT_DIR is given to every worker, read-only in spirit, as LOOM_INIT_CHECKPOINT_DIR (fine-tuning a pretrained model). On Kubernetes that job needs spec.checkpoint (a claim).",
      ),
    checkpoint: z
      .strictObject({
        claimName: z
          .string()
          .min(1)
          .optional()
          .describe("Kubernetes: an existing PersistentVolumeClaim to keep checkpoints in."),
        size: MemoryQuantity.default("10Gi").describe(
          "Kubernetes: size of the claim Loom creates when claimName is unset.",
        ),
        storageClassName: z.string().min(1).optional(),
      })
      .optional()
      .describe(
        "Where LOOM_CHECKPOINT_DIR lives on Kubernetes: a PersistentVolumeClaim (ReadWriteMany) mounted in every worker, outliving attempts. Unset there, it is an emptyDir that does not. Embedded it is always under the data dir.",
      ),
  })
  .superRefine((spec, ctx) => {
    if (spec.launcher === "torchrun" && spec.framework !== "pytorch")
      ctx.addIssue({
        code: "custom",
        path: ["launcher"],
        message: "launcher torchrun needs framework: pytorch",
      });
    if (
      spec.procsPerWorker > 1 &&
      !(spec.framework === "pytorch" && spec.launcher === "torchrun") &&
      spec.framework !== "mpi"
    )
      ctx.addIssue({
        code: "custom",
        path: ["procsPerWorker"],
        message:
          "several processes per worker need a launcher that starts them: framework pytorch with launcher torchrun, or framework mpi",
      });
    if (typeof spec.workers === "object" && (spec.framework === "mpi" || spec.framework === "tensorflow"))
      ctx.addIssue({
        code: "custom",
        path: ["workers"],
        message: `elastic workers ({min, max}) need a framework that can change its world size between attempts: pytorch, ray or none (not ${spec.framework})`,
      });
  })
  .describe("A training or fine-tuning run: workers that start together and restart together.");

export const WorkerStatus = z.object({
  index: z.number(),
  state: z.enum(["Pending", "Running", "Succeeded", "Failed", "Unknown"]),
  pid: z.number().optional(),
  exitCode: z.number().optional(),
  signal: z.string().optional(),
  startTime: z.string().optional(),
  finishTime: z.string().optional(),
});

export const DeviceShare = z.object({ device: z.string(), share: z.number() });

export const Admission = z.object({
  node: z.string(),
  /** The fleet member the gang was placed in (unset: the control plane's own platform). */
  cluster: z.string().optional(),
  workers: z.number().optional(),
  cpuMillis: z.number(),
  memoryBytes: z.number(),
  gpus: z.array(z.string()),
  /** Below 1 when the worker has a fraction of its device. */
  gpuShare: z.number().optional(),
  placements: z.array(z.object({ pod: z.number(), node: z.string(), gpus: z.array(DeviceShare) })).optional(),
  admittedAt: z.string(),
});

export const Preemption = z.object({
  requestedAt: z.string(),
  /** The workload ("project/name") it makes room for. */
  for: z.string(),
  forUid: z.string().optional(),
  reason: z.enum(["Reclaim", "FairShare", "Priority"]),
  message: z.string(),
});

export const TrainingJobStatus = z.object({
  phase: z.enum(["Pending", "Running", "Succeeded", "Failed"]).optional(),
  conditions: z.array(ConditionSchema).optional(),
  attempts: z.number().optional(),
  startTime: z.string().optional(),
  completionTime: z.string().optional(),
  nextAttemptTime: z.string().optional(),
  admission: Admission.optional(),
  /** Set while a preemption stops the workers; cleared when the job is back in the queue. */
  preemption: Preemption.optional(),
  /** Attempts ended by preemption: they do not count against failurePolicy.maxRestarts. */
  preemptions: z.number().optional(),
  /** The attempt a preemption stopped: the next admission starts a new attempt after it. */
  preemptedAttempt: z.number().optional(),
  /** Position among pending workloads when the scheduler last wrote this status. */
  queuePosition: z.number().optional(),
  workers: z.array(WorkerStatus).optional(),
  /** Running workers over the attempt's gang size, as kubectl prints pods' READY ("2/2"). */
  ready: z.string().optional(),
  /** Workers in the current attempt: between min and max for an elastic job. */
  activeWorkers: z.number().optional(),
  /** Restarts used of failurePolicy.maxRestarts (preemptions and node loss not counted). */
  restarts: z.number().optional(),
  /** The latest checkpoint the job reported (embedded: $LOOM_CHECKPOINT_DIR/loom.json). */
  checkpoint: z.object({ time: z.string(), step: z.number().optional() }).optional(),
  /** The job's tracking run: every attempt logs to it (MLFLOW_RUN_ID for worker 0). */
  tracking: z.object({ experimentId: z.string(), runId: z.string() }).optional(),
  /**
   * Nodes asked of a node autoscaler while the job waits for capacity (Kubernetes with the
   * cluster-autoscaler): since when, how many of which pool once it answered, or why it will not.
   */
  capacityRequest: z
    .object({
      requestedAt: z.string(),
      nodes: z.number().optional(),
      pool: z.string().optional(),
      refused: z.string().optional(),
    })
    .optional(),
  /** An elastic job asked to change size: its workers stop (checkpointing) and it is admitted again. */
  resize: z.object({ workers: z.number(), reason: z.string(), requestedAt: z.string() }).optional(),
  observedGeneration: z.number().optional(),
});

export type TrainingJobSpec = z.output<typeof TrainingJobSpec>;
export type WorkerStatus = z.output<typeof WorkerStatus>;
export type Admission = z.output<typeof Admission>;
export type TrainingJobPhase = NonNullable<z.output<typeof TrainingJobStatus>["phase"]>;
export interface TrainingJobStatus extends Omit<z.output<typeof TrainingJobStatus>, "conditions"> {
  conditions?: Condition[];
}
export type TrainingJob = Resource<TrainingJobSpec, TrainingJobStatus>;

/** The gang's size range: {n, n} for a fixed number of workers. */
export function workerRange(spec: Pick<TrainingJobSpec, "workers">): { min: number; max: number } {
  return typeof spec.workers === "number" ? { min: spec.workers, max: spec.workers } : spec.workers;
}

export function isFinished(job: TrainingJob): boolean {
  return job.status?.phase === "Succeeded" || job.status?.phase === "Failed";
}

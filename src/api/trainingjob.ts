import { z } from "zod";
import { type Condition, ConditionSchema, type Resource } from "./meta.js";
import { parseCpuMillis, parseMemoryBytes } from "./quantity.js";

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

// Whole numbers or strings, as Kubernetes quantities are (int-or-string): the same manifest then
// validates the same way embedded and against a CRD. Fractions are strings: "0.5" or "500m".
const CpuQuantity = z
  .union([z.number().int('write fractional CPUs as a string such as "0.5" or "500m"').min(0), z.string()])
  .refine((v) => parseCpuMillis(v) !== undefined, 'must be a CPU quantity such as 2, "0.5" or "500m"')
  .describe('CPU cores: a whole number or a quantity such as "0.5" or "500m".');

const MemoryQuantity = z
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

export const FailurePolicy = z
  .strictObject({
    maxRestarts: z
      .number()
      .int()
      .min(0)
      .default(0)
      .describe("How many times a failed attempt is restarted before the job is Failed."),
  })
  .describe("What happens when a worker fails.");

export const TrainingJobSpec = z
  .strictObject({
    command: z
      .array(z.string())
      .min(1, "must name the program to run, e.g. [python, train.py]")
      .describe("The program and its arguments, run for every worker (not through a shell)."),
    workers: z
      .number()
      .int()
      .min(1, "must be at least 1")
      .max(1, "multi-worker jobs are not supported yet: set workers: 1 (or omit it)")
      .default(1)
      .describe("Number of workers started together as a gang."),
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
    placement: z
      .enum(["binpack", "spread"])
      .default("binpack")
      .describe(
        "binpack fills partly used nodes first (keeps whole nodes for big gangs); spread does the opposite.",
      ),
    failurePolicy: FailurePolicy.default({ maxRestarts: 0 }),
    terminationGracePeriodSeconds: z
      .number()
      .int()
      .min(0)
      .default(30)
      .describe("Seconds between SIGTERM and SIGKILL when Loom stops a worker."),
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

export function isFinished(job: TrainingJob): boolean {
  return job.status?.phase === "Succeeded" || job.status?.phase === "Failed";
}

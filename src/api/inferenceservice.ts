import { z } from "zod";
import { type Condition, ConditionSchema, type Resource } from "./meta.js";
import { PythonEnvironment, parseDurationSeconds, Resources, Toleration } from "./trainingjob.js";

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const Duration = z
  .union([z.number().int().min(1), z.string()])
  .refine(
    (v) => parseDurationSeconds(v) !== undefined,
    'must be seconds or a duration such as "90s", "5m" or "1h"',
  );

/** How the gateway's autoscaler sizes a service (or an App) between its replicas' min and max. */
export const Autoscaling = z
  .strictObject({
    targetConcurrency: z
      .number()
      .min(0.1)
      .default(4)
      .describe("In-flight requests per replica the autoscaler aims for."),
    scaleDownDelay: Duration.default("30s").describe("How long demand must stay low before replicas go."),
    scaleToZeroAfter: Duration.default("60s").describe("With min 0: idle this long, no replica runs."),
  })
  .default({ targetConcurrency: 4, scaleDownDelay: "30s", scaleToZeroAfter: "60s" });

/** What serves the model: Loom's built-in runtime, or any program/image that serves HTTP on $PORT. */
export const ServingRuntime = z.union(
  [
    z.literal("loom-tinygpt").describe("Loom's built-in runtime for the examples' tiny GPT (OpenAI API)."),
    z.strictObject({
      command: z
        .array(z.string())
        .min(1)
        .describe("Serves HTTP on $PORT (the model's location is in $LOOM_MODEL_DIR)."),
      image: z.string().min(1).optional().describe("Kubernetes: the image (vLLM, TGI, …)."),
      env: z.record(z.string().regex(ENV_NAME), z.string()).default({}),
      workingDir: z.string().optional(),
      openai: z
        .boolean()
        .default(true)
        .describe("Serves the OpenAI API (/v1/…): the gateway routes by the request's model."),
    }),
  ],
  { error: 'runtime is "loom-tinygpt" or {command, image?, env?}' },
);

export const InferenceServiceSpec = z
  .strictObject({
    model: z
      .string()
      .min(1)
      // A reference resolves inside the service's own project: no way out of it by `..` (or NUL).
      .refine((m) => !m.includes("\u0000") && !m.split(/[/\\]/).includes(".."), {
        message: "must not contain '..' segments or NUL: a model resolves inside its own project",
      })
      .describe(
        'The model: a registry reference such as "models:/tinygpt@champion" or "models:/tinygpt/3", or a path.',
      ),
    runtime: ServingRuntime.default("loom-tinygpt"),
    resources: Resources.default({}),
    replicas: z
      .strictObject({
        min: z.number().int().min(0).default(1),
        max: z.number().int().min(1).default(1),
      })
      .refine((r) => r.min <= r.max, { message: "min must not exceed max", path: ["min"] })
      .default({ min: 1, max: 1 })
      .describe("Replicas between min and max; min 0 scales to zero when idle."),
    tolerations: z
      .array(Toleration)
      .max(32)
      .optional()
      .describe(
        "Node taints the replicas tolerate (Kubernetes' shape, as a TrainingJob's); NoSchedule/NoExecute-tainted nodes take only replicas that tolerate them. Embedded, the machine has no taints.",
      ),
    autoscaling: Autoscaling,
    readiness: z
      .strictObject({
        path: z.string().startsWith("/").default("/health"),
        timeoutSeconds: z
          .number()
          .int()
          .min(1)
          .default(300)
          .describe("A replica not ready by then is restarted."),
      })
      .default({ path: "/health", timeoutSeconds: 300 }),
    traffic: z
      .array(
        z.strictObject({
          revision: z
            .string()
            .min(1)
            .describe('A revision name (NAME-N), or "latest" for the newest ready revision.'),
          percent: z.number().int().min(0).max(100),
        }),
      )
      .optional()
      .refine((t) => !t || t.reduce((a, x) => a + x.percent, 0) === 100, "percents must add up to 100")
      .describe("Split between revisions (canary, blue/green). Default: 100% to the latest ready revision."),
    routing: z
      .strictObject({
        prefixAffinity: z
          .strictObject({
            chars: z.number().int().min(1).describe("Characters of the prompt that form the key."),
            epsilon: z
              .number()
              .min(0)
              .default(0.25)
              .describe("Bounded load: a replica above (1+ε)× the average in-flight is passed over."),
          })
          .optional()
          .describe(
            "Send prompts that share a prefix (a system prompt) to the same replica, to reuse its KV cache.",
          ),
      })
      .optional(),
    python: PythonEnvironment.optional(),
    env: z.record(z.string().regex(ENV_NAME), z.string()).default({}),
    clusters: z
      .array(z.string().min(1))
      .min(1)
      .optional()
      .describe(
        "Run replicas in these members of the fleet (loom get clusters; self is the control plane's own platform), spread by free capacity, all behind the control plane's gateway. Unset (and no clusterSelector): only on the control plane's own platform.",
      ),
    clusterSelector: z
      .record(z.string(), z.string())
      .optional()
      .describe("Run replicas in the fleet's members whose labels match all of these."),
    tracing: z
      .boolean()
      .default(false)
      .describe(
        "Record an MLflow trace per request (prompt, completion, tokens, latency, revision, key name) in the project's experiment isvc/NAME.",
      ),
  })
  .describe(
    "A model behind Loom's gateway: OpenAI-compatible, autoscaled (to zero), with revisions and traffic.",
  );

export const RevisionStatus = z.object({
  name: z.string(),
  generation: z.number(),
  /** What the autoscaler asks for. */
  desired: z.number(),
  ready: z.number(),
  /** The replicas that run now, with their address (embedded: loopback ports). */
  replicas: z
    .array(
      z.object({
        id: z.string(),
        uid: z.string(),
        host: z.string().optional(),
        port: z.number().optional(),
        ready: z.boolean(),
        startedAt: z.string(),
        /** Where the scheduler placed it (replicas that ask for resources). */
        node: z.string().optional(),
        gpus: z.array(z.object({ device: z.string(), share: z.number() })).optional(),
        /** The fleet member it runs in (host and port are then that member's gateway). */
        cluster: z.string().optional(),
      }),
    )
    .optional(),
  createdAt: z.string(),
  /** The last replica's exit while none has been ready since (a crash loop: why, and its output's end). */
  lastExit: z.string().optional(),
  /** The replica count last applied to the platform (Kubernetes: the Deployment's). */
  applied: z.number().optional(),
  /** The spec this revision runs (a copy: the service's spec moves on). */
  spec: z.any(),
});

export const InferenceServiceStatus = z.object({
  phase: z.enum(["Pending", "Ready", "ScaledToZero", "Failed"]).optional(),
  url: z.string().optional(),
  revisions: z.array(RevisionStatus).optional(),
  traffic: z.array(z.object({ revision: z.string(), percent: z.number() })).optional(),
  latestReadyRevision: z.string().optional(),
  desired: z.number().optional(),
  ready: z.number().optional(),
  /** The last scale decisions, newest last (loom describe isvc). */
  scaleEvents: z
    .array(
      z.object({
        time: z.string(),
        revision: z.string(),
        from: z.number(),
        to: z.number(),
        reason: z.string(),
      }),
    )
    .optional(),
  conditions: z.array(ConditionSchema).optional(),
  observedGeneration: z.number().optional(),
});

export type InferenceServiceSpec = z.output<typeof InferenceServiceSpec>;
export type RevisionStatus = z.output<typeof RevisionStatus>;
export interface InferenceServiceStatus extends Omit<z.output<typeof InferenceServiceStatus>, "conditions"> {
  conditions?: Condition[];
}
export type InferenceService = Resource<InferenceServiceSpec, InferenceServiceStatus>;

import { z } from "zod";
import { type Condition, ConditionSchema, type Resource } from "./meta.js";
import { TrainingJobSpec } from "./trainingjob.js";

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const Range = z
  .strictObject({ min: z.number(), max: z.number() })
  .refine((r) => r.min < r.max, { message: "min must be below max", path: ["min"] });

/**
 * One searched parameter: its space (exactly one of categorical, uniform, logUniform, int) and
 * where a trial receives it — an environment variable and/or a command-line flag. Values go into
 * those structured fields of the TrainingJob; nothing is substituted into text.
 */
export const SweepParameter = z
  .strictObject({
    name: z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9_.-]*$/, "parameter names are letters, digits, '_', '.', '-'")
      .describe("The parameter's name: a key in each trial's params and in the tracking run's params."),
    categorical: z
      .strictObject({
        values: z.array(z.union([z.string(), z.number(), z.boolean()])).min(1, "list at least one value"),
      })
      .optional()
      .describe("One of a list of values."),
    uniform: Range.optional().describe("A real number, uniform between min and max."),
    logUniform: Range.refine((r) => r.min > 0, { message: "must be above 0", path: ["min"] })
      .optional()
      .describe("A real number whose logarithm is uniform (learning rates): min > 0."),
    int: z
      .strictObject({
        min: z.number().int(),
        max: z.number().int(),
        step: z.number().int().min(1).default(1),
      })
      .refine((r) => r.min <= r.max, { message: "min must not exceed max", path: ["min"] })
      .optional()
      .describe("A whole number from min to max (inclusive), in steps."),
    env: z
      .string()
      .regex(ENV_NAME, "environment variable names are letters, digits and '_'")
      .optional()
      .describe("The environment variable each trial gets the value in. Default: the name upper-cased."),
    flag: z
      .string()
      .regex(/^-{1,2}[A-Za-z0-9][A-Za-z0-9_-]*$/, 'a flag such as "--lr"')
      .optional()
      .describe('Also append this flag and the value to the trial\'s command, e.g. "--lr" → --lr 0.001.'),
  })
  .refine(
    (p) => [p.categorical, p.uniform, p.logUniform, p.int].filter((s) => s !== undefined).length === 1,
    {
      message: "give exactly one search space: categorical, uniform, logUniform or int",
    },
  );

export const EarlyStopping = z
  .discriminatedUnion(
    "rule",
    [
      z.strictObject({
        rule: z.literal("median"),
        minSteps: z
          .number()
          .int()
          .min(0)
          .default(0)
          .describe("No trial is stopped before it reported this step."),
        minTrials: z
          .number()
          .int()
          .min(1)
          .default(2)
          .describe("Trials that must have reported past a step before the rule compares against them."),
      }),
      z.strictObject({
        rule: z.literal("asha"),
        minSteps: z
          .number()
          .int()
          .min(1)
          .describe("The first rung: trials are first compared when they reach this step."),
        reductionFactor: z
          .number()
          .int()
          .min(2)
          .default(3)
          .describe("Only the best 1/reductionFactor of the trials at a rung go on to the next."),
        maxSteps: z.number().int().min(1).optional().describe("No rungs at or past this step."),
      }),
    ],
    { error: 'rule must be "median" or "asha"' },
  )
  .describe(
    "Stop trials that are unlikely to beat the others, from the objective they report along the way. median: a trial whose best value so far is worse than the median of the other trials' running averages at the same step. asha: successive halving at rungs minSteps·reductionFactor^k.",
  );

export const SweepSpec = z
  .strictObject({
    objective: z.strictObject({
      metric: z.string().min(1).describe("The tracking metric trials log (e.g. val_loss)."),
      goal: z.enum(["minimize", "maximize"]),
    }),
    algorithm: z
      .enum(["grid", "random", "tpe"])
      .default("random")
      .describe(
        "grid: every combination in order; random: independent samples; tpe: Tree-structured Parzen Estimator, a model of good and bad trials so far (random for the first startupTrials).",
      ),
    seed: z
      .number()
      .int()
      .min(0)
      .default(1)
      .describe("Seeds random and tpe: the same seed suggests the same trials."),
    startupTrials: z
      .number()
      .int()
      .min(1)
      .default(3)
      .describe("tpe: random trials before the model is used."),
    gridPoints: z
      .number()
      .int()
      .min(2)
      .default(3)
      .describe(
        "grid: points of a uniform or logUniform range (evenly spaced, in log space for logUniform).",
      ),
    parameters: z.array(SweepParameter).min(1, "a sweep searches at least one parameter"),
    parallelism: z
      .number()
      .int()
      .min(1)
      .default(1)
      .describe("Trials running at once (they still queue for the project's quota)."),
    maxTrials: z
      .number()
      .int()
      .min(1)
      .default(10)
      .describe("Trials in all (grid: at most every combination)."),
    maxFailedTrials: z
      .number()
      .int()
      .min(0)
      .default(3)
      .describe("The sweep fails when more trials than this fail."),
    earlyStopping: EarlyStopping.optional(),
    register: z
      .strictObject({
        model: z.string().min(1).describe("The registered model the best trial becomes a version of."),
        alias: z.string().min(1).default("champion"),
        artifactPath: z
          .string()
          .min(1)
          .default("model")
          .describe("Where in its run's artifacts the trial saved the model."),
      })
      .optional()
      .describe("When the sweep succeeds, register the best trial's model as a new version with this alias."),
    template: TrainingJobSpec.describe("Each trial's TrainingJob spec, before its parameters are set."),
  })
  .superRefine((spec, ctx) => {
    const names = new Set<string>();
    const envs = new Set<string>();
    spec.parameters.forEach((p, i) => {
      if (names.has(p.name))
        ctx.addIssue({ code: "custom", path: ["parameters", i, "name"], message: "used twice" });
      names.add(p.name);
      const env = parameterEnv(p);
      if (envs.has(env))
        ctx.addIssue({
          code: "custom",
          path: ["parameters", i, "env"],
          message: `${env} is set by another parameter`,
        });
      envs.add(env);
    });
  })
  .describe(
    "A hyperparameter search: trials are TrainingJobs made from a template, judged by a tracked metric.",
  );

export type SweepParameter = z.output<typeof SweepParameter>;
export type SweepSpec = z.output<typeof SweepSpec>;
export type EarlyStopping = z.output<typeof EarlyStopping>;
export type ParamValue = string | number | boolean;

/** The environment variable a parameter is delivered in. */
export function parameterEnv(p: Pick<SweepParameter, "name" | "env">): string {
  return p.env ?? p.name.toUpperCase().replace(/[^A-Z0-9_]/g, "_");
}

export const TrialPhase = z.enum(["Pending", "Running", "Succeeded", "Failed", "EarlyStopped"]);

export const TrialStatus = z.object({
  number: z.number(),
  /** The trial's TrainingJob (deleted once an early stop has stopped it). */
  name: z.string(),
  params: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  phase: TrialPhase,
  /** The objective's latest value, and the step it was reported at. */
  objective: z.number().optional(),
  step: z.number().optional(),
  runId: z.string().optional(),
  /** ASHA: the highest rung the trial was judged at. */
  rung: z.number().optional(),
  message: z.string().optional(),
});

export const SweepStatus = z.object({
  phase: z.enum(["Running", "Succeeded", "Failed"]).optional(),
  conditions: z.array(ConditionSchema).optional(),
  trials: z.array(TrialStatus).optional(),
  best: z
    .object({
      trial: z.number(),
      name: z.string(),
      objective: z.number(),
      params: z.record(z.string(), z.any()),
    })
    .optional(),
  /** Counts, for `loom get sweep` columns. */
  succeeded: z.number().optional(),
  running: z.number().optional(),
  failed: z.number().optional(),
  earlyStopped: z.number().optional(),
  /** The version the best trial was registered as. */
  model: z.object({ name: z.string(), version: z.string(), alias: z.string() }).optional(),
  startTime: z.string().optional(),
  completionTime: z.string().optional(),
  observedGeneration: z.number().optional(),
});

export type TrialStatus = z.output<typeof TrialStatus>;
export type TrialPhase = z.output<typeof TrialPhase>;
export interface SweepStatus extends Omit<z.output<typeof SweepStatus>, "conditions"> {
  conditions?: Condition[];
}
export type Sweep = Resource<SweepSpec, SweepStatus>;

/** Labels on a sweep's trials: which sweep owns them and which trial each is. */
export const SWEEP_LABEL = "loom.dev/sweep";
export const TRIAL_LABEL = "loom.dev/trial";
/** Annotation carrying a trial's params as JSON (the TrainingJob alone says what it was given). */
export const TRIAL_PARAMS_ANNOTATION = "loom.dev/trial-params";

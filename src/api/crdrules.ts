import type { z } from "zod";
import { APP_COMMAND_RULE } from "./app.js";
import { CLUSTER_SOURCE_RULE } from "./cluster.js";
import { SweepSpec } from "./sweep.js";
import { TOLERATION_KEY_RULE, TrainingJobSpec } from "./trainingjob.js";
import { WORKSPACE_COMMAND_RULE } from "./workspace.js";

/** A CEL rule as a CRD's x-kubernetes-validations holds it. */
export interface CelRule {
  rule: string;
  message: string;
  /** Where kubectl reports the error, relative to the node (".gpuMemory"). */
  fieldPath?: string;
}

/** What the API server checks in place of one zod refinement. */
export interface CrdRule {
  pattern?: string;
  validations?: CelRule[];
  /**
   * Enforced by a ValidatingAdmissionPolicy, not the CRD: the field is a union of a number and an
   * object, which a structural schema cannot type, so CEL in the CRD cannot read it (see policies).
   */
  policy?: true;
  /**
   * Enforced only by the operator's validation step (it marks the object Failed/Invalid), with the
   * reason the API server cannot: written so that a new refinement must decide, not be forgotten.
   */
  operatorOnly?: string;
}

// The same grammar as src/api/quantity.ts's QUANTITY (and its trim): CPU takes only a bare number
// or millicores; memory takes binary or decimal suffixes, never "m".
export const CPU_PATTERN = String.raw`^\s*[0-9]+(\.[0-9]+)?m?\s*$`;
export const MEMORY_PATTERN = String.raw`^\s*[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?\s*$`;
/** parseDurationSeconds: seconds, minutes or hours, above zero. */
export const DURATION_PATTERN = String.raw`^\s*0*[1-9][0-9]*(s|m|h)?\s*$`;

/**
 * Every refinement in the kinds' specs, by the message zod gives (so kubectl says the same thing
 * as `loom apply`). crds.test.ts fails for a refinement missing here.
 */
export const RULES_BY_MESSAGE: Record<string, CrdRule> = {
  [CLUSTER_SOURCE_RULE]: {
    validations: [
      {
        rule: "has(self.platform) != has(self.kubeconfigSecret)",
        message: CLUSTER_SOURCE_RULE,
      },
    ],
  },
  [APP_COMMAND_RULE]: {
    validations: [
      {
        rule: "self.framework == 'custom' ? has(self.command) : (has(self.file) || has(self.command))",
        message: APP_COMMAND_RULE,
        fieldPath: ".command",
      },
    ],
  },
  [WORKSPACE_COMMAND_RULE]: {
    validations: [
      {
        rule: "(has(self.ide) && self.ide == 'none') == has(self.command)",
        message: WORKSPACE_COMMAND_RULE,
        fieldPath: ".command",
      },
    ],
  },
  [TOLERATION_KEY_RULE]: {
    validations: [
      {
        rule: "(has(self.operator) && self.operator == 'Exists') || has(self.key)",
        message: TOLERATION_KEY_RULE,
        fieldPath: ".key",
      },
    ],
  },
  'must be a CPU quantity such as 2, "0.5" or "500m"': { pattern: CPU_PATTERN },
  'must be a memory quantity such as "512Mi", "4Gi" or bytes': { pattern: MEMORY_PATTERN },
  'must be seconds or a duration such as "90s", "5m" or "1h"': { pattern: DURATION_PATTERN },
  "must be a whole number of GPUs, or a fraction of one GPU below 1 (such as 0.5)": {
    validations: [
      {
        rule: "self < 1.0 || double(int(self)) == self",
        message: "must be a whole number of GPUs, or a fraction of one GPU below 1 (such as 0.5)",
      },
    ],
  },
  "set either gpu or gpuMemory, not both": {
    validations: [
      {
        rule: "!(has(self.gpu) && self.gpu != 0.0 && has(self.gpuMemory))",
        message: "set either gpu or gpuMemory, not both",
        fieldPath: ".gpuMemory",
      },
    ],
  },
  "a rule matches exitCodes, signals or both: set at least one": {
    validations: [
      {
        rule: "has(self.exitCodes) || has(self.signals)",
        message: "a rule matches exitCodes, signals or both: set at least one",
      },
    ],
  },
  // workers: {min, max} (inside a number-or-object union) and replicas / int ranges (objects).
  "min must not exceed max": {
    validations: [{ rule: "self.min <= self.max", message: "min must not exceed max", fieldPath: ".min" }],
  },
  "min must be below max": {
    validations: [{ rule: "self.min < self.max", message: "min must be below max", fieldPath: ".min" }],
  },
  "must be above 0": {
    validations: [{ rule: "self.min > 0.0", message: "must be above 0", fieldPath: ".min" }],
  },
  "give exactly one search space: categorical, uniform, logUniform or int": {
    validations: [
      {
        rule: "(has(self.categorical) ? 1 : 0) + (has(self.uniform) ? 1 : 0) + (has(self.logUniform) ? 1 : 0) + (has(self.int) ? 1 : 0) == 1",
        message: "give exactly one search space: categorical, uniform, logUniform or int",
      },
    ],
  },
  "must not contain '..' segments or NUL: a model resolves inside its own project": {
    validations: [
      {
        rule: String.raw`!self.matches(r'(^|[/\x5c])\.\.([/\x5c]|$)') && !self.contains('\u0000')`,
        message: "must not contain '..' segments or NUL: a model resolves inside its own project",
      },
    ],
  },
  "percents must add up to 100": {
    validations: [{ rule: "self.map(t, t.percent).sum() == 100", message: "percents must add up to 100" }],
  },
  "name exactly one of user or group": {
    validations: [
      { rule: "has(self.user) != has(self.group)", message: "name exactly one of user or group" },
    ],
  },
  // Unions: the structural form (crds.ts) checks the shape; these say what the zod error says.
  "must be a whole number of workers, or {min, max} for an elastic job": {},
  'rule must be "median" or "asha"': {},
  'runtime is "loom-tinygpt" or {command, image?, env?}': {},
  "either venv (an existing virtual environment) or interpreter/requirements/systemSitePackages (one Loom builds), not both":
    {
      validations: [
        {
          rule: "!has(self.venv) || !(has(self.interpreter) || has(self.requirements) || has(self.systemSitePackages))",
          message:
            "either venv (an existing virtual environment) or interpreter/requirements/systemSitePackages (one Loom builds), not both",
        },
      ],
    },
};

/** Cross-field rules of whole specs (superRefine: no single message), by schema. */
export const RULES_BY_SCHEMA = new Map<z.ZodType, CrdRule>([
  [
    TrainingJobSpec,
    {
      validations: [
        {
          rule: "!has(self.launcher) || (has(self.framework) && self.framework == 'pytorch')",
          message: "launcher torchrun needs framework: pytorch",
          fieldPath: ".launcher",
        },
        {
          rule: "!has(self.procsPerWorker) || self.procsPerWorker <= 1 || (has(self.framework) && (self.framework == 'mpi' || (self.framework == 'pytorch' && has(self.launcher) && self.launcher == 'torchrun')))",
          message:
            "several processes per worker need a launcher that starts them: framework pytorch with launcher torchrun, or framework mpi",
          fieldPath: ".procsPerWorker",
        },
      ],
      // Elastic workers ({min, max}) with mpi or tensorflow: workers is not readable by CRD CEL.
      policy: true,
    },
  ],
  [
    SweepSpec,
    {
      // Parameter names are unique through x-kubernetes-list-type: map (crds.ts); their
      // environment variables (derived from the names) only by the operator.
      operatorOnly:
        "each parameter's environment variable defaults to its upper-cased name: comparing those across the list costs more CEL than the API server allows",
    },
  ],
]);

/**
 * CEL that a ValidatingAdmissionPolicy evaluates on TrainingJobs (and Sweeps' templates): rules on
 * `workers`, which the CRD keeps as an untyped number-or-object and so CRD CEL cannot read. `w`
 * is the workers value and `s` the spec (a TrainingJob's, or a Sweep's template).
 */
export function workersPolicyRules(s: string): { expression: string; message: string }[] {
  const w = `${s}.workers`;
  const elastic = `has(${s}.workers) && type(${w}) == map`;
  return [
    {
      expression: `!(${elastic}) || !has(${w}.min) || !has(${w}.max) || ${w}.min <= ${w}.max`,
      message: `${s.replace(/^object\./, "")}.workers.min: min must not exceed max`,
    },
    {
      expression: `!(${elastic}) || !has(${s}.framework) || !(${s}.framework in ['mpi', 'tensorflow'])`,
      message: `${s.replace(/^object\./, "")}.workers: elastic workers ({min, max}) need a framework that can change its world size between attempts: pytorch, ray or none`,
    },
  ];
}

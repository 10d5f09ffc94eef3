import { z } from "zod";
import { type Condition, ConditionSchema, type Resource } from "./meta.js";
import { MemoryQuantity, PythonEnvironment, parseDurationSeconds, Resources } from "./trainingjob.js";

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The cross-field rule of a workspace's spec; crdrules.ts holds the same rule for the CRD. */
export const WORKSPACE_COMMAND_RULE =
  "set ide: none with a command (a server that listens on $PORT), or an ide without a command";

/**
 * The annotation the controller sets when it stops an idle workspace (spec.idleTimeout; the spec
 * is the user's and stays as it was); `loom start ws/NAME` removes it. Its value: when.
 */
export const IDLE_STOPPED = "loom.dev/idle-stopped";

export const WorkspaceSpec = z
  .strictObject({
    ide: z
      .enum(["jupyter", "vscode", "none"])
      .default("jupyter")
      .describe(
        "The editor served at the workspace's URL: jupyter (JupyterLab), vscode (code-server), or none (spec.command).",
      ),
    command: z
      .array(z.string())
      .min(1, "must name the program to run, e.g. [python3, -m, http.server, $PORT]")
      .optional()
      .describe(
        "With ide: none, the server to run (not through a shell); it must listen on $PORT. `$PORT` in an argument is replaced by the port.",
      ),
    python: PythonEnvironment.optional(),
    image: z
      .string()
      .min(1)
      .optional()
      .describe("Kubernetes: the workspace's container image. Embedded, it runs on this machine."),
    resources: Resources.default({}),
    preemptible: z
      .boolean()
      .default(false)
      .describe(
        "May be stopped to give capacity back (its home is kept). Default false: a workspace must fit within the project's deserved quota and is never preempted.",
      ),
    stopped: z
      .boolean()
      .default(false)
      .describe(
        "Stopped: nothing runs, the home is kept (`loom stop ws/NAME`; `loom start ws/NAME` clears it).",
      ),
    idleTimeout: z
      .union([z.number().int().min(1), z.string()])
      .refine(
        (v) => parseDurationSeconds(v) !== undefined,
        'must be seconds or a duration such as "90s", "5m" or "1h"',
      )
      .optional()
      .describe('Stop the workspace after this long without activity, e.g. "30m".'),
    env: z
      .record(
        z.string().regex(ENV_NAME, "environment variable names are letters, digits and '_'"),
        z.string(),
      )
      .default({})
      .describe("Extra environment variables."),
    home: z
      .strictObject({
        size: MemoryQuantity.default("10Gi").describe("Kubernetes: size of the home's claim."),
        storageClassName: z.string().min(1).optional(),
      })
      .optional()
      .describe(
        "The persistent home (the working directory): embedded a directory in the data dir, Kubernetes a PersistentVolumeClaim. It outlives stops, starts and restarts.",
      ),
  })
  .refine((s) => (s.ide === "none") === (s.command !== undefined), {
    message: WORKSPACE_COMMAND_RULE,
    path: ["command"],
  })
  .describe("An interactive environment (JupyterLab, VS Code or any server) with a persistent home.");

export const WorkspacePort = z.object({ port: z.number(), url: z.string().optional() });

export const WorkspaceStatus = z.object({
  phase: z.enum(["Pending", "Starting", "Running", "Stopped", "Failed"]).optional(),
  conditions: z.array(ConditionSchema).optional(),
  /** Where the IDE answers: the workspace's own origin on Loom's workspace listener. */
  url: z.string().optional(),
  ports: z.array(WorkspacePort).optional(),
  stoppedReason: z.enum(["User", "Idle", "Preempted"]).optional(),
  lastActivityTime: z.string().optional(),
  startTime: z.string().optional(),
  /** The replica that runs now (embedded: its address on this machine). */
  replica: z
    .object({ id: z.string(), host: z.string().optional(), port: z.number().optional(), ready: z.boolean() })
    .optional(),
  node: z.string().optional(),
  /** The platform revision the spec runs as (NAME-wsHASH): a changed spec replaces it. */
  revision: z.string().optional(),
  observedGeneration: z.number().optional(),
});

export type WorkspaceSpec = z.output<typeof WorkspaceSpec>;
export type WorkspacePhase = NonNullable<z.output<typeof WorkspaceStatus>["phase"]>;
export interface WorkspaceStatus extends Omit<z.output<typeof WorkspaceStatus>, "conditions"> {
  conditions?: Condition[];
}
export type Workspace = Resource<WorkspaceSpec, WorkspaceStatus>;

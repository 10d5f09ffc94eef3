import { z } from "zod";
import { Autoscaling, InferenceServiceStatus } from "./inferenceservice.js";
import type { Condition, Resource } from "./meta.js";
import { PythonEnvironment, Resources } from "./trainingjob.js";

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The cross-field rule of an App's spec; crdrules.ts holds the same rule for the CRD. */
export const APP_COMMAND_RULE =
  "framework custom needs a command (a server that listens on $PORT); gradio and streamlit need a file (or a command)";

/** Who may use an App: the project's members (cookie log-in), its API keys, or anyone. */
export const AppAccess = z
  .enum(["project", "apikey", "public"])
  .default("project")
  .describe(
    "project: members of the project, viewers included, after `loom open app/NAME`; apikey: `Authorization: Bearer <project API key>`; public: anyone, no check.",
  );

export const AppSpec = z
  .strictObject({
    framework: z
      .enum(["gradio", "streamlit", "custom"])
      .describe(
        "What runs the app: Loom starts gradio and streamlit itself with the port and base path they need.",
      ),
    file: z
      .string()
      .min(1)
      .optional()
      .describe("The app's script (gradio, streamlit), relative to workingDir."),
    command: z
      .array(z.string())
      .min(1, "must name the program to run, e.g. [python3, app.py]")
      .optional()
      .describe(
        "custom: the server to run (not through a shell); it must listen on $PORT. `$PORT` in an argument is replaced by the port. Overrides Loom's command for gradio and streamlit.",
      ),
    workingDir: z.string().optional().describe("Embedded: where the app's code is (its working directory)."),
    python: PythonEnvironment.optional(),
    image: z.string().min(1).optional().describe("Kubernetes: the app's container image."),
    resources: Resources.default({}),
    replicas: z
      .strictObject({
        min: z.number().int().min(0).default(0),
        max: z.number().int().min(1).default(1),
      })
      .refine((r) => r.min <= r.max, { message: "min must not exceed max", path: ["min"] })
      .default({ min: 0, max: 1 })
      .describe("Replicas between min and max; min 0 (the default) scales to zero when idle."),
    autoscaling: Autoscaling,
    access: AppAccess,
    readinessPath: z
      .string()
      .startsWith("/")
      .optional()
      .describe("custom: the path that answers once the app is up (default /)."),
    env: z
      .record(
        z.string().regex(ENV_NAME, "environment variable names are letters, digits and '_'"),
        z.string(),
      )
      .default({})
      .describe("Extra environment variables."),
  })
  .refine((s) => (s.framework === "custom" ? s.command !== undefined : !!(s.file || s.command)), {
    message: APP_COMMAND_RULE,
    path: ["command"],
  })
  .describe("A web app (Gradio, Streamlit or any server) served on its own origin, scaled like a model.");

/** An App's status: an InferenceService's (revisions, traffic, replicas), its URL on the app origin. */
export const AppStatus = InferenceServiceStatus;

export type AppSpec = z.output<typeof AppSpec>;
export type AppAccessMode = z.output<typeof AppAccess>;
export interface AppStatus extends Omit<z.output<typeof AppStatus>, "conditions"> {
  conditions?: Condition[];
}
export type App = Resource<AppSpec, AppStatus>;

import type { Command } from "commander";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { BASE } from "../resources.js";

/** `loom token create NAME`: an API token (admins make them); printed once. */
export function registerToken(program: Command, deps: CliDeps): void {
  program
    .command("token")
    .description("create an API token (admin): loom token create NAME [--role R] [-p PROJECT]")
    .argument("<action>", "create")
    .argument("<name>", "who or what the token is for")
    .option("--role <role>", "admin, editor or viewer", "editor")
    .option("-p, --project <project>", "the one project the token reaches (default: every project)")
    .action(async (action: string, name: string, opts: { role: string; project?: string }) => {
      if (action !== "create") throw new Error(`unknown action "${action}": use loom token create NAME`);
      const { api } = deps.client();
      const created = await api.request<{ token: string }>("POST", `${BASE}/tokens`, {
        name,
        role: opts.role,
        ...(opts.project ? { project: opts.project } : {}),
      });
      deps.stdout.write(`${created.token}\n`);
    });
}

/** `loom apikey create NAME -p PROJECT`: a key for the inference gateway's endpoints; printed once. */
export function registerApikey(program: Command, deps: CliDeps): void {
  program
    .command("apikey")
    .description("create a project API key for the inference gateway: loom apikey create NAME -p PROJECT")
    .argument("<action>", "create")
    .argument("<name>", "who or what the key is for")
    .option("-p, --project <project>", "the project whose endpoints the key reaches")
    .option("--service <name...>", "only these InferenceServices (default: every one of the project)")
    .action(async (action: string, name: string, opts: { project?: string; service?: string[] }) => {
      if (action !== "create")
        throw new CliError(`unknown action "${action}": use loom apikey create NAME -p PROJECT`);
      const { api, defaultProject } = deps.client();
      const project = opts.project ?? defaultProject;
      const created = await api.request<{ key: string }>(
        "POST",
        `${BASE}/projects/${encodeURIComponent(project)}/apikeys`,
        { name, ...(opts.service ? { services: opts.service } : {}) },
      );
      deps.stdout.write(`${created.key}\n`);
    });
}

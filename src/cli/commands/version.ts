import type { Command } from "commander";
import { VERSION } from "../../lib/version.js";
import type { CliDeps } from "../deps.js";

/** `loom version`: the CLI's version, and the server's when one answers. */
export function registerVersion(program: Command, deps: CliDeps): void {
  program
    .command("version")
    .description("print the CLI's and the server's version")
    .action(async () => {
      deps.stdout.write(`Client: ${VERSION}\n`);
      try {
        const { api } = deps.client();
        const v = await api.request<{ version: string }>("GET", "/version");
        deps.stdout.write(`Server: ${v.version}\n`);
      } catch (err) {
        deps.stdout.write(`Server: unavailable (${(err as Error).message})\n`);
      }
    });
}

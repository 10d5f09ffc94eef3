import type { Command } from "commander";
import { WORKSPACE } from "../../api/kinds.js";
import { IDLE_STOPPED } from "../../api/workspace.js";
import { ApiError } from "../client.js";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { itemPath, kindAndName, ref } from "../resources.js";

/**
 * `loom stop ws/NAME` and `loom start ws/NAME`: set or clear spec.stopped (a merge patch, so
 * nothing else in the spec is touched). Stopped, a workspace runs nothing and keeps its home.
 */
export function registerWorkspaceCommands(program: Command, deps: CliDeps): void {
  for (const [verb, stopped, help] of [
    ["stop", true, "stop a workspace (ws/NAME): its server stops, its home is kept"],
    ["start", false, "start a stopped workspace (ws/NAME) again, with the same home"],
  ] as const) {
    program
      .command(verb)
      .description(help)
      .argument("<target>", "ws/NAME (or ws NAME)")
      .argument("[name]")
      .option("-p, --project <project>", "project the workspace is in")
      .action(async (target: string, second: string | undefined, opts: { project?: string }) => {
        const { def, name } = kindAndName(target, second, verb);
        if (def.kind !== WORKSPACE)
          throw new CliError(
            `loom ${verb} works on workspaces (loom ${verb} ws/NAME); ${def.plural} are not ${verb === "stop" ? "stopped" : "started"} this way${def.kind === "TrainingJob" ? " (loom delete tj/NAME stops a job)" : ""}`,
          );
        const { api, defaultProject } = deps.client();
        const project = opts.project ?? defaultProject;
        try {
          await api.request(
            "PATCH",
            itemPath(def, project, name),
            // start also lifts an idle stop (the controller's mark; the spec was left as it was).
            stopped
              ? { spec: { stopped } }
              : { metadata: { annotations: { [IDLE_STOPPED]: null } }, spec: { stopped } },
            "application/merge-patch+json",
          );
        } catch (err) {
          if (err instanceof ApiError && err.status === 404)
            throw new CliError(
              `workspace "${name}" not found in project "${project}" (loom get ws -p ${project} lists them)`,
            );
          throw err;
        }
        deps.stdout.write(`${ref(def, name)} ${stopped ? "stopped" : "started"}\n`);
      });
  }
}

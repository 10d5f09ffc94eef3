import { spawn } from "node:child_process";
import type { Command } from "commander";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { BASE } from "../resources.js";

/** What `loom open` names: ws/NAME (workspace/NAME, workspaces/NAME, ws NAME) or app/NAME (apps/NAME). */
export function openTarget(target: string, name: string | undefined): { plural: string; name: string } {
  const [kind, rest] = target.includes("/") ? target.split("/", 2) : [target, name];
  const k = kind!.toLowerCase();
  const plural = ["ws", "workspace", "workspaces"].includes(k)
    ? "workspaces"
    : ["app", "apps"].includes(k)
      ? "apps"
      : undefined;
  if (!plural || !rest)
    throw new CliError(
      `loom open takes a workspace or an app: ws/NAME or app/NAME (got "${target}${name ? ` ${name}` : ""}")`,
    );
  return { plural, name: rest };
}

/**
 * `loom open ws/NAME` (or app/NAME): a one-time log-in link to the workspace's (app's) own origin (valid 60 s, once),
 * printed, and opened in a browser where a display exists.
 */
export function registerOpen(program: Command, deps: CliDeps): void {
  program
    .command("open")
    .description("print (and open in a browser) a one-time log-in link to a workspace or an app")
    .argument("<target>", "ws/NAME or app/NAME")
    .argument("[name]")
    .option("-p, --project <project>", "project of the workspace or app")
    .option("--no-browser", "only print the link")
    .action(
      async (target: string, nameArg: string | undefined, opts: { project?: string; browser: boolean }) => {
        const { plural, name } = openTarget(target, nameArg);
        const { api, defaultProject } = deps.client();
        const project = opts.project ?? defaultProject;
        const res = await api.request<{ url: string }>(
          "POST",
          `${BASE}/projects/${encodeURIComponent(project)}/${plural}/${encodeURIComponent(name)}/login`,
          {},
        );
        deps.stdout.write(`${res.url}\n`);
        if (opts.browser && (process.env.DISPLAY || process.env.WAYLAND_DISPLAY)) {
          // Best effort: the link is printed either way.
          const child = spawn("xdg-open", [res.url], { stdio: "ignore", detached: true });
          child.on("error", () =>
            deps.stderr.write("could not run xdg-open; open the link above in a browser\n"),
          );
          child.unref();
        } else deps.stderr.write("open the link above in a browser within 60 s (it works once)\n");
      },
    );
}

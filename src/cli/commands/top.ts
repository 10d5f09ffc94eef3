import type { Command } from "commander";
import type { CliDeps } from "../deps.js";
import { type NodeUsageView, type ProjectUsageView, topText } from "../print.js";
import { BASE } from "../resources.js";

/** `loom top`: each project's use against its quota, then the cluster's. */
export function registerTop(program: Command, deps: CliDeps): void {
  program
    .command("top")
    .description("GPUs, CPU and memory each project holds against its quota, and the cluster's use")
    .action(async () => {
      const { api } = deps.client();
      const [projects, nodes] = await Promise.all([
        api.request<{ items: ProjectUsageView[] }>("GET", `${BASE}/usage/projects`),
        api.request<{ items: NodeUsageView[] }>("GET", `${BASE}/nodes`),
      ]);
      deps.stdout.write(topText(projects.items, nodes.items));
    });
}

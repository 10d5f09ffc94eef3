import type { Command } from "commander";
import type { Resource } from "../../api/meta.js";
import type { ObjectEvent } from "../../ports/store.js";
import type { CliDeps } from "../deps.js";
import { describe } from "../print.js";
import { BASE, itemPath, kindAndName } from "../resources.js";

/** `loom describe KIND NAME`: the object in sections, with its recent events. */
export function registerDescribe(program: Command, deps: CliDeps): void {
  program
    .command("describe")
    .description("show an object in detail: spec, status, conditions and recent events")
    .argument("<kind>")
    .argument("[name]")
    .option("-p, --project <project>", "project to look in")
    .action(async (kindArg: string, nameArg: string | undefined, opts: { project?: string }) => {
      const { def, name } = kindAndName(kindArg, nameArg, "describe");
      const { api, defaultProject } = deps.client();
      const project = opts.project ?? defaultProject;
      const obj = await api.request<Resource>("GET", itemPath(def, project, name));
      const events = def.namespaced
        ? (
            await api.request<{ items: ObjectEvent[] }>(
              "GET",
              `${BASE}/projects/${encodeURIComponent(project)}/events?kind=${def.kind}&name=${encodeURIComponent(name)}`,
            )
          ).items
        : [];
      deps.stdout.write(describe(def, obj, events));
    });
}

import type { Command } from "commander";
import { knownKindsText } from "../../api/kinds.js";
import type { Resource } from "../../api/meta.js";
import type { Api, CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { formatResources, type NodeUsageView, nodeTable, trialTable } from "../print.js";
import { BASE, collectionPath, itemPath, kindAndName, kindOf } from "../resources.js";

interface GetOpts {
  project?: string;
  allProjects?: boolean;
  selector?: string;
  output?: string;
  watch?: boolean;
}

/** `loom get KIND [NAME]`: a table (or json, yaml, names) of objects, optionally watched; also nodes. */
export function registerGet(program: Command, deps: CliDeps): void {
  program
    .command("get")
    .description("list objects of a kind, or show one")
    .argument("<kind>", `one of: ${knownKindsText()}, or nodes`)
    .argument("[name]")
    .option("-p, --project <project>", "project to look in")
    .option("-A, --all-projects", "list across every project")
    .option("-l, --selector <selector>", "label selector, e.g. team=nlp,tier!=dev")
    .option("-o, --output <format>", "wide, json, yaml or name")
    .option("-w, --watch", "after listing, print each change as it happens (Ctrl-C to stop)")
    .action(async (kindArg: string, name: string | undefined, opts: GetOpts) => {
      if (["nodes", "node", "no"].includes(kindArg)) return getNodes(deps, name, opts.output);
      const { def, name: n } = kindArg.includes("/")
        ? kindAndName(kindArg, name)
        : { def: kindOf(kindArg), name };
      const { api, defaultProject } = deps.client();
      const project = opts.project ?? defaultProject;
      if (n && !opts.watch) {
        const obj = await api.request<Resource>("GET", itemPath(def, project, n));
        deps.stdout.write(formatResources([obj], def, opts.output, false, true));
        // A sweep's trials, as Katib's UI shows them: the question after "how is it going?".
        if (def.kind === "Sweep" && (opts.output === undefined || opts.output === "wide"))
          deps.stdout.write(`\n${trialTable(obj)}`);
        return;
      }
      const all = !!opts.allProjects || !def.namespaced;
      const q = opts.selector ? `labelSelector=${encodeURIComponent(opts.selector)}` : "";
      const path = collectionPath(def, all ? undefined : project);
      const list = await api.request<{ items: Resource[]; metadata: { resourceVersion: string } }>(
        "GET",
        `${path}?${q}`,
      );
      if (n) list.items = list.items.filter((o) => o.metadata.name === n);
      if (opts.watch) {
        const wide = all && def.namespaced;
        const line = (o: Resource) =>
          opts.output === "json"
            ? `${JSON.stringify(o)}\n`
            : formatResources([o], def, opts.output, wide, false).split("\n").slice(1).join("\n");
        deps.stdout.write(
          formatResources(list.items, def, opts.output === "json" ? "wide" : opts.output, wide, false),
        );
        const stream = await api.stream(
          `${path}?watch=1&resourceVersion=${list.metadata.resourceVersion}&${q}`,
        );
        await printWatch(deps, stream, n, line);
        return;
      }
      const text = formatResources(list.items, def, opts.output, all && def.namespaced, false);
      if (text === "" && (opts.output === undefined || opts.output === "wide")) {
        deps.stderr.write(
          def.namespaced && !all
            ? `No ${def.plural} found in project ${project}.\n`
            : `No ${def.plural} found.\n`,
        );
      }
      deps.stdout.write(text);
    });
}

/** `loom get nodes [NAME]`: capacity and what Loom's scheduler has handed out, per node. */
async function getNodes(deps: CliDeps, name: string | undefined, format: string | undefined): Promise<void> {
  const { api } = deps.client();
  const nodes = await api.request<{ items: NodeUsageView[] }>("GET", `${BASE}/nodes`);
  const items = name ? nodes.items.filter((x) => x.name === name) : nodes.items;
  if (name && items.length === 0) throw new CliError(`node "${name}" not found`);
  if (format === "json") deps.stdout.write(`${JSON.stringify(name ? items[0] : nodes, null, 2)}\n`);
  else deps.stdout.write(nodeTable(items, format === "wide"));
}

/** Prints each event of a watch stream (one JSON event a line) until the stream ends. */
async function printWatch(
  deps: CliDeps,
  stream: Awaited<ReturnType<Api["stream"]>>,
  name: string | undefined,
  line: (o: Resource) => string,
): Promise<void> {
  let buffered = "";
  for await (const chunk of stream) {
    buffered += (chunk as Buffer).toString();
    let i = buffered.indexOf("\n");
    while (i >= 0) {
      const event = JSON.parse(buffered.slice(0, i)) as { type: string; object: Resource };
      buffered = buffered.slice(i + 1);
      i = buffered.indexOf("\n");
      if (event.type === "ERROR")
        throw new CliError(`watch ended: ${(event.object as unknown as { message: string }).message}`);
      if (name && event.object.metadata.name !== name) continue;
      deps.stdout.write(line(event.object));
    }
  }
}

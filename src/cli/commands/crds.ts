import type { Command } from "commander";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { toYaml } from "../print.js";

/** `loom crds`: Loom's CustomResourceDefinitions, for `kubectl apply -f -`. */
export function registerCrds(program: Command, deps: CliDeps): void {
  program
    .command("crds")
    .description("print Loom's CustomResourceDefinitions (kubectl apply -f - installs them)")
    .option("-o, --output <format>", "yaml or json", "yaml")
    .action(async (opts: { output: string }) => {
      const { allManifests } = await import("../../api/crds.js");
      const crds = allManifests();
      if (opts.output === "json")
        deps.stdout.write(`${JSON.stringify({ apiVersion: "v1", kind: "List", items: crds }, null, 2)}\n`);
      else if (opts.output === "yaml") deps.stdout.write(crds.map((c) => toYaml(c)).join("---\n"));
      else throw new CliError(`unknown output format "${opts.output}": use yaml or json`);
    });
}

import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import type { KindDef } from "../../api/kinds.js";
import type { Resource } from "../../api/meta.js";
import { ApiError } from "../client.js";
import type { Api, CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { prepare, readManifests } from "../manifests.js";
import { collectionPath, itemPath, kindAndName, kindOf, ref } from "../resources.js";

interface Target {
  def: KindDef;
  project: string;
  name: string;
}

interface DeleteOpts {
  filename?: string[];
  project?: string;
  all?: boolean;
  wait: string;
  timeout: string;
}

/** `loom delete`: by kind and names, --all of a kind, or what manifests name; then waits until gone. */
export function registerDelete(program: Command, deps: CliDeps): void {
  program
    .command("delete")
    .description("delete objects by kind and name, or those in manifests; waits until they are gone")
    .argument("[kind]")
    .argument("[names...]")
    .option("-f, --filename <path...>", "delete the objects in these manifests")
    .option("-p, --project <project>", "project to look in")
    .option("--all", "delete every object of the kind in the project")
    .option("--wait <bool>", "wait until the objects are gone (workers stopped)", "true")
    .option("--timeout <seconds>", "how long to wait", "120")
    .action(async (kindArg: string | undefined, names: string[], opts: DeleteOpts) => {
      const { api, defaultProject } = deps.client();
      const project = opts.project ?? defaultProject;
      const targets = await deleteTargets(api, kindArg, names, opts, project);
      let failed = false;
      for (const t of targets) {
        try {
          await api.request("DELETE", itemPath(t.def, t.project, t.name));
          deps.stdout.write(`${ref(t.def, t.name)} deleted\n`);
        } catch (err) {
          if (!(err instanceof ApiError)) throw err;
          deps.stderr.write(`error: ${err.message}\n`);
          failed = true;
        }
      }
      if (opts.wait !== "false") await waitUntilGone(api, targets, Number(opts.timeout));
      if (failed) throw new CliError("some objects were not deleted", 1);
    });
}

/** What the arguments name: the objects in -f manifests, KIND/NAME, KIND NAME..., or KIND --all. */
async function deleteTargets(
  api: Api,
  kindArg: string | undefined,
  names: string[],
  opts: DeleteOpts,
  project: string,
): Promise<Target[]> {
  const targets: Target[] = [];
  if (opts.filename) {
    for (const p of readManifests(opts.filename).map((d) => prepare(d, project)))
      targets.push({ def: p.def, project: p.project, name: p.name });
    return targets;
  }
  if (!kindArg)
    throw new CliError(
      "name what to delete: loom delete KIND NAME, loom delete KIND --all, or loom delete -f FILE",
    );
  if (kindArg.includes("/")) {
    const { def, name } = kindAndName(kindArg, undefined);
    targets.push({ def, project, name });
  } else {
    const def = kindOf(kindArg);
    if (opts.all) {
      const list = await api.request<{ items: Resource[] }>(
        "GET",
        collectionPath(def, def.namespaced ? project : undefined),
      );
      for (const o of list.items) targets.push({ def, project, name: o.metadata.name });
    } else if (names.length === 0) throw new CliError(`name the ${def.singular} to delete, or pass --all`);
    for (const n of names) targets.push({ def, project, name: n });
  }
  return targets;
}

/** Polls each object until the API answers 404 (its workers have stopped), or the timeout passes. */
async function waitUntilGone(api: Api, targets: Target[], timeoutSeconds: number): Promise<void> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  for (const t of targets) {
    while (true) {
      try {
        await api.request("GET", itemPath(t.def, t.project, t.name));
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) break;
        throw err;
      }
      if (Date.now() > deadline)
        throw new CliError(
          `timed out waiting for ${ref(t.def, t.name)} to be deleted; its workers may still be stopping`,
        );
      await sleep(200);
    }
  }
}

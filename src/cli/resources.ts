import { findKind, type KindDef, knownKindsText } from "../api/kinds.js";
import { API_VERSION } from "../api/meta.js";
import { CliError } from "./errors.js";

/** Naming objects on the command line (KIND NAME, KIND/NAME) and the API paths they live at. */

export const BASE = `/apis/${API_VERSION}`;

/** The kind a command-line name (plural, singular or short) means; unknown names list the known ones. */
export function kindOf(name: string): KindDef {
  const def = findKind(name);
  if (!def) throw new CliError(`unknown kind "${name}"; known kinds: ${knownKindsText()}`);
  return def;
}

/** URL of a collection (project undefined + namespaced = across all projects). */
export function collectionPath(def: KindDef, project: string | undefined): string {
  if (!def.namespaced || project === undefined) return `${BASE}/${def.plural}`;
  return `${BASE}/projects/${encodeURIComponent(project)}/${def.plural}`;
}

/** URL of one object. */
export function itemPath(def: KindDef, project: string, name: string): string {
  return def.namespaced
    ? `${BASE}/projects/${encodeURIComponent(project)}/${def.plural}/${encodeURIComponent(name)}`
    : `${BASE}/${def.plural}/${encodeURIComponent(name)}`;
}

/** How output names an object: "trainingjob.loom.dev/hello", as kubectl does. */
export function ref(def: KindDef, name: string): string {
  return `${def.singular}.loom.dev/${name}`;
}

/**
 * Resolves "tj/hello" or ("tj", "hello") to a kind and name. `command` ("describe") makes the
 * messages for a lone word exact: a kind with no name, or a name with no kind.
 */
export function kindAndName(
  a: string,
  b: string | undefined,
  command = "...",
): { def: KindDef; name: string } {
  if (a.includes("/")) {
    const [k, n] = a.split("/", 2) as [string, string];
    if (b) throw new CliError(`give either KIND/NAME or KIND NAME, not both ("${a}" "${b}")`);
    return { def: kindOf(k), name: n };
  }
  if (!b) {
    const def = findKind(a);
    if (def) throw new CliError(`name the ${def.singular}: loom ${command} ${a}/NAME (or ${a} NAME)`);
    throw new CliError(
      `say which kind "${a}" is: loom ${command} KIND/${a}, e.g. loom ${command} tj/${a} (kinds: ${knownKindsText()})`,
    );
  }
  return { def: kindOf(a), name: b };
}

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { LoomProcess } from "./helpers.js";

/**
 * What the tests of a fleet with Loom members (`spec.api: loom`: another `loom up` reached by its
 * API) share: a member's kubeconfig, manifests applied as a user would, jobs read by the API.
 */

const BASE = "/apis/loom.dev/v1alpha1";
// biome-ignore lint/suspicious/noExplicitAny: objects as the API returns them
export type Obj = Record<string, any>;

/** A TrainingJob of the default project as the API answers it, undefined where there is none. */
export async function trainingJob(p: LoomProcess, name: string): Promise<Obj | undefined> {
  const r = await p.api("GET", `${BASE}/projects/default/trainingjobs/${name}`);
  return r.status === 200 ? (r.body as Obj) : undefined;
}

/** `loom apply -f FILE` of this YAML (written into `dir`); throws with the CLI's words if it fails. */
export async function applyYaml(
  p: LoomProcess,
  dir: string,
  yaml: string,
  extra: string[] = [],
): Promise<void> {
  const file = join(dir, `m-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, yaml);
  const r = await p.cli(["apply", "-f", file, ...extra]);
  if (r.code !== 0) throw new Error(`loom apply -f ${file} exited ${r.code}: ${r.stderr}`);
}

/** The kubeconfig (a file in `dir`) a control plane reaches a Loom member with: its URL and an admin token there. */
export function loomMemberKubeconfig(dir: string, name: string, server: string, token: string): string {
  const file = join(dir, `${name}.kubeconfig`);
  writeFileSync(
    file,
    [
      "apiVersion: v1",
      "kind: Config",
      `clusters: [{name: ${name}, cluster: {server: "${server}"}}]`,
      `users: [{name: ${name}, user: {token: "${token}"}}]`,
      `contexts: [{name: ${name}, context: {cluster: ${name}, user: ${name}}}]`,
      `current-context: ${name}`,
    ].join("\n"),
    { mode: 0o600 },
  );
  return file;
}

/** Registers a Loom member on the control plane `cp`: its kubeconfig, and a Cluster with `spec.api: loom`. */
export async function registerLoomMember(
  cp: LoomProcess,
  dir: string,
  member: { name: string; server: string; token: string; clusterLostTimeout: string },
): Promise<void> {
  const kubeconfig = loomMemberKubeconfig(dir, member.name, member.server, member.token);
  await applyYaml(
    cp,
    dir,
    `apiVersion: loom.dev/v1alpha1\nkind: Cluster\nmetadata: {name: ${member.name}}\nspec: {api: loom, clusterLostTimeout: ${member.clusterLostTimeout}}\n`,
    ["--kubeconfig-file", kubeconfig],
  );
}

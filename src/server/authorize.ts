import { ForbiddenError } from "../api/errors.js";
import { DEFAULT_PROJECT } from "../api/project.js";
import type { TokenInfo } from "../ports/store.js";
import type { Rule } from "./routetable.js";

/** What a decision needs besides the principal and the route. */
export interface DecideOptions {
  /** The kind a plural names ("trainingjobs" → "TrainingJob"), or undefined. */
  kindOf(plural: string): string | undefined;
  /** A principal that writes what only the platform writes (status); none by default. */
  isPlatform?(principal: TokenInfo): boolean;
}

/** The project a project-scoped route is about: its project parameter, else the default project. */
export function projectOf(rule: Rule, params: Record<string, string | undefined>): string {
  return params[rule.projectParam ?? "project"] ?? DEFAULT_PROJECT;
}

/** "token "x" (editor in project a)": who is asking, for messages. */
export function describePrincipal(p: TokenInfo): string {
  if (p.apiKey) return `API key "${p.name}" of project ${p.project ?? DEFAULT_PROJECT}`;
  if (p.workload) return `the credential of ${p.workload.kind} ${p.workload.project}/${p.workload.name}`;
  return `token "${p.name}" (${p.role}${p.project ? ` in project ${p.project}` : ""})`;
}

/**
 * The one authorization decision: may this principal use this route with these (decoded, routed)
 * parameters? Throws ForbiddenError saying who asked and what they may do; returns otherwise.
 * Workloads' per-run ownership is checked later, once the body is read (tracking/tenancy.ts).
 */
export function decide(
  p: TokenInfo,
  rule: Rule,
  params: Record<string, string | undefined>,
  opts: DecideOptions,
): void {
  const who = describePrincipal(p);
  if (p.apiKey) {
    if (rule.scope === "gateway" || rule.scope === "public") return;
    throw new ForbiddenError(`${who} reaches the inference gateway (/v1/…) only; use a token for Loom's API`);
  }
  if (p.workload) {
    decideWorkload(p, p.workload, rule, params, opts);
    return;
  }
  const unscopedAdmin = p.role === "admin" && !p.project;
  switch (rule.scope) {
    case "public":
    case "gateway":
    case "self": // the route serves the caller's own records only
      return;
    case "platform":
      if (opts.isPlatform?.(p)) return;
      throw new ForbiddenError(
        `${who} cannot write ${rule.resource}: status is written by Loom's controllers only ` +
          "(as Kubernetes grants */status to controllers); change the spec instead",
      );
    case "gateway-control":
      if (unscopedAdmin) return;
      throw new ForbiddenError(
        `${who} cannot use the gateway control routes: a gateway runs with an admin token that reaches every project`,
      );
    case "admin":
      if (unscopedAdmin) return;
      throw new ForbiddenError(
        `${who} cannot ${rule.verb === "read" ? "read" : "change"} ${rule.resource}: only an admin token that reaches every project can`,
      );
    case "cluster":
      if (rule.verb === "read" || unscopedAdmin) return;
      throw new ForbiddenError(`${who} cannot change ${rule.resource}: that takes an admin token`);
    case "global":
      if (p.project)
        throw new ForbiddenError(
          `${who} reaches project ${p.project} only, not every project's ${rule.resource}: use -p ${p.project}`,
        );
      if (rule.verb === "read" || unscopedAdmin) return;
      throw new ForbiddenError(`${who} cannot change ${rule.resource}: that takes an admin token`);
    case "project": {
      const project = projectOf(rule, params);
      if (p.project && p.project !== project)
        throw new ForbiddenError(
          rule.resource.startsWith("mlflow")
            ? `token "${p.name}" is for project ${p.project}; it cannot reach project ${project}` // tracking's words
            : `${who} reaches project ${p.project} only, not ${project}: use -p ${p.project}`,
        );
      if (rule.verb === "write" && p.role === "viewer")
        throw new ForbiddenError(`${who} may read, not change: ask an admin for an editor token`);
      return;
    }
  }
}

function decideWorkload(
  p: TokenInfo,
  w: NonNullable<TokenInfo["workload"]>,
  rule: Rule,
  params: Record<string, string | undefined>,
  opts: DecideOptions,
): void {
  const who = describePrincipal(p);
  const refuse = (why: string) =>
    new ForbiddenError(
      `${who} ${why}: a workload's credential reads its own object and its project's tracking data, and logs to its own runs`,
    );
  if (rule.scope !== "project" || !rule.workload) throw refuse(`cannot ${rule.verb} ${rule.resource}`);
  const project = projectOf(rule, params);
  if (project !== w.project) throw refuse(`cannot reach project ${project}`);
  if (rule.workload === "own-object") {
    const own =
      params.plural !== undefined && opts.kindOf(params.plural) === w.kind && params.name === w.name;
    if (!own) throw refuse(`cannot read ${params.plural ?? rule.resource}/${params.name ?? ""}`);
  }
}

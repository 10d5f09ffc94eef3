import type { Command } from "commander";
import { type AuditRecord, parseDuration } from "../../ports/audit.js";
import type { CliDeps } from "../deps.js";
import { CliError } from "../errors.js";
import { table } from "../print.js";
import { BASE } from "../resources.js";

interface AuditOpts {
  project?: string;
  since?: string;
  limit?: string;
  output?: string;
}

/** `loom audit`: who changed what, and what was refused, newest last (as kubectl get events). */
export function registerAudit(program: Command, deps: CliDeps): void {
  program
    .command("audit")
    .description("the audit log: every write and every refused request (admin; a project's admin with -p)")
    .option("-p, --project <project>", "only this project's objects and tokens")
    .option("--since <duration>", "only entries this recent (30m, 1h, 7d) or since a time (RFC 3339)")
    .option("--limit <n>", "the newest N entries", "100")
    .option("-o, --output <format>", "json")
    .action(async (opts: AuditOpts) => {
      if (opts.output !== undefined && opts.output !== "json")
        throw new CliError(`--output must be json, got "${opts.output}"`);
      const { api } = deps.client();
      const q = new URLSearchParams();
      if (opts.since) q.set("since", opts.since);
      if (opts.limit) q.set("limit", opts.limit);
      const path = opts.project
        ? `${BASE}/projects/${encodeURIComponent(opts.project)}/audit`
        : `${BASE}/audit`;
      const list = await api.request<{ items: AuditRecord[] }>("GET", `${path}?${q}`);
      if (opts.output === "json") {
        deps.stdout.write(`${JSON.stringify(list.items, null, 2)}\n`);
        return;
      }
      if (list.items.length === 0) {
        deps.stdout.write("No audit entries found.\n");
        return;
      }
      deps.stdout.write(auditTable(list.items));
    });
}

/** TIME, WHO, VERB, OBJECT, RESULT, SOURCE: one line an entry. */
export function auditTable(items: AuditRecord[]): string {
  return table([
    ["TIME", "WHO", "VERB", "OBJECT", "RESULT", "SOURCE"],
    ...items.map((e) => [
      new Date(e.time).toISOString().replace(/\.\d{3}Z$/, "Z"),
      e.principal
        ? `${e.principal.name} (${e.principal.role}${e.principal.project ? ` of ${e.principal.project}` : ""})`
        : "<anonymous>",
      e.verb,
      objectText(e),
      `${e.allowed ? "" : "denied "}${e.status}`,
      e.source.address,
    ]),
  ]);
}

function objectText(e: AuditRecord): string {
  const o = e.object;
  if (!o.kind) return e.path;
  const name = o.name ? `/${o.name}` : "";
  const sub = o.subresource ? `/${o.subresource}` : "";
  // As the API path has it: PROJECT/KIND/NAME.
  return `${o.project && o.kind !== "projects" ? `${o.project}/` : ""}${o.kind}${name}${sub}`;
}

/** `loom up --audit-retention 30d`, checked. */
export function auditRetentionMs(text: string): number {
  return retentionMs("--audit-retention", text);
}

/** A retention flag of `loom up` (30d, 12h), checked. */
export function retentionMs(flag: string, text: string): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0)
    throw new CliError(`${flag} must be a duration such as 30d or 12h, got "${text}"`);
  return ms;
}

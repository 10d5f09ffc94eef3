/**
 * kube-apiserver's audit log as a bench reads it (test/k8s/up.sh writes one when
 * LOOM_K8S_AUDIT_POLICY names a policy): which requests a client sent in a window, when the API
 * server received each and when it answered. Counts and the order of round trips hold under load
 * where wall-clock figures do not.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** One request as the audit log records it (stage ResponseComplete). */
export interface AuditedRequest {
  user: string;
  verb: string;
  /** "pods", "pods/binding", "trainingjobs/status", … */
  resource: string;
  name: string;
  code: number;
  /** Epoch ms (the log has microseconds). */
  received: number;
  completed: number;
}

/**
 * A policy that records, at Metadata level, every request but watches from `users`, and every
 * write of a Node (the removal of Karpenter's karpenter.sh/unregistered taint is one).
 */
export function writeAuditPolicy(dir: string, users: string[]): string {
  const path = join(dir, "audit-policy.yaml");
  writeFileSync(
    path,
    `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    verbs: [watch]
  - level: Metadata
    users: [${users.map((u) => JSON.stringify(u)).join(", ")}]
  - level: Metadata
    verbs: [update, patch]
    resources: [{group: "", resources: [nodes]}]
  - level: None
`,
  );
  return path;
}

/** Every completed request in the log (none when there is no log). */
export function readAudit(path: string): AuditedRequest[] {
  if (!existsSync(path)) return [];
  const out: AuditedRequest[] = [];
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (!line) continue;
    // biome-ignore lint/suspicious/noExplicitAny: an audit event as kube-apiserver writes it
    const e = JSON.parse(line) as Record<string, any>;
    if (e.stage !== "ResponseComplete") continue;
    const ref = e.objectRef ?? {};
    out.push({
      user: e.user?.username ?? "",
      verb: e.verb,
      resource: `${ref.resource ?? e.requestURI}${ref.subresource ? `/${ref.subresource}` : ""}`,
      name: ref.name ?? "",
      code: e.responseStatus?.code ?? 0,
      received: micros(e.requestReceivedTimestamp),
      completed: micros(e.stageTimestamp),
    });
  }
  return out.sort((a, b) => a.received - b.received);
}

/** "2026-12-07T10:59:01.123456Z" → epoch ms with the microseconds as a fraction. */
function micros(ts: string): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(ts);
  if (!m) return Date.parse(ts);
  return Date.parse(`${m[1]}Z`) + Number(`0.${m[2] ?? "0"}`) * 1000;
}

/** A request's step as the tables name it: "POST pods/binding", "DELETE pods", … */
export function stepOf(r: AuditedRequest): string {
  const verb = { create: "POST", update: "PUT", patch: "PATCH", delete: "DELETE", get: "GET", list: "LIST" }[
    r.verb
  ];
  return `${verb ?? r.verb} ${r.resource}`;
}

/**
 * Workspace origins (issue 19): each workspace is served on an origin of its own,
 * `http://NAME--PROJECT.ws.localhost:PORT/`, never the API's, because it serves its users' own
 * HTML and JavaScript. Browsers resolve *.localhost to loopback without DNS.
 */

/** The domain every workspace origin is a subdomain of. */
export const WS_DOMAIN = "ws.localhost";

/** A DNS label as Kubernetes names are (RFC 1123), without "--" so NAME--PROJECT splits one way. */
const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A workspace named by an origin's host. */
export interface WorkspaceHost {
  project: string;
  name: string;
}

/**
 * The workspace a Host header names (`NAME--PROJECT.ws.localhost[:port]`, any case), or undefined.
 * The name is what comes before the first "--"; workspace names with "--" get no origin
 * (workspaceNameProblem), so the split is never ambiguous.
 */
export function parseWorkspaceHost(host: string | undefined): WorkspaceHost | undefined {
  return parseOriginHost(host, WS_DOMAIN);
}

/** NAME--PROJECT under `domain` (ws.localhost for workspaces, app.localhost for apps), or undefined. */
export function parseOriginHost(host: string | undefined, domain: string): WorkspaceHost | undefined {
  if (!host) return undefined;
  const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(host.trim().toLowerCase());
  if (!m) return undefined;
  let hostname = m[1]!;
  if (hostname.endsWith(".")) hostname = hostname.slice(0, -1); // the FQDN form names the same host
  if (!hostname.endsWith(`.${domain}`)) return undefined;
  const label = hostname.slice(0, -domain.length - 1);
  const cut = label.indexOf("--");
  if (cut <= 0) return undefined;
  const name = label.slice(0, cut);
  const project = label.slice(cut + 2);
  if (!NAME.test(name) || name.includes("--") || !NAME.test(project)) return undefined;
  return { project, name };
}

/** Why a workspace cannot have an origin of its own, or undefined when it can. */
export function workspaceNameProblem(project: string, name: string): string | undefined {
  if (!NAME.test(name) || name.length > 63)
    return `workspace name "${name}" must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit`;
  if (name.includes("--"))
    return `workspace name "${name}" contains "--", which separates the name from the project in its origin (NAME--PROJECT.${WS_DOMAIN}): rename it`;
  if (!NAME.test(project)) return `project name "${project}" is not a DNS label, so it cannot name an origin`;
  return undefined;
}

/** The origin of a workspace on the origin listener's port: `http://NAME--PROJECT.ws.localhost:PORT`. */
export function workspaceOrigin(project: string, name: string, port: number): string {
  return `http://${name}--${project}.${WS_DOMAIN}${port === 80 ? "" : `:${port}`}`;
}

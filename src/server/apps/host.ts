import { parseOriginHost, type WorkspaceHost, workspaceNameProblem } from "../workspaces/host.js";

/**
 * App origins (issue 20): each App at `http://NAME--PROJECT.app.localhost:PORT/`, on the same
 * user-content listener as workspaces but another site (app.localhost, not ws.localhost), so an
 * app's page can neither read nor set a workspace's or the console's cookies.
 */
export const APP_DOMAIN = "app.localhost";

/** The App a Host header names (`NAME--PROJECT.app.localhost[:port]`), or undefined. */
export function parseAppHost(host: string | undefined): WorkspaceHost | undefined {
  return parseOriginHost(host, APP_DOMAIN);
}

/** Why an App cannot have an origin of its own (its name or project is no DNS label), or undefined. */
export function appNameProblem(project: string, name: string): string | undefined {
  return workspaceNameProblem(project, name)
    ?.replace(/^workspace/, "app")
    .replace(WS_HINT, APP_DOMAIN);
}
const WS_HINT = "ws.localhost";

/** The origin of an App on the listener's port: `http://NAME--PROJECT.app.localhost:PORT`. */
export function appOrigin(project: string, name: string, port: number): string {
  return `http://${name}--${project}.${APP_DOMAIN}${port === 80 ? "" : `:${port}`}`;
}

import type { FastifyInstance } from "fastify";
import { BadRequestError, UnauthorizedError } from "../../api/errors.js";
import { findKind } from "../../api/kinds.js";
import { tokenOfHeader } from "../authz.js";
import type { ResourceService } from "../resources.js";
import { BASE } from "../routes/params.js";
import { route, rule } from "../routetable.js";
import type { WorkspaceAccess } from "../workspaces/access.js";
import { LOGIN_PATH } from "../workspaces/origin.js";
import { appNameProblem, appOrigin } from "./host.js";

/** Using an App is reading the project: any member may, viewers included. */
export const APP_ACCESS = rule.project("apps", "read");

export interface AppLoginDeps {
  access: WorkspaceAccess;
  /** The port the user-content origin listens on (known once it does). */
  originPort(): number;
  resources: ResourceService;
}

/**
 * POST …/projects/P/apps/NAME/login: a one-time link that logs the caller's browser in to the
 * App's own origin (access: project). Members of the project only, viewers included; API keys
 * and workloads' credentials are refused by the guard.
 */
export function appLoginRoutes(app: FastifyInstance, deps: AppLoginDeps): void {
  route<{ Params: { project: string; name: string } }>(app, {
    method: "POST",
    url: `${BASE}/projects/:project/apps/:name/login`,
    rule: APP_ACCESS,
    handler: async (req) => {
      const { project, name } = req.params;
      const problem = appNameProblem(project, name);
      if (problem) throw new BadRequestError(problem);
      await deps.resources.get(findKind("apps")!, project, name); // 404 saying so when it does not exist
      const token = tokenOfHeader(req.headers.authorization);
      if (!token || !req.principal) throw new UnauthorizedError("log-in needs your token in Authorization");
      const ticket = deps.access.issue(token, req.principal, project, name);
      const origin = appOrigin(project, name, deps.originPort());
      return { url: `${origin}${LOGIN_PATH}?ticket=${ticket}`, origin, expiresInSeconds: 60 };
    },
  });
}

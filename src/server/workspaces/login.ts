import type { FastifyInstance } from "fastify";
import { BadRequestError, UnauthorizedError } from "../../api/errors.js";
import { findKind } from "../../api/kinds.js";
import { tokenOfHeader } from "../authz.js";
import type { ResourceService } from "../resources.js";
import { BASE } from "../routes/params.js";
import { route } from "../routetable.js";
import { WORKSPACE_ACCESS, type WorkspaceAccess } from "./access.js";
import { workspaceNameProblem, workspaceOrigin } from "./host.js";
import { LOGIN_PATH } from "./origin.js";

export interface WorkspaceLoginDeps {
  access: WorkspaceAccess;
  /** The port the workspace origin listens on (known once it does). */
  originPort(): number;
  resources: ResourceService;
}

/**
 * POST …/projects/P/workspaces/NAME/login: a one-time link that logs the caller's browser in to
 * the workspace's own origin. Editors and admins of the project only (the guard decides, from
 * the route's rule); API keys and workloads' credentials are refused there too.
 */
export function workspaceLoginRoutes(app: FastifyInstance, deps: WorkspaceLoginDeps): void {
  route<{ Params: { project: string; name: string } }>(app, {
    method: "POST",
    url: `${BASE}/projects/:project/workspaces/:name/login`,
    rule: WORKSPACE_ACCESS,
    handler: async (req) => {
      const { project, name } = req.params;
      const problem = workspaceNameProblem(project, name);
      if (problem) throw new BadRequestError(problem);
      // Where the Workspace kind is served, the workspace must exist (404 saying so otherwise).
      const kind = findKind("workspaces");
      if (kind?.plural === "workspaces") await deps.resources.get(kind, project, name);
      const token = tokenOfHeader(req.headers.authorization);
      if (!token || !req.principal) throw new UnauthorizedError("log-in needs your token in Authorization");
      const ticket = deps.access.issue(token, req.principal, project, name);
      const origin = workspaceOrigin(project, name, deps.originPort());
      return { url: `${origin}${LOGIN_PATH}?ticket=${ticket}`, origin, expiresInSeconds: 60 };
    },
  });
}

import type { TokenInfo } from "../ports/store.js";
import { MlflowError } from "./errors.js";

/**
 * Tenancy: a token scoped to a project reaches that project only, and a viewer's token only
 * reads. Unscoped tokens (the admin's) reach every project.
 */
export function authorize(principal: TokenInfo | undefined, project: string, write: boolean): void {
  if (!principal) throw new MlflowError("UNAUTHENTICATED", "missing bearer token: set MLFLOW_TRACKING_TOKEN");
  if (principal.project && principal.project !== project)
    throw new MlflowError(
      "PERMISSION_DENIED",
      `token "${principal.name}" is for project ${principal.project}; it cannot reach project ${project}`,
    );
  if (write && principal.role === "viewer")
    throw new MlflowError(
      "PERMISSION_DENIED",
      `token "${principal.name}" is a viewer's: it reads, it does not write`,
    );
}

import type { Logger } from "pino";
import type { AppDeps } from "../controllers/app/reconciler.js";
import type { ControllerManager } from "../controllers/manager.js";
import { Gateway } from "../gateway/gateway.js";
import type { TokenStore } from "../ports/store.js";
import { appOrigin } from "../server/apps/host.js";
import { APP_ACCESS } from "../server/apps/login.js";
import { appOriginHandler, type HostHandler } from "../server/apps/origin.js";
import { AppServingTable } from "../server/apps/table.js";
import { bearerAuthenticator } from "../server/authz.js";
import { ServingDirectory } from "../server/serving.js";
import { type WorkspaceAccess, workspaceAccessOn } from "../server/workspaces/access.js";

/** What serves Apps (issue 20), wired once for the API, the controllers and the user-content origin. */
export interface AppParts {
  gateway: Gateway;
  access: WorkspaceAccess;
  /** The App loop's dependencies (ControllerManagerDeps.apps). */
  controllerDeps: Pick<AppDeps, "scale" | "table" | "appOrigin">;
  /** What the user-content listener hands requests for app hosts. */
  handler: HostHandler;
  /** The apps' autoscaler wakes the App loop. */
  connect(manager: ControllerManager): void;
}

/**
 * Apps get a gateway and a serving table of their own: the same code as InferenceService's (the
 * activator, the balancer, the autoscaler; one set of metrics), but a separate table, so the
 * OpenAI routes can never resolve an App as a model nor list one, and an App may share its name
 * with an InferenceService. Sessions stick to a replica (ServingDirectory's sessionAffinity).
 */
export function appParts(opts: {
  tokens: Pick<TokenStore, "verify">;
  /** The user-content origin's port (0 until it listens). */
  originPort: () => number;
  /** The InferenceService gateway, whose metrics the apps' gateway shares. */
  models: Gateway;
  log: Logger;
}): AppParts {
  const directory = new ServingDirectory({ sessionAffinity: true });
  const table = new AppServingTable(directory);
  const gateway = new Gateway({
    directory,
    scaler: directory,
    metrics: opts.models.metrics,
    log: opts.log.child({ component: "apps-gateway" }),
  });
  directory.attach(gateway);
  const access = workspaceAccessOn(opts.tokens, { rule: APP_ACCESS, noun: "app", open: "app" });
  const handler = appOriginHandler({
    access,
    authenticate: bearerAuthenticator((t) => opts.tokens.verify(t)),
    table,
    gateway,
    log: opts.log.child({ component: "app-origin" }),
  });
  return {
    gateway,
    access,
    handler,
    controllerDeps: {
      scale: directory,
      table,
      appOrigin: (project, name) => {
        const port = opts.originPort();
        return port ? appOrigin(project, name, port) : undefined;
      },
    },
    connect(manager) {
      directory.onScale = (key) => manager.enqueueApp(key);
    },
  };
}

import type { AppAccessMode } from "../../api/app.js";
import type { ServedObject, ServingTable } from "../../ports/serving.js";
import type { ServingDirectory } from "../serving.js";

/**
 * The Apps' serving table: what the App controller publishes goes to the apps' own
 * ServingDirectory (the apps' gateway leases from it; the OpenAI routes never see it), and each
 * app's access mode is kept beside it for the origin to check per request.
 */
export class AppServingTable implements ServingTable {
  private readonly modes = new Map<string, AppAccessMode>();

  constructor(readonly directory: ServingDirectory) {}

  publish(key: string, app: ServedObject | undefined): void {
    const access = (app?.spec as { access?: AppAccessMode } | undefined)?.access;
    if (app && access) this.modes.set(key, access);
    else this.modes.delete(key);
    this.directory.publish(key, app);
  }

  /** How project/name is reached, or undefined when no such App is published. */
  access(project: string, name: string): AppAccessMode | undefined {
    return this.modes.get(`${project}/${name}`);
  }
}

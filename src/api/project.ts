import { z } from "zod";
import type { Condition, Resource } from "./meta.js";

/** A tenant. Members, roles and quotas arrive with the security and scheduler issues. */
export const ProjectSpec = z
  .strictObject({
    displayName: z.string().max(200).optional().describe("Human-friendly name shown in the UI."),
    description: z.string().max(2000).optional().describe("What this project is for."),
  })
  .describe("A tenant: the unit of ownership, access and (later) quota.");

export const ProjectStatus = z.object({
  phase: z.enum(["Active", "Terminating"]).optional(),
  conditions: z.array(z.any()).optional(),
});

export type ProjectSpec = z.output<typeof ProjectSpec>;
export interface ProjectStatus {
  phase?: "Active" | "Terminating";
  conditions?: Condition[];
}
export type Project = Resource<ProjectSpec, ProjectStatus>;

/** The project every installation has, and that commands use when none is named. */
export const DEFAULT_PROJECT = "default";

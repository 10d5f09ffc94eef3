import { z } from "zod";
import type { Condition, Resource } from "./meta.js";
import { CpuQuantity, MemoryQuantity } from "./trainingjob.js";

export const ProjectMember = z
  .strictObject({
    user: z.string().min(1).optional().describe("A user name as the platform authenticates it."),
    group: z.string().min(1).optional().describe("A group of users."),
    role: z
      .enum(["admin", "editor", "viewer"])
      .describe("viewer reads; editor also writes workloads; admin also manages the project."),
  })
  .refine((m) => (m.user === undefined) !== (m.group === undefined), "name exactly one of user or group");

export const ProjectQuota = z
  .strictObject({
    // The same quantities as workloads' requests: a quota of "lots" was 0 to the scheduler.
    cpu: CpuQuantity.optional().describe('CPU cores, e.g. 16 or "500m".'),
    memory: MemoryQuantity.optional().describe('Memory, e.g. "64Gi".'),
    gpu: z.number().int().min(0).optional().describe("Whole GPUs."),
  })
  .describe(
    "Deserved (guaranteed) capacity: work within it always gets in when the cluster has room, and is never preempted by other projects.",
  );

export const ProjectLimit = ProjectQuota.describe(
  "Hard cap on what the project's workloads may hold at once, borrowed capacity included (a ResourceQuota on Kubernetes).",
);

/** A tenant: who may do what in it, and how much it may use. */
export const ProjectSpec = z
  .strictObject({
    displayName: z.string().max(200).optional().describe("Human-friendly name shown in the UI."),
    description: z.string().max(2000).optional().describe("What this project is for."),
    members: z.array(ProjectMember).default([]).describe("Users and groups with a role in this project."),
    quota: ProjectQuota.optional(),
    limit: ProjectLimit.optional(),
    overQuotaWeight: z
      .number()
      .min(0)
      .default(1)
      .describe(
        "Share of idle capacity beyond deserved quotas, relative to other projects' weights (0: never borrows).",
      ),
    nodePools: z
      .array(z.string().min(1))
      .optional()
      .describe("Node pools the project's workloads may run in; unset means all."),
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

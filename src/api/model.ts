import { z } from "zod";
import type { Resource } from "./meta.js";

/**
 * A registered model as a Loom kind: a view of the model registry (the same models and versions
 * the MLflow registry API serves), with each version's lineage — the job that made it, its
 * tracking run and the checkpoint it came from.
 */
export const ModelSpec = z
  .strictObject({
    description: z.string().max(5000).optional().describe("What the model is for."),
  })
  .describe("A registered model: numbered versions, aliases such as champion, and where each came from.");

export const ModelVersionLineage = z.object({
  version: z.string(),
  aliases: z.array(z.string()),
  stage: z.string().optional(),
  source: z.string(),
  runId: z.string().optional(),
  experimentId: z.string().optional(),
  /** The TrainingJob whose run made the version, its phase now ("deleted" when gone). */
  job: z.string().optional(),
  jobPhase: z.string().optional(),
  /** The checkpoint the job last reported, and the job it started from (initCheckpointFrom). */
  checkpointStep: z.number().optional(),
  initCheckpointFrom: z.string().optional(),
  sweep: z.string().optional(),
  trial: z.string().optional(),
  createdAt: z.string(),
});

export const ModelStatus = z.object({
  latestVersion: z.string().optional(),
  aliases: z.record(z.string(), z.string()).optional(),
  /** "champion=3,staging=4", for `loom get models`. */
  aliasText: z.string().optional(),
  latestJob: z.string().optional(),
  versions: z.array(ModelVersionLineage).optional(),
});

export type ModelSpec = z.output<typeof ModelSpec>;
export type ModelStatus = z.output<typeof ModelStatus>;
export type ModelVersionLineage = z.output<typeof ModelVersionLineage>;
export type Model = Resource<ModelSpec, ModelStatus>;

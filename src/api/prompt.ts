import { z } from "zod";
import type { Resource } from "./meta.js";

/**
 * A prompt of the registry as a Loom kind: a read-only view of what MLflow's prompt client
 * (`mlflow.genai.register_prompt`) writes — numbered versions with their templates, aliases, tags.
 */
export const PromptSpec = z
  .strictObject({
    description: z.string().max(5000).optional().describe("What the prompt is for."),
  })
  .describe("A registered prompt: numbered template versions and aliases such as production.");

export const PromptVersionView = z.object({
  version: z.string(),
  aliases: z.array(z.string()),
  template: z.string(),
  commitMessage: z.string().optional(),
  tags: z.record(z.string(), z.string()).optional(),
  createdAt: z.string(),
});

export const PromptStatus = z.object({
  latestVersion: z.string().optional(),
  aliases: z.record(z.string(), z.string()).optional(),
  /** "production=2,staging=3", for `loom get prompts`. */
  aliasText: z.string().optional(),
  tags: z.record(z.string(), z.string()).optional(),
  versions: z.array(PromptVersionView).optional(),
});

export type PromptSpec = z.output<typeof PromptSpec>;
export type PromptStatus = z.output<typeof PromptStatus>;
export type PromptVersionView = z.output<typeof PromptVersionView>;
export type Prompt = Resource<PromptSpec, PromptStatus>;

import { invalidParameter } from "./errors.js";
import type { Clause } from "./filter.js";
import type { KeyValue } from "./store.js";

/** The tag that makes a registered model (and its versions) a prompt, as MLflow's client sets it. */
export const IS_PROMPT_TAG = "mlflow.prompt.is_prompt";
const PROMPT_SOURCES = new Set(["dummy-source", "prompt-template"]);

/** Whether a version's tags make it a prompt version (the last value of the tag wins, as in MLflow). */
export function isPromptVersion(tags: KeyValue[]): boolean {
  return (
    tags
      .filter((t) => t.key === IS_PROMPT_TAG)
      .at(-1)
      ?.value.toLowerCase() === "true"
  );
}

/** MLflow's server takes only its placeholders as a prompt version's source. */
export function checkPromptSource(source: string): void {
  if (!PROMPT_SOURCES.has(source))
    throw invalidParameter(
      `Invalid prompt source: '${source}'. Prompt sources must use an MLflow placeholder (${[...PROMPT_SOURCES].join(" or ")}).`,
    );
}

/** The registry filter that finds prompts, as MLflow's client writes it. */
export const PROMPT_FILTER = `tags.\`${IS_PROMPT_TAG}\` = 'true'`;
/** The registry filter that leaves prompts out (what MLflow's client adds to a model search). */
export const NOT_PROMPT_FILTER = `tags.\`${IS_PROMPT_TAG}\` != 'true'`;

/**
 * A registry search's clauses scoped as MLflow's server scopes them: prompts only when the filter
 * asks for them (the prompt tag = 'true', or != 'false'), otherwise models only — whatever else
 * the filter says of the prompt tag — so a plain model search never returns prompts.
 */
export function promptScope(clauses: Clause[]): Clause[] {
  const prompt = clauses.filter((c) => c.entity === "tag" && c.key === IS_PROMPT_TAG);
  const wantsPrompts = prompt.some((c) => {
    const v = String(c.value).toLowerCase();
    return (c.comparator === "=" && v === "true") || (c.comparator === "!=" && v === "false");
  });
  // Asked for, the prompts are those with the tag (as a SQL join on it finds them, `!= 'false'` too).
  if (wantsPrompts)
    return [...clauses, { entity: "tag", key: IS_PROMPT_TAG, comparator: "=", value: "true" }];
  return [
    ...clauses.filter((c) => !prompt.includes(c)),
    { entity: "tag", key: IS_PROMPT_TAG, comparator: "!=", value: "true" },
  ];
}

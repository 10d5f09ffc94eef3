/**
 * Prefix affinity's key: requests that share a prompt's start (a system prompt, say) go to the
 * replica that has it in its KV cache.
 */

/** A body that is not JSON just goes without affinity: the upstream will say what is wrong with it. */
export function affinityKey(json: () => Record<string, unknown>, n: number): string | undefined {
  try {
    return promptPrefix(json(), n);
  } catch {
    return undefined;
  }
}

/** The first `n` characters of a completion's prompt or a chat's messages: the affinity key. */
export function promptPrefix(body: Record<string, unknown>, n: number): string | undefined {
  const p = body.prompt;
  if (typeof p === "string") return p.slice(0, n);
  if (Array.isArray(p) && typeof p[0] === "string") return p[0].slice(0, n);
  const messages = body.messages;
  if (!Array.isArray(messages)) return undefined;
  let out = "";
  for (const m of messages) {
    if (out.length >= n) break;
    const c = (m as { content?: unknown } | null)?.content;
    out += `${typeof c === "string" ? c : JSON.stringify(c ?? "")}\n`;
  }
  return out.slice(0, n);
}

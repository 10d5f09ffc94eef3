import { type FormEvent, useEffect, useRef, useState } from "react";
import { api, kindPath } from "../api.js";

interface Prompt {
  metadata: { name: string };
  status?: { latestVersion?: string; versions?: { version: string; template: string }[] };
}

interface Key {
  key: string;
  id: string;
}

/** How long a playground key lives: it dies on its own even if the tab is killed before revoking it. */
const KEY_TTL = "15m";

/**
 * A short-lived API key for one service of one project, made through the API-keys route the
 * Projects page uses, held only in this component's memory (never in storage), and revoked when
 * the playground closes. Least privilege: it can call this one service for 15 minutes, nothing else.
 */
function usePlaygroundKey(project: string, service: string) {
  const key = useRef<Key | undefined>(undefined);
  const keysPath = `${kindPath("apikeys", project)}`;
  useEffect(() => {
    const revoke = () => {
      const k = key.current;
      key.current = undefined;
      if (k) api("DELETE", `${keysPath}/${encodeURIComponent(k.id)}`).catch(() => undefined);
    };
    window.addEventListener("pagehide", revoke);
    return () => {
      window.removeEventListener("pagehide", revoke);
      revoke();
    };
  }, [keysPath]);
  return async (): Promise<string> => {
    if (key.current) return key.current.key;
    const name = `console-playground-${Math.random().toString(36).slice(2, 10)}`;
    key.current = await api<Key>("POST", keysPath, { name, services: [service], ttl: KEY_TTL });
    return key.current.key;
  };
}

/** Prompts of the registry, for the system prompt (latest version's template each). */
function usePrompts(project: string): Prompt[] {
  const [prompts, setPrompts] = useState<Prompt[]>([]);
  useEffect(() => {
    let live = true;
    api<{ items: Prompt[] }>("GET", kindPath("prompts", project)).then(
      (l) => live && setPrompts(l.items),
      () => undefined, // no registry here: the picker just stays empty
    );
    return () => {
      live = false;
    };
  }, [project]);
  return prompts;
}

const templateOf = (p: Prompt) =>
  p.status?.versions?.find((v) => v.version === p.status?.latestVersion)?.template ??
  p.status?.versions?.[0]?.template ??
  "";

/** Reads an OpenAI SSE stream, calling onText with each delta as it comes. */
async function readStream(res: Response, onText: (t: string) => void): Promise<void> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let rest = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const lines = (rest + value).split("\n");
    rest = lines.pop() ?? "";
    for (const line of lines) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data) as { choices?: { delta?: { content?: string } }[] };
      const t = chunk.choices?.[0]?.delta?.content;
      if (t) onText(t);
    }
  }
}

/** Chat with a service through the gateway's OpenAI API, the answer streamed as it is generated. */
export function Playground({ project, service }: { project: string; service: string }) {
  const keyFor = usePlaygroundKey(project, service);
  const prompts = usePrompts(project);
  const [system, setSystem] = useState("");
  const [message, setMessage] = useState("");
  const [answer, setAnswer] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const send = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    setAnswer("");
    try {
      const key = await keyFor();
      const messages = [
        ...(system ? [{ role: "system", content: system }] : []),
        { role: "user", content: message },
      ];
      const res = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: service, messages, stream: true, max_tokens: 64 }),
      });
      if (!res.ok) {
        const body = (await res.json().catch(() => ({}))) as { error?: { message?: string } };
        throw new Error(body.error?.message ?? `the gateway answered ${res.status}`);
      }
      await readStream(res, (t) => setAnswer((a) => a + t));
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="playground" onSubmit={send}>
      <label>
        System prompt from the registry{" "}
        <select
          onChange={(e) =>
            setSystem(templateOf(prompts.find((p) => p.metadata.name === e.target.value) ?? ({} as Prompt)))
          }
          defaultValue=""
        >
          <option value="">none</option>
          {prompts.map((p) => (
            <option key={p.metadata.name} value={p.metadata.name}>
              {p.metadata.name}
            </option>
          ))}
        </select>
      </label>
      <label>
        System prompt
        <textarea rows={2} value={system} onChange={(e) => setSystem(e.target.value)} />
      </label>
      <label>
        Message
        <textarea rows={3} value={message} onChange={(e) => setMessage(e.target.value)} required />
      </label>
      <button type="submit" disabled={busy}>
        {busy ? "Streaming…" : "Send"}
      </button>
      {error && <p role="alert">{error}</p>}
      <output className="answer" aria-live="polite" aria-label="Answer">
        {answer}
      </output>
    </form>
  );
}

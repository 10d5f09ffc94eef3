import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { parse, stringify } from "yaml";
import { CliError } from "./errors.js";

export interface Context {
  name: string;
  url: string;
  token: string;
  /** Project used when -p is not given. */
  project?: string;
}

export interface CliConfig {
  currentContext?: string;
  contexts: Context[];
}

export function configPath(): string {
  return process.env.LOOM_CONFIG ?? join(homedir(), ".loom", "config.yaml");
}

export function readConfig(file = configPath()): CliConfig {
  if (!existsSync(file)) return { contexts: [] };
  let raw: unknown;
  try {
    raw = parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new CliError(
      `cannot read ${file}: ${(err as Error).message}; fix or delete it, then run loom up again`,
    );
  }
  const cfg = (raw ?? {}) as Partial<CliConfig>;
  return { currentContext: cfg.currentContext, contexts: Array.isArray(cfg.contexts) ? cfg.contexts : [] };
}

/** Adds or replaces a context and makes it current. The file holds a token: mode 0600. */
export function saveContext(ctx: Context, file = configPath()): void {
  const cfg = readConfig(file);
  cfg.contexts = [...cfg.contexts.filter((c) => c.name !== ctx.name), ctx];
  cfg.currentContext = ctx.name;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, stringify(cfg), { mode: 0o600 });
  chmodSync(file, 0o600);
}

/**
 * The token in LOOM_TOKEN_FILE, if set: how a workload gets its own credential (a file in its
 * private HOME, never an env var, which other processes of the user can read in /proc).
 */
function tokenFromFile(): string | undefined {
  const file = process.env.LOOM_TOKEN_FILE;
  if (!file) return undefined;
  try {
    return readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new CliError(`cannot read LOOM_TOKEN_FILE ${file}: ${(err as Error).message}`);
  }
}

/** Where the CLI talks to: LOOM_URL and LOOM_TOKEN (or LOOM_TOKEN_FILE) win over the current context. */
export function resolveContext(contextName?: string): Context {
  const cfg = readConfig();
  const name = contextName ?? process.env.LOOM_CONTEXT ?? cfg.currentContext;
  const ctx = cfg.contexts.find((c) => c.name === name);
  if (contextName && !ctx) throw new CliError(`no context "${contextName}" in ${configPath()}`);
  const url = process.env.LOOM_URL ?? ctx?.url;
  const token = process.env.LOOM_TOKEN ?? tokenFromFile() ?? ctx?.token;
  if (!url)
    throw new CliError(
      `no Loom server configured: run 'loom up' (it writes ${configPath()}) or set LOOM_URL and LOOM_TOKEN`,
    );
  return { name: ctx?.name ?? "env", url: url.replace(/\/$/, ""), token: token ?? "", project: ctx?.project };
}

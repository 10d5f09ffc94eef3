import type { ApiClient } from "./client.js";

/** The options every command sees (`loom --context X get ...`). */
export interface GlobalOpts {
  context?: string;
  kubeconfig?: string;
  kubeContext?: string;
}

/** What commands call on Loom's API: {@link ApiClient}, or a fake in tests. */
export type Api = Pick<ApiClient, "request" | "stream"> & Partial<Pick<ApiClient, "tunnel">>;

/** Loom's API for this invocation and the project used when -p is not given. */
export interface Connection {
  api: Api;
  defaultProject: string;
}

/** Where a command writes: process.stdout/stderr, or a buffer in tests. */
export interface Output {
  write(chunk: string | Uint8Array): unknown;
}

/** What each command's registration gets from the program that holds it. */
export interface CliDeps {
  /** Connects lazily: a command that fails before talking to Loom needs no context. */
  client(): Connection;
  /** The global options, read when the command runs (they are parsed before it). */
  globals(): GlobalOpts;
  stdout: Output;
  stderr: Output;
}

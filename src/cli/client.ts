import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import type { Socket } from "node:net";
import { Readable } from "node:stream";
import type { StatusBody } from "../server/errors.js";
import type { Context } from "./config.js";
import { CliError } from "./errors.js";

/** An API error with the server's Status body. */
export class ApiError extends CliError {
  constructor(
    readonly status: number,
    readonly body: Partial<StatusBody>,
  ) {
    super(ApiError.format(status, body));
  }

  get reason(): string | undefined {
    return this.body.reason;
  }

  private static format(status: number, body: Partial<StatusBody>): string {
    const causes = body.details?.causes ?? [];
    if (causes.length > 0)
      return causes.map((c) => (c.field ? `${c.field}: ${c.message}` : c.message)).join("\n");
    if (status === 401) return `unauthorized: ${body.message ?? "the token was rejected"}`;
    return body.message ?? `the server answered ${status}`;
  }
}

/** A thin HTTP client for Loom's REST API (fetch, JSON in and out). */
export class ApiClient {
  constructor(private readonly ctx: Context) {}

  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    contentType = "application/json",
  ): Promise<T> {
    const res = await this.fetch(path, {
      method,
      headers: body === undefined ? {} : { "content-type": contentType },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const parsed = text ? safeJson(text) : undefined;
    if (!res.ok) throw new ApiError(res.status, (parsed as Partial<StatusBody>) ?? { message: text });
    return parsed as T;
  }

  /** A streaming response (logs, watches; a POST for the gateway's streamed completions). */
  async stream(path: string, body?: unknown): Promise<Readable> {
    const res = await this.fetch(
      path,
      body === undefined
        ? { method: "GET" }
        : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) },
    );
    if (!res.ok) {
      const text = await res.text();
      const parsed = safeJson(text) as Partial<StatusBody> & { error?: { message?: string } };
      // The gateway answers in OpenAI's error format.
      throw new ApiError(
        res.status,
        parsed?.error?.message ? { message: parsed.error.message } : (parsed ?? { message: text }),
      );
    }
    // The response's headers ride along (loom logs: which replica the output is from).
    const stream = res.body
      ? Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>)
      : Readable.from([]);
    return Object.assign(stream, { headers: res.headers });
  }

  /**
   * An HTTP upgrade to `protocol` (port-forward): the raw connection once the server answers
   * 101, or the server's refusal as an ApiError.
   */
  tunnel(path: string, protocol: string): Promise<Socket> {
    const url = new URL(`${this.ctx.url}${path}`);
    const headers: Record<string, string> = { connection: "Upgrade", upgrade: protocol };
    if (this.ctx.token) headers.authorization = `Bearer ${this.ctx.token}`;
    const request = url.protocol === "https:" ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = request(url, { method: "GET", headers, agent: false });
      req.on("upgrade", (_res, socket, head) => {
        if (head.length) socket.unshift(head);
        resolve(socket);
      });
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          reject(
            new ApiError(res.statusCode ?? 0, (safeJson(text) as Partial<StatusBody>) ?? { message: text }),
          );
        });
      });
      req.on("error", (err: NodeJS.ErrnoException) =>
        reject(
          new CliError(
            `cannot reach Loom at ${this.ctx.url} (${err.code ?? err.message}): is 'loom up' running? (or set LOOM_URL)`,
          ),
        ),
      );
      req.end();
    });
  }

  private async fetch(path: string, init: RequestInit): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.ctx.token) headers.set("authorization", `Bearer ${this.ctx.token}`);
    try {
      return await fetch(`${this.ctx.url}${path}`, { ...init, headers });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      throw new CliError(
        `cannot reach Loom at ${this.ctx.url} (${cause?.code ?? (err as Error).message}): is 'loom up' running? (or set LOOM_URL)`,
      );
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { message: text.trim() };
  }
}

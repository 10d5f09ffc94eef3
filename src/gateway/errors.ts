import { LoomError } from "../api/errors.js";
import type { GatewayResponse } from "./h1.js";

/**
 * Errors the inference gateway answers with. OpenAI's clients (the Python SDK, LangChain, curl
 * scripts) read `{"error":{"message","type","param","code"}}`, so the gateway speaks that shape
 * rather than Loom's Kubernetes-style Status; the SDKs also honour Retry-After on 429 and 503.
 */

/** OpenAI's error `type` values (plus `timeout_error`, which its SDK raises client-side). */
export type OpenAIErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "rate_limit_error"
  | "server_error"
  | "timeout_error";

export interface OpenAIErrorBody {
  error: { message: string; type: OpenAIErrorType; param: string | null; code: string | null };
}

export class GatewayError extends LoomError {
  constructor(
    httpStatus: number,
    readonly type: OpenAIErrorType,
    code: string,
    message: string,
    readonly options: { param?: string; retryAfterSeconds?: number } = {},
  ) {
    super(code, httpStatus, message);
  }

  /** The body OpenAI's clients parse. */
  body(): OpenAIErrorBody {
    return {
      error: { message: this.message, type: this.type, param: this.options.param ?? null, code: this.code },
    };
  }
}

export const badRequest = (message: string, param?: string) =>
  new GatewayError(400, "invalid_request_error", "invalid_request", message, { param });

export const bodyTooLarge = (limitBytes: number) =>
  new GatewayError(
    413,
    "invalid_request_error",
    "request_too_large",
    `the request body is larger than ${Math.round(limitBytes / 1024 / 1024)} MB; send a smaller request`,
  );

/** OpenAI's own wording, so clients that match on it keep working. */
export const unknownModel = (model: string) =>
  new GatewayError(
    404,
    "invalid_request_error",
    "model_not_found",
    `The model \`${model}\` does not exist or you do not have access to it. List served models with GET /v1/models.`,
    { param: "model" },
  );

export const missingKey = () =>
  new GatewayError(
    401,
    "authentication_error",
    "missing_api_key",
    "no API key was given: send it as 'Authorization: Bearer <key>' (create one with `loom apikey create NAME -p PROJECT`)",
  );

export const invalidKey = () =>
  new GatewayError(
    401,
    "authentication_error",
    "invalid_api_key",
    "the API key is not valid: it may have expired or been revoked; create a new one with `loom apikey create NAME -p PROJECT`",
  );

export const keyNotAllowed = (model: string, project: string) =>
  new GatewayError(
    403,
    "permission_error",
    "model_not_allowed",
    `this API key may not use model '${model}' of project '${project}': ask a project admin for access or use a key of that project`,
    { param: "model" },
  );

export const rateLimited = (message: string, retryAfterSeconds = 1) =>
  new GatewayError(429, "rate_limit_error", "rate_limit_exceeded", message, { retryAfterSeconds });

/** The activator's queue for a scaled-to-zero or starting revision is full. */
export const queueFull = (what: string, capacity: number, retryAfterSeconds = 5) =>
  new GatewayError(
    503,
    "server_error",
    "model_overloaded",
    `${what} is starting and already has ${capacity} requests waiting for it; retry in a few seconds`,
    { retryAfterSeconds },
  );

/** No replica became ready while the request was held. */
export const activationTimeout = (what: string, waitedMs: number, retryAfterSeconds = 10) =>
  new GatewayError(
    503,
    "server_error",
    "model_not_ready",
    `${what} has no ready replica after ${Math.round(waitedMs / 1000)} s (it may still be loading); retry later, or check its status with \`loom get inferenceservice\``,
    { retryAfterSeconds },
  );

export const noReplicas = (what: string, retryAfterSeconds = 5) =>
  new GatewayError(
    503,
    "server_error",
    "no_healthy_replica",
    `${what} has no healthy replica right now; retry in a few seconds`,
    { retryAfterSeconds },
  );

export const upstreamFailed = (what: string, detail: string) =>
  new GatewayError(
    502,
    "server_error",
    "upstream_error",
    `${what} failed to answer (${detail}); retry, and check the service's logs if it persists`,
  );

export const upstreamTimeout = (what: string, afterMs: number) =>
  new GatewayError(
    504,
    "timeout_error",
    "upstream_timeout",
    `${what} did not start answering within ${Math.round(afterMs / 1000)} s; retry, or stream the response (stream: true) for long generations`,
  );

/** The client went away (while held, or while sending its body); nothing more is sent. */
export class ClientGoneError extends Error {
  constructor(when = "while its request was held") {
    super(`the client disconnected ${when}`);
    this.name = "ClientGoneError";
  }
}

/** The gateway is shutting down or the revision went away while the request was held. */
export const unavailable = (message: string, retryAfterSeconds = 5) =>
  new GatewayError(503, "server_error", "service_unavailable", message, { retryAfterSeconds });

/**
 * Writes an error response; once headers have gone out the only honest signal left is to cut
 * the connection, so a half-sent stream is never mistaken for a complete one.
 */
export function sendGatewayError(res: GatewayResponse, err: GatewayError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (res.destroyed || res.writableEnded) return;
  const payload = JSON.stringify(err.body());
  const headers: Record<string, string | number> = {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(payload),
  };
  if (err.options.retryAfterSeconds !== undefined) headers["retry-after"] = err.options.retryAfterSeconds;
  res.writeHead(err.httpStatus, headers);
  res.end(payload);
}

import type { FastifyError, FastifyInstance, FastifyReply } from "fastify";
import { ForbiddenError, LoomError, UnauthorizedError, ValidationError } from "../api/errors.js";
import { GatewayError, invalidKey, missingKey } from "../gateway/errors.js";
import { MlflowError } from "../tracking/errors.js";

/** MLflow's error codes as the Status reasons Loom's own API uses (the Model kind reads the registry). */
const MLFLOW_REASONS: Record<string, string> = {
  RESOURCE_DOES_NOT_EXIST: "NotFound",
  RESOURCE_ALREADY_EXISTS: "AlreadyExists",
  INVALID_PARAMETER_VALUE: "Invalid",
  INVALID_STATE: "Conflict",
  PERMISSION_DENIED: "Forbidden",
};

/** The Kubernetes Status object, so kubectl-style clients read Loom's errors the same way. */
export interface StatusBody {
  kind: "Status";
  apiVersion: "v1";
  status: "Failure";
  message: string;
  reason: string;
  code: number;
  details?: { causes: { field: string; message: string }[] };
}

export function statusBody(
  code: number,
  reason: string,
  message: string,
  causes?: { field: string; message: string }[],
): StatusBody {
  const body: StatusBody = { kind: "Status", apiVersion: "v1", status: "Failure", message, reason, code };
  if (causes?.length) body.details = { causes };
  return body;
}

/** Any error on a /v1 route, as the OpenAI-format error its clients parse. */
export function toGatewayError(err: Error): GatewayError {
  if (err instanceof GatewayError) return err;
  if (err instanceof UnauthorizedError) return /missing/.test(err.message) ? missingKey() : invalidKey();
  if (err instanceof ForbiddenError)
    return new GatewayError(403, "permission_error", "forbidden", err.message);
  // Fastify's own 4xx (a body too large), and Loom's (a path refused as ambiguous, guard.ts).
  const status = err instanceof LoomError ? err.httpStatus : (err as FastifyError).statusCode;
  if (typeof status === "number" && status < 500)
    return new GatewayError(status, "invalid_request_error", "invalid_request", err.message);
  return new GatewayError(500, "server_error", "internal_error", "the gateway failed; retry");
}

function sendOpenAIError(reply: FastifyReply, err: Error) {
  const gatewayError = toGatewayError(err);
  return reply
    .code(gatewayError.httpStatus)
    .headers(
      gatewayError.options.retryAfterSeconds !== undefined
        ? { "retry-after": String(gatewayError.options.retryAfterSeconds) }
        : {},
    )
    .send(gatewayError.body());
}

function isGatewayPath(url: string): boolean {
  return url.startsWith("/v1/") || url.startsWith("/serving/");
}

/** The one place where errors become HTTP responses. */
export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | LoomError | Error, request, reply) => {
    // The gateway's routes answer as OpenAI does: its clients parse that shape, not Status. The
    // path as sent counts too: one refused as ambiguous (lib/paths.ts) was routed to "/".
    if (isGatewayPath(request.url) || isGatewayPath(request.originalUrl)) return sendOpenAIError(reply, err);
    if (err instanceof LoomError) {
      const causes =
        err instanceof ValidationError
          ? err.issues.map((i) => ({ field: i.path, message: i.message }))
          : undefined;
      return reply.code(err.httpStatus).send(statusBody(err.httpStatus, err.code, err.message, causes));
    }
    if (err instanceof MlflowError) {
      const reason = MLFLOW_REASONS[err.errorCode] ?? "InternalError";
      return reply.code(err.httpStatus).send(statusBody(err.httpStatus, reason, err.message));
    }
    const fe = err as FastifyError;
    if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500) {
      const message =
        fe.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE"
          ? `unsupported content type ${request.headers["content-type"] ?? "(none)"}: send application/json`
          : fe.message;
      const reason =
        fe.statusCode === 415
          ? "UnsupportedMediaType"
          : fe.statusCode === 413
            ? "RequestEntityTooLarge"
            : "BadRequest";
      return reply.code(fe.statusCode).send(statusBody(fe.statusCode, reason, message));
    }
    request.log.error({ err }, "unhandled error");
    return reply
      .code(500)
      .send(statusBody(500, "InternalError", "internal server error; the server log has the details"));
  });
  app.setNotFoundHandler((request, reply) =>
    reply
      .code(404)
      .send(
        statusBody(
          404,
          "NotFound",
          `no route for ${request.method} ${request.url.split("?")[0]}; see /openapi.json`,
        ),
      ),
  );
}

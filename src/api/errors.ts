/**
 * Domain errors. Every error a user can trigger is one of these: it carries a stable code, the HTTP
 * status it maps to (in exactly one place, server/errors.ts) and a message that says what to do.
 */
export class LoomError extends Error {
  constructor(
    readonly code: string,
    readonly httpStatus: number,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class NotFoundError extends LoomError {
  constructor(message: string) {
    super("NotFound", 404, message);
  }
}

export class AlreadyExistsError extends LoomError {
  constructor(message: string) {
    super("AlreadyExists", 409, message);
  }
}

/** A write carried a stale resourceVersion: the caller must re-read and retry. */
export class ConflictError extends LoomError {
  constructor(message: string) {
    super("Conflict", 409, message);
  }
}

/** One field-level problem, with the path a user can find in their manifest. */
export interface FieldIssue {
  path: string;
  message: string;
}

export class ValidationError extends LoomError {
  constructor(
    message: string,
    readonly issues: FieldIssue[] = [],
  ) {
    super("Invalid", 422, message, { causes: issues });
  }
}

export class BadRequestError extends LoomError {
  constructor(message: string) {
    super("BadRequest", 400, message);
  }
}

/** A watch asked to resume from a resourceVersion older than the retained history. */
export class ExpiredError extends LoomError {
  constructor(message: string) {
    super("Expired", 410, message);
  }
}

export class UnauthorizedError extends LoomError {
  constructor(message: string) {
    super("Unauthorized", 401, message);
  }
}

export class ForbiddenError extends LoomError {
  constructor(message: string) {
    super("Forbidden", 403, message);
  }
}

/**
 * An error in MLflow's JSON form: {"error_code", "message"}; the official client turns it into
 * an MlflowException with that code. HTTP status as MLflow's server answers it.
 */
export type MlflowErrorCode =
  | "RESOURCE_DOES_NOT_EXIST"
  | "RESOURCE_ALREADY_EXISTS"
  | "INVALID_PARAMETER_VALUE"
  | "INVALID_STATE"
  | "PERMISSION_DENIED"
  | "UNAUTHENTICATED"
  | "ENDPOINT_NOT_FOUND"
  | "NOT_IMPLEMENTED"
  | "INTERNAL_ERROR";

const STATUS: Record<MlflowErrorCode, number> = {
  RESOURCE_DOES_NOT_EXIST: 404,
  RESOURCE_ALREADY_EXISTS: 400,
  INVALID_PARAMETER_VALUE: 400,
  INVALID_STATE: 400,
  PERMISSION_DENIED: 403,
  UNAUTHENTICATED: 401,
  ENDPOINT_NOT_FOUND: 404,
  NOT_IMPLEMENTED: 501,
  INTERNAL_ERROR: 500,
};

export class MlflowError extends Error {
  readonly httpStatus: number;

  constructor(
    readonly errorCode: MlflowErrorCode,
    message: string,
  ) {
    super(message);
    this.httpStatus = STATUS[errorCode];
  }

  toJSON(): { error_code: string; message: string } {
    return { error_code: this.errorCode, message: this.message };
  }
}

export const notFound = (message: string) => new MlflowError("RESOURCE_DOES_NOT_EXIST", message);
export const invalidParameter = (message: string) => new MlflowError("INVALID_PARAMETER_VALUE", message);

// The server's errors carry a google.rpc.ErrorInfo (domain "kaireon", an
// UPPER_SNAKE reason) and, for bad input, a google.rpc.BadRequest, in
// grpc-status-details-bin; Connect decodes them into ConnectError.details.
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, type BadRequest, type ErrorInfo } from "./gen/google/rpc/error_details_pb.js";

export { Code, ConnectError };

/** The ErrorInfo of a failed call, if the server sent one. */
export function errorInfo(err: unknown): ErrorInfo | undefined {
  return ConnectError.from(err).findDetails(ErrorInfoSchema)[0];
}

/** The ErrorInfo reason (e.g. "LEGAL_HOLD", "RUN_NOT_FOUND"), or "" when none was sent. */
export function errorReason(err: unknown): string {
  return errorInfo(err)?.reason ?? "";
}

/** The field violations of an INVALID_ARGUMENT answer. */
export function fieldViolations(err: unknown): BadRequest["fieldViolations"] {
  return ConnectError.from(err).findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
}

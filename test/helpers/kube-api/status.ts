// SPDX-License-Identifier: Apache-2.0
// Kubernetes `Status` objects, the body of every error the API server returns (and of the ERROR
// events of a watch), with the reasons and messages the real server uses, so client code that
// reads `code`, `reason` or `message` sees what it would see against a cluster.
import { groupResource, type ApiResource, type JsonObject } from './resources.ts';

const REASONS: Readonly<Record<number, string>> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  409: 'Conflict',
  410: 'Expired',
  413: 'RequestEntityTooLarge',
  415: 'UnsupportedMediaType',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

export function reasonFor(code: number): string {
  return REASONS[code] ?? 'Unknown';
}

/** An API failure: the HTTP status and the Status body that goes with it. */
export class ApiError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly details: JsonObject | undefined;

  constructor(code: number, message: string, opts: { reason?: string; details?: JsonObject } = {}) {
    super(message);
    this.code = code;
    this.reason = opts.reason ?? reasonFor(code);
    this.details = opts.details;
  }

  toStatus(): JsonObject {
    return statusObject(this.code, this.message, this.reason, this.details);
  }
}

export function statusObject(
  code: number,
  message: string,
  reason = reasonFor(code),
  details?: JsonObject,
): JsonObject {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: code < 400 ? 'Success' : 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

function details(r: ApiResource, name: string): JsonObject {
  return { name, ...(r.group === '' ? {} : { group: r.group }), kind: r.plural };
}

export function notFound(r: ApiResource, name: string): ApiError {
  return new ApiError(404, `${groupResource(r)} "${name}" not found`, { details: details(r, name) });
}

export function alreadyExists(r: ApiResource, name: string): ApiError {
  return new ApiError(409, `${groupResource(r)} "${name}" already exists`, {
    reason: 'AlreadyExists',
    details: details(r, name),
  });
}

export function conflict(r: ApiResource, name: string, why: string): ApiError {
  return new ApiError(409, `Operation cannot be fulfilled on ${groupResource(r)} "${name}": ${why}`, {
    details: details(r, name),
  });
}

export function invalid(r: ApiResource, name: string, field: string, problem: string): ApiError {
  return new ApiError(422, `${r.kind} "${name}" is invalid: ${field}: ${problem}`, {
    details: { ...details(r, name), causes: [{ reason: 'FieldValueInvalid', message: problem, field }] },
  });
}

export function badRequest(message: string): ApiError {
  return new ApiError(400, message);
}

// SPDX-License-Identifier: Apache-2.0
// What the CNI specification fixes for every plugin (containernetworking/cni SPEC.md, version
// 1.0.0): the versions we accept, the well-known error codes, and the two documents a plugin
// prints besides a result — the VERSION answer and the error object
// `{"cniVersion", "code", "msg", "details"}` that goes to stdout with a non-zero exit.
//
// Our plugin only passes the previous result through, so the result formats of 0.3.0–1.0.0
// (which differ only in fields we do not read) are all accepted. 1.1.0 is not: it adds the GC
// and STATUS verbs, which we do not implement.
import { MeshError } from '../../../src/shared/errors.ts';

export const SUPPORTED_CNI_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const;
export type CniVersion = (typeof SUPPORTED_CNI_VERSIONS)[number];
/** The version we speak when the caller's is unknown (VERSION answers, early errors). */
export const LATEST_CNI_VERSION: CniVersion = '1.0.0';

export function isSupportedCniVersion(v: string): v is CniVersion {
  return (SUPPORTED_CNI_VERSIONS as readonly string[]).includes(v);
}

/** CHECK exists from 0.4.0 on (SPEC.md, "CHECK: Check container's networking is as expected"). */
export function versionHasCheck(v: CniVersion): boolean {
  return v !== '0.3.0' && v !== '0.3.1';
}

/** Well-known error codes (SPEC.md, "Error"); 100+ are ours. */
export const CNI_CODES = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodingFailure: 6,
  invalidNetworkConfig: 7,
  tryAgainLater: 11,
  /** The agent refused the event as malformed (400): plugin and agent disagree on the protocol. */
  agentRejected: 100,
  /** The agent tried and failed to enrol the pod (500). */
  agentFailed: 101,
  /** The agent answered something the plugin cannot interpret. */
  agentBadReply: 102,
  /** CNI_NETNS does not exist or is not a network namespace: the sandbox is gone. */
  netnsNotFound: 103,
  /** CHECK: the agent reports the pod's redirection is not in place. */
  checkFailed: 104,
  /** A bug in the plugin (an exception it did not expect). */
  internal: 999,
} as const;

export type CniErrorCode = (typeof CNI_CODES)[keyof typeof CNI_CODES];

/** Our error codes (MeshError.code), one per CNI code above. */
const MESH_CODES: Readonly<Record<CniErrorCode, string>> = {
  1: 'CNI_ERR_INCOMPATIBLE_VERSION',
  2: 'CNI_ERR_UNSUPPORTED_FIELD',
  3: 'CNI_ERR_UNKNOWN_CONTAINER',
  4: 'CNI_ERR_INVALID_ENV',
  5: 'CNI_ERR_IO',
  6: 'CNI_ERR_DECODE',
  7: 'CNI_ERR_INVALID_CONFIG',
  11: 'CNI_ERR_TRY_AGAIN_LATER',
  100: 'CNI_ERR_AGENT_REJECTED',
  101: 'CNI_ERR_AGENT_FAILED',
  102: 'CNI_ERR_AGENT_BAD_REPLY',
  103: 'CNI_ERR_NETNS_NOT_FOUND',
  104: 'CNI_ERR_CHECK_FAILED',
  999: 'CNI_ERR_INTERNAL',
};

/**
 * A failure the plugin reports to the runtime as a CNI error object. `message` becomes `msg`
 * (short, says what failed), `details` the longer explanation of what to check.
 */
export class CniPluginError extends MeshError {
  readonly cniCode: CniErrorCode;
  readonly details: string | undefined;

  constructor(cniCode: CniErrorCode, message: string, details?: string, options?: { cause?: unknown }) {
    super(MESH_CODES[cniCode], message, options);
    this.cniCode = cniCode;
    this.details = details;
  }
}

/** The CNI error object (SPEC.md "Error"). */
export interface CniErrorObject {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

/** The error object for `err`; anything that is not a CniPluginError is a plugin bug (999). */
export function cniErrorObject(err: unknown, cniVersion: string): CniErrorObject {
  if (err instanceof CniPluginError) {
    return {
      cniVersion,
      code: err.cniCode,
      msg: err.message,
      ...(err.details !== undefined && { details: err.details }),
    };
  }
  const msg = err instanceof Error ? err.message : String(err);
  return { cniVersion, code: CNI_CODES.internal, msg: `internal error in the ambient CNI plugin: ${msg}` };
}

/** The VERSION answer (SPEC.md "VERSION: probe plugin version support"). */
export function versionAnswer(): { cniVersion: string; supportedVersions: string[] } {
  return { cniVersion: LATEST_CNI_VERSION, supportedVersions: [...SUPPORTED_CNI_VERSIONS] };
}

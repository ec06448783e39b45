// SPDX-License-Identifier: Apache-2.0
// Error catalogue for the in-pod redirection rules (spec ambient-protocols.md §2.2–2.4).
//
// Codes:
//   CNI_ERR_INVALID_OPTIONS    an option has the wrong type, an unknown key, or an impossible value
//   CNI_ERR_INVALID_INTERFACE  a reroute-virtual-interfaces entry is not a usable interface name
//   CNI_ERR_INVALID_MARK       a packet/connection mark or mask cannot express the spec's semantics
//   CNI_ERR_INVALID_PORT       a ztunnel port is out of range or collides with another one
//   CNI_ERR_INVALID_ADDRESS    a probe SNAT address is not a usable IPv4/IPv6 unicast address
//   CNI_ERR_INVALID_ROUTE      the policy-routing table or rule priority collides with a kernel one
//   CNI_ERR_NETNS_NOT_FOUND    the pod netns path does not exist (sandbox gone: not retryable)
//   CNI_ERR_BACKEND_UNAVAILABLE a required binary (iptables-*-restore, nft, ip, nsenter) is missing
//   CNI_ERR_APPLY              a command failed while applying; the netns was rolled back
//   CNI_ERR_REMOVE             a command failed while removing our rules
//   CNI_ERR_INSPECT            the current rules could not be read
import { MeshError } from '../../../src/shared/errors.ts';

export const REDIRECT_ERROR_CODES = [
  'CNI_ERR_INVALID_OPTIONS',
  'CNI_ERR_INVALID_INTERFACE',
  'CNI_ERR_INVALID_MARK',
  'CNI_ERR_INVALID_PORT',
  'CNI_ERR_INVALID_ADDRESS',
  'CNI_ERR_INVALID_ROUTE',
  'CNI_ERR_NETNS_NOT_FOUND',
  'CNI_ERR_BACKEND_UNAVAILABLE',
  'CNI_ERR_APPLY',
  'CNI_ERR_REMOVE',
  'CNI_ERR_INSPECT',
] as const;

export type RedirectErrorCode = (typeof REDIRECT_ERROR_CODES)[number];

/** An error from rendering, applying, inspecting or removing the in-pod redirection rules. */
export class RedirectError extends MeshError {
  declare readonly code: RedirectErrorCode;

  // Not useless: it narrows `code` to this catalogue, so a typo in a code fails to compile.
  // eslint-disable-next-line @typescript-eslint/no-useless-constructor
  constructor(code: RedirectErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

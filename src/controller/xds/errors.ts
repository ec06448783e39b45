// SPDX-License-Identifier: Apache-2.0
// Error catalogue of the controller's xDS server (CTL_ERR_XDS_*). These are programmer or
// operator errors raised synchronously (a bad resource handed to the store, a malformed node
// id); protocol problems with a connected client end that client's stream with a gRPC status
// instead and never throw out of the server.
import { MeshError } from '../../shared/errors.ts';

export const XdsErrorCode = {
  /** A resource handed to XdsResourceStore.apply is unusable (unknown type, bad name). */
  RESOURCE: 'CTL_ERR_XDS_RESOURCE',
  /** An xDS node id is not `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`. */
  NODE_ID: 'CTL_ERR_XDS_NODE_ID',
  /** Invalid server options. */
  OPTIONS: 'CTL_ERR_XDS_OPTIONS',
} as const;
export type XdsErrorCode = (typeof XdsErrorCode)[keyof typeof XdsErrorCode];

/** `code` is one of XdsErrorCode. */
export class XdsError extends MeshError {}

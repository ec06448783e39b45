// SPDX-License-Identifier: Apache-2.0
// Why the CA service refused a CreateCertificate call: a stable reason (counted and logged), the
// gRPC status it maps to, and a message for the caller. Callers that authenticated get the
// specific reason (what to fix in their request); nothing about the controller's internals —
// the model, the TokenReview answer, the CA's key material — is ever part of a public message.
import { status } from '@grpc/grpc-js';
import { MeshError } from '../../shared/errors.ts';

export const REFUSAL_REASONS = [
  /** The caller could not be authenticated (no, malformed or bad token; review unavailable). */
  'unauthenticated',
  /** The request is malformed apart from its CSR (metadata types, missing ImpersonatedIdentity, CertSigner). */
  'malformed-request',
  /** The CSR is malformed, badly signed, has no or several SANs, or its SAN is not the requested identity. */
  'bad-csr',
  /** validity_duration is above the CA's maximum (refused, never clamped). */
  'ttl-too-long',
  /** The identity is in another trust domain than the CA's. */
  'trust-domain',
  /** A node agent asked for an identity no pod on its node has (impersonation check). */
  'wrong-node',
  /** A workload asked for another identity than its own, or tried to impersonate. */
  'not-own-identity',
  /** The controller failed (a bug or the CA store); nothing the caller can fix. */
  'internal',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

const GRPC_STATUS: Readonly<Record<RefusalReason, status>> = {
  unauthenticated: status.UNAUTHENTICATED,
  'malformed-request': status.INVALID_ARGUMENT,
  'bad-csr': status.INVALID_ARGUMENT,
  'ttl-too-long': status.INVALID_ARGUMENT,
  'trust-domain': status.PERMISSION_DENIED,
  'wrong-node': status.PERMISSION_DENIED,
  'not-own-identity': status.PERMISSION_DENIED,
  internal: status.INTERNAL,
};

export class CaRefusal extends MeshError {
  declare readonly code: 'CTL_ERR_CA_REFUSED';
  readonly reason: RefusalReason;
  /** What the caller is told. */
  readonly publicMessage: string;

  /** `message` goes to the controller's log; `publicMessage` (default: `message`) to the caller. */
  constructor(reason: RefusalReason, message: string, options?: { publicMessage?: string; cause?: unknown }) {
    super('CTL_ERR_CA_REFUSED', message, options);
    this.reason = reason;
    this.publicMessage = options?.publicMessage ?? message;
  }

  get grpcStatus(): status {
    return GRPC_STATUS[this.reason];
  }
}

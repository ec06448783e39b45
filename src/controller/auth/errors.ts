// SPDX-License-Identifier: Apache-2.0
// Why a caller of the controller's gRPC services was not authenticated. Every refusal carries a
// stable reason (for counters and logs), a detailed message for the controller's log (it may
// name the TokenReview error or the pod the token is bound to), and a short public message that
// is safe to send back to an unauthenticated peer: it says what to fix, never what the
// controller saw inside.
import { MeshError } from '../../shared/errors.ts';

export const AUTH_FAILURES = [
  /** No `authorization` metadata at all. */
  'no-token',
  /** `authorization` present but not exactly one `Bearer <token>` with a well-formed token. */
  'malformed-header',
  /** The token is not valid (TokenReview says not authenticated, or no local node has it). */
  'bad-token',
  /** The token is valid but not for the audience the CA requires (istio-ca). */
  'wrong-audience',
  /** The `clusterid` metadata names a cluster this controller does not serve. */
  'wrong-cluster',
  /** The token is valid but does not belong to a Kubernetes ServiceAccount. */
  'not-service-account',
  /** A node agent's token is not bound to a pod, so its node cannot be known. */
  'unbound-token',
  /** The pod a node agent's token is bound to is unknown, or has another UID (deleted and recreated). */
  'unknown-pod',
  /** The token could not be checked now (TokenReview API unreachable, failing or overloaded). */
  'review-unavailable',
] as const;
export type AuthFailure = (typeof AUTH_FAILURES)[number];

const PUBLIC_MESSAGES: Readonly<Record<AuthFailure, string>> = {
  'no-token':
    "no credentials: send the metadata 'authorization: Bearer <token>' (a projected ServiceAccount token with audience istio-ca)",
  'malformed-header': "malformed authorization metadata: expected exactly one 'Bearer <token>'",
  'bad-token': 'the token was not accepted',
  'wrong-audience': 'the token is not valid for the audience istio-ca',
  'wrong-cluster': 'the clusterid metadata names a cluster this control plane does not serve',
  'not-service-account': 'the token does not belong to a Kubernetes ServiceAccount',
  'unbound-token':
    'a node agent must authenticate with a pod-bound projected ServiceAccount token (audience istio-ca)',
  'unknown-pod': 'the pod the token is bound to is not known to the control plane, or was deleted',
  'review-unavailable': 'the token could not be verified at this time; retry later',
};

export class AuthenticationError extends MeshError {
  declare readonly code: 'CTL_ERR_UNAUTHENTICATED';
  readonly reason: AuthFailure;

  /** `message` is for the controller's log; the peer only ever sees `publicMessage`. */
  constructor(reason: AuthFailure, message: string, options?: { cause?: unknown }) {
    super('CTL_ERR_UNAUTHENTICATED', message, options);
    this.reason = reason;
  }

  /** A message safe to return to the (unauthenticated) peer. */
  get publicMessage(): string {
    return PUBLIC_MESSAGES[this.reason];
  }
}

// SPDX-License-Identifier: Apache-2.0
// Who is calling the controller's gRPC services (WDS and the CA). Every call carries
// `authorization: Bearer <token>` (spec ambient-protocols §3.1, §4); an Authenticator turns it
// into a Caller or refuses. In a cluster the token is a projected ServiceAccount token checked
// with a TokenReview; in local mode it is a per-node credential the local runtime generated.
import type { Metadata } from '@grpc/grpc-js';

/** An authenticated ztunnel: it may obtain identities only for pods scheduled on `node`. */
export interface NodeCaller {
  readonly kind: 'node';
  readonly node: string;
  /** For logs: how the caller was identified (`system:serviceaccount:istio-system:ztunnel`, `local node token`). */
  readonly subject: string;
}

/** An authenticated workload (a waypoint, for example): it may obtain only its own identity. */
export interface WorkloadCaller {
  readonly kind: 'workload';
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly subject: string;
}

export type Caller = NodeCaller | WorkloadCaller;

/** Raised (or returned as a rejection) when a caller cannot be authenticated; gRPC UNAUTHENTICATED. */
export interface Authenticator {
  /** Resolves to the caller, or rejects with an error whose message says why (no token, bad token…). */
  authenticate(metadata: Metadata): Promise<Caller>;
}

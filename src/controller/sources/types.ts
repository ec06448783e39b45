// SPDX-License-Identifier: Apache-2.0
// The seam between where the controller's input comes from (Kubernetes informers, or a directory
// of manifests in local mode) and the model that turns it into WDS resources. A source emits
// whole objects as the Kubernetes API would return them; the model never learns which source
// it runs on beyond start-up.
import type { EventEmitter } from 'eventemitter3';
import type {
  KubernetesObject,
  V1EndpointSlice,
  V1Namespace,
  V1Pod,
  V1Service,
} from '@kubernetes/client-node';

/** The kinds the controller watches (issue 5 §1). */
export const WATCHED_KINDS = [
  'Namespace',
  'Pod',
  'Service',
  'EndpointSlice',
  'AuthorizationPolicy',
  'PeerAuthentication',
  'Gateway',
] as const;
export type WatchedKind = (typeof WATCHED_KINDS)[number];

/** A custom resource as the API returns it (security.istio.io, gateway.networking.k8s.io). */
export interface CustomObject extends KubernetesObject {
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

export interface KindObjects {
  Namespace: V1Namespace;
  Pod: V1Pod;
  Service: V1Service;
  EndpointSlice: V1EndpointSlice;
  AuthorizationPolicy: CustomObject;
  PeerAuthentication: CustomObject;
  Gateway: CustomObject;
}

/** One change. `object` of a delete is the last state the source saw. */
export type SourceEvent = {
  [K in WatchedKind]:
    | { readonly type: 'upsert'; readonly kind: K; readonly object: KindObjects[K] }
    | { readonly type: 'delete'; readonly kind: K; readonly object: KindObjects[K] };
}[WatchedKind];

export interface SourceEvents {
  /** Changes, in order. The first batch after start() is the initial list of every kind. */
  change: (events: readonly SourceEvent[]) => void;
  /** A problem the source recovers from by itself (watch error, relist, a bad file). */
  warning: (message: string) => void;
}

export interface Source extends EventEmitter<SourceEvents> {
  /** Starts watching; resolves once every kind has been listed (informers synced). */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** `namespace/name`, or `name` for cluster-scoped objects: the key every index uses. */
export function objectKey(o: KubernetesObject): string {
  const ns = o.metadata?.namespace;
  const name = o.metadata?.name ?? '';
  return ns === undefined || ns === '' ? name : `${ns}/${name}`;
}

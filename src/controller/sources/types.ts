// SPDX-License-Identifier: Apache-2.0
// The seam between where the controller's input comes from (Kubernetes informers, or a directory
// of manifests in local mode) and the model that turns it into WDS resources. A source emits
// whole objects as the Kubernetes API would return them; the model never learns which source
// it runs on beyond start-up.
//
// Objects are the API's JSON: apiVersion and kind always set, metadata.uid, resourceVersion and
// creationTimestamp filled. Timestamps (creationTimestamp, deletionTimestamp, status times) are
// RFC 3339 strings, although client-node's model types below declare them as Date.
import type { EventEmitter } from 'eventemitter3';
import type {
  KubernetesObject,
  V1EndpointSlice,
  V1Namespace,
  V1Pod,
  V1Service,
} from '@kubernetes/client-node';
import { RESOURCE_TYPES, type ResourceType } from '../../shared/kube/resources.ts';

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

/**
 * The API type of each watched kind: Gateway is gateway.networking.k8s.io/v1, AuthorizationPolicy
 * and PeerAuthentication security.istio.io/v1 (v1beta1 is also accepted in manifests).
 */
export const WATCHED_RESOURCES: { readonly [K in WatchedKind]: ResourceType } = {
  Namespace: RESOURCE_TYPES.Namespace,
  Pod: RESOURCE_TYPES.Pod,
  Service: RESOURCE_TYPES.Service,
  EndpointSlice: RESOURCE_TYPES.EndpointSlice,
  AuthorizationPolicy: RESOURCE_TYPES.AuthorizationPolicy,
  PeerAuthentication: RESOURCE_TYPES.PeerAuthentication,
  Gateway: RESOURCE_TYPES.Gateway,
};

export function isWatchedKind(kind: string | undefined): kind is WatchedKind {
  return (WATCHED_KINDS as readonly (string | undefined)[]).includes(kind);
}

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

/**
 * Builds an event for an object already known to be of `kind` (a source's informer or manifest
 * reader only yields objects of the types it was asked for).
 */
export function sourceEvent(
  type: SourceEvent['type'],
  kind: WatchedKind,
  object: KubernetesObject,
): SourceEvent {
  return { type, kind, object } as SourceEvent;
}

export interface SourceEvents {
  /**
   * Changes, in order. The first batch is the initial list of every kind (possibly empty),
   * emitted by start() just before it resolves; later batches coalesce bursts of changes.
   */
  change: (events: readonly SourceEvent[]) => void;
  /** A problem the source recovers from by itself (watch error, relist, a bad file). */
  warning: (message: string) => void;
}

export interface Source extends EventEmitter<SourceEvents> {
  /** Starts watching; resolves once every kind has been listed and the initial batch emitted. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** `namespace/name`, or `name` for cluster-scoped objects: the key every index uses. */
export function objectKey(o: KubernetesObject): string {
  const ns = o.metadata?.namespace;
  const name = o.metadata?.name ?? '';
  return ns === undefined || ns === '' ? name : `${ns}/${name}`;
}

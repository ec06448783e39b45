// SPDX-License-Identifier: Apache-2.0
// Builders for the Kubernetes objects the model consumes, and source events around them, so the
// model's tests read as tables of cluster states.
import type {
  V1ContainerPort,
  V1EndpointSlice,
  V1Namespace,
  V1OwnerReference,
  V1Pod,
  V1Service,
  V1ServicePort,
} from '@kubernetes/client-node';
import type {
  CustomObject,
  KindObjects,
  SourceEvent,
  WatchedKind,
} from '../../../../src/controller/sources/types.ts';

export function upsert<K extends WatchedKind>(kind: K, object: KindObjects[K]): SourceEvent {
  return { type: 'upsert', kind, object } as SourceEvent;
}

export function remove<K extends WatchedKind>(kind: K, object: KindObjects[K]): SourceEvent {
  return { type: 'delete', kind, object } as SourceEvent;
}

export function namespace(
  name: string,
  opts: { labels?: Record<string, string>; annotations?: Record<string, string> } = {},
): V1Namespace {
  return { metadata: { name, labels: opts.labels, annotations: opts.annotations } };
}

export interface PodOptions {
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** One IP, several, or none (not yet assigned). Default 10.0.0.1. */
  ips?: string[];
  node?: string;
  serviceAccount?: string;
  ready?: boolean;
  phase?: string;
  hostNetwork?: boolean;
  uid?: string;
  ports?: V1ContainerPort[];
  generateName?: string;
  owner?: V1OwnerReference;
  deleting?: boolean;
}

export function pod(ns: string, name: string, o: PodOptions = {}): V1Pod {
  const ips = o.ips ?? ['10.0.0.1'];
  return {
    metadata: {
      namespace: ns,
      name,
      uid: o.uid ?? `uid-${ns}-${name}`,
      labels: o.labels,
      annotations: o.annotations,
      generateName: o.generateName,
      ownerReferences: o.owner === undefined ? undefined : [o.owner],
      deletionTimestamp: o.deleting === true ? new Date('2026-01-01T00:00:00Z') : undefined,
    },
    spec: {
      containers: [{ name: 'app', ports: o.ports }],
      nodeName: o.node ?? 'node-1',
      serviceAccountName: o.serviceAccount,
      hostNetwork: o.hostNetwork,
    },
    status: {
      phase: o.phase ?? 'Running',
      podIPs: ips.map((ip) => ({ ip })),
      podIP: ips[0],
      conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
    },
  };
}

export interface ServiceOptions {
  selector?: Record<string, string>;
  ports?: V1ServicePort[];
  clusterIPs?: string[];
  type?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  ipFamilies?: string[];
  internalTrafficPolicy?: string;
  trafficDistribution?: string;
  publishNotReadyAddresses?: boolean;
}

export function service(ns: string, name: string, o: ServiceOptions = {}): V1Service {
  const clusterIPs = o.clusterIPs ?? ['10.96.0.10'];
  return {
    metadata: { namespace: ns, name, annotations: o.annotations, labels: o.labels },
    spec: {
      type: o.type,
      selector: o.selector,
      ports: o.ports ?? [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      clusterIP: clusterIPs[0],
      clusterIPs,
      ipFamilies: o.ipFamilies,
      internalTrafficPolicy: o.internalTrafficPolicy,
      trafficDistribution: o.trafficDistribution,
      publishNotReadyAddresses: o.publishNotReadyAddresses,
    },
  };
}

export interface SliceEndpoint {
  addresses: string[];
  pod?: string;
  podUid?: string;
  ready?: boolean;
}

export function endpointSlice(
  ns: string,
  name: string,
  serviceName: string,
  endpoints: SliceEndpoint[],
  ports: { name?: string; port: number; protocol?: string }[] = [{ name: 'http', port: 8080 }],
): V1EndpointSlice {
  return {
    metadata: { namespace: ns, name, labels: { 'kubernetes.io/service-name': serviceName } },
    addressType: 'IPv4',
    endpoints: endpoints.map((e) => ({
      addresses: e.addresses,
      conditions: e.ready === undefined ? undefined : { ready: e.ready },
      targetRef: e.pod === undefined ? undefined : { kind: 'Pod', namespace: ns, name: e.pod, uid: e.podUid },
    })),
    ports: ports.map((p) => ({ name: p.name, port: p.port, protocol: p.protocol ?? 'TCP' })),
  };
}

export function authorizationPolicy(
  ns: string,
  name: string,
  spec: unknown,
  annotations?: Record<string, string>,
): CustomObject {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { namespace: ns, name, annotations },
    spec: spec as Record<string, unknown>,
  };
}

export function peerAuthentication(ns: string, name: string, spec: unknown, created?: string): CustomObject {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    // A raw watch delivers timestamps as strings; the model accepts both.
    metadata: { namespace: ns, name, creationTimestamp: created as unknown as Date },
    spec: spec as Record<string, unknown>,
  };
}

// SPDX-License-Identifier: Apache-2.0
// The resource types the Kubernetes API stand-in serves, written out independently of
// src/shared/kube/resources.ts on purpose: the stand-in plays the API server, so a wrong plural
// or group in the code under test must fail against it rather than agree with it.
//
// Adding a type is one entry here (a Deployment for the waypoint work, say); every verb, watch,
// selector and discovery document follows from it.

export type JsonObject = Record<string, unknown>;

export interface ApiResource {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly listKind: string;
  readonly plural: string;
  readonly singular: string;
  readonly namespaced: boolean;
  /**
   * Built-in types: the real API server leaves apiVersion and kind out of the items of a list
   * (custom resources keep them); clients must cope, so the stand-in does the same.
   */
  readonly builtin: boolean;
  /** Has a `/status` subresource: the main resource ignores status changes, `/status` only takes status. */
  readonly statusSubresource: boolean;
  /** Field selectors beyond metadata.name and metadata.namespace, with how to read each field. */
  readonly fields: Readonly<Record<string, (o: JsonObject) => unknown>>;
}

function at(o: JsonObject, ...path: string[]): unknown {
  let cur: unknown = o;
  for (const p of path) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as JsonObject)[p];
  }
  return cur;
}

function core(
  kind: string,
  plural: string,
  namespaced: boolean,
  extra: Partial<Pick<ApiResource, 'statusSubresource' | 'fields'>> = {},
): ApiResource {
  return {
    group: '',
    version: 'v1',
    kind,
    listKind: `${kind}List`,
    plural,
    singular: kind.toLowerCase(),
    namespaced,
    builtin: true,
    statusSubresource: extra.statusSubresource ?? false,
    fields: extra.fields ?? {},
  };
}

function custom(group: string, kind: string, plural: string): ApiResource {
  return {
    group,
    version: 'v1',
    kind,
    listKind: `${kind}List`,
    plural,
    singular: kind.toLowerCase(),
    namespaced: true,
    builtin: false,
    statusSubresource: true,
    fields: {},
  };
}

export const API_RESOURCES: readonly ApiResource[] = [
  core('Namespace', 'namespaces', false, {
    statusSubresource: true,
    fields: { 'status.phase': (o) => at(o, 'status', 'phase') },
  }),
  core('Pod', 'pods', true, {
    statusSubresource: true,
    fields: {
      'spec.nodeName': (o) => at(o, 'spec', 'nodeName'),
      'spec.serviceAccountName': (o) => at(o, 'spec', 'serviceAccountName'),
      'status.phase': (o) => at(o, 'status', 'phase'),
      'status.podIP': (o) => at(o, 'status', 'podIP'),
    },
  }),
  core('Service', 'services', true, {
    statusSubresource: true,
    fields: {
      'spec.clusterIP': (o) => at(o, 'spec', 'clusterIP'),
      'spec.type': (o) => at(o, 'spec', 'type'),
    },
  }),
  core('ServiceAccount', 'serviceaccounts', true),
  {
    ...core('EndpointSlice', 'endpointslices', true),
    group: 'discovery.k8s.io',
  },
  custom('security.istio.io', 'AuthorizationPolicy', 'authorizationpolicies'),
  custom('security.istio.io', 'PeerAuthentication', 'peerauthentications'),
  custom('gateway.networking.k8s.io', 'Gateway', 'gateways'),
];

/** `v1`, `discovery.k8s.io/v1`. */
export function groupVersion(r: { group: string; version: string }): string {
  return r.group === '' ? r.version : `${r.group}/${r.version}`;
}

/** `pods`, `authorizationpolicies.security.istio.io`: how the API server names a resource in messages. */
export function groupResource(r: ApiResource): string {
  return r.group === '' ? r.plural : `${r.plural}.${r.group}`;
}

export function findResource(group: string, version: string, plural: string): ApiResource | undefined {
  return API_RESOURCES.find((r) => r.group === group && r.version === version && r.plural === plural);
}

export function resourceForKind(apiVersion: string, kind: string): ApiResource | undefined {
  return API_RESOURCES.find((r) => groupVersion(r) === apiVersion && r.kind === kind);
}

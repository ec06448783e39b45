// SPDX-License-Identifier: Apache-2.0
// The Kubernetes resource types the mesh reads, described once: API group and version, plural
// (the URL segment), scope, and which name rule the API server applies to metadata.name. The
// informers build their URLs from it and the manifest reader validates documents against it, so
// a watched cluster and a local manifest directory agree on every kind.
//
// Name rules are the API server's (k8s.io/apimachinery validation): most objects are DNS-1123
// subdomains; Namespaces are DNS-1123 labels; Services are RFC 1035 labels (they become DNS names
// and must start with a letter).

export type NameRule = 'dns1123-subdomain' | 'dns1123-label' | 'rfc1035-label';

export interface ResourceType {
  /** API group; '' for the core group (`/api/v1`). */
  readonly group: string;
  /** The version this code reads and writes (objects carry `apiVersion: <group>/<version>`). */
  readonly version: string;
  readonly kind: string;
  /** The resource name in URLs (`pods`, `authorizationpolicies`). */
  readonly plural: string;
  readonly namespaced: boolean;
  readonly nameRule: NameRule;
  /**
   * Other versions accepted in manifests and read as `version` (their schemas are the same for
   * the fields we use, as the API server's conversion makes them for the Istio and Gateway CRDs).
   */
  readonly alsoAccepted: readonly string[];
}

function core(kind: string, plural: string, namespaced: boolean, nameRule: NameRule): ResourceType {
  return { group: '', version: 'v1', kind, plural, namespaced, nameRule, alsoAccepted: [] };
}

export const RESOURCE_TYPES = {
  Namespace: core('Namespace', 'namespaces', false, 'dns1123-label'),
  Pod: core('Pod', 'pods', true, 'dns1123-subdomain'),
  Service: core('Service', 'services', true, 'rfc1035-label'),
  EndpointSlice: {
    group: 'discovery.k8s.io',
    version: 'v1',
    kind: 'EndpointSlice',
    plural: 'endpointslices',
    namespaced: true,
    nameRule: 'dns1123-subdomain',
    alsoAccepted: [],
  },
  AuthorizationPolicy: {
    group: 'security.istio.io',
    version: 'v1',
    kind: 'AuthorizationPolicy',
    plural: 'authorizationpolicies',
    namespaced: true,
    nameRule: 'dns1123-subdomain',
    alsoAccepted: ['v1beta1'],
  },
  PeerAuthentication: {
    group: 'security.istio.io',
    version: 'v1',
    kind: 'PeerAuthentication',
    plural: 'peerauthentications',
    namespaced: true,
    nameRule: 'dns1123-subdomain',
    alsoAccepted: ['v1beta1'],
  },
  Gateway: {
    group: 'gateway.networking.k8s.io',
    version: 'v1',
    kind: 'Gateway',
    plural: 'gateways',
    namespaced: true,
    nameRule: 'dns1123-subdomain',
    alsoAccepted: ['v1beta1'],
  },
} as const satisfies Record<string, ResourceType>;

export type KnownKind = keyof typeof RESOURCE_TYPES;

/** `v1` for the core group, `<group>/<version>` otherwise. */
export function apiVersionOf(r: ResourceType, version: string = r.version): string {
  return r.group === '' ? version : `${r.group}/${version}`;
}

/** Every apiVersion string a manifest of this type may carry. */
export function acceptedApiVersions(r: ResourceType): string[] {
  return [r.version, ...r.alsoAccepted].map((v) => apiVersionOf(r, v));
}

/** The collection URL path across all namespaces: `/api/v1/pods`, `/apis/<group>/<version>/<plural>`. */
export function collectionPath(r: ResourceType): string {
  const prefix = r.group === '' ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
  return `${prefix}/${r.plural}`;
}

/** `pods`, `authorizationpolicies.security.istio.io`: the name kubectl and the API server use in messages. */
export function qualifiedName(r: ResourceType): string {
  return r.group === '' ? r.plural : `${r.plural}.${r.group}`;
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const RFC1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

/** Why `name` breaks `rule`, or undefined when it is valid. */
export function nameProblem(name: string, rule: NameRule): string | undefined {
  switch (rule) {
    case 'dns1123-label':
      if (name.length > 63) return 'must be no more than 63 characters';
      return DNS1123_LABEL.test(name)
        ? undefined
        : "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit";
    case 'rfc1035-label':
      if (name.length > 63) return 'must be no more than 63 characters';
      return RFC1035_LABEL.test(name)
        ? undefined
        : "must be an RFC 1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit";
    case 'dns1123-subdomain':
      if (name.length > 253) return 'must be no more than 253 characters';
      return name.split('.').every((part) => DNS1123_LABEL.test(part))
        ? undefined
        : "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit";
  }
}

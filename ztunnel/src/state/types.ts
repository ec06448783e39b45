// SPDX-License-Identifier: Apache-2.0
// ztunnel's internal model of WDS resources: `istio.workload.Workload` / `Service` (spec
// ambient-protocols §3.5) and `istio.security.Authorization` (§3.6).
//
// The shapes are field-compatible with the protos: the camelCase names of the proto fields,
// enums as their proto value names, addresses as canonical IP strings (see ./ip.ts) instead of
// raw bytes, and defaults filled in (trust domain `cluster.local` and service account `default`
// when istiod elides them). Both the WDS client and the static config produce these, and
// /config_dump prints them as they are.
import type { IstioIdentity } from '../../../src/shared/identity/spiffe.ts';

export const TunnelProtocol = { NONE: 'NONE', HBONE: 'HBONE' } as const;
export type TunnelProtocol = (typeof TunnelProtocol)[keyof typeof TunnelProtocol];

export const WorkloadStatus = { HEALTHY: 'HEALTHY', UNHEALTHY: 'UNHEALTHY' } as const;
export type WorkloadStatus = (typeof WorkloadStatus)[keyof typeof WorkloadStatus];

export const WorkloadType = { DEPLOYMENT: 'DEPLOYMENT', CRONJOB: 'CRONJOB', POD: 'POD', JOB: 'JOB' } as const;
export type WorkloadType = (typeof WorkloadType)[keyof typeof WorkloadType];

/** STANDARD, or HOST_NETWORK: the workload shares its node's IP and must not be looked up by IP. */
export const NetworkMode = { STANDARD: 'STANDARD', HOST_NETWORK: 'HOST_NETWORK' } as const;
export type NetworkMode = (typeof NetworkMode)[keyof typeof NetworkMode];

export const AppProtocol = {
  UNKNOWN: 'UNKNOWN',
  HTTP11: 'HTTP11',
  HTTP2: 'HTTP2',
  GRPC: 'GRPC',
  TCP: 'TCP',
  TLS: 'TLS',
} as const;
export type AppProtocol = (typeof AppProtocol)[keyof typeof AppProtocol];

export const IpFamilies = {
  AUTOMATIC: 'AUTOMATIC',
  IPV4_ONLY: 'IPV4_ONLY',
  IPV6_ONLY: 'IPV6_ONLY',
  DUAL: 'DUAL',
} as const;
export type IpFamilies = (typeof IpFamilies)[keyof typeof IpFamilies];

export const LoadBalancingScope = {
  UNSPECIFIED_SCOPE: 'UNSPECIFIED_SCOPE',
  REGION: 'REGION',
  ZONE: 'ZONE',
  SUBZONE: 'SUBZONE',
  NODE: 'NODE',
  CLUSTER: 'CLUSTER',
  NETWORK: 'NETWORK',
} as const;
export type LoadBalancingScope = (typeof LoadBalancingScope)[keyof typeof LoadBalancingScope];

export const LoadBalancingMode = {
  UNSPECIFIED_MODE: 'UNSPECIFIED_MODE',
  STRICT: 'STRICT',
  FAILOVER: 'FAILOVER',
  PASSTHROUGH: 'PASSTHROUGH',
} as const;
export type LoadBalancingMode = (typeof LoadBalancingMode)[keyof typeof LoadBalancingMode];

export const HealthPolicy = { ONLY_HEALTHY: 'ONLY_HEALTHY', ALLOW_ALL: 'ALLOW_ALL' } as const;
export type HealthPolicy = (typeof HealthPolicy)[keyof typeof HealthPolicy];

export const ApplicationTunnelProtocol = { NONE: 'NONE', PROXY: 'PROXY' } as const;
export type ApplicationTunnelProtocol =
  (typeof ApplicationTunnelProtocol)[keyof typeof ApplicationTunnelProtocol];

export const ServiceVisibility = { PUBLIC: 'PUBLIC', NAMESPACE: 'NAMESPACE' } as const;
export type ServiceVisibility = (typeof ServiceVisibility)[keyof typeof ServiceVisibility];

export const PolicyScope = {
  GLOBAL: 'GLOBAL',
  NAMESPACE: 'NAMESPACE',
  WORKLOAD_SELECTOR: 'WORKLOAD_SELECTOR',
} as const;
export type PolicyScope = (typeof PolicyScope)[keyof typeof PolicyScope];

export const PolicyAction = { ALLOW: 'ALLOW', DENY: 'DENY' } as const;
export type PolicyAction = (typeof PolicyAction)[keyof typeof PolicyAction];

/** Default trust domain, elided on the wire (spec §1.2, §3.5 field 6). */
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
/** Default service account, elided on the wire (spec §3.5 field 7). */
export const DEFAULT_SERVICE_ACCOUNT = 'default';
/** The HBONE port; ztunnel always dials the local constant, not a value from WDS (spec §1.6 step 6). */
export const DEFAULT_HBONE_MTLS_PORT = 15008;

// ---- istio.workload ----

/** `NetworkAddress`: an address on a named network ('' = the default network). */
export interface NetworkAddress {
  network: string;
  address: string;
}

export interface NamespacedHostname {
  namespace: string;
  hostname: string;
}

/**
 * `GatewayAddress`: where a waypoint or network gateway is. The proto's oneof `destination` is
 * either a Service hostname (resolved to one of its endpoints) or a direct network address.
 */
export type GatewayAddress =
  | { hostname: NamespacedHostname; hboneMtlsPort: number }
  | { address: NetworkAddress; hboneMtlsPort: number };

export interface Port {
  servicePort: number;
  /** 0 when the Service names its target port; then the per-workload mapping decides. */
  targetPort: number;
  appProtocol?: AppProtocol;
}

export interface Locality {
  region: string;
  zone: string;
  subzone: string;
}

export interface LoadBalancing {
  routingPreference: LoadBalancingScope[];
  mode: LoadBalancingMode;
  healthPolicy: HealthPolicy;
}

export interface ApplicationTunnel {
  protocol: ApplicationTunnelProtocol;
  /** 0 = keep the original port. */
  port: number;
}

export interface Workload {
  /** Primary key. */
  uid: string;
  name: string;
  namespace: string;
  /** Canonical IP strings (./ip.ts); empty when the workload is addressed by `hostname`. */
  addresses: string[];
  hostname: string;
  /** '' = the default network. */
  network: string;
  tunnelProtocol: TunnelProtocol;
  trustDomain: string;
  serviceAccount: string;
  waypoint?: GatewayAddress | undefined;
  networkGateway?: GatewayAddress | undefined;
  node: string;
  canonicalName: string;
  canonicalRevision: string;
  workloadType: WorkloadType;
  workloadName: string;
  nativeTunnel: boolean;
  /** Keys `ns/name` of selector-scoped and synthetic policies that apply (spec §3.5 field 16). */
  authorizationPolicies: string[];
  status: WorkloadStatus;
  clusterId: string;
  /** Per-service port mapping, keyed `namespace/hostname` (spec §3.5 field 22). */
  services: Record<string, Port[]>;
  applicationTunnel?: ApplicationTunnel | undefined;
  locality?: Locality | undefined;
  networkMode: NetworkMode;
  /** Load-balancing weight; default 1 (spec §3.5 field 27). */
  capacity: number;
}

export interface WeightedWaypoint {
  destination: GatewayAddress;
  weight: number;
}

export interface Service {
  name: string;
  namespace: string;
  /** FQDN, e.g. `name.ns.svc.cluster.local`. */
  hostname: string;
  /** VIPs; empty for headless services. */
  addresses: NetworkAddress[];
  ports: Port[];
  subjectAltNames: string[];
  waypoint?: GatewayAddress | undefined;
  loadBalancing?: LoadBalancing | undefined;
  ipFamilies: IpFamilies;
  canonical: boolean;
  ingressUseWaypoint: boolean;
  weightedWaypoints: WeightedWaypoint[];
  visibility: ServiceVisibility;
}

// ---- istio.security ----

/** `StringMatch` oneof: exactly one key. All four are literal string operations, never regex. */
export type StringMatch = { exact: string } | { prefix: string } | { suffix: string } | { presence: true };

/** `Address`: an address plus prefix length (a CIDR). */
export interface CidrAddress {
  address: string;
  length: number;
}

export interface ServiceAccountMatch {
  namespace: string;
  serviceAccount: string;
}

/** One Match: every field family must pass; positive lists are any-of, `not*` lists none-of. */
export interface Match {
  namespaces: StringMatch[];
  notNamespaces: StringMatch[];
  principals: StringMatch[];
  notPrincipals: StringMatch[];
  sourceIps: CidrAddress[];
  notSourceIps: CidrAddress[];
  destinationIps: CidrAddress[];
  notDestinationIps: CidrAddress[];
  destinationPorts: number[];
  notDestinationPorts: number[];
  serviceAccounts: ServiceAccountMatch[];
  notServiceAccounts: ServiceAccountMatch[];
  /**
   * Set when WDS sent a condition this ztunnel cannot evaluate (a field newer than it, or an
   * extension; checklist C.52). It is ANDed with the rest and fails closed: true in a DENY,
   * false in an ALLOW.
   */
  unknown?: true;
}

/** `Clause` (Go: Rules): its matches are ORed. `unknown` as on {@link Match}. */
export interface Clause {
  matches: Match[];
  unknown?: true;
}

/** `Rule` (Go: Group): its clauses are ANDed. `unknown` as on {@link Match}. */
export interface Rule {
  clauses: Clause[];
  unknown?: true;
}

export interface Authorization {
  name: string;
  namespace: string;
  scope: PolicyScope;
  action: PolicyAction;
  /** Rules are ORed; zero rules never matches (spec §3.8). */
  rules: Rule[];
  dryRun: boolean;
}

/** The verified peer identity used by RBAC (spec §1.2: `spiffe://<td>/ns/<ns>/sa/<sa>`). */
export type { IstioIdentity } from '../../../src/shared/identity/spiffe.ts';

/** Everything the store holds; what static config produces and /config_dump prints. */
export interface StateSnapshot {
  workloads: Workload[];
  services: Service[];
  policies: Authorization[];
}

// ---- helpers ----

export function identityOf(w: Workload): IstioIdentity {
  return { trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount };
}

/** `spiffe://<td>/ns/<ns>/sa/<sa>`. */
export function identityToString(id: IstioIdentity): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** The SPIFFE identity a workload's certificate carries. */
export function workloadIdentity(w: Workload): string {
  return identityToString(identityOf(w));
}

export function serviceKey(s: { namespace: string; hostname: string }): string {
  return `${s.namespace}/${s.hostname}`;
}

export function policyKey(p: { namespace: string; name: string }): string {
  return `${p.namespace}/${p.name}`;
}

/** An empty Match (no field set); the building block for policies in code and tests. */
export function emptyMatch(): Match {
  return {
    namespaces: [],
    notNamespaces: [],
    principals: [],
    notPrincipals: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
    serviceAccounts: [],
    notServiceAccounts: [],
  };
}

/** A Workload with the proto defaults filled in; `fields` must name at least uid, name, namespace. */
export function newWorkload(
  fields: Partial<Workload> & Pick<Workload, 'uid' | 'name' | 'namespace'>,
): Workload {
  return {
    addresses: [],
    hostname: '',
    network: '',
    tunnelProtocol: 'NONE',
    trustDomain: DEFAULT_TRUST_DOMAIN,
    serviceAccount: DEFAULT_SERVICE_ACCOUNT,
    node: '',
    canonicalName: '',
    canonicalRevision: '',
    workloadType: 'POD',
    workloadName: '',
    nativeTunnel: false,
    authorizationPolicies: [],
    status: 'HEALTHY',
    clusterId: '',
    services: {},
    networkMode: 'STANDARD',
    capacity: 1,
    ...fields,
  };
}

/** A Service with the proto defaults filled in. */
export function newService(
  fields: Partial<Service> & Pick<Service, 'name' | 'namespace' | 'hostname'>,
): Service {
  return {
    addresses: [],
    ports: [],
    subjectAltNames: [],
    ipFamilies: 'AUTOMATIC',
    canonical: false,
    ingressUseWaypoint: false,
    weightedWaypoints: [],
    visibility: 'PUBLIC',
    ...fields,
  };
}

/**
 * An Authorization with no rules and dryRun off. Scope and action must be given: the proto's
 * zero values (GLOBAL, ALLOW) are too consequential to be an accidental default.
 */
export function newAuthorization(
  fields: Partial<Authorization> & Pick<Authorization, 'name' | 'namespace' | 'scope' | 'action'>,
): Authorization {
  return { rules: [], dryRun: false, ...fields };
}

// SPDX-License-Identifier: Apache-2.0
// WDS protobuf → ztunnel state (spec ambient-protocols §3.5, §3.6 → ../state/types.ts): raw
// addresses to canonical IP strings, enum numbers to their names, the defaults istiod elides
// (trust domain `cluster.local`, service account `default`, HBONE port 15008, capacity 1).
//
// Each resource is validated on its own and either converts completely or is refused with the
// list of what is wrong (`workload.addresses[0]: got 5 bytes, expected 4 (IPv4) or 16 (IPv6)`),
// which the client NACKs while it applies the rest of the response (spec §3.3, checklist E.66).
//
// The checks are the static config's (../config/static-config.ts; the text formats of both are
// ../state/formats.ts) wherever they say whether the resource can be represented and used: the
// resource name matches its content (uid, `namespace/hostname`, `namespace/name`), identity
// fields (namespace, service account, trust domain) have Kubernetes/SPIFFE form, enum values are
// known (LEGACY_ISTIO_MTLS included: we cannot send it), IPs are 4 or 16 bytes and not
// IPv4-mapped, ports and prefix lengths are in range, a oneof is set, a workload has addresses or
// a hostname but not both, service ports are unique. Left out on purpose: checks across resources (they arrive independently; a
// referenced policy that has not arrived is denied by RBAC, checklist C.45; pod IP reuse is
// handled by the store, B.37) and the lints of matcher text the static config applies to
// hand-written YAML (principal spelled with `spiffe://`, `*`): a refused policy is absent, and
// an absent policy is never safer than one whose matcher cannot match.
//
// Extensions (Workload/Service/Authorization `extensions`) are not interpreted. A Match's
// extensions, like any Rule, Clause or Match field newer than this ztunnel, are conditions it
// cannot evaluate: they are marked `unknown` and fail closed (./unknown-conditions.ts, C.52).
import type * as pbAuth from '../../../src/shared/gen/authorization.ts';
import type * as pb from '../../../src/shared/gen/workload.ts';
import { NO_UNKNOWN_CONDITIONS, type UnknownConditions } from './unknown-conditions.ts';
import {
  HOSTNAME_TEXT,
  MAX_UID_LENGTH,
  NAMESPACE_NAME,
  OBJECT_NAME,
  PLAIN_TEXT,
  POLICY_NAME_TEXT,
  SERVICE_ACCOUNT_NAME,
  SERVICE_KEY,
  TRUST_DOMAIN_NAME,
  hasFormat,
  type TextFormat,
} from '../state/formats.ts';
import { formatIp, isIpv4Mapped, type IpAddr } from '../../../src/shared/net/ip.ts';
import type {
  ApplicationTunnel,
  Authorization,
  CidrAddress,
  GatewayAddress,
  LoadBalancing,
  Match,
  NetworkAddress,
  Port,
  Service,
  ServiceAccountMatch,
  StringMatch,
  WeightedWaypoint,
  Workload,
} from '../state/types.ts';
import {
  AppProtocol,
  ApplicationTunnelProtocol,
  DEFAULT_HBONE_MTLS_PORT,
  DEFAULT_SERVICE_ACCOUNT,
  DEFAULT_TRUST_DOMAIN,
  HealthPolicy,
  IpFamilies,
  LoadBalancingMode,
  LoadBalancingScope,
  NetworkMode,
  PolicyAction,
  PolicyScope,
  ServiceVisibility,
  TunnelProtocol,
  WorkloadStatus,
  WorkloadType,
  policyKey,
  serviceKey,
} from '../state/types.ts';

/** An expected failure is a value: the resource's problems, joined for the NACK. */
export type Converted<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

export type AddressResource =
  | { readonly kind: 'workload'; readonly workload: Workload }
  | { readonly kind: 'service'; readonly service: Service };

/** At most this many problems are spelled out per resource; the rest are counted. */
const MAX_LISTED_PROBLEMS = 5;

/**
 * Problems found in one resource, each `path: what is wrong`. No text here contains "; ": that
 * separates resources in a NACK (spec §3.3).
 */
class Problems {
  readonly list: string[] = [];

  add(path: string, text: string): void {
    this.list.push(`${path}: ${text}`);
  }

  reason(): string {
    const listed = this.list.slice(0, MAX_LISTED_PROBLEMS).join(', ');
    const more = this.list.length - MAX_LISTED_PROBLEMS;
    return more > 0 ? `${listed} (and ${more} more)` : listed;
  }
}

function field(path: string, key: string): string {
  return `${path}.${key}`;
}

function item(path: string, i: number | string): string {
  return typeof i === 'number' ? `${path}[${i}]` : `${path}[${JSON.stringify(i)}]`;
}

function describe(v: string): string {
  const s = JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function text(p: Problems, path: string, v: string, f: TextFormat): string {
  if (!hasFormat(v, f)) p.add(path, `got ${describe(v)}, expected ${f.expected}`);
  return v;
}

/** A proto3 enum number → its name; an unknown number is a problem (a newer controller). */
function enumName<E extends string>(
  p: Problems,
  path: string,
  v: number,
  names: readonly E[],
  what: string,
): E {
  const name = names[v];
  if (name !== undefined) return name;
  p.add(path, `unknown ${what} value ${v} (expected one of ${names.map((n, i) => `${n}=${i}`).join(', ')})`);
  return names[0] as E;
}

function intIn(p: Problems, path: string, v: number, min: number, max: number): number {
  if (v < min || v > max) p.add(path, `got ${v}, expected an integer in [${min}, ${max}]`);
  return v;
}

/** 4 or 16 raw bytes → canonical IP text; IPv4-mapped IPv6 is refused as ambiguous. */
function ipBytes(p: Problems, path: string, bytes: Uint8Array): string {
  if (bytes.length !== 4 && bytes.length !== 16) {
    p.add(path, `got ${bytes.length} bytes, expected 4 (IPv4) or 16 (IPv6)`);
    return '';
  }
  const a: IpAddr = { family: bytes.length === 4 ? 4 : 6, bytes: Uint8Array.from(bytes) };
  if (isIpv4Mapped(a)) {
    p.add(path, `got IPv4-mapped IPv6 ${formatIp(a)}, expected a plain IPv4 address`);
    return '';
  }
  return formatIp(a);
}

// ---- enums, by proto number (spec §3.5, §3.6) ----

const TUNNEL_PROTOCOLS = [TunnelProtocol.NONE, TunnelProtocol.HBONE] as const;
const LEGACY_ISTIO_MTLS = 2;
const WORKLOAD_STATUSES = [WorkloadStatus.HEALTHY, WorkloadStatus.UNHEALTHY] as const;
const WORKLOAD_TYPES = [
  WorkloadType.DEPLOYMENT,
  WorkloadType.CRONJOB,
  WorkloadType.POD,
  WorkloadType.JOB,
] as const;
const NETWORK_MODES = [NetworkMode.STANDARD, NetworkMode.HOST_NETWORK] as const;
const IP_FAMILIES = [
  IpFamilies.AUTOMATIC,
  IpFamilies.IPV4_ONLY,
  IpFamilies.IPV6_ONLY,
  IpFamilies.DUAL,
] as const;
const APP_PROTOCOLS = [
  AppProtocol.UNKNOWN,
  AppProtocol.HTTP11,
  AppProtocol.HTTP2,
  AppProtocol.GRPC,
  AppProtocol.TCP,
  AppProtocol.TLS,
] as const;
const LB_SCOPES = [
  LoadBalancingScope.UNSPECIFIED_SCOPE,
  LoadBalancingScope.REGION,
  LoadBalancingScope.ZONE,
  LoadBalancingScope.SUBZONE,
  LoadBalancingScope.NODE,
  LoadBalancingScope.CLUSTER,
  LoadBalancingScope.NETWORK,
] as const;
const LB_MODES = [
  LoadBalancingMode.UNSPECIFIED_MODE,
  LoadBalancingMode.STRICT,
  LoadBalancingMode.FAILOVER,
  LoadBalancingMode.PASSTHROUGH,
] as const;
const HEALTH_POLICIES = [HealthPolicy.ONLY_HEALTHY, HealthPolicy.ALLOW_ALL] as const;
const APP_TUNNEL_PROTOCOLS = [ApplicationTunnelProtocol.NONE, ApplicationTunnelProtocol.PROXY] as const;
const VISIBILITIES = [ServiceVisibility.PUBLIC, ServiceVisibility.NAMESPACE] as const;
const SCOPES = [PolicyScope.GLOBAL, PolicyScope.NAMESPACE, PolicyScope.WORKLOAD_SELECTOR] as const;
const ACTIONS = [PolicyAction.ALLOW, PolicyAction.DENY] as const;

// ---- istio.workload ----

function networkAddress(p: Problems, path: string, a: pb.NetworkAddress): NetworkAddress {
  // A CIDR "VIP" (length, new in the spec) has no representation in our state; a host length is fine.
  if (a.length !== undefined && a.length !== a.address.length * 8) {
    p.add(field(path, 'length'), `got prefix length ${a.length}, but CIDR addresses are not supported here`);
  }
  return {
    network: text(p, field(path, 'network'), a.network, PLAIN_TEXT),
    address: ipBytes(p, field(path, 'address'), a.address),
  };
}

function gatewayAddress(p: Problems, path: string, g: pb.GatewayAddress): GatewayAddress {
  const hboneMtlsPort =
    g.hboneMtlsPort === 0
      ? DEFAULT_HBONE_MTLS_PORT
      : intIn(p, field(path, 'hboneMtlsPort'), g.hboneMtlsPort, 1, 65535);
  const d = g.destination;
  if (d === undefined) {
    p.add(path, 'expected exactly one of hostname or address');
    return { address: { network: '', address: '' }, hboneMtlsPort };
  }
  if (d.$case === 'address')
    return { address: networkAddress(p, field(path, 'address'), d.value), hboneMtlsPort };
  const hp = field(path, 'hostname');
  return {
    hostname: {
      namespace: text(p, field(hp, 'namespace'), d.value.namespace, NAMESPACE_NAME),
      hostname: text(p, field(hp, 'hostname'), d.value.hostname, HOSTNAME_TEXT),
    },
    hboneMtlsPort,
  };
}

function port(p: Problems, path: string, x: pb.Port): Port {
  const appProtocol = enumName(p, field(path, 'appProtocol'), x.appProtocol, APP_PROTOCOLS, 'AppProtocol');
  return {
    servicePort: intIn(p, field(path, 'servicePort'), x.servicePort, 1, 65535),
    targetPort: intIn(p, field(path, 'targetPort'), x.targetPort, 0, 65535),
    // UNKNOWN is the proto default; the static config leaves the key out for it.
    ...(appProtocol !== AppProtocol.UNKNOWN && { appProtocol }),
  };
}

function ports(p: Problems, path: string, list: readonly pb.Port[]): Port[] {
  const seen = new Set<number>();
  return list.map((x, i) => {
    const out = port(p, item(path, i), x);
    if (seen.has(out.servicePort)) {
      p.add(field(item(path, i), 'servicePort'), `duplicate service port ${out.servicePort}`);
    }
    seen.add(out.servicePort);
    return out;
  });
}

function workload(p: Problems, w: pb.Workload): Workload {
  const path = 'workload';
  const f = (k: string): string => field(path, k);
  if (w.uid === '' || w.uid.length > MAX_UID_LENGTH) {
    p.add(f('uid'), `got ${describe(w.uid)}, expected a uid of 1 to ${MAX_UID_LENGTH} characters`);
  }
  const addresses = w.addresses.map((a, i) => ipBytes(p, item(f('addresses'), i), a));
  const hostname = w.hostname === '' ? '' : text(p, f('hostname'), w.hostname, HOSTNAME_TEXT);
  if (addresses.length > 0 && hostname !== '') {
    p.add(path, 'has both addresses and hostname, expected one or the other (spec §3.5)');
  }
  if (addresses.length === 0 && hostname === '') {
    p.add(path, 'has neither addresses nor hostname, expected at least one address');
  }
  if (w.tunnelProtocol === LEGACY_ISTIO_MTLS) {
    p.add(f('tunnelProtocol'), 'LEGACY_ISTIO_MTLS is not supported (expected NONE or HBONE)');
  }
  const services: Record<string, Port[]> = {};
  for (const [key, list] of w.services) {
    const sp = item(f('services'), key);
    if (!SERVICE_KEY.test(key)) p.add(sp, 'expected a service key "namespace/hostname"');
    // defineProperty: a "__proto__" key stays a key (and was refused above).
    Object.defineProperty(services, key, {
      value: ports(p, sp, list.ports),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  const appTunnel = w.applicationTunnel;
  const applicationTunnel: ApplicationTunnel | undefined =
    appTunnel === undefined
      ? undefined
      : {
          protocol: enumName(
            p,
            field(f('applicationTunnel'), 'protocol'),
            appTunnel.protocol,
            APP_TUNNEL_PROTOCOLS,
            'ApplicationTunnel.Protocol',
          ),
          port: intIn(p, field(f('applicationTunnel'), 'port'), appTunnel.port, 0, 65535),
        };
  return {
    uid: w.uid,
    name: text(p, f('name'), w.name, OBJECT_NAME),
    namespace: text(p, f('namespace'), w.namespace, NAMESPACE_NAME),
    addresses,
    hostname,
    network: text(p, f('network'), w.network, PLAIN_TEXT),
    tunnelProtocol:
      w.tunnelProtocol === LEGACY_ISTIO_MTLS
        ? TunnelProtocol.NONE
        : enumName(p, f('tunnelProtocol'), w.tunnelProtocol, TUNNEL_PROTOCOLS, 'TunnelProtocol'),
    trustDomain:
      w.trustDomain === ''
        ? DEFAULT_TRUST_DOMAIN
        : text(p, f('trustDomain'), w.trustDomain, TRUST_DOMAIN_NAME),
    serviceAccount:
      w.serviceAccount === ''
        ? DEFAULT_SERVICE_ACCOUNT
        : text(p, f('serviceAccount'), w.serviceAccount, SERVICE_ACCOUNT_NAME),
    ...(w.waypoint !== undefined && { waypoint: gatewayAddress(p, f('waypoint'), w.waypoint) }),
    ...(w.networkGateway !== undefined && {
      networkGateway: gatewayAddress(p, f('networkGateway'), w.networkGateway),
    }),
    node: text(p, f('node'), w.node, PLAIN_TEXT),
    canonicalName: w.canonicalName,
    canonicalRevision: w.canonicalRevision,
    workloadType: enumName(p, f('workloadType'), w.workloadType, WORKLOAD_TYPES, 'WorkloadType'),
    workloadName: w.workloadName,
    nativeTunnel: w.nativeTunnel,
    // Keys are not checked against the policies held: a key not (yet) received denies (C.45).
    authorizationPolicies: [...w.authorizationPolicies],
    status: enumName(p, f('status'), w.status, WORKLOAD_STATUSES, 'WorkloadStatus'),
    clusterId: text(p, f('clusterId'), w.clusterId, PLAIN_TEXT),
    services,
    ...(applicationTunnel !== undefined && { applicationTunnel }),
    ...(w.locality !== undefined && {
      locality: { region: w.locality.region, zone: w.locality.zone, subzone: w.locality.subzone },
    }),
    networkMode: enumName(p, f('networkMode'), w.networkMode, NETWORK_MODES, 'NetworkMode'),
    // google.protobuf.UInt32Value: absent means the default weight 1 (spec §3.5 field 27).
    capacity: w.capacity ?? 1,
  };
}

function loadBalancing(p: Problems, path: string, lb: pb.LoadBalancing): LoadBalancing {
  return {
    routingPreference: lb.routingPreference.map((s, i) =>
      enumName(p, item(field(path, 'routingPreference'), i), s, LB_SCOPES, 'LoadBalancing.Scope'),
    ),
    mode: enumName(p, field(path, 'mode'), lb.mode, LB_MODES, 'LoadBalancing.Mode'),
    healthPolicy: enumName(
      p,
      field(path, 'healthPolicy'),
      lb.healthPolicy,
      HEALTH_POLICIES,
      'LoadBalancing.HealthPolicy',
    ),
  };
}

function weightedWaypoint(p: Problems, path: string, w: pb.WeightedWaypoint): WeightedWaypoint {
  if (w.destination === undefined) p.add(field(path, 'destination'), 'required GatewayAddress is missing');
  return {
    destination:
      w.destination === undefined
        ? { address: { network: '', address: '' }, hboneMtlsPort: DEFAULT_HBONE_MTLS_PORT }
        : gatewayAddress(p, field(path, 'destination'), w.destination),
    weight: w.weight,
  };
}

function service(p: Problems, s: pb.Service): Service {
  const path = 'service';
  const f = (k: string): string => field(path, k);
  s.subjectAltNames.forEach((san, i) => {
    if (san === '') p.add(item(f('subjectAltNames'), i), 'got "", expected a non-empty SAN');
  });
  return {
    name: text(p, f('name'), s.name, OBJECT_NAME),
    namespace: text(p, f('namespace'), s.namespace, NAMESPACE_NAME),
    hostname: text(p, f('hostname'), s.hostname, HOSTNAME_TEXT),
    addresses: s.addresses.map((a, i) => networkAddress(p, item(f('addresses'), i), a)),
    ports: ports(p, f('ports'), s.ports),
    subjectAltNames: [...s.subjectAltNames],
    ...(s.waypoint !== undefined && { waypoint: gatewayAddress(p, f('waypoint'), s.waypoint) }),
    ...(s.loadBalancing !== undefined && {
      loadBalancing: loadBalancing(p, f('loadBalancing'), s.loadBalancing),
    }),
    ipFamilies: enumName(p, f('ipFamilies'), s.ipFamilies, IP_FAMILIES, 'IPFamilies'),
    canonical: s.canonical,
    ingressUseWaypoint: s.ingressUseWaypoint,
    weightedWaypoints: s.weightedWaypoints.map((w, i) =>
      weightedWaypoint(p, item(f('weightedWaypoints'), i), w),
    ),
    visibility: enumName(p, f('visibility'), s.visibility, VISIBILITIES, 'Service.Visibility'),
  };
}

/**
 * One `istio.workload.Address` resource named `name`: a Workload named by its uid or a Service
 * named `namespace/hostname`.
 */
export function convertAddress(name: string, a: pb.Address): Converted<AddressResource> {
  const p = new Problems();
  let out: AddressResource;
  if (a.type === undefined) return { ok: false, reason: 'Address has neither workload nor service set' };
  if (a.type.$case === 'workload') {
    const w = workload(p, a.type.value);
    if (p.list.length === 0 && w.uid !== name) {
      p.add(
        'workload.uid',
        `is ${describe(w.uid)}, but the resource is named ${describe(name)} (a workload's resource name must be its uid)`,
      );
    }
    out = { kind: 'workload', workload: w };
  } else {
    const s = service(p, a.type.value);
    if (p.list.length === 0 && serviceKey(s) !== name) {
      p.add(
        'service',
        `is ${serviceKey(s)}, but the resource is named ${describe(name)} (a service's resource name must be namespace/hostname)`,
      );
    }
    out = { kind: 'service', service: s };
  }
  return p.list.length === 0 ? { ok: true, value: out } : { ok: false, reason: p.reason() };
}

// ---- istio.security ----

function stringMatch(p: Problems, path: string, m: pbAuth.StringMatch): StringMatch {
  const t = m.matchType;
  if (t === undefined) {
    p.add(path, 'expected exactly one of exact, prefix, suffix, presence');
    return { presence: true };
  }
  switch (t.$case) {
    case 'exact':
      return { exact: t.value };
    case 'prefix':
      return { prefix: t.value };
    case 'suffix':
      return { suffix: t.value };
    case 'presence':
      return { presence: true };
  }
}

function cidr(p: Problems, path: string, a: pbAuth.Address): CidrAddress {
  const address = ipBytes(p, field(path, 'address'), a.address);
  if (address !== '') intIn(p, field(path, 'length'), a.length, 0, a.address.length * 8);
  return { address, length: a.length };
}

function serviceAccountMatch(p: Problems, path: string, m: pbAuth.ServiceAccountMatch): ServiceAccountMatch {
  return {
    namespace: text(p, field(path, 'namespace'), m.namespace, NAMESPACE_NAME),
    serviceAccount: text(p, field(path, 'serviceAccount'), m.serviceAccount, SERVICE_ACCOUNT_NAME),
  };
}

function match(p: Problems, path: string, m: pbAuth.Match): Match {
  const list = <T, U>(key: string, xs: readonly T[], conv: (p: Problems, path: string, x: T) => U): U[] =>
    xs.map((x, i) => conv(p, item(field(path, key), i), x));
  const port = (p: Problems, path: string, x: number): number => intIn(p, path, x, 1, 65535);
  return {
    namespaces: list('namespaces', m.namespaces, stringMatch),
    notNamespaces: list('notNamespaces', m.notNamespaces, stringMatch),
    principals: list('principals', m.principals, stringMatch),
    notPrincipals: list('notPrincipals', m.notPrincipals, stringMatch),
    sourceIps: list('sourceIps', m.sourceIps, cidr),
    notSourceIps: list('notSourceIps', m.notSourceIps, cidr),
    destinationIps: list('destinationIps', m.destinationIps, cidr),
    notDestinationIps: list('notDestinationIps', m.notDestinationIps, cidr),
    destinationPorts: list('destinationPorts', m.destinationPorts, port),
    notDestinationPorts: list('notDestinationPorts', m.notDestinationPorts, port),
    serviceAccounts: list('serviceAccounts', m.serviceAccounts, serviceAccountMatch),
    notServiceAccounts: list('notServiceAccounts', m.notServiceAccounts, serviceAccountMatch),
  };
}

/**
 * One `istio.security.Authorization` resource named `name` (= `namespace/name`). `unknown` says
 * where the raw resource held conditions the decoder dropped (./unknown-conditions.ts); they are
 * marked on the rule, clause or match so the engine fails closed on them.
 */
export function convertAuthorization(
  name: string,
  a: pbAuth.Authorization,
  unknown: UnknownConditions = NO_UNKNOWN_CONDITIONS,
): Converted<Authorization> {
  const p = new Problems();
  const path = 'authorization';
  const f = (k: string): string => field(path, k);
  const out: Authorization = {
    name: text(p, f('name'), a.name, POLICY_NAME_TEXT),
    namespace: text(p, f('namespace'), a.namespace, NAMESPACE_NAME),
    scope: enumName(p, f('scope'), a.scope, SCOPES, 'Scope'),
    action: enumName(p, f('action'), a.action, ACTIONS, 'Action'),
    rules: a.rules.map((r, i) => {
      const rp = item(f('rules'), i);
      const clauses = r.clauses.map((c, j) => {
        const cp = item(field(rp, 'clauses'), j);
        const matches = c.matches.map((m, k) => {
          const converted = match(p, item(field(cp, 'matches'), k), m);
          return unknown.matches.has(`${i}/${j}/${k}`) ? { ...converted, unknown: true as const } : converted;
        });
        return unknown.clauses.has(`${i}/${j}`) ? { matches, unknown: true as const } : { matches };
      });
      return unknown.rules.has(i) ? { clauses, unknown: true as const } : { clauses };
    }),
    dryRun: a.dryRun,
  };
  if (p.list.length === 0 && policyKey(out) !== name) {
    p.add(
      path,
      `is ${policyKey(out)}, but the resource is named ${describe(name)} (a policy's resource name must be namespace/name)`,
    );
  }
  return p.list.length === 0 ? { ok: true, value: out } : { ok: false, reason: p.reason() };
}

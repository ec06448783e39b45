// SPDX-License-Identifier: Apache-2.0
// Static ztunnel configuration: workloads, services and authorization policies from a YAML file
// instead of a control plane (the idea of upstream's examples/localhost.yaml). The document is
// `{ workloads: [...], services: [...], policies: [...] }` in the shapes of ./../state/types.ts
// (spec ambient-protocols §3.5, §3.6): camelCase proto field names, enums by their proto names,
// IPs as strings, service VIPs as "ip" or "network/ip", CIDRs as "198.18.0.0/16".
//
// Validation is strict (STYLE.md "Config"): unknown keys are rejected, every error names the
// file, the path in the document (`workloads[2].addresses[0]`), the bad value and what is
// expected. Beyond types we reject what would silently misbehave at run time: duplicate uids,
// two workloads on one IP, a VIP that shadows a workload IP, principals written with
// `spiffe://` or `*` (they could never match: matching is literal), references to policies or
// services the file does not define, and an empty document (on a hot reload, an empty file is
// far more likely a truncated write than an intent to drop every policy).
//
// `watchStaticConfig` re-reads on change and keeps the last good config when a new one is bad.
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { MeshError, errorMessage } from '../../../src/shared/errors.ts';
import { watchFile, type WatchedFile, type WatchFileOptions } from '../../../src/shared/watch-file.ts';
import { parseCidrText } from '../rbac/cidr.ts';
import {
  DNS_LABEL,
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
import { formatIp, isIpv4Mapped, parseIp } from '../../../src/shared/net/ip.ts';
import type {
  ApplicationTunnel,
  Authorization,
  CidrAddress,
  Clause,
  GatewayAddress,
  LoadBalancing,
  Locality,
  Match,
  NamespacedHostname,
  NetworkAddress,
  Port,
  Rule,
  Service,
  ServiceAccountMatch,
  StateSnapshot,
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
  emptyMatch,
  policyKey,
  serviceKey,
} from '../state/types.ts';

export class StaticConfigError extends MeshError {}

/** At most this many problems are listed in one error; the rest are counted. */
const MAX_LISTED_ISSUES = 25;

// ---- validation ----
//
// A hand-written walk over the parsed YAML. Each read* / expect* helper checks one value at a
// path and records what is wrong in `Problems`; it never throws. A helper that refuses a scalar
// returns a placeholder (so callers can keep building typed objects and find every problem in
// one pass), and an object reader returns undefined when anything in its subtree was refused.
// The document is refused whenever a problem was recorded, so placeholders never escape.
// Problems come out in document-shape order: an object's fields in the order below, then its
// unknown keys; list entries in order.

type Path = readonly PropertyKey[];
type Fields = Readonly<Record<string, unknown>>;

class Problems {
  readonly list: string[] = [];

  get count(): number {
    return this.list.length;
  }

  add(path: Path, text: string): void {
    this.list.push(`${formatPath(path)}: ${text}`);
  }

  /** `got <value>, <expectation>`; the expectation starts with "expected". */
  got(path: Path, value: unknown, expectation: string): void {
    this.add(path, `got ${describeValue(value)}, ${expectation}`);
  }

  /** A refused type: `required string is missing` when absent, else `got 5, expected a string`. */
  wrongType(path: Path, value: unknown, type: 'string' | 'number' | 'boolean' | 'object'): void {
    if (value === undefined) this.add(path, `required ${type} is missing`);
    else this.got(path, value, `expected ${type === 'object' ? 'a mapping' : `a ${type}`}`);
  }
}

function isObject(v: unknown): v is Fields {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isPlainObject(v: unknown): v is Fields {
  if (!isObject(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function at(path: Path, key: PropertyKey): Path {
  return [...path, key];
}

function expectString(p: Problems, path: Path, v: unknown): string {
  if (typeof v === 'string') return v;
  p.wrongType(path, v, 'string');
  return '';
}

function expectLength(p: Problems, path: Path, v: unknown, min: number, max: number): string {
  const s = expectString(p, path, v);
  if (typeof v !== 'string') return s;
  if (s.length < min) p.got(path, s, `expected a string of ≥ ${min} characters`);
  if (s.length > max) p.got(path, s, `expected a string of ≤ ${max} characters`);
  return s;
}

function expectText(p: Problems, path: Path, v: unknown, f: TextFormat): string {
  if (typeof v !== 'string') return expectString(p, path, v);
  if (!hasFormat(v, f)) p.got(path, v, `expected ${f.expected}`);
  return v;
}

/** A workload's hostname: a DNS hostname or '' (no hostname). */
function expectHostnameOrEmpty(p: Problems, path: Path, v: unknown): string {
  if (typeof v !== 'string') {
    p.add(path, 'Invalid input'); // the wording of the zod union this replaced
    return '';
  }
  return v === '' ? v : expectText(p, path, v, HOSTNAME_TEXT);
}

/** An integer in [min, max]; JSON numbers beyond ±2^53-1 are refused as imprecise. */
function expectInt(p: Problems, path: Path, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    p.wrongType(path, v, 'number');
    return 0;
  }
  if (!Number.isInteger(v)) {
    p.got(path, v, 'expected a int');
    return v;
  }
  if (v > Number.MAX_SAFE_INTEGER) p.got(path, v, `expected an integer ≤ ${Number.MAX_SAFE_INTEGER}`);
  if (v < Number.MIN_SAFE_INTEGER) p.got(path, v, `expected an integer ≥ ${Number.MIN_SAFE_INTEGER}`);
  if (v < min) p.got(path, v, `expected an integer ≥ ${min}`);
  if (v > max) p.got(path, v, `expected an integer ≤ ${max}`);
  return v;
}

const expectPort = (p: Problems, path: Path, v: unknown): number => expectInt(p, path, v, 1, 65535);
const expectPortOrZero = (p: Problems, path: Path, v: unknown): number => expectInt(p, path, v, 0, 65535);

function expectBoolean(p: Problems, path: Path, v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  p.wrongType(path, v, 'boolean');
  return false;
}

/** One of an enum's values (a `{ NAME: 'NAME' }` object of ../state/types.ts). */
function expectEnum<E extends string>(
  p: Problems,
  path: Path,
  v: unknown,
  values: Readonly<Record<string, E>>,
): E {
  const all = Object.values(values);
  const found = all.find((e) => e === v);
  if (found !== undefined) return found;
  p.got(path, v, `expected one of ${all.join(', ')}`);
  return all[0] as E;
}

/** An IP address string → its canonical form. IPv4-mapped IPv6 is refused as ambiguous. */
function expectIp(p: Problems, path: Path, v: unknown): string {
  if (typeof v !== 'string') return expectString(p, path, v);
  const a = parseIp(v);
  if (a === undefined) {
    p.got(path, v, 'expected an IPv4 or IPv6 address such as 198.18.1.10 or fd00::10 (no zone, no port)');
    return v;
  }
  if (isIpv4Mapped(a)) {
    p.got(path, v, 'expected a plain IPv4 address instead of IPv4-mapped IPv6');
    return v;
  }
  return formatIp(a);
}

/** "ip" (default network) or "network/ip" → NetworkAddress. */
function expectNetworkAddress(p: Problems, path: Path, v: unknown): NetworkAddress {
  if (typeof v !== 'string') return { network: '', address: expectString(p, path, v) };
  const slash = v.indexOf('/');
  const network = slash < 0 ? '' : v.slice(0, slash);
  const a = parseIp(slash < 0 ? v : v.slice(slash + 1));
  if (a === undefined || isIpv4Mapped(a) || /\s/.test(network)) {
    p.got(path, v, 'expected "ip" or "network/ip", e.g. 198.19.0.10 or net1/198.19.0.10');
    return { network, address: v };
  }
  return { network, address: formatIp(a) };
}

/** "198.18.0.0/16" or a bare address (host route). */
function expectCidr(p: Problems, path: Path, v: unknown): CidrAddress {
  if (typeof v !== 'string') return { address: expectString(p, path, v), length: 0 };
  const c = parseCidrText(v);
  const a = c === undefined ? undefined : parseIp(c.address);
  if (c === undefined || a === undefined || isIpv4Mapped(a)) {
    p.got(
      path,
      v,
      'expected a CIDR such as 198.18.0.0/16 or fd00::/64 (prefix ≤ 32 for IPv4, ≤ 128 for IPv6), or a single IP',
    );
    return { address: v, length: 0 };
  }
  return c;
}

/** A list (absent = empty); `item` reads each entry. */
function readList<T>(
  p: Problems,
  path: Path,
  v: unknown,
  item: (p: Problems, path: Path, v: unknown) => T | undefined,
): T[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) {
    p.got(path, v, 'expected a list');
    return [];
  }
  const out: T[] = [];
  v.forEach((x: unknown, i) => {
    const r = item(p, at(path, i), x);
    if (r !== undefined) out.push(r);
  });
  return out;
}

/**
 * A mapping with exactly the keys `allowed` (a missing one is up to `read`, an unknown one is a
 * problem). `read` gets the fields and builds the value. The result is undefined if anything
 * under this mapping, its unknown keys included, was refused.
 */
function readObject<T>(
  p: Problems,
  path: Path,
  v: unknown,
  allowed: readonly string[],
  read: (o: Fields) => T | undefined,
): T | undefined {
  return readObjectThen(p, path, v, allowed, read, (f) => f);
}

/**
 * readObject plus a whole-object check (`then`: "exactly one of ..."), which runs once the fields
 * themselves are good, after unknown keys have been reported (so both problems are listed).
 */
function readObjectThen<F, T>(
  p: Problems,
  path: Path,
  v: unknown,
  allowed: readonly string[],
  read: (o: Fields) => F | undefined,
  then: (fields: F) => T | undefined,
): T | undefined {
  if (!isObject(v)) {
    p.wrongType(path, v, 'object');
    return undefined;
  }
  const before = p.count;
  const fields = read(v);
  const fieldsOk = p.count === before;
  const unknown = Object.keys(v).filter((k) => !allowed.includes(k));
  if (unknown.length > 0) {
    p.add(
      path,
      `unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')} (allowed: ${allowed.join(', ')})`,
    );
  }
  if (!fieldsOk || fields === undefined) return undefined;
  const out = then(fields);
  return p.count === before ? out : undefined;
}

/** `fields[key]`, or `fallback` when absent (YAML cannot express an explicit undefined). */
function orDefault<T>(fields: Fields, key: string, fallback: T, read: (v: unknown) => T): T {
  const v = fields[key];
  return v === undefined ? fallback : read(v);
}

const ONE_OF_STRING_MATCH =
  'exactly one of {exact: "..."}, {prefix: "..."}, {suffix: "..."}, {presence: true}';

const STRING_MATCH_KINDS = ['exact', 'prefix', 'suffix'] as const;
type StringMatchKind = (typeof STRING_MATCH_KINDS)[number];

/** A StringMatch with a per-value check (principal / namespace rules) returning a problem. */
function readStringMatch(
  p: Problems,
  path: Path,
  v: unknown,
  check: (kind: StringMatchKind, value: string) => string | undefined,
): StringMatch | undefined {
  return readObjectThen(
    p,
    path,
    v,
    [...STRING_MATCH_KINDS, 'presence'],
    (o) => {
      const out: { exact?: string; prefix?: string; suffix?: string; presence?: true } = {};
      for (const kind of STRING_MATCH_KINDS) {
        if (o[kind] !== undefined) out[kind] = expectString(p, at(path, kind), o[kind]);
      }
      if (o.presence !== undefined) {
        if (o.presence === true) out.presence = true;
        else p.got(at(path, 'presence'), o.presence, 'expected one of true');
      }
      return out;
    },
    (m): StringMatch | undefined => {
      if (Object.keys(m).length !== 1) {
        p.got(path, m, `expected ${ONE_OF_STRING_MATCH}`);
        return undefined;
      }
      if (m.presence !== undefined) return { presence: true };
      for (const kind of STRING_MATCH_KINDS) {
        const value = m[kind];
        if (value === undefined) continue;
        const problem = check(kind, value);
        if (problem !== undefined) {
          p.got(at(path, kind), value, problem);
          return undefined;
        }
        return kind === 'exact'
          ? { exact: value }
          : kind === 'prefix'
            ? { prefix: value }
            : { suffix: value };
      }
      return undefined;
    },
  );
}

const PRINCIPAL = /^[a-z0-9._-]+\/ns\/[a-z0-9]([-a-z0-9]*[a-z0-9])?\/sa\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function readPrincipalMatch(p: Problems, path: Path, v: unknown): StringMatch | undefined {
  return readStringMatch(p, path, v, (kind, s) => {
    if (s.startsWith('spiffe://')) {
      return 'expected a principal without "spiffe://" (principals are compared as <trust-domain>/ns/<namespace>/sa/<service-account>)';
    }
    if (s.includes('*')) {
      return 'expected no "*": matching is literal; write a wildcard as {prefix: ...} or {suffix: ...}';
    }
    if (kind === 'exact' && !PRINCIPAL.test(s)) {
      return 'expected a principal of the form <trust-domain>/ns/<namespace>/sa/<service-account>, e.g. cluster.local/ns/default/sa/client';
    }
    return undefined;
  });
}

function readNamespaceMatch(p: Problems, path: Path, v: unknown): StringMatch | undefined {
  return readStringMatch(p, path, v, (kind, s) => {
    if (s.includes('*')) {
      return 'expected no "*": matching is literal; write a wildcard as {prefix: ...} or {suffix: ...}';
    }
    if (kind === 'exact' && !DNS_LABEL.test(s)) return 'expected a namespace name (lowercase DNS label)';
    return undefined;
  });
}

function readServiceAccountMatch(p: Problems, path: Path, v: unknown): ServiceAccountMatch | undefined {
  return readObject(p, path, v, ['namespace', 'serviceAccount'], (o) => ({
    namespace: expectText(p, at(path, 'namespace'), o.namespace, NAMESPACE_NAME),
    serviceAccount: expectText(p, at(path, 'serviceAccount'), o.serviceAccount, SERVICE_ACCOUNT_NAME),
  }));
}

const MATCH_KEYS = Object.keys(emptyMatch());

function readMatch(p: Problems, path: Path, v: unknown): Match | undefined {
  return readObject(p, path, v, MATCH_KEYS, (o) => {
    const list = <T>(key: keyof Match, item: (p: Problems, path: Path, v: unknown) => T | undefined): T[] =>
      readList(p, at(path, key), o[key], item);
    const ports = (p: Problems, path: Path, v: unknown): number => expectPort(p, path, v);
    return {
      namespaces: list('namespaces', readNamespaceMatch),
      notNamespaces: list('notNamespaces', readNamespaceMatch),
      principals: list('principals', readPrincipalMatch),
      notPrincipals: list('notPrincipals', readPrincipalMatch),
      sourceIps: list('sourceIps', expectCidr),
      notSourceIps: list('notSourceIps', expectCidr),
      destinationIps: list('destinationIps', expectCidr),
      notDestinationIps: list('notDestinationIps', expectCidr),
      destinationPorts: list('destinationPorts', ports),
      notDestinationPorts: list('notDestinationPorts', ports),
      serviceAccounts: list('serviceAccounts', readServiceAccountMatch),
      notServiceAccounts: list('notServiceAccounts', readServiceAccountMatch),
    };
  });
}

function readClause(p: Problems, path: Path, v: unknown): Clause | undefined {
  return readObject(p, path, v, ['matches'], (o) => ({
    matches: readList(p, at(path, 'matches'), o.matches, readMatch),
  }));
}

function readRule(p: Problems, path: Path, v: unknown): Rule | undefined {
  return readObject(p, path, v, ['clauses'], (o) => ({
    clauses: readList(p, at(path, 'clauses'), o.clauses, readClause),
  }));
}

const POLICY_KEYS = ['name', 'namespace', 'scope', 'action', 'rules', 'dryRun'];

function readPolicy(p: Problems, path: Path, v: unknown): Authorization | undefined {
  return readObject(p, path, v, POLICY_KEYS, (o) => ({
    name: expectText(p, at(path, 'name'), o.name, POLICY_NAME_TEXT),
    namespace: expectText(p, at(path, 'namespace'), o.namespace, NAMESPACE_NAME),
    scope: expectEnum(p, at(path, 'scope'), o.scope, PolicyScope),
    action: expectEnum(p, at(path, 'action'), o.action, PolicyAction),
    rules: readList(p, at(path, 'rules'), o.rules, readRule),
    dryRun: orDefault(o, 'dryRun', false, (x) => expectBoolean(p, at(path, 'dryRun'), x)),
  }));
}

function readNamespacedHostname(p: Problems, path: Path, v: unknown): NamespacedHostname | undefined {
  return readObject(p, path, v, ['namespace', 'hostname'], (o) => ({
    namespace: expectText(p, at(path, 'namespace'), o.namespace, NAMESPACE_NAME),
    hostname: expectText(p, at(path, 'hostname'), o.hostname, HOSTNAME_TEXT),
  }));
}

function readGatewayAddress(p: Problems, path: Path, v: unknown): GatewayAddress | undefined {
  return readObjectThen(
    p,
    path,
    v,
    ['hostname', 'address', 'hboneMtlsPort'],
    (o) => ({
      ...(o.hostname !== undefined && {
        hostname: readNamespacedHostname(p, at(path, 'hostname'), o.hostname),
      }),
      ...(o.address !== undefined && { address: expectNetworkAddress(p, at(path, 'address'), o.address) }),
      hboneMtlsPort: orDefault(o, 'hboneMtlsPort', DEFAULT_HBONE_MTLS_PORT, (x) =>
        expectPort(p, at(path, 'hboneMtlsPort'), x),
      ),
    }),
    (g): GatewayAddress | undefined => {
      if (g.hostname !== undefined && g.address === undefined) {
        return { hostname: g.hostname, hboneMtlsPort: g.hboneMtlsPort };
      }
      if (g.address !== undefined && g.hostname === undefined) {
        return { address: g.address, hboneMtlsPort: g.hboneMtlsPort };
      }
      p.got(
        path,
        g,
        'expected exactly one of hostname: {namespace, hostname} or address: "ip" / "network/ip" (and optionally hboneMtlsPort)',
      );
      return undefined;
    },
  );
}

function readPort(p: Problems, path: Path, v: unknown): Port | undefined {
  return readObject(p, path, v, ['servicePort', 'targetPort', 'appProtocol'], (o) => ({
    servicePort: expectPort(p, at(path, 'servicePort'), o.servicePort),
    targetPort: orDefault(o, 'targetPort', 0, (x) => expectPortOrZero(p, at(path, 'targetPort'), x)),
    ...(o.appProtocol !== undefined && {
      appProtocol: expectEnum(p, at(path, 'appProtocol'), o.appProtocol, AppProtocol),
    }),
  }));
}

/** Workload.services: `namespace/hostname` → ports (keys are checked by crossCheck). */
function readServicePorts(p: Problems, path: Path, v: unknown): Record<string, Port[]> {
  if (!isPlainObject(v)) {
    p.got(path, v, 'expected a record');
    return {};
  }
  const out: Record<string, Port[]> = {};
  for (const [k, ports] of Object.entries(v)) {
    // defineProperty: a "__proto__" key stays a key (and is then refused as a service key).
    Object.defineProperty(out, k, {
      value: readList(p, at(path, k), ports, readPort),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

const WORKLOAD_KEYS = [
  'uid',
  'name',
  'namespace',
  'addresses',
  'hostname',
  'network',
  'tunnelProtocol',
  'trustDomain',
  'serviceAccount',
  'waypoint',
  'networkGateway',
  'node',
  'canonicalName',
  'canonicalRevision',
  'workloadType',
  'workloadName',
  'nativeTunnel',
  'authorizationPolicies',
  'status',
  'clusterId',
  'services',
  'applicationTunnel',
  'locality',
  'networkMode',
  'capacity',
];

function readWorkload(p: Problems, path: Path, v: unknown): Workload | undefined {
  return readObjectThen(
    p,
    path,
    v,
    WORKLOAD_KEYS,
    (o) => {
      const field = (k: string): Path => at(path, k);
      const str = (k: string): string => orDefault(o, k, '', (x) => expectString(p, field(k), x));
      const plain = (k: string): string => orDefault(o, k, '', (x) => expectText(p, field(k), x, PLAIN_TEXT));
      return {
        ...(o.uid !== undefined && { uid: expectLength(p, field('uid'), o.uid, 1, MAX_UID_LENGTH) }),
        name: expectText(p, field('name'), o.name, OBJECT_NAME),
        namespace: expectText(p, field('namespace'), o.namespace, NAMESPACE_NAME),
        addresses: readList(p, field('addresses'), o.addresses, expectIp),
        hostname: orDefault(o, 'hostname', '', (x) => expectHostnameOrEmpty(p, field('hostname'), x)),
        network: plain('network'),
        tunnelProtocol: orDefault(o, 'tunnelProtocol', 'NONE', (x) =>
          expectEnum(p, field('tunnelProtocol'), x, TunnelProtocol),
        ),
        trustDomain: orDefault(o, 'trustDomain', DEFAULT_TRUST_DOMAIN, (x) =>
          expectText(p, field('trustDomain'), x, TRUST_DOMAIN_NAME),
        ),
        serviceAccount: orDefault(o, 'serviceAccount', DEFAULT_SERVICE_ACCOUNT, (x) =>
          expectText(p, field('serviceAccount'), x, SERVICE_ACCOUNT_NAME),
        ),
        ...(o.waypoint !== undefined && { waypoint: readGatewayAddress(p, field('waypoint'), o.waypoint) }),
        ...(o.networkGateway !== undefined && {
          networkGateway: readGatewayAddress(p, field('networkGateway'), o.networkGateway),
        }),
        node: plain('node'),
        canonicalName: str('canonicalName'),
        canonicalRevision: str('canonicalRevision'),
        workloadType: orDefault(o, 'workloadType', 'POD', (x) =>
          expectEnum(p, field('workloadType'), x, WorkloadType),
        ),
        workloadName: str('workloadName'),
        nativeTunnel: orDefault(o, 'nativeTunnel', false, (x) => expectBoolean(p, field('nativeTunnel'), x)),
        authorizationPolicies: readList(
          p,
          field('authorizationPolicies'),
          o.authorizationPolicies,
          expectString,
        ),
        status: orDefault(o, 'status', 'HEALTHY', (x) => expectEnum(p, field('status'), x, WorkloadStatus)),
        clusterId: plain('clusterId'),
        services: orDefault(o, 'services', {}, (x) => readServicePorts(p, field('services'), x)),
        ...(o.applicationTunnel !== undefined && {
          applicationTunnel: readApplicationTunnel(p, field('applicationTunnel'), o.applicationTunnel),
        }),
        ...(o.locality !== undefined && { locality: readLocality(p, field('locality'), o.locality) }),
        networkMode: orDefault(o, 'networkMode', 'STANDARD', (x) =>
          expectEnum(p, field('networkMode'), x, NetworkMode),
        ),
        capacity: orDefault(o, 'capacity', 1, (x) => expectInt(p, field('capacity'), x, 0, 0xffffffff)),
      };
    },
    // Upstream's uid shape: <cluster>//Pod/<namespace>/<name>. (A given uid keeps its place first.)
    (w): Workload => ({
      ...w,
      uid: w.uid ?? `${w.clusterId === '' ? 'Kubernetes' : w.clusterId}//Pod/${w.namespace}/${w.name}`,
    }),
  );
}

function readApplicationTunnel(p: Problems, path: Path, v: unknown): ApplicationTunnel | undefined {
  return readObject(p, path, v, ['protocol', 'port'], (o) => ({
    protocol: orDefault(o, 'protocol', 'NONE', (x) =>
      expectEnum(p, at(path, 'protocol'), x, ApplicationTunnelProtocol),
    ),
    port: orDefault(o, 'port', 0, (x) => expectPortOrZero(p, at(path, 'port'), x)),
  }));
}

function readLocality(p: Problems, path: Path, v: unknown): Locality | undefined {
  return readObject(p, path, v, ['region', 'zone', 'subzone'], (o) => ({
    region: orDefault(o, 'region', '', (x) => expectString(p, at(path, 'region'), x)),
    zone: orDefault(o, 'zone', '', (x) => expectString(p, at(path, 'zone'), x)),
    subzone: orDefault(o, 'subzone', '', (x) => expectString(p, at(path, 'subzone'), x)),
  }));
}

function readLoadBalancing(p: Problems, path: Path, v: unknown): LoadBalancing | undefined {
  return readObject(p, path, v, ['routingPreference', 'mode', 'healthPolicy'], (o) => ({
    routingPreference: readList(p, at(path, 'routingPreference'), o.routingPreference, (p, path, x) =>
      expectEnum(p, path, x, LoadBalancingScope),
    ),
    mode: orDefault(o, 'mode', 'UNSPECIFIED_MODE', (x) =>
      expectEnum(p, at(path, 'mode'), x, LoadBalancingMode),
    ),
    healthPolicy: orDefault(o, 'healthPolicy', 'ONLY_HEALTHY', (x) =>
      expectEnum(p, at(path, 'healthPolicy'), x, HealthPolicy),
    ),
  }));
}

function readWeightedWaypoint(p: Problems, path: Path, v: unknown): WeightedWaypoint | undefined {
  return readObject(p, path, v, ['destination', 'weight'], (o) => {
    const destination = readGatewayAddress(p, at(path, 'destination'), o.destination);
    const weight = expectInt(p, at(path, 'weight'), o.weight, 0, 0xffffffff);
    return destination === undefined ? undefined : { destination, weight };
  });
}

const SERVICE_KEYS = [
  'name',
  'namespace',
  'hostname',
  'addresses',
  'ports',
  'subjectAltNames',
  'waypoint',
  'loadBalancing',
  'ipFamilies',
  'canonical',
  'ingressUseWaypoint',
  'weightedWaypoints',
  'visibility',
];

function readService(p: Problems, path: Path, v: unknown): Service | undefined {
  return readObject(p, path, v, SERVICE_KEYS, (o) => {
    const field = (k: string): Path => at(path, k);
    return {
      name: expectText(p, field('name'), o.name, OBJECT_NAME),
      namespace: expectText(p, field('namespace'), o.namespace, NAMESPACE_NAME),
      hostname: expectText(p, field('hostname'), o.hostname, HOSTNAME_TEXT),
      addresses: readList(p, field('addresses'), o.addresses, expectNetworkAddress),
      ports: readList(p, field('ports'), o.ports, readPort),
      subjectAltNames: readList(p, field('subjectAltNames'), o.subjectAltNames, (p, path, x) =>
        expectLength(p, path, x, 1, Infinity),
      ),
      ...(o.waypoint !== undefined && { waypoint: readGatewayAddress(p, field('waypoint'), o.waypoint) }),
      ...(o.loadBalancing !== undefined && {
        loadBalancing: readLoadBalancing(p, field('loadBalancing'), o.loadBalancing),
      }),
      ipFamilies: orDefault(o, 'ipFamilies', 'AUTOMATIC', (x) =>
        expectEnum(p, field('ipFamilies'), x, IpFamilies),
      ),
      canonical: orDefault(o, 'canonical', true, (x) => expectBoolean(p, field('canonical'), x)),
      ingressUseWaypoint: orDefault(o, 'ingressUseWaypoint', false, (x) =>
        expectBoolean(p, field('ingressUseWaypoint'), x),
      ),
      weightedWaypoints: readList(p, field('weightedWaypoints'), o.weightedWaypoints, readWeightedWaypoint),
      visibility: orDefault(o, 'visibility', 'PUBLIC', (x) =>
        expectEnum(p, field('visibility'), x, ServiceVisibility),
      ),
    };
  });
}

/** The whole document; undefined (with problems recorded) if anything was refused. */
function readDocument(p: Problems, v: unknown): StateSnapshot | undefined {
  return readObject(p, [], v, ['workloads', 'services', 'policies'], (o) => ({
    workloads: readList(p, ['workloads'], o.workloads, readWorkload),
    services: readList(p, ['services'], o.services, readService),
    policies: readList(p, ['policies'], o.policies, readPolicy),
  }));
}

// ---- error formatting ----

/** `workloads[2].addresses[0]`, `workloads[0].services["ns/host"]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (typeof seg === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(seg))
      out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out === '' ? '(document root)' : out;
}

function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  const text = JSON.stringify(v);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function configError(file: string, problems: readonly string[]): StaticConfigError {
  const listed = problems.slice(0, MAX_LISTED_ISSUES).map((p) => `\n  - ${p}`);
  const more = problems.length > MAX_LISTED_ISSUES ? `\n  (${problems.length - MAX_LISTED_ISSUES} more)` : '';
  return new StaticConfigError(
    'ZT_ERR_STATIC_CONFIG',
    `invalid static config ${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}; fix and save again${listed.join('')}${more}`,
  );
}

// ---- cross-object checks ----

function crossCheck(doc: StateSnapshot): string[] {
  const problems: string[] = [];
  const uids = new Map<string, number>();
  const ips = new Map<string, number>();
  doc.workloads.forEach((w, i) => {
    const at = `workloads[${i}]`;
    const first = uids.get(w.uid);
    if (first !== undefined)
      problems.push(`${at}.uid: duplicate uid ${JSON.stringify(w.uid)}, also workloads[${first}]`);
    else uids.set(w.uid, i);
    if (w.addresses.length > 0 && w.hostname !== '') {
      problems.push(`${at}: has both addresses and hostname; expected one or the other (spec §3.5)`);
    }
    if (w.addresses.length === 0 && w.hostname === '') {
      problems.push(`${at}: has neither addresses nor hostname; expected at least one address`);
    }
    // Host-network workloads share their node's IP by design and are never looked up by IP.
    if (w.networkMode !== 'HOST_NETWORK') {
      w.addresses.forEach((a, j) => {
        const key = `${w.network}/${a}`;
        const other = ips.get(key);
        if (other !== undefined) {
          problems.push(
            `${at}.addresses[${j}]: IP ${a} on network ${JSON.stringify(w.network)} is already used by workloads[${other}]; every workload IP must be unique in its network`,
          );
        } else ips.set(key, i);
      });
    }
  });

  const serviceKeys = new Map<string, number>();
  doc.services.forEach((s, i) => {
    const key = serviceKey(s);
    const first = serviceKeys.get(key);
    if (first !== undefined)
      problems.push(`services[${i}]: duplicate service ${key}, also services[${first}]`);
    else serviceKeys.set(key, i);
    s.addresses.forEach((a, j) => {
      const w = ips.get(`${a.network}/${a.address}`);
      if (w !== undefined) {
        problems.push(
          `services[${i}].addresses[${j}]: VIP ${a.address} is also the IP of workloads[${w}]; a VIP must not shadow a workload IP`,
        );
      }
    });
    const seenPorts = new Set<number>();
    s.ports.forEach((p, j) => {
      if (seenPorts.has(p.servicePort)) {
        problems.push(`services[${i}].ports[${j}].servicePort: duplicate service port ${p.servicePort}`);
      }
      seenPorts.add(p.servicePort);
    });
  });

  const policyKeys = new Map<string, number>();
  doc.policies.forEach((p, i) => {
    const key = policyKey(p);
    const first = policyKeys.get(key);
    if (first !== undefined)
      problems.push(`policies[${i}]: duplicate policy ${key}, also policies[${first}]`);
    else policyKeys.set(key, i);
  });

  const checkGateway = (gw: GatewayAddress | undefined, at: string): void => {
    if (gw !== undefined && 'hostname' in gw && !serviceKeys.has(serviceKey(gw.hostname))) {
      problems.push(
        `${at}.hostname: no service ${serviceKey(gw.hostname)} in services; define the waypoint's service or fix the reference`,
      );
    }
  };
  doc.services.forEach((s, i) => checkGateway(s.waypoint, `services[${i}].waypoint`));
  doc.workloads.forEach((w, i) => {
    const at = `workloads[${i}]`;
    checkGateway(w.waypoint, `${at}.waypoint`);
    w.authorizationPolicies.forEach((k, j) => {
      if (!/^[^/]+\/[^/]+$/.test(k)) {
        problems.push(
          `${at}.authorizationPolicies[${j}]: got ${JSON.stringify(k)}, expected a policy key "namespace/name"`,
        );
      } else if (!policyKeys.has(k)) {
        problems.push(`${at}.authorizationPolicies[${j}]: policy ${k} is not defined in policies`);
      }
    });
    for (const [k, ports] of Object.entries(w.services)) {
      const path = `${at}.services[${JSON.stringify(k)}]`;
      if (!SERVICE_KEY.test(k)) {
        problems.push(`${path}: expected a service key "namespace/hostname"`);
      } else if (!serviceKeys.has(k)) {
        problems.push(`${path}: no service ${k} in services`);
      }
      const seen = new Set<number>();
      ports.forEach((p, j) => {
        if (seen.has(p.servicePort))
          problems.push(`${path}[${j}].servicePort: duplicate service port ${p.servicePort}`);
        seen.add(p.servicePort);
      });
    }
  });
  return problems;
}

// ---- loading ----

/**
 * Parses and validates a static config document. `file` is only used in messages. Throws
 * StaticConfigError (code ZT_ERR_STATIC_CONFIG) listing every problem found.
 */
export function parseStaticConfig(text: string, file: string): StateSnapshot {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw configError(
      file,
      doc.errors.map((e) => `YAML syntax: ${(e.message.split('\n')[0] ?? e.message).replace(/:$/, '')}`),
    );
  }
  let data: unknown;
  try {
    // Bounded alias expansion: a "billion laughs" document fails instead of eating memory.
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw configError(file, [`YAML: ${errorMessage(err)}`]);
  }
  if (data === null || data === undefined) {
    throw configError(file, [
      '(document root): the file is empty; expected a mapping with workloads, services and policies (an empty file is refused so a truncated write cannot drop every policy)',
    ]);
  }
  const p = new Problems();
  const snapshot = readDocument(p, data);
  if (snapshot === undefined || p.count > 0) throw configError(file, p.list);
  const problems = crossCheck(snapshot);
  if (problems.length > 0) throw configError(file, problems);
  return snapshot;
}

/** Reads and validates a static config file (see parseStaticConfig). */
export async function loadStaticConfig(path: string): Promise<StateSnapshot> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new StaticConfigError(
      'ZT_ERR_STATIC_CONFIG',
      `cannot read static config ${path}: ${errorMessage(err)}; check LOCAL_XDS_PATH and the file's permissions`,
      { cause: err },
    );
  }
  return parseStaticConfig(text, path);
}

export type StaticConfigWatcher = WatchedFile<StateSnapshot>;
export type WatchOptions = WatchFileOptions;

/**
 * Loads `path` now and again whenever it changes (see watchFile). Each good load is passed to
 * `onSnapshot`; a bad one is passed to `onError` and the last good config stays in force (the
 * caller simply does not replace its state).
 */
export function watchStaticConfig(
  path: string,
  onSnapshot: (snapshot: StateSnapshot) => void,
  onError: (err: Error) => void,
  options: WatchOptions = {},
): StaticConfigWatcher {
  return watchFile(
    path,
    {
      what: 'static config',
      parse: (text) => parseStaticConfig(text, path),
      onValue: onSnapshot,
      onError,
      error: (message, cause) => new StaticConfigError('ZT_ERR_STATIC_CONFIG', message, { cause }),
    },
    options,
  );
}

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
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { MeshError, errorMessage } from '../../../src/shared/errors.ts';
import { parseCidrText } from '../rbac/cidr.ts';
import { formatIp, isIpv4Mapped, parseIp } from '../state/ip.ts';
import type {
  Authorization,
  GatewayAddress,
  Match,
  NetworkAddress,
  Service,
  StateSnapshot,
  StringMatch,
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

export class StaticConfigError extends MeshError {}

/** At most this many problems are listed in one error; the rest are counted. */
const MAX_LISTED_ISSUES = 25;

// ---- value schemas ----

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const POLICY_NAME = /^[A-Za-z0-9._-]+$/;
const HOSTNAME = /^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$/;
const NO_SLASH_TEXT = /^[^/\s]*$/;

function pattern(re: RegExp, max: number, expected: string): z.ZodType<string> {
  return z.string().refine((v) => v.length <= max && re.test(v), { message: `expected ${expected}` });
}

const namespaceName = pattern(DNS_LABEL, 63, 'a Kubernetes namespace name (lowercase DNS label, ≤ 63 chars)');
const objectName = pattern(DNS_SUBDOMAIN, 253, 'a Kubernetes object name (lowercase DNS subdomain)');
const serviceAccountName = pattern(
  DNS_SUBDOMAIN,
  253,
  'a Kubernetes service account name (lowercase DNS subdomain)',
);
const trustDomain = pattern(TRUST_DOMAIN, 255, 'a trust domain of [a-z0-9._-], e.g. cluster.local');
const policyName = pattern(POLICY_NAME, 253, 'a policy name of [A-Za-z0-9._-]');
const hostname = pattern(HOSTNAME, 253, 'a DNS hostname such as echo.default.svc.cluster.local');
const plainText = pattern(NO_SLASH_TEXT, 253, "text without '/' or whitespace");

const port = z.number().int().min(1).max(65535);
const portOrZero = z.number().int().min(0).max(65535);

/** An IP address string → its canonical form. IPv4-mapped IPv6 is refused as ambiguous. */
const ipAddress = z.string().transform((s, ctx) => {
  const a = parseIp(s);
  if (a === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: 'expected an IPv4 or IPv6 address such as 198.18.1.10 or fd00::10 (no zone, no port)',
      input: s,
    });
    return z.NEVER;
  }
  if (isIpv4Mapped(a)) {
    ctx.addIssue({
      code: 'custom',
      message: 'expected a plain IPv4 address instead of IPv4-mapped IPv6',
      input: s,
    });
    return z.NEVER;
  }
  return formatIp(a);
});

/** "ip" (default network) or "network/ip" → NetworkAddress. */
const networkAddress = z.string().transform((s, ctx): NetworkAddress => {
  const slash = s.indexOf('/');
  const network = slash < 0 ? '' : s.slice(0, slash);
  const a = parseIp(slash < 0 ? s : s.slice(slash + 1));
  if (a === undefined || isIpv4Mapped(a) || /\s/.test(network)) {
    ctx.addIssue({
      code: 'custom',
      message: 'expected "ip" or "network/ip", e.g. 198.19.0.10 or net1/198.19.0.10',
      input: s,
    });
    return z.NEVER;
  }
  return { network, address: formatIp(a) };
});

/** "198.18.0.0/16" or a bare address (host route). */
const cidr = z.string().transform((s, ctx) => {
  const c = parseCidrText(s);
  const a = c === undefined ? undefined : parseIp(c.address);
  if (c === undefined || a === undefined || isIpv4Mapped(a)) {
    ctx.addIssue({
      code: 'custom',
      message:
        'expected a CIDR such as 198.18.0.0/16 or fd00::/64 (prefix ≤ 32 for IPv4, ≤ 128 for IPv6), or a single IP',
      input: s,
    });
    return z.NEVER;
  }
  return c;
});

function strictObject<T extends z.ZodRawShape>(shape: T): z.ZodObject<T, z.core.$strict> {
  const allowed = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (iss) =>
      iss.code === 'unrecognized_keys'
        ? `unknown key${iss.keys.length > 1 ? 's' : ''} ${iss.keys.map((k) => JSON.stringify(k)).join(', ')} (allowed: ${allowed})`
        : undefined,
  });
}

const ONE_OF_STRING_MATCH =
  'exactly one of {exact: "..."}, {prefix: "..."}, {suffix: "..."}, {presence: true}';

/** A StringMatch with a per-field value check (principal / namespace rules). */
function stringMatch(
  check: (kind: 'exact' | 'prefix' | 'suffix', value: string) => string | undefined,
): z.ZodType<StringMatch> {
  return strictObject({
    exact: z.string().optional(),
    prefix: z.string().optional(),
    suffix: z.string().optional(),
    presence: z.literal(true).optional(),
  }).transform((m, ctx): StringMatch => {
    const set = (['exact', 'prefix', 'suffix', 'presence'] as const).filter((k) => m[k] !== undefined);
    if (set.length !== 1) {
      ctx.addIssue({ code: 'custom', message: `expected ${ONE_OF_STRING_MATCH}`, input: m });
      return z.NEVER;
    }
    if (m.presence !== undefined) return { presence: true };
    for (const kind of ['exact', 'prefix', 'suffix'] as const) {
      const value = m[kind];
      if (value === undefined) continue;
      const problem = check(kind, value);
      if (problem !== undefined) {
        ctx.addIssue({ code: 'custom', message: problem, input: value, path: [kind] });
        return z.NEVER;
      }
      return kind === 'exact' ? { exact: value } : kind === 'prefix' ? { prefix: value } : { suffix: value };
    }
    return z.NEVER;
  });
}

const PRINCIPAL = /^[a-z0-9._-]+\/ns\/[a-z0-9]([-a-z0-9]*[a-z0-9])?\/sa\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

const principalMatch = stringMatch((kind, v) => {
  if (v.startsWith('spiffe://')) {
    return 'expected a principal without "spiffe://" (principals are compared as <trust-domain>/ns/<namespace>/sa/<service-account>)';
  }
  if (v.includes('*')) {
    return 'expected no "*": matching is literal; write a wildcard as {prefix: ...} or {suffix: ...}';
  }
  if (kind === 'exact' && !PRINCIPAL.test(v)) {
    return 'expected a principal of the form <trust-domain>/ns/<namespace>/sa/<service-account>, e.g. cluster.local/ns/default/sa/client';
  }
  return undefined;
});

const namespaceMatch = stringMatch((kind, v) => {
  if (v.includes('*')) {
    return 'expected no "*": matching is literal; write a wildcard as {prefix: ...} or {suffix: ...}';
  }
  if (kind === 'exact' && !DNS_LABEL.test(v)) return 'expected a namespace name (lowercase DNS label)';
  return undefined;
});

const serviceAccountMatch = strictObject({ namespace: namespaceName, serviceAccount: serviceAccountName });

const matchSchema = strictObject({
  namespaces: z.array(namespaceMatch).default([]),
  notNamespaces: z.array(namespaceMatch).default([]),
  principals: z.array(principalMatch).default([]),
  notPrincipals: z.array(principalMatch).default([]),
  sourceIps: z.array(cidr).default([]),
  notSourceIps: z.array(cidr).default([]),
  destinationIps: z.array(cidr).default([]),
  notDestinationIps: z.array(cidr).default([]),
  destinationPorts: z.array(port).default([]),
  notDestinationPorts: z.array(port).default([]),
  serviceAccounts: z.array(serviceAccountMatch).default([]),
  notServiceAccounts: z.array(serviceAccountMatch).default([]),
}).transform((m): Match => m);

const clauseSchema = strictObject({ matches: z.array(matchSchema).default([]) });
const ruleSchema = strictObject({ clauses: z.array(clauseSchema).default([]) });

const policySchema = strictObject({
  name: policyName,
  namespace: namespaceName,
  scope: z.enum(PolicyScope),
  action: z.enum(PolicyAction),
  rules: z.array(ruleSchema).default([]),
  dryRun: z.boolean().default(false),
}).transform((p): Authorization => p);

const namespacedHostname = strictObject({ namespace: namespaceName, hostname });

const gatewayAddress = strictObject({
  hostname: namespacedHostname.optional(),
  address: networkAddress.optional(),
  hboneMtlsPort: port.default(DEFAULT_HBONE_MTLS_PORT),
}).transform((g, ctx): GatewayAddress => {
  if (g.hostname !== undefined && g.address === undefined) {
    return { hostname: g.hostname, hboneMtlsPort: g.hboneMtlsPort };
  }
  if (g.address !== undefined && g.hostname === undefined) {
    return { address: g.address, hboneMtlsPort: g.hboneMtlsPort };
  }
  ctx.addIssue({
    code: 'custom',
    message:
      'expected exactly one of hostname: {namespace, hostname} or address: "ip" / "network/ip" (and optionally hboneMtlsPort)',
    input: g,
  });
  return z.NEVER;
});

const portSchema = strictObject({
  servicePort: port,
  targetPort: portOrZero.default(0),
  appProtocol: z.enum(AppProtocol).optional(),
});

const SERVICE_KEY = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$/;

const workloadSchema = strictObject({
  uid: z.string().min(1).max(1024).optional(),
  name: objectName,
  namespace: namespaceName,
  addresses: z.array(ipAddress).default([]),
  hostname: z.union([hostname, z.literal('')]).default(''),
  network: plainText.default(''),
  tunnelProtocol: z.enum(TunnelProtocol).default('NONE'),
  trustDomain: trustDomain.default(DEFAULT_TRUST_DOMAIN),
  serviceAccount: serviceAccountName.default(DEFAULT_SERVICE_ACCOUNT),
  waypoint: gatewayAddress.optional(),
  networkGateway: gatewayAddress.optional(),
  node: plainText.default(''),
  canonicalName: z.string().default(''),
  canonicalRevision: z.string().default(''),
  workloadType: z.enum(WorkloadType).default('POD'),
  workloadName: z.string().default(''),
  nativeTunnel: z.boolean().default(false),
  authorizationPolicies: z.array(z.string()).default([]),
  status: z.enum(WorkloadStatus).default('HEALTHY'),
  clusterId: plainText.default(''),
  services: z.record(z.string(), z.array(portSchema)).default({}),
  applicationTunnel: strictObject({
    protocol: z.enum(ApplicationTunnelProtocol).default('NONE'),
    port: portOrZero.default(0),
  }).optional(),
  locality: strictObject({
    region: z.string().default(''),
    zone: z.string().default(''),
    subzone: z.string().default(''),
  }).optional(),
  networkMode: z.enum(NetworkMode).default('STANDARD'),
  capacity: z.number().int().min(0).max(0xffffffff).default(1),
}).transform((w): Workload => ({
  ...w,
  // Upstream's uid shape: <cluster>//Pod/<namespace>/<name>.
  uid: w.uid ?? `${w.clusterId === '' ? 'Kubernetes' : w.clusterId}//Pod/${w.namespace}/${w.name}`,
}));

const serviceSchema = strictObject({
  name: objectName,
  namespace: namespaceName,
  hostname,
  addresses: z.array(networkAddress).default([]),
  ports: z.array(portSchema).default([]),
  subjectAltNames: z.array(z.string().min(1)).default([]),
  waypoint: gatewayAddress.optional(),
  loadBalancing: strictObject({
    routingPreference: z.array(z.enum(LoadBalancingScope)).default([]),
    mode: z.enum(LoadBalancingMode).default('UNSPECIFIED_MODE'),
    healthPolicy: z.enum(HealthPolicy).default('ONLY_HEALTHY'),
  }).optional(),
  ipFamilies: z.enum(IpFamilies).default('AUTOMATIC'),
  canonical: z.boolean().default(true),
  ingressUseWaypoint: z.boolean().default(false),
  weightedWaypoints: z
    .array(strictObject({ destination: gatewayAddress, weight: z.number().int().min(0).max(0xffffffff) }))
    .default([]),
  visibility: z.enum(ServiceVisibility).default('PUBLIC'),
}).transform((s): Service => s);

const documentSchema = strictObject({
  workloads: z.array(workloadSchema).default([]),
  services: z.array(serviceSchema).default([]),
  policies: z.array(policySchema).default([]),
});

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

function bound(origin: string, op: string, n: number | bigint): string {
  if (origin === 'string') return `a string of ${op} ${n} characters`;
  if (origin === 'array') return `a list of ${op} ${n} entries`;
  return `an integer ${op} ${n}`;
}

function issueText(iss: z.core.$ZodIssue): string {
  const where = formatPath(iss.path);
  const input: unknown = (iss as { input?: unknown }).input;
  if (iss.code === 'invalid_type') {
    if (input === undefined) return `${where}: required ${iss.expected} is missing`;
    const expected =
      iss.expected === 'object' ? 'a mapping' : iss.expected === 'array' ? 'a list' : `a ${iss.expected}`;
    return `${where}: got ${describeValue(input)}, expected ${expected}`;
  }
  if (iss.code === 'invalid_value') {
    return `${where}: got ${describeValue(input)}, expected one of ${iss.values.map((v) => String(v)).join(', ')}`;
  }
  if (iss.code === 'too_small') {
    return `${where}: got ${describeValue(input)}, expected ${bound(iss.origin, '≥', iss.minimum)}`;
  }
  if (iss.code === 'too_big') {
    return `${where}: got ${describeValue(input)}, expected ${bound(iss.origin, '≤', iss.maximum)}`;
  }
  if (iss.code === 'custom') return `${where}: got ${describeValue(input)}, ${iss.message}`;
  // unrecognized_keys (message built by strictObject above) and anything else zod reports.
  return `${where}: ${iss.message}`;
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
  const parsed = documentSchema.safeParse(data, { reportInput: true });
  if (!parsed.success) throw configError(file, parsed.error.issues.map(issueText));
  const snapshot: StateSnapshot = parsed.data;
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

export interface StaticConfigWatcher {
  /** Resolves once the initial load has been attempted (and reported). */
  readonly ready: Promise<void>;
  /** The last config that loaded successfully, if any. */
  lastGood(): StateSnapshot | undefined;
  close(): void;
}

export interface WatchOptions {
  /** Quiet time after the last change event before re-reading; editors write in bursts. */
  debounceMs?: number;
}

/**
 * Loads `path` now and again whenever it changes. Each good load is passed to `onSnapshot`; a bad
 * one is passed to `onError` and the last good config stays in force (the caller simply does not
 * replace its state). The directory is watched, not the file, so editors' rename-into-place and
 * Kubernetes ConfigMap symlink swaps are seen; unchanged content is not re-reported.
 */
export function watchStaticConfig(
  path: string,
  onSnapshot: (snapshot: StateSnapshot) => void,
  onError: (err: Error) => void,
  options: WatchOptions = {},
): StaticConfigWatcher {
  const debounceMs = options.debounceMs ?? 100;
  let lastText: string | undefined;
  let good: StateSnapshot | undefined;
  let timer: NodeJS.Timeout | undefined;
  // Mutable flags shared by the closures below (an object, so control-flow narrowing in one
  // closure does not assume another cannot change them).
  const st = { running: false, again: false, closed: false };

  // A function, because TypeScript would otherwise narrow `st.again` to the `false` assigned at
  // the top of the loop and ignore that an event handler set it meanwhile.
  const queued = (): boolean => st.again && !st.closed;

  const report = (err: unknown): void => {
    onError(err instanceof Error ? err : new Error(String(err)));
  };

  /** One read-validate-report pass; at most one runs at a time, later events queue one more. */
  const reload = async (): Promise<void> => {
    if (st.running) {
      st.again = true;
      return;
    }
    st.running = true;
    try {
      do {
        st.again = false;
        let text: string;
        try {
          text = await readFile(path, 'utf8');
        } catch (err) {
          // Often transient (the file is being replaced); the next event retries.
          if (!st.closed) {
            report(
              new StaticConfigError(
                'ZT_ERR_STATIC_CONFIG',
                `cannot read static config ${path}: ${errorMessage(err)}; keeping the last good config`,
                { cause: err },
              ),
            );
          }
          continue;
        }
        if (st.closed || text === lastText) continue;
        lastText = text;
        let snapshot: StateSnapshot;
        try {
          snapshot = parseStaticConfig(text, path);
        } catch (err) {
          report(err);
          continue;
        }
        good = snapshot;
        onSnapshot(snapshot);
      } while (queued());
    } finally {
      st.running = false;
    }
  };

  const schedule = (): void => {
    if (st.closed) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      reload().catch(report);
    }, debounceMs);
  };

  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dirname(path), { persistent: false }, () => {
      // Any entry in the directory may be the one that changed our file (ConfigMaps swap a
      // `..data` symlink); the content comparison in reload() filters out the rest.
      schedule();
    });
    watcher.on('error', (err) => {
      report(
        new StaticConfigError(
          'ZT_ERR_STATIC_CONFIG',
          `watching ${dirname(path)} for changes to ${basename(path)} failed: ${err.message}; restart ztunnel to pick up further changes`,
          { cause: err },
        ),
      );
    });
  } catch (err) {
    report(
      new StaticConfigError(
        'ZT_ERR_STATIC_CONFIG',
        `cannot watch ${dirname(path)} for changes to ${basename(path)}: ${errorMessage(err)}`,
        { cause: err },
      ),
    );
  }

  const ready = reload().catch(report);
  return {
    ready,
    lastGood: () => good,
    close: () => {
      st.closed = true;
      if (timer !== undefined) clearTimeout(timer);
      watcher?.close();
    },
  };
}

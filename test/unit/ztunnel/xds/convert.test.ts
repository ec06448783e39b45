// SPDX-License-Identifier: Apache-2.0
// WDS protobuf → ztunnel state (ztunnel/src/xds/convert.ts). The full static-config fixture,
// encoded as the protos istiod would send, converts back to exactly what the static loader
// produced (same shapes, names and defaults); each malformed resource is refused with a reason
// naming the field, and a resource whose name does not match its content is refused.
import { readFileSync } from 'node:fs';
import t from 'tap';
import * as pbAuth from '../../../../src/shared/gen/authorization.ts';
import * as pb from '../../../../src/shared/gen/workload.ts';
import { parseStaticConfig } from '../../../../ztunnel/src/config/static-config.ts';
import { parseIp } from '../../../../src/shared/net/ip.ts';
import type {
  Authorization,
  CidrAddress,
  GatewayAddress,
  NetworkAddress,
  Port,
  Service,
  StringMatch,
  Workload,
} from '../../../../ztunnel/src/state/types.ts';
import { convertAddress, convertAuthorization } from '../../../../ztunnel/src/xds/convert.ts';

// ---- state → proto, as istiod would encode it (test-only) ----

const idx = (names: readonly string[], v: string): number => {
  const i = names.indexOf(v);
  if (i < 0) throw new Error(`no enum value ${v}`);
  return i;
};
const bytes = (ip: string): Uint8Array => {
  const a = parseIp(ip);
  if (a === undefined) throw new Error(`not an IP: ${ip}`);
  return a.bytes;
};
const APP = ['UNKNOWN', 'HTTP11', 'HTTP2', 'GRPC', 'TCP', 'TLS'];
const netAddr = (a: NetworkAddress): pb.NetworkAddress => ({ network: a.network, address: bytes(a.address) });
const gw = (g: GatewayAddress): pb.GatewayAddress => ({
  destination:
    'hostname' in g
      ? { $case: 'hostname', value: g.hostname }
      : { $case: 'address', value: netAddr(g.address) },
  hboneMtlsPort: g.hboneMtlsPort,
});
const port = (p: Port): pb.Port => ({
  servicePort: p.servicePort,
  targetPort: p.targetPort,
  appProtocol: idx(APP, p.appProtocol ?? 'UNKNOWN') as pb.AppProtocol,
});

function workloadProto(w: Workload): pb.Workload {
  return {
    ...pb.Workload.fromPartial({}),
    uid: w.uid,
    name: w.name,
    namespace: w.namespace,
    addresses: w.addresses.map(bytes),
    hostname: w.hostname,
    network: w.network,
    tunnelProtocol: idx(['NONE', 'HBONE'], w.tunnelProtocol) as pb.TunnelProtocol,
    // istiod elides the defaults.
    trustDomain: w.trustDomain === 'cluster.local' ? '' : w.trustDomain,
    serviceAccount: w.serviceAccount === 'default' ? '' : w.serviceAccount,
    waypoint: w.waypoint && gw(w.waypoint),
    networkGateway: w.networkGateway && gw(w.networkGateway),
    node: w.node,
    canonicalName: w.canonicalName,
    canonicalRevision: w.canonicalRevision,
    workloadType: idx(['DEPLOYMENT', 'CRONJOB', 'POD', 'JOB'], w.workloadType) as pb.WorkloadType,
    workloadName: w.workloadName,
    nativeTunnel: w.nativeTunnel,
    authorizationPolicies: w.authorizationPolicies,
    status: idx(['HEALTHY', 'UNHEALTHY'], w.status) as pb.WorkloadStatus,
    clusterId: w.clusterId,
    services: new Map(Object.entries(w.services).map(([k, ps]) => [k, { ports: ps.map(port) }])),
    applicationTunnel: w.applicationTunnel && {
      protocol: idx(['NONE', 'PROXY'], w.applicationTunnel.protocol) as pb.ApplicationTunnel_Protocol,
      port: w.applicationTunnel.port,
    },
    locality: w.locality,
    networkMode: idx(['STANDARD', 'HOST_NETWORK'], w.networkMode) as pb.NetworkMode,
    capacity: w.capacity,
  };
}

function serviceProto(s: Service): pb.Service {
  return {
    ...pb.Service.fromPartial({}),
    name: s.name,
    namespace: s.namespace,
    hostname: s.hostname,
    addresses: s.addresses.map(netAddr),
    ports: s.ports.map(port),
    subjectAltNames: s.subjectAltNames,
    waypoint: s.waypoint && gw(s.waypoint),
    loadBalancing: s.loadBalancing && {
      routingPreference: s.loadBalancing.routingPreference.map(
        (x) =>
          idx(
            ['UNSPECIFIED_SCOPE', 'REGION', 'ZONE', 'SUBZONE', 'NODE', 'CLUSTER', 'NETWORK'],
            x,
          ) as pb.LoadBalancing_Scope,
      ),
      mode: idx(
        ['UNSPECIFIED_MODE', 'STRICT', 'FAILOVER', 'PASSTHROUGH'],
        s.loadBalancing.mode,
      ) as pb.LoadBalancing_Mode,
      healthPolicy: idx(
        ['ONLY_HEALTHY', 'ALLOW_ALL'],
        s.loadBalancing.healthPolicy,
      ) as pb.LoadBalancing_HealthPolicy,
    },
    ipFamilies: idx(['AUTOMATIC', 'IPV4_ONLY', 'IPV6_ONLY', 'DUAL'], s.ipFamilies) as pb.IPFamilies,
    canonical: s.canonical,
    ingressUseWaypoint: s.ingressUseWaypoint,
    weightedWaypoints: s.weightedWaypoints.map((w) => ({ destination: gw(w.destination), weight: w.weight })),
    visibility: idx(['PUBLIC', 'NAMESPACE'], s.visibility) as pb.Service_Visibility,
  };
}

const stringMatch = (m: StringMatch): pbAuth.StringMatch => ({
  matchType:
    'exact' in m
      ? { $case: 'exact', value: m.exact }
      : 'prefix' in m
        ? { $case: 'prefix', value: m.prefix }
        : 'suffix' in m
          ? { $case: 'suffix', value: m.suffix }
          : { $case: 'presence', value: {} },
});
const cidr = (c: CidrAddress): pbAuth.Address => ({ address: bytes(c.address), length: c.length });

function policyProto(p: Authorization): pbAuth.Authorization {
  return {
    name: p.name,
    namespace: p.namespace,
    scope: idx(['GLOBAL', 'NAMESPACE', 'WORKLOAD_SELECTOR'], p.scope) as pbAuth.Scope,
    action: idx(['ALLOW', 'DENY'], p.action) as pbAuth.Action,
    rules: p.rules.map((r) => ({
      clauses: r.clauses.map((c) => ({
        matches: c.matches.map((m) => ({
          namespaces: m.namespaces.map(stringMatch),
          notNamespaces: m.notNamespaces.map(stringMatch),
          principals: m.principals.map(stringMatch),
          notPrincipals: m.notPrincipals.map(stringMatch),
          sourceIps: m.sourceIps.map(cidr),
          notSourceIps: m.notSourceIps.map(cidr),
          destinationIps: m.destinationIps.map(cidr),
          notDestinationIps: m.notDestinationIps.map(cidr),
          destinationPorts: m.destinationPorts,
          notDestinationPorts: m.notDestinationPorts,
          serviceAccounts: m.serviceAccounts,
          notServiceAccounts: m.notServiceAccounts,
          extensions: [],
        })),
      })),
    })),
    dryRun: p.dryRun,
    extensions: [],
  };
}

/** Encodes and decodes, so the test sees exactly what crosses the wire. */
const wireAddress = (a: pb.Address): pb.Address => pb.Address.decode(pb.Address.encode(a).finish());
const wirePolicy = (a: pbAuth.Authorization): pbAuth.Authorization =>
  pbAuth.Authorization.decode(pbAuth.Authorization.encode(a).finish());

t.test(
  'the full static config, sent as WDS protos, converts to what the static loader produced',
  async (t) => {
    const file = 'test/fixtures/ztunnel/static-config-full.yaml';
    const snapshot = parseStaticConfig(readFileSync(file, 'utf8'), file);
    t.ok(snapshot.workloads.length > 0 && snapshot.services.length > 0 && snapshot.policies.length > 0);
    for (const w of snapshot.workloads) {
      const c = convertAddress(w.uid, wireAddress({ type: { $case: 'workload', value: workloadProto(w) } }));
      t.same(c, { ok: true, value: { kind: 'workload', workload: w } }, `workload ${w.uid}`);
    }
    for (const s of snapshot.services) {
      const name = `${s.namespace}/${s.hostname}`;
      const c = convertAddress(name, wireAddress({ type: { $case: 'service', value: serviceProto(s) } }));
      t.same(c, { ok: true, value: { kind: 'service', service: s } }, `service ${name}`);
    }
    for (const p of snapshot.policies) {
      const name = `${p.namespace}/${p.name}`;
      t.same(
        convertAuthorization(name, wirePolicy(policyProto(p))),
        { ok: true, value: p },
        `policy ${name}`,
      );
    }
  },
);

const baseWorkload = (): pb.Workload =>
  pb.Workload.fromPartial({
    uid: 'Kubernetes//Pod/apps/p',
    name: 'p',
    namespace: 'apps',
    addresses: [Uint8Array.of(198, 18, 1, 10)],
  });
const baseService = (): pb.Service =>
  pb.Service.fromPartial({ name: 'echo', namespace: 'apps', hostname: 'echo.apps.svc.cluster.local' });

t.test('fills the defaults istiod elides', async (t) => {
  const c = convertAddress(
    'Kubernetes//Pod/apps/p',
    wireAddress({
      type: {
        $case: 'workload',
        value: {
          ...baseWorkload(),
          waypoint: {
            destination: { $case: 'address', value: { network: '', address: Uint8Array.of(198, 18, 1, 2) } },
            hboneMtlsPort: 0,
          },
          services: new Map([
            [
              'apps/echo.apps.svc.cluster.local',
              { ports: [{ servicePort: 80, targetPort: 0, appProtocol: 0 }] },
            ],
          ]),
        },
      },
    }),
  );
  t.ok(c.ok);
  if (!c.ok || c.value.kind !== 'workload') return;
  const w = c.value.workload;
  t.equal(w.trustDomain, 'cluster.local');
  t.equal(w.serviceAccount, 'default');
  t.equal(w.capacity, 1, 'absent capacity is weight 1');
  t.equal(w.tunnelProtocol, 'NONE');
  t.equal(w.workloadType, 'DEPLOYMENT');
  t.same(w.waypoint, { address: { network: '', address: '198.18.1.2' }, hboneMtlsPort: 15008 });
  t.same(
    w.services,
    { 'apps/echo.apps.svc.cluster.local': [{ servicePort: 80, targetPort: 0 }] },
    'UNKNOWN app protocol left out',
  );
  const zero = convertAddress(
    'Kubernetes//Pod/apps/p',
    wireAddress({ type: { $case: 'workload', value: { ...baseWorkload(), capacity: 0 } } }),
  );
  t.equal(
    zero.ok && zero.value.kind === 'workload' ? zero.value.workload.capacity : -1,
    0,
    'capacity 0 is kept',
  );
});

t.test('refuses malformed workloads, services and policies, naming the field', async (t) => {
  const W = 'Kubernetes//Pod/apps/p';
  const workload = (over: Partial<pb.Workload>): pb.Address => ({
    type: { $case: 'workload', value: { ...baseWorkload(), ...over } },
  });
  const service = (over: Partial<pb.Service>): pb.Address => ({
    type: { $case: 'service', value: { ...baseService(), ...over } },
  });
  const S = 'apps/echo.apps.svc.cluster.local';
  const addressCases: [string, string, pb.Address, RegExp][] = [
    [
      '5-byte address',
      W,
      workload({ addresses: [Uint8Array.of(1, 2, 3, 4, 5)] }),
      /workload\.addresses\[0\]: got 5 bytes, expected 4 \(IPv4\) or 16 \(IPv6\)/,
    ],
    [
      'IPv4-mapped address',
      W,
      workload({ addresses: [Uint8Array.from([...new Array<number>(10).fill(0), 0xff, 0xff, 10, 0, 0, 1])] }),
      /IPv4-mapped IPv6 ::ffff:10\.0\.0\.1/,
    ],
    [
      'unknown tunnel protocol',
      W,
      workload({ tunnelProtocol: 7 as pb.TunnelProtocol }),
      /workload\.tunnelProtocol: unknown TunnelProtocol value 7 \(expected one of NONE=0, HBONE=1\)/,
    ],
    ['LEGACY_ISTIO_MTLS', W, workload({ tunnelProtocol: 2 }), /LEGACY_ISTIO_MTLS is not supported/],
    ['unknown status', W, workload({ status: 9 as pb.WorkloadStatus }), /unknown WorkloadStatus value 9/],
    [
      'both addresses and hostname',
      W,
      workload({ hostname: 'db.example.com' }),
      /has both addresses and hostname/,
    ],
    ['neither addresses nor hostname', W, workload({ addresses: [] }), /has neither addresses nor hostname/],
    [
      'bad namespace',
      W,
      workload({ namespace: 'Apps' }),
      /workload\.namespace: got "Apps", expected a Kubernetes namespace name/,
    ],
    ['bad service account', W, workload({ serviceAccount: 'a b' }), /workload\.serviceAccount: got "a b"/],
    ['bad trust domain', W, workload({ trustDomain: 'Example.org' }), /workload\.trustDomain/],
    ['empty uid', '', workload({ uid: '' }), /workload\.uid: got "", expected a uid of 1 to 1024 characters/],
    ['uid not the resource name', 'other', workload({}), /a workload's resource name must be its uid/],
    [
      'bad service key in services',
      W,
      workload({ services: new Map([['echo', { ports: [] }]]) }),
      /workload\.services\["echo"\]: expected a service key "namespace\/hostname"/,
    ],
    [
      'duplicate service port',
      W,
      workload({
        services: new Map([
          [
            S,
            {
              ports: [
                { servicePort: 80, targetPort: 1, appProtocol: 0 },
                { servicePort: 80, targetPort: 2, appProtocol: 0 },
              ],
            },
          ],
        ]),
      }),
      /\.servicePort: duplicate service port 80/,
    ],
    [
      'port out of range',
      W,
      workload({
        services: new Map([[S, { ports: [{ servicePort: 70000, targetPort: 1, appProtocol: 0 }] }]]),
      }),
      /servicePort: got 70000, expected an integer in \[1, 65535\]/,
    ],
    [
      'unknown app protocol',
      W,
      workload({
        services: new Map([
          [S, { ports: [{ servicePort: 80, targetPort: 1, appProtocol: 99 as pb.AppProtocol }] }],
        ]),
      }),
      /unknown AppProtocol value 99/,
    ],
    [
      'gateway without destination',
      W,
      workload({ waypoint: { destination: undefined, hboneMtlsPort: 15008 } }),
      /workload\.waypoint: expected exactly one of hostname or address/,
    ],
    [
      'gateway port out of range',
      W,
      workload({
        waypoint: {
          destination: {
            $case: 'hostname',
            value: { namespace: 'apps', hostname: 'wp.apps.svc.cluster.local' },
          },
          hboneMtlsPort: 70000,
        },
      }),
      /waypoint\.hboneMtlsPort: got 70000/,
    ],
    ['neither workload nor service', W, { type: undefined }, /neither workload nor service/],
    [
      'service name mismatch',
      'apps/other.apps.svc.cluster.local',
      service({}),
      /a service's resource name must be namespace\/hostname/,
    ],
    [
      '3-byte VIP',
      S,
      service({ addresses: [{ network: '', address: Uint8Array.of(1, 2, 3) }] }),
      /service\.addresses\[0\]\.address: got 3 bytes/,
    ],
    [
      'CIDR VIP',
      S,
      service({ addresses: [{ network: '', address: Uint8Array.of(198, 19, 0, 0), length: 24 }] }),
      /service\.addresses\[0\]\.length: got prefix length 24, but CIDR addresses are not supported/,
    ],
    ['bad hostname', 'apps/bad host', service({ hostname: 'bad host' }), /service\.hostname: got "bad host"/],
    [
      'unknown visibility',
      S,
      service({ visibility: 5 as pb.Service_Visibility }),
      /unknown Service\.Visibility value 5/,
    ],
    [
      'unknown LB scope',
      S,
      service({
        loadBalancing: { routingPreference: [42 as pb.LoadBalancing_Scope], mode: 0, healthPolicy: 0 },
      }),
      /loadBalancing\.routingPreference\[0\]: unknown LoadBalancing\.Scope value 42/,
    ],
    [
      'weighted waypoint without destination',
      S,
      service({ weightedWaypoints: [{ destination: undefined, weight: 1 }] }),
      /weightedWaypoints\[0\]\.destination: required GatewayAddress is missing/,
    ],
    [
      'empty SAN',
      S,
      service({ subjectAltNames: [''] }),
      /subjectAltNames\[0\]: got "", expected a non-empty SAN/,
    ],
  ];
  for (const [what, name, addr, re] of addressCases) {
    const c = convertAddress(name, wireAddress(addr));
    t.equal(c.ok, false, what);
    t.match(c.ok ? '' : c.reason, re, what);
  }

  const policy = (over: Partial<pbAuth.Authorization>): pbAuth.Authorization =>
    pbAuth.Authorization.fromPartial({ name: 'p', namespace: 'apps', scope: 1, action: 0, ...over });
  const withMatch = (m: Partial<pbAuth.Match>): pbAuth.Authorization =>
    policy({ rules: [{ clauses: [{ matches: [pbAuth.Match.fromPartial(m)] }] }] });
  const policyCases: [string, string, pbAuth.Authorization, RegExp][] = [
    [
      'unknown action',
      'apps/p',
      policy({ action: 3 as pbAuth.Action }),
      /authorization\.action: unknown Action value 3/,
    ],
    [
      'unknown scope',
      'apps/p',
      policy({ scope: 4 as pbAuth.Scope }),
      /authorization\.scope: unknown Scope value 4/,
    ],
    ['name mismatch', 'apps/q', policy({}), /a policy's resource name must be namespace\/name/],
    ['bad policy name', 'apps/p q', policy({ name: 'p q' }), /authorization\.name: got "p q"/],
    [
      'unset StringMatch',
      'apps/p',
      withMatch({ principals: [{ matchType: undefined }] }),
      /rules\[0\]\.clauses\[0\]\.matches\[0\]\.principals\[0\]: expected exactly one of exact, prefix, suffix, presence/,
    ],
    [
      '5-byte CIDR',
      'apps/p',
      withMatch({ sourceIps: [{ address: Uint8Array.of(1, 2, 3, 4, 5), length: 8 }] }),
      /sourceIps\[0\]\.address: got 5 bytes/,
    ],
    [
      'prefix too long',
      'apps/p',
      withMatch({ destinationIps: [{ address: Uint8Array.of(10, 0, 0, 0), length: 33 }] }),
      /destinationIps\[0\]\.length: got 33, expected an integer in \[0, 32\]/,
    ],
    ['port 0', 'apps/p', withMatch({ destinationPorts: [0] }), /destinationPorts\[0\]: got 0/],
    [
      'bad service account match',
      'apps/p',
      withMatch({ serviceAccounts: [{ namespace: '', serviceAccount: 'x' }] }),
      /serviceAccounts\[0\]\.namespace: got ""/,
    ],
  ];
  for (const [what, name, p, re] of policyCases) {
    const c = convertAuthorization(name, wirePolicy(p));
    t.equal(c.ok, false, what);
    t.match(c.ok ? '' : c.reason, re, what);
  }
});

t.test('matcher text is not linted: a policy whose matcher cannot match is kept, not refused', async (t) => {
  const p = pbAuth.Authorization.fromPartial({
    name: 'p',
    namespace: 'apps',
    scope: 1,
    action: 0,
    rules: [
      {
        clauses: [
          {
            matches: [
              { principals: [{ matchType: { $case: 'exact', value: 'spiffe://cluster.local/ns/a/sa/b' } }] },
            ],
          },
        ],
      },
    ],
  });
  const c = convertAuthorization('apps/p', wirePolicy(p));
  t.ok(c.ok, 'refusing it would drop the ALLOW, which is never safer than an ALLOW that matches nothing');
});

t.test('lists at most five problems per resource and counts the rest', async (t) => {
  const c = convertAddress(
    'Kubernetes//Pod/apps/p',
    wireAddress({
      type: {
        $case: 'workload',
        value: { ...baseWorkload(), addresses: Array.from({ length: 8 }, () => Uint8Array.of(1)) },
      },
    }),
  );
  t.equal(c.ok, false);
  t.match(c.ok ? '' : c.reason, /addresses\[4\].*\(and 3 more\)$/);
  t.notMatch(c.ok ? '' : c.reason, /; /, 'no "; " inside one resource\'s reason');
  t.notMatch(c.ok ? '' : c.reason, /addresses\[5\]/);
});

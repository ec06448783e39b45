// SPDX-License-Identifier: Apache-2.0
// The outbound decision procedure (spec §1.6) as a table over one store.
import t from 'tap';
import type { EndpointChooser, OutboundRoute } from '../../../../ztunnel/src/proxy/route.ts';
import {
  randomChooser,
  roundRobinChooser,
  routeOutbound,
  targetPortFor,
} from '../../../../ztunnel/src/proxy/route.ts';
import { StateStore } from '../../../../ztunnel/src/state/store.ts';
import type { Workload } from '../../../../ztunnel/src/state/types.ts';
import { newService, newWorkload } from '../../../../ztunnel/src/state/types.ts';

const ECHO = 'default/echo.default.svc.cluster.local';
const ALL = 'default/all.default.svc.cluster.local';
const vip = (address: string, network = '') => [{ network, address }];

function buildStore(): StateStore {
  const s = new StateStore();
  const w = (uid: string, fields: Partial<Workload>): Workload =>
    newWorkload({ uid, name: uid, namespace: 'default', tunnelProtocol: 'HBONE', node: 'node-1', ...fields });
  s.replaceAll({
    workloads: [
      w('client', { addresses: ['198.18.1.10', 'fd00:18:1::10'], serviceAccount: 'client' }),
      w('echo-1', {
        addresses: ['198.18.1.20', 'fd00:18:1::20'],
        serviceAccount: 'echo',
        services: { [ECHO]: [{ servicePort: 80, targetPort: 8080 }], [ALL]: [] },
      }),
      w('echo-2', {
        addresses: ['198.18.2.20'],
        serviceAccount: 'echo',
        node: 'node-2',
        status: 'UNHEALTHY',
        services: { [ECHO]: [{ servicePort: 80, targetPort: 8080 }], [ALL]: [] },
      }),
      w('legacy', {
        namespace: 'legacy',
        addresses: ['198.18.2.30'],
        tunnelProtocol: 'NONE',
        node: 'node-2',
        services: { 'legacy/legacy.legacy.svc.cluster.local': [] },
      }),
      // Named target port: the per-workload mapping decides.
      w('named-a', {
        addresses: ['198.18.1.40'],
        services: { 'default/named.default.svc.cluster.local': [{ servicePort: 80, targetPort: 9090 }] },
      }),
      w('named-b', {
        addresses: ['198.18.1.41'],
        services: { 'default/named.default.svc.cluster.local': [] },
      }),
      // A waypoint for the "guarded" service, and a workload with a workload waypoint.
      w('waypoint-0', {
        addresses: ['198.18.1.50'],
        serviceAccount: 'waypoint',
        services: {
          'default/waypoint.default.svc.cluster.local': [{ servicePort: 15008, targetPort: 15008 }],
        },
      }),
      w('guarded-pod', {
        addresses: ['198.18.1.60'],
        serviceAccount: 'guarded',
        waypoint: {
          hostname: { namespace: 'default', hostname: 'waypoint.default.svc.cluster.local' },
          hboneMtlsPort: 15008,
        },
        services: { 'default/guarded.default.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] },
      }),
      w('orphan-pod', {
        addresses: ['198.18.1.61'],
        waypoint: {
          hostname: { namespace: 'default', hostname: 'gone.default.svc.cluster.local' },
          hboneMtlsPort: 15008,
        },
      }),
      w('remote', {
        addresses: ['10.9.0.5'],
        network: 'far',
        services: { 'default/remote.default.svc.cluster.local': [] },
      }),
      // Locality and capacity.
      w('zone-a', {
        addresses: ['198.18.3.1'],
        locality: { region: 'r', zone: 'a', subzone: '' },
        node: 'node-3',
        services: { 'default/local.default.svc.cluster.local': [] },
      }),
      w('zone-b', {
        addresses: ['198.18.3.2'],
        locality: { region: 'r', zone: 'b', subzone: '' },
        node: 'node-1',
        services: { 'default/local.default.svc.cluster.local': [] },
      }),
      w('cap-0', {
        addresses: ['198.18.4.1'],
        capacity: 0,
        services: { 'default/cap.default.svc.cluster.local': [] },
      }),
      w('cap-1', {
        addresses: ['198.18.4.2'],
        capacity: 1,
        services: { 'default/cap.default.svc.cluster.local': [] },
      }),
    ],
    services: [
      newService({
        name: 'echo',
        namespace: 'default',
        hostname: 'echo.default.svc.cluster.local',
        addresses: [...vip('198.19.0.10'), ...vip('fd00:19::10')],
        ports: [{ servicePort: 80, targetPort: 8080 }],
        subjectAltNames: [
          'spiffe://cluster.local/ns/default/sa/echo-alt',
          'spiffe://cluster.local/ns/default/sa/echo',
        ],
      }),
      // Another namespace's service on the same VIP: the source namespace must win.
      newService({
        name: 'impostor',
        namespace: 'other',
        hostname: 'impostor.other.svc.cluster.local',
        addresses: vip('198.19.0.10'),
        ports: [{ servicePort: 80, targetPort: 1 }],
        canonical: true,
      }),
      newService({
        name: 'legacy',
        namespace: 'legacy',
        hostname: 'legacy.legacy.svc.cluster.local',
        addresses: vip('198.19.0.30'),
        ports: [{ servicePort: 5432, targetPort: 5432 }],
      }),
      newService({
        name: 'empty',
        namespace: 'default',
        hostname: 'empty.default.svc.cluster.local',
        addresses: vip('198.19.0.20'),
        ports: [{ servicePort: 80, targetPort: 80 }],
      }),
      newService({
        name: 'pt',
        namespace: 'default',
        hostname: 'pt.default.svc.cluster.local',
        addresses: vip('198.19.0.21'),
        ports: [{ servicePort: 80, targetPort: 80 }],
        loadBalancing: { routingPreference: [], mode: 'PASSTHROUGH', healthPolicy: 'ONLY_HEALTHY' },
      }),
      newService({
        name: 'named',
        namespace: 'default',
        hostname: 'named.default.svc.cluster.local',
        addresses: vip('198.19.0.40'),
        ports: [{ servicePort: 80, targetPort: 0 }],
      }),
      newService({
        name: 'waypoint',
        namespace: 'default',
        hostname: 'waypoint.default.svc.cluster.local',
        addresses: vip('198.19.0.50'),
        ports: [{ servicePort: 15008, targetPort: 15008 }],
      }),
      newService({
        name: 'guarded',
        namespace: 'default',
        hostname: 'guarded.default.svc.cluster.local',
        addresses: vip('198.19.0.60'),
        ports: [{ servicePort: 80, targetPort: 8080 }],
        waypoint: {
          hostname: { namespace: 'default', hostname: 'waypoint.default.svc.cluster.local' },
          hboneMtlsPort: 15008,
        },
      }),
      newService({
        name: 'unguarded',
        namespace: 'default',
        hostname: 'unguarded.default.svc.cluster.local',
        addresses: vip('198.19.0.61'),
        ports: [{ servicePort: 80, targetPort: 8080 }],
        waypoint: {
          hostname: { namespace: 'default', hostname: 'gone.default.svc.cluster.local' },
          hboneMtlsPort: 15008,
        },
      }),
      newService({
        name: 'remote',
        namespace: 'default',
        hostname: 'remote.default.svc.cluster.local',
        addresses: vip('198.19.0.70'),
        ports: [{ servicePort: 80, targetPort: 80 }],
      }),
      newService({
        name: 'local',
        namespace: 'default',
        hostname: 'local.default.svc.cluster.local',
        addresses: vip('198.19.0.80'),
        ports: [{ servicePort: 80, targetPort: 80 }],
        loadBalancing: { routingPreference: ['NODE'], mode: 'STRICT', healthPolicy: 'ONLY_HEALTHY' },
      }),
      newService({
        name: 'cap',
        namespace: 'default',
        hostname: 'cap.default.svc.cluster.local',
        addresses: vip('198.19.0.90'),
        ports: [{ servicePort: 80, targetPort: 80 }],
      }),
      newService({
        name: 'all',
        namespace: 'default',
        hostname: 'all.default.svc.cluster.local',
        addresses: vip('198.19.0.11'),
        ports: [{ servicePort: 80, targetPort: 8080 }],
        loadBalancing: { routingPreference: [], mode: 'UNSPECIFIED_MODE', healthPolicy: 'ALLOW_ALL' },
      }),
    ],
    policies: [],
  });
  return s;
}

/** Deterministic chooser: the smallest uid, recording the candidates it was offered. */
function firstByUid(seen: string[][] = []): EndpointChooser {
  return (c) => {
    const sorted = [...c].sort((a, b) => (a.uid < b.uid ? -1 : 1));
    seen.push(sorted.map((w) => w.uid));
    return sorted[0] as Workload;
  };
}

type Summary =
  | {
      kind: 'hbone';
      peer: string;
      authority: string;
      ids: string[];
      dst: string;
      service?: string;
      waypoint?: boolean;
    }
  | { kind: 'plaintext'; to: string; dst?: string; service?: string }
  | { kind: 'passthrough'; to: string }
  | { kind: 'refuse'; reason: RegExp };

function summarize(r: OutboundRoute): Record<string, unknown> {
  switch (r.kind) {
    case 'hbone':
      return {
        kind: r.kind,
        peer: `${r.peer.ip}:${r.peer.port}`,
        authority: r.authority,
        ids: r.expectedIdentities,
        dst: r.destinationWorkload.uid,
        ...(r.service ? { service: r.service.name } : {}),
        ...(r.waypoint ? { waypoint: true } : {}),
      };
    case 'plaintext':
      return {
        kind: r.kind,
        to: `${r.ip}:${r.port}`,
        ...(r.destinationWorkload ? { dst: r.destinationWorkload.uid } : {}),
        ...(r.service ? { service: r.service.name } : {}),
      };
    case 'passthrough':
      return { kind: r.kind, to: `${r.ip}:${r.port}` };
    case 'refuse':
      return { kind: r.kind, reason: r.reason };
  }
}

const ID = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;

t.test('routing table (spec §1.6)', async (t) => {
  const store = buildStore();
  const src = (uid: string): Workload => {
    const w = store.workload(uid);
    if (w === undefined) throw new Error(`no ${uid}`);
    return w;
  };
  const rows: { name: string; from?: string; ip: string; port: number; want: Summary }[] = [
    {
      name: 'service VIP → healthy endpoint over HBONE, target port, identities + SANs (deduplicated)',
      ip: '198.19.0.10',
      port: 80,
      want: {
        kind: 'hbone',
        peer: '198.18.1.20:15008',
        authority: '198.18.1.20:8080',
        ids: [ID('default', 'echo'), ID('default', 'echo-alt')],
        dst: 'echo-1',
        service: 'echo',
      },
    },
    {
      name: 'IPv6 VIP → IPv6 endpoint address, bracketed authority',
      ip: 'fd00:19::10',
      port: 80,
      want: {
        kind: 'hbone',
        peer: 'fd00:18:1::20:15008',
        authority: '[fd00:18:1::20]:8080',
        ids: [ID('default', 'echo'), ID('default', 'echo-alt')],
        dst: 'echo-1',
        service: 'echo',
      },
    },
    {
      name: 'IPv4-mapped original destination is treated as IPv4',
      ip: '::ffff:198.19.0.10',
      port: 80,
      want: {
        kind: 'hbone',
        peer: '198.18.1.20:15008',
        authority: '198.18.1.20:8080',
        ids: [ID('default', 'echo'), ID('default', 'echo-alt')],
        dst: 'echo-1',
        service: 'echo',
      },
    },
    {
      name: 'workload IP → direct HBONE with the dialled port',
      ip: '198.18.2.20',
      port: 9000,
      want: {
        kind: 'hbone',
        peer: '198.18.2.20:15008',
        authority: '198.18.2.20:9000',
        ids: [ID('default', 'echo')],
        dst: 'echo-2',
      },
    },
    {
      name: 'tunnelProtocol NONE workload IP → plaintext',
      ip: '198.18.2.30',
      port: 5432,
      want: { kind: 'plaintext', to: '198.18.2.30:5432', dst: 'legacy' },
    },
    {
      name: 'service with a NONE endpoint → plaintext to the endpoint',
      ip: '198.19.0.30',
      port: 5432,
      want: { kind: 'plaintext', to: '198.18.2.30:5432', dst: 'legacy', service: 'legacy' },
    },
    {
      name: 'unknown IP → passthrough',
      ip: '203.0.113.7',
      port: 443,
      want: { kind: 'passthrough', to: '203.0.113.7:443' },
    },
    {
      name: 'loopback, ordinary port → passthrough',
      ip: '127.0.0.1',
      port: 8080,
      want: { kind: 'passthrough', to: '127.0.0.1:8080' },
    },
    {
      name: 'self-call 127.0.0.1:15001',
      ip: '127.0.0.1',
      port: 15001,
      want: { kind: 'refuse', reason: /self-call.*15001/ },
    },
    {
      name: 'self-call 127.0.0.1:15006',
      ip: '127.0.0.1',
      port: 15006,
      want: { kind: 'refuse', reason: /self-call/ },
    },
    { name: 'self-call [::1]:15008', ip: '::1', port: 15008, want: { kind: 'refuse', reason: /self-call/ } },
    {
      name: 'self-call 127.0.0.1:15080 (SOCKS5)',
      ip: '127.0.0.1',
      port: 15080,
      want: { kind: 'refuse', reason: /self-call/ },
    },
    {
      name: 'self-call to own pod IP:15006',
      ip: '198.18.1.10',
      port: 15006,
      want: { kind: 'refuse', reason: /self-call/ },
    },
    {
      name: 'another pod on 15008 is not a self-call (its inbound decides)',
      ip: '198.18.1.20',
      port: 15008,
      want: {
        kind: 'hbone',
        peer: '198.18.1.20:15008',
        authority: '198.18.1.20:15008',
        ids: [ID('default', 'echo')],
        dst: 'echo-1',
      },
    },
    {
      name: 'service with no endpoints → refuse',
      ip: '198.19.0.20',
      port: 80,
      want: { kind: 'refuse', reason: /no healthy upstream for service default\/empty/ },
    },
    {
      name: 'service port not defined → refuse',
      ip: '198.19.0.10',
      port: 81,
      want: { kind: 'refuse', reason: /has no port 81/ },
    },
    {
      name: 'PASSTHROUGH service with no endpoints → passthrough',
      ip: '198.19.0.21',
      port: 80,
      want: { kind: 'passthrough', to: '198.19.0.21:80' },
    },
    {
      name: 'named target port: per-workload mapping',
      ip: '198.19.0.40',
      port: 80,
      want: {
        kind: 'hbone',
        peer: '198.18.1.40:15008',
        authority: '198.18.1.40:9090',
        ids: [ID('default', 'default')],
        dst: 'named-a',
        service: 'named',
      },
    },
    {
      name: 'service waypoint: HBONE to the waypoint, authority = original VIP:port, waypoint identity',
      ip: '198.19.0.60',
      port: 80,
      want: {
        kind: 'hbone',
        peer: '198.18.1.50:15008',
        authority: '198.19.0.60:80',
        ids: [ID('default', 'waypoint')],
        dst: 'waypoint-0',
        service: 'guarded',
        waypoint: true,
      },
    },
    {
      name: 'service waypoint, source is the waypoint → direct to the endpoint',
      from: 'waypoint-0',
      ip: '198.19.0.60',
      port: 80,
      want: {
        kind: 'hbone',
        peer: '198.18.1.60:15008',
        authority: '198.18.1.60:8080',
        ids: [ID('default', 'guarded')],
        dst: 'guarded-pod',
        service: 'guarded',
      },
    },
    {
      name: 'unresolvable service waypoint → refuse (fail closed)',
      ip: '198.19.0.61',
      port: 80,
      want: {
        kind: 'refuse',
        reason: /waypoint default\/gone.default.svc.cluster.local of service default\/unguarded.*not known/,
      },
    },
    {
      name: 'workload waypoint: pod-IP traffic goes to the waypoint with authority = pod IP:port',
      ip: '198.18.1.60',
      port: 8080,
      want: {
        kind: 'hbone',
        peer: '198.18.1.50:15008',
        authority: '198.18.1.60:8080',
        ids: [ID('default', 'waypoint')],
        dst: 'waypoint-0',
        waypoint: true,
      },
    },
    {
      name: 'workload waypoint, source is the waypoint → direct',
      from: 'waypoint-0',
      ip: '198.18.1.60',
      port: 8080,
      want: {
        kind: 'hbone',
        peer: '198.18.1.60:15008',
        authority: '198.18.1.60:8080',
        ids: [ID('default', 'guarded')],
        dst: 'guarded-pod',
      },
    },
    {
      name: 'unresolvable workload waypoint → refuse',
      ip: '198.18.1.61',
      port: 8080,
      want: { kind: 'refuse', reason: /waypoint .* of workload orphan-pod/ },
    },
    {
      name: 'endpoints only on another network → refuse naming multi-network',
      ip: '198.19.0.70',
      port: 80,
      want: { kind: 'refuse', reason: /only on other networks.*not supported/ },
    },
    {
      name: 'LB STRICT [NODE]: only the endpoint on the source node',
      ip: '198.19.0.80',
      port: 80,
      want: {
        kind: 'hbone',
        peer: '198.18.3.2:15008',
        authority: '198.18.3.2:80',
        ids: [ID('default', 'default')],
        dst: 'zone-b',
        service: 'local',
      },
    },
    {
      name: 'LB STRICT [NODE]: no endpoint on the node → refuse',
      from: 'echo-2',
      ip: '198.19.0.80',
      port: 80,
      want: { kind: 'refuse', reason: /within its load-balancing scope/ },
    },
    {
      name: 'capacity 0 endpoints are not chosen while others exist',
      ip: '198.19.0.90',
      port: 80,
      want: {
        kind: 'hbone',
        peer: '198.18.4.2:15008',
        authority: '198.18.4.2:80',
        ids: [ID('default', 'default')],
        dst: 'cap-1',
        service: 'cap',
      },
    },
  ];
  for (const row of rows) {
    const r = routeOutbound(store, {
      source: src(row.from ?? 'client'),
      origDst: { ip: row.ip, port: row.port },
      chooser: firstByUid(),
    });
    const got = summarize(r);
    if (row.want.kind === 'refuse') {
      t.equal(got.kind, 'refuse', `${row.name}: kind`);
      t.match(String(got.reason), row.want.reason, `${row.name}: reason`);
    } else {
      t.same(got, row.want, row.name);
    }
  }
});

t.test("shared VIP: the source namespace's service wins over a canonical one elsewhere", async (t) => {
  const store = buildStore();
  const client = store.workload('client');
  if (client === undefined) throw new Error('setup');
  const r = routeOutbound(store, {
    source: client,
    origDst: { ip: '198.19.0.10', port: 80 },
    chooser: firstByUid(),
  });
  t.equal(r.kind === 'hbone' ? r.service?.name : undefined, 'echo');
  const stranger = { ...client, namespace: 'other', uid: 'stranger' };
  const r2 = routeOutbound(store, {
    source: stranger,
    origDst: { ip: '198.19.0.10', port: 80 },
    chooser: firstByUid(),
  });
  t.equal(r2.kind, 'refuse', 'impostor service has no endpoints');
});

t.test('health: unhealthy endpoints are excluded unless healthPolicy ALLOW_ALL', async (t) => {
  const store = buildStore();
  const client = store.workload('client');
  if (client === undefined) throw new Error('setup');
  const seen: string[][] = [];
  routeOutbound(store, {
    source: client,
    origDst: { ip: '198.19.0.10', port: 80 },
    chooser: firstByUid(seen),
  });
  t.same(seen.pop(), ['echo-1']);
  routeOutbound(store, {
    source: client,
    origDst: { ip: '198.19.0.11', port: 80 },
    chooser: firstByUid(seen),
  });
  t.same(seen.pop(), ['echo-1', 'echo-2']);
});

t.test('LB FAILOVER prefers the closest tier that has endpoints', async (t) => {
  const store = buildStore();
  store.upsertService(
    newService({
      name: 'fo',
      namespace: 'default',
      hostname: 'local.default.svc.cluster.local',
      addresses: vip('198.19.0.81'),
      ports: [{ servicePort: 80, targetPort: 80 }],
      loadBalancing: {
        routingPreference: ['REGION', 'ZONE'],
        mode: 'FAILOVER',
        healthPolicy: 'ONLY_HEALTHY',
      },
    }),
  );
  // The service above replaces default/local... (same key), so its endpoints are zone-a and zone-b.
  const base = store.workload('client');
  if (base === undefined) throw new Error('setup');
  const inZoneA = { ...base, locality: { region: 'r', zone: 'a', subzone: '' } };
  const seen: string[][] = [];
  routeOutbound(store, {
    source: inZoneA,
    origDst: { ip: '198.19.0.81', port: 80 },
    chooser: firstByUid(seen),
  });
  t.same(seen.pop(), ['zone-a']);
  const inZoneC = { ...base, locality: { region: 'r', zone: 'c', subzone: '' } };
  routeOutbound(store, {
    source: inZoneC,
    origDst: { ip: '198.19.0.81', port: 80 },
    chooser: firstByUid(seen),
  });
  t.same(seen.pop(), ['zone-a', 'zone-b'], 'same region, no zone match: all of the region');
});

t.test('a waypoint given by address: on our network it is used, on another network we refuse', async (t) => {
  const store = buildStore();
  const client = store.workload('client');
  if (client === undefined) throw new Error('setup');
  store.upsertWorkload(
    newWorkload({
      uid: 'far-wp',
      name: 'far-wp',
      namespace: 'default',
      addresses: ['10.9.0.9'],
      network: 'far',
      serviceAccount: 'wp',
    }),
  );
  const target = (address: { network: string; address: string }): Workload =>
    newWorkload({
      uid: `t-${address.address}`,
      name: 't',
      namespace: 'default',
      addresses: ['198.18.5.1'],
      tunnelProtocol: 'HBONE',
      waypoint: { address, hboneMtlsPort: 15008 },
    });
  store.upsertWorkload(target({ network: '', address: '198.18.1.50' }));
  const near = routeOutbound(store, { source: client, origDst: { ip: '198.18.5.1', port: 80 } });
  t.same(near.kind === 'hbone' ? [near.peer.ip, near.authority, near.waypoint] : near, [
    '198.18.1.50',
    '198.18.5.1:80',
    true,
  ]);
  store.upsertWorkload(target({ network: 'far', address: '10.9.0.9' }));
  const far = routeOutbound(store, { source: client, origDst: { ip: '198.18.5.1', port: 80 } });
  t.equal(far.kind, 'refuse');
  t.match(far.kind === 'refuse' ? far.reason : '', /on network "far"; multi-network/);
});

t.test('custom HBONE port is used for direct dials', async (t) => {
  const store = buildStore();
  const client = store.workload('client');
  if (client === undefined) throw new Error('setup');
  const r = routeOutbound(store, {
    source: client,
    origDst: { ip: '198.18.2.20', port: 80 },
    hboneMtlsPort: 25008,
  });
  t.same(r.kind === 'hbone' ? r.peer : undefined, { ip: '198.18.2.20', port: 25008 });
});

t.test('choosers', async (t) => {
  const ws = ['a', 'b', 'c'].map((uid) => newWorkload({ uid, name: uid, namespace: 'x' }));
  const rr = roundRobinChooser();
  t.same(
    [rr(ws), rr(ws), rr(ws), rr(ws)].map((w) => w.uid),
    ['a', 'b', 'c', 'a'],
  );
  const weighted = [
    newWorkload({ uid: 'zero', name: 'z', namespace: 'x', capacity: 0 }),
    newWorkload({ uid: 'one', name: 'o', namespace: 'x', capacity: 1 }),
  ];
  for (let i = 0; i < 200; i++) t.equal(randomChooser(weighted).uid, 'one');
  const counts = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const u = randomChooser(ws).uid;
    counts.set(u, (counts.get(u) ?? 0) + 1);
  }
  t.equal(counts.size, 3, 'every endpoint is chosen sometimes');
});

t.test('targetPortFor', async (t) => {
  const svc = newService({
    name: 's',
    namespace: 'n',
    hostname: 'h',
    ports: [
      { servicePort: 80, targetPort: 8080 },
      { servicePort: 81, targetPort: 0 },
    ],
  });
  const w = newWorkload({
    uid: 'w',
    name: 'w',
    namespace: 'n',
    services: { 'n/h': [{ servicePort: 80, targetPort: 9999 }] },
  });
  const bare = newWorkload({ uid: 'b', name: 'b', namespace: 'n' });
  t.equal(targetPortFor(svc, w, 80), 9999, 'per-workload override first');
  t.equal(targetPortFor(svc, bare, 80), 8080, 'then Service.ports');
  t.equal(targetPortFor(svc, bare, 81), 81, 'targetPort 0 = the service port');
  t.equal(targetPortFor(svc, bare, 82), undefined, 'unknown service port');
});

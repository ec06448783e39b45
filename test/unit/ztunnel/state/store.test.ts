// SPDX-License-Identifier: Apache-2.0
// StateStore: indexes, updates that move objects between index entries (checklist C.46,
// istio/ztunnel#1247), pod IP reuse (B.37), policy applicability (spec §3.8), events, snapshots.
import t from 'tap';
import { StateStore } from '../../../../ztunnel/src/state/store.ts';
import type { StateChange } from '../../../../ztunnel/src/state/store.ts';
import type { Authorization } from '../../../../ztunnel/src/state/types.ts';
import {
  newAuthorization,
  newService,
  newWorkload,
  workloadIdentity,
} from '../../../../ztunnel/src/state/types.ts';

const wl = (
  uid: string,
  ip: string,
  extra: Parameters<typeof newWorkload>[0] extends infer P ? Partial<P> : never = {},
) => newWorkload({ uid, name: uid, namespace: 'default', addresses: [ip], node: 'node-1', ...extra });

const policy = (namespace: string, name: string, scope: Authorization['scope']): Authorization =>
  newAuthorization({ name, namespace, scope, action: 'DENY', rules: [{ clauses: [] }] });

t.test('workloadIdentity fills defaults', async (t) => {
  t.equal(workloadIdentity(wl('a', '198.18.1.10')), 'spiffe://cluster.local/ns/default/sa/default');
  t.equal(
    workloadIdentity(wl('a', '198.18.1.10', { trustDomain: 'example.org', serviceAccount: 'x' })),
    'spiffe://example.org/ns/default/sa/x',
  );
});

t.test('workload lookups by uid, IP (canonical forms), network and node', async (t) => {
  const s = new StateStore();
  s.upsertWorkload(wl('a', '198.18.1.10'));
  s.upsertWorkload(wl('b', 'FD00:18:1::0010', { node: 'node-2' }));
  s.upsertWorkload(wl('c', '198.18.1.10', { network: 'net2' }));
  t.equal(s.workload('a')?.uid, 'a');
  t.equal(s.workloadByIp('', '198.18.1.10')?.uid, 'a');
  t.equal(s.workloadByIp('', '::ffff:198.18.1.10')?.uid, 'a', 'IPv4-mapped finds the IPv4 workload');
  t.equal(s.workloadByIp('', 'fd00:18:1::10')?.uid, 'b', 'stored canonically');
  t.same(s.workload('b')?.addresses, ['fd00:18:1::10']);
  t.equal(s.workloadByIp('net2', '198.18.1.10')?.uid, 'c', 'networks are separate');
  t.equal(s.workloadByIp('', '198.18.1.11'), undefined);
  t.equal(s.workloadByIp('', 'garbage'), undefined);
  t.same(
    s.localWorkloads('node-1').map((w) => w.uid),
    ['a', 'c'],
  );
  t.same(
    s.localWorkloads('node-2').map((w) => w.uid),
    ['b'],
  );
  t.same(s.localWorkloads('node-3'), []);
});

t.test('C.46: a workload update that changes IP, node and services drops the old attachments', async (t) => {
  const s = new StateStore();
  s.upsertService(
    newService({ name: 'echo', namespace: 'default', hostname: 'echo.default.svc.cluster.local' }),
  );
  s.upsertService(
    newService({ name: 'other', namespace: 'default', hostname: 'other.default.svc.cluster.local' }),
  );
  s.upsertWorkload(
    wl('a', '198.18.1.10', {
      services: { 'default/echo.default.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] },
    }),
  );
  t.equal(s.endpointsFor({ namespace: 'default', hostname: 'echo.default.svc.cluster.local' }).length, 1);
  s.upsertWorkload(
    wl('a', '198.18.1.11', {
      node: 'node-2',
      services: { 'default/other.default.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] },
    }),
  );
  t.equal(s.workloadByIp('', '198.18.1.10'), undefined, 'old IP gone');
  t.equal(s.workloadByIp('', '198.18.1.11')?.uid, 'a', 'new IP found');
  t.same(s.localWorkloads('node-1'), [], 'old node gone');
  t.equal(s.localWorkloads('node-2').length, 1);
  t.same(
    s.endpointsFor({ namespace: 'default', hostname: 'echo.default.svc.cluster.local' }),
    [],
    'old service gone',
  );
  t.equal(s.endpointsFor({ namespace: 'default', hostname: 'other.default.svc.cluster.local' }).length, 1);
});

t.test("mutating the caller's object after upsert cannot corrupt indexes", async (t) => {
  const s = new StateStore();
  const w = wl('a', '198.18.1.10');
  s.upsertWorkload(w);
  w.addresses = ['198.18.1.99'];
  t.equal(s.workloadByIp('', '198.18.1.10')?.uid, 'a');
  t.same(s.workload('a')?.addresses, ['198.18.1.10']);
  s.upsertWorkload(w);
  t.equal(s.workloadByIp('', '198.18.1.10'), undefined);
  t.equal(s.workloadByIp('', '198.18.1.99')?.uid, 'a');
});

t.test('B.37: pod IP reuse — newest holder wins, removing the old pod keeps the new one', async (t) => {
  const s = new StateStore();
  s.upsertWorkload(wl('old', '198.18.1.10', { serviceAccount: 'x' }));
  s.upsertWorkload(wl('new', '198.18.1.10', { serviceAccount: 'y' }));
  t.equal(s.workloadByIp('', '198.18.1.10')?.uid, 'new');
  s.upsertWorkload(wl('old', '198.18.1.10', { serviceAccount: 'x', canonicalRevision: 'v2' }));
  t.equal(
    s.workloadByIp('', '198.18.1.10')?.uid,
    'new',
    'an update to the old pod does not steal the IP back',
  );
  t.ok(s.removeWorkload('old'));
  t.equal(s.workloadByIp('', '198.18.1.10')?.uid, 'new');
  t.notOk(s.removeWorkload('old'), 'second removal is a no-op');
  t.ok(s.removeWorkload('new'));
  t.equal(s.workloadByIp('', '198.18.1.10'), undefined);
});

t.test('HOST_NETWORK workloads are not indexed by IP', async (t) => {
  const s = new StateStore();
  s.upsertWorkload(wl('h', '198.18.0.1', { networkMode: 'HOST_NETWORK' }));
  t.equal(s.workloadByIp('', '198.18.0.1'), undefined);
  t.equal(s.workload('h')?.uid, 'h');
});

t.test('services: by hostname, by VIP, shared VIPs prefer the source namespace', async (t) => {
  const s = new StateStore();
  const vip = [{ network: '', address: '198.19.0.10' }];
  s.upsertService(
    newService({ name: 'a', namespace: 'ns-a', hostname: 'shared.example.com', addresses: vip }),
  );
  s.upsertService(
    newService({
      name: 'b',
      namespace: 'ns-b',
      hostname: 'shared.example.com',
      addresses: vip,
      canonical: true,
    }),
  );
  s.upsertService(
    newService({ name: 'c', namespace: 'ns-c', hostname: 'shared.example.com', addresses: vip }),
  );
  t.equal(s.serviceByVip('', '198.19.0.10', 'ns-c')?.namespace, 'ns-c', 'source namespace wins');
  t.equal(s.serviceByVip('', '198.19.0.10', 'ns-a')?.namespace, 'ns-a');
  t.equal(s.serviceByVip('', '198.19.0.10', 'elsewhere')?.namespace, 'ns-b', 'then the canonical one');
  t.equal(s.serviceByVip('', '198.19.0.10')?.namespace, 'ns-b');
  t.equal(s.serviceByVip('', '::ffff:198.19.0.10', 'ns-a')?.namespace, 'ns-a', 'mapped form');
  t.equal(s.serviceByVip('net2', '198.19.0.10'), undefined, 'other network');
  t.equal(s.serviceByHostname('ns-a', 'shared.example.com')?.name, 'a');
  t.equal(s.serviceByHostname('ns-x', 'shared.example.com'), undefined);
  t.same(
    s.servicesByHostname('shared.example.com').map((x) => x.namespace),
    ['ns-a', 'ns-b', 'ns-c'],
  );
  s.removeService('ns-b/shared.example.com');
  t.equal(
    s.serviceByVip('', '198.19.0.10', 'elsewhere')?.namespace,
    'ns-a',
    'falls back to the first received',
  );
});

t.test('C.46: a service update that changes VIPs and hostname drops the old ones', async (t) => {
  const s = new StateStore();
  s.upsertService(
    newService({
      name: 'a',
      namespace: 'ns',
      hostname: 'a.ns',
      addresses: [{ network: '', address: '198.19.0.10' }],
    }),
  );
  s.upsertService(
    newService({
      name: 'a',
      namespace: 'ns',
      hostname: 'a.ns',
      addresses: [{ network: '', address: '198.19.0.11' }],
    }),
  );
  t.equal(s.serviceByVip('', '198.19.0.10'), undefined);
  t.equal(s.serviceByVip('', '198.19.0.11')?.name, 'a');
  t.ok(s.removeService('ns/a.ns'));
  t.equal(s.serviceByVip('', '198.19.0.11'), undefined);
  t.same(s.servicesByHostname('a.ns'), []);
  t.notOk(s.removeService('ns/a.ns'));
});

t.test('policiesFor: GLOBAL ∪ NAMESPACE (own namespace) ∪ referenced; missing keys reported', async (t) => {
  const s = new StateStore();
  s.upsertPolicy(policy('istio-system', 'global', 'GLOBAL'));
  s.upsertPolicy(policy('default', 'ns-wide', 'NAMESPACE'));
  s.upsertPolicy(policy('other', 'ns-wide', 'NAMESPACE'));
  s.upsertPolicy(policy('default', 'selected', 'WORKLOAD_SELECTOR'));
  s.upsertPolicy(policy('default', 'unreferenced-selector', 'WORKLOAD_SELECTOR'));
  const w = wl('a', '198.18.1.10', {
    authorizationPolicies: ['default/selected', 'default/late', 'default/ns-wide'],
  });
  const r = s.policiesFor(w);
  t.same(
    r.policies.map((p) => `${p.namespace}/${p.name}`),
    ['istio-system/global', 'default/ns-wide', 'default/selected'],
    'no duplicates, no other namespace, no unreferenced selector policy',
  );
  t.same(r.missing, ['default/late']);
  s.upsertPolicy(policy('default', 'late', 'WORKLOAD_SELECTOR'));
  t.same(s.policiesFor(w).missing, [], 'arrives → no longer missing');
});

t.test('C.46 / istio/ztunnel#1247: a policy scope change removes the old attachment', async (t) => {
  const s = new StateStore();
  const w = wl('a', '198.18.1.10');
  s.upsertPolicy(policy('default', 'p', 'NAMESPACE'));
  t.equal(s.policiesFor(w).policies.length, 1);
  s.upsertPolicy(policy('default', 'p', 'WORKLOAD_SELECTOR'));
  t.equal(s.policiesFor(w).policies.length, 0, 'NAMESPACE → WORKLOAD_SELECTOR: no longer namespace-wide');
  s.upsertPolicy(policy('default', 'p', 'GLOBAL'));
  t.equal(
    s.policiesFor(wl('b', '198.18.1.11', { namespace: 'elsewhere' })).policies.length,
    1,
    'GLOBAL applies everywhere',
  );
  s.upsertPolicy(policy('default', 'p', 'NAMESPACE'));
  t.equal(
    s.policiesFor(wl('b', '198.18.1.11', { namespace: 'elsewhere' })).policies.length,
    0,
    'GLOBAL → NAMESPACE',
  );
  t.equal(s.policiesFor(w).policies.length, 1);
  t.ok(s.removePolicy('default/p'));
  t.equal(s.policiesFor(w).policies.length, 0);
  t.notOk(s.removePolicy('default/p'));
});

t.test('events', async (t) => {
  const s = new StateStore();
  const seen: StateChange[] = [];
  s.on('changed', (c) => seen.push(c));
  s.upsertWorkload(wl('a', '198.18.1.10'));
  s.removeWorkload('a');
  s.removeWorkload('a');
  s.upsertService(newService({ name: 'x', namespace: 'ns', hostname: 'x.ns' }));
  s.removeService('ns/x.ns');
  s.upsertPolicy(policy('ns', 'p', 'NAMESPACE'));
  s.removePolicy('ns/p');
  s.replaceAll({ workloads: [], services: [], policies: [] });
  t.same(seen, [
    { kind: 'workload', op: 'upsert', key: 'a' },
    { kind: 'workload', op: 'remove', key: 'a' },
    { kind: 'service', op: 'upsert', key: 'ns/x.ns' },
    { kind: 'service', op: 'remove', key: 'ns/x.ns' },
    { kind: 'policy', op: 'upsert', key: 'ns/p' },
    { kind: 'policy', op: 'remove', key: 'ns/p' },
    { kind: 'all', op: 'replace' },
  ]);
});

t.test(
  'replaceAll drops everything not in the new snapshot, snapshot() is sorted and detached',
  async (t) => {
    const s = new StateStore();
    s.upsertWorkload(wl('gone', '198.18.1.99'));
    s.upsertPolicy(policy('default', 'gone', 'NAMESPACE'));
    s.upsertService(
      newService({
        name: 'gone',
        namespace: 'default',
        hostname: 'gone',
        addresses: [{ network: '', address: '198.19.0.99' }],
      }),
    );
    s.replaceAll({
      workloads: [wl('b', '198.18.1.11'), wl('a', '198.18.1.10')],
      services: [newService({ name: 'svc', namespace: 'default', hostname: 'svc.default' })],
      policies: [policy('default', 'z', 'NAMESPACE'), policy('default', 'a', 'GLOBAL')],
    });
    t.equal(s.workloadByIp('', '198.18.1.99'), undefined);
    t.equal(s.serviceByVip('', '198.19.0.99'), undefined);
    t.same(
      s.policiesFor(wl('x', '198.18.1.1')).policies.map((p) => p.name),
      ['a', 'z'],
    );
    t.same(s.size, { workloads: 2, services: 1, policies: 2 });
    const snap = s.snapshot();
    t.same(
      snap.workloads.map((w) => w.uid),
      ['a', 'b'],
    );
    t.same(
      snap.policies.map((p) => p.name),
      ['a', 'z'],
    );
    const first = snap.workloads[0];
    if (first !== undefined) first.addresses = ['1.1.1.1'];
    t.equal(s.workloadByIp('', '198.18.1.10')?.uid, 'a', 'snapshot is a copy');
    // The dump is plain camelCase JSON.
    const json = JSON.parse(JSON.stringify(snap)) as { workloads: Record<string, unknown>[] };
    t.ok(
      json.workloads[0] !== undefined &&
        'tunnelProtocol' in json.workloads[0] &&
        'serviceAccount' in json.workloads[0],
    );
  },
);

// SPDX-License-Identifier: Apache-2.0
// The controller's Kubernetes source against the API stand-in with the real client library:
// the first batch is the full initial list of every watched kind (from the right API groups and
// versions), later changes arrive as upsert/delete batches, a relist after `410 Gone` yields the
// deletions that happened meanwhile in one batch, a dropped watch is a warning and nothing is
// lost, stop() ends everything.
import t from 'tap';
import type { Test } from 'tap';
import { KubeSource } from '../../../../src/controller/sources/kube.ts';
import { objectKey, type SourceEvent } from '../../../../src/controller/sources/types.ts';
import {
  kubeConfigFor,
  Recorder,
  startKubeApi,
  type JsonObject,
  type KubeApiServer,
  type RequestRecord,
} from '../../../helpers/kube-api/index.ts';

interface Rig {
  api: KubeApiServer;
  source: KubeSource;
  batches: Recorder<readonly SourceEvent[]>;
  warnings: Recorder<string>;
}

async function rig(t: Test, seed: (api: KubeApiServer) => void = () => undefined): Promise<Rig> {
  const api = await startKubeApi();
  seed(api);
  const source = new KubeSource(kubeConfigFor(api), { initialBackoffMs: 20, maxBackoffMs: 500 });
  const batches = new Recorder<readonly SourceEvent[]>();
  const warnings = new Recorder<string>();
  source.on('change', batches.push);
  source.on('warning', warnings.push);
  t.teardown(async () => {
    await source.stop();
    await api.close();
  });
  return { api, source, batches, warnings };
}

const describe = (e: SourceEvent): string => `${e.type} ${e.kind} ${objectKey(e.object)}`;
const all = (batches: readonly (readonly SourceEvent[])[]): string[] => batches.flat().map(describe);

function pod(name: string, labels: Record<string, string> = {}): JsonObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'demo', labels },
    spec: { containers: [] },
  };
}

function seedEveryKind(api: KubeApiServer): void {
  api.create({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: 'demo', labels: { 'istio.io/dataplane-mode': 'ambient' } },
  });
  api.create(pod('web'));
  api.create({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'demo' },
    spec: { ports: [{ port: 80 }] },
  });
  api.create({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-1', namespace: 'demo', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    endpoints: [],
  });
  api.create({
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'deny', namespace: 'demo' },
    spec: { action: 'DENY' },
  });
  api.create({
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name: 'strict', namespace: 'demo' },
    spec: { mtls: { mode: 'STRICT' } },
  });
  api.create({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name: 'waypoint', namespace: 'demo' },
    spec: { gatewayClassName: 'istio-waypoint' },
  });
}

t.test('the first batch is the initial list of every kind, emitted before start() resolves', async (t) => {
  const r = await rig(t, seedEveryKind);
  let batchesWhenStarted = -1;
  await r.source.start().then(() => (batchesWhenStarted = r.batches.items.length));
  t.equal(batchesWhenStarted, 1, 'exactly one batch, before start() resolved');
  t.same([...all(r.batches.items)].sort(), [
    'upsert AuthorizationPolicy demo/deny',
    'upsert EndpointSlice demo/web-1',
    'upsert Gateway demo/waypoint',
    'upsert Namespace demo',
    'upsert PeerAuthentication demo/strict',
    'upsert Pod demo/web',
    'upsert Service demo/web',
  ]);
  for (const e of r.batches.items[0]!) {
    t.ok(
      e.object.apiVersion !== undefined && e.object.kind === e.kind,
      `${describe(e)}: apiVersion and kind set`,
    );
    t.ok(e.object.metadata?.uid, `${describe(e)}: uid`);
  }
  const lists = r.api.requests
    .filter((q: RequestRecord) => q.verb === 'list')
    .map((q) => q.path)
    .sort();
  t.same(lists, [
    '/api/v1/namespaces',
    '/api/v1/pods',
    '/api/v1/services',
    '/apis/discovery.k8s.io/v1/endpointslices',
    '/apis/gateway.networking.k8s.io/v1/gateways',
    '/apis/security.istio.io/v1/authorizationpolicies',
    '/apis/security.istio.io/v1/peerauthentications',
  ]);
  t.same(r.warnings.items, []);
});

t.test('an empty cluster still yields an (empty) initial batch', async (t) => {
  const r = await rig(t);
  await r.source.start();
  t.same(r.batches.items, [[]]);
});

t.test('changes after start arrive as upsert and delete batches, in order per kind', async (t) => {
  const r = await rig(t, (api) =>
    api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } }),
  );
  await r.source.start();
  r.batches.clear();
  r.api.create(pod('a'));
  r.api.replace(pod('a', { v: '2' }));
  r.api.create({
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'p', namespace: 'demo' },
    spec: {},
  });
  r.api.remove('v1', 'Pod', 'demo', 'a');
  await r.batches.until((b) => b.flat().length === 4, 'four events');
  const events = all(r.batches.items);
  t.same(
    events.filter((e) => e.includes(' Pod ')),
    ['upsert Pod demo/a', 'upsert Pod demo/a', 'delete Pod demo/a'],
  );
  t.ok(events.includes('upsert AuthorizationPolicy demo/p'));
  const deleted = r.batches.items.flat().find((e) => e.type === 'delete')!;
  t.same(deleted.object.metadata?.labels, { v: '2' }, 'a delete carries the last state');
});

t.test('a relist after 410 Gone: the differences, deletions included, in one batch', async (t) => {
  const r = await rig(t, (api) => {
    api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } });
    for (const n of ['stays', 'changes', 'goes']) api.create(pod(n));
  });
  await r.source.start();
  r.batches.clear();
  r.api.holdWatches();
  const held = r.api.nextRequest((q) => q.verb === 'watch' && q.resource === 'pods');
  r.api.closeWatches({ graceful: true });
  await held;
  r.api.remove('v1', 'Pod', 'demo', 'goes');
  r.api.replace(pod('changes', { v: '2' }));
  r.api.create(pod('new'));
  r.api.compact();
  r.api.releaseWatches();
  await r.batches.until((b) => b.flat().length === 3, 'the relist differences');
  const podBatches = r.batches.items.filter((b) => b.some((e) => e.kind === 'Pod'));
  t.equal(podBatches.length, 1, 'one batch');
  t.same([...all(podBatches)].sort(), [
    'delete Pod demo/goes',
    'upsert Pod demo/changes',
    'upsert Pod demo/new',
  ]);
  await r.warnings.until((w) => w.some((m) => m.includes('410 Gone')), 'the relist warning');
  t.pass('the relist is reported as a warning');
});

t.test('a dropped watch is a warning; changes made meanwhile are not lost', async (t) => {
  const r = await rig(t, (api) =>
    api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } }),
  );
  await r.source.start();
  r.batches.clear();
  r.api.closeWatches();
  r.api.create(pod('meanwhile'));
  await r.batches.until((b) => all(b).includes('upsert Pod demo/meanwhile'), 'the change');
  t.ok(r.warnings.items.length >= 1);
  t.match(r.warnings.items.join('\n'), /^pods: watch failed: .*; retrying in \d+ ms$/m);
});

t.test('stop(): no batch afterwards', async (t) => {
  const r = await rig(t, (api) =>
    api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } }),
  );
  await r.source.start();
  await r.source.stop();
  await r.api.untilWatches(0);
  r.api.create(pod('late'));
  await new Promise((res) => setTimeout(res, 100));
  t.equal(r.batches.items.length, 1, 'only the initial batch');
});

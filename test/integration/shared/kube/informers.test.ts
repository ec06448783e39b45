// SPDX-License-Identifier: Apache-2.0
// KubeInformers (src/shared/kube/informers.ts) against the Kubernetes API stand-in with the real
// client library: the initial lists and start(), ordered events and the cache, selectors as the
// node agent uses them, the watch parameters it adds (bookmarks, timeoutSeconds), restarts with
// backoff after failed lists, refused watches and dropped connections, relists after 410 Gone,
// and stop().
import t from 'tap';
import type { Test } from 'tap';
import type { KubernetesObject, User } from '@kubernetes/client-node';
import {
  KubeInformers,
  type InformerEvent,
  type KubeInformersOptions,
  type WatchedResource,
} from '../../../../src/shared/kube/informers.ts';
import { RESOURCE_TYPES } from '../../../../src/shared/kube/resources.ts';
import {
  kubeConfigFor,
  Recorder,
  startKubeApi,
  type JsonObject,
  type KubeApiOptions,
  type KubeApiServer,
  type RequestRecord,
} from '../../../helpers/kube-api/index.ts';

const PODS_ON_NODE_1: WatchedResource = { ...RESOURCE_TYPES.Pod, fieldSelector: 'spec.nodeName=node-1' };
const NAMESPACES: WatchedResource = RESOURCE_TYPES.Namespace;
/** Exact backoff (no jitter), short for tests. */
const FAST: KubeInformersOptions = { initialBackoffMs: 20, maxBackoffMs: 1000, random: () => 0.5 };

interface Rig {
  api: KubeApiServer;
  informers: KubeInformers;
  events: Recorder<string>;
  warnings: Recorder<string>;
}

async function rig(
  t: Test,
  opts: { api?: KubeApiOptions; informers?: KubeInformersOptions; resources?: WatchedResource[] } = {},
): Promise<Rig> {
  const api = await startKubeApi(opts.api);
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } });
  const informers = new KubeInformers(kubeConfigFor(api), opts.resources ?? [PODS_ON_NODE_1, NAMESPACES], {
    ...FAST,
    ...opts.informers,
  });
  const events = new Recorder<string>();
  const warnings = new Recorder<string>();
  informers.on('event', (e: InformerEvent) =>
    events.push(`${e.type} ${e.object.kind ?? '?'} ${e.object.metadata?.name ?? '?'}`),
  );
  informers.on('warning', warnings.push);
  // Stop before the server closes, so no restart races the teardown.
  t.teardown(async () => {
    await informers.stop();
    await api.close();
  });
  return { api, informers, events, warnings };
}

function pod(name: string, nodeName?: string, labels: Record<string, string> = {}): JsonObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'demo', labels },
    spec: { containers: [], ...(nodeName === undefined ? {} : { nodeName }) },
  };
}

const podWatch = (r: RequestRecord): boolean => r.verb === 'watch' && r.resource === 'pods';
const podList = (r: RequestRecord): boolean => r.verb === 'list' && r.resource === 'pods';

t.test('start() resolves after every initial list; events are ordered; the cache follows', async (t) => {
  const r = await rig(t);
  r.api.create(pod('here', 'node-1'));
  r.api.create(pod('there', 'node-2'));
  await r.informers.start();
  t.same(
    [...r.events.items].sort(),
    ['add Namespace demo', 'add Pod here'],
    'listed before start() resolved; the other node is filtered',
  );

  const watches = r.api.requests.filter((q) => q.verb === 'watch');
  t.equal(watches.length, 2);
  for (const w of watches) {
    t.equal(w.query.allowWatchBookmarks, 'true', `${w.path}: bookmarks requested`);
    t.ok(
      Number(w.query.timeoutSeconds) >= 300 && Number(w.query.timeoutSeconds) < 600,
      `${w.path}: timeoutSeconds like client-go (${w.query.timeoutSeconds})`,
    );
  }
  t.equal(r.api.requests.find(podList)?.query.fieldSelector, 'spec.nodeName=node-1');

  r.events.clear();
  r.api.create(pod('late', 'node-1'));
  r.api.replace(pod('here', 'node-1', { v: '2' }));
  r.api.create(pod('elsewhere', 'node-2'));
  r.api.remove('v1', 'Pod', 'demo', 'late');
  r.api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'other' } });
  await r.events.until((e) => e.length === 4, 'four events');
  t.same(
    r.events.items.filter((e) => e.includes(' Pod ')),
    ['add Pod late', 'update Pod here', 'delete Pod late'],
    'in order within a resource (resources arrive on separate streams)',
  );
  t.ok(r.events.items.includes('add Namespace other'));

  const cached = r.informers.list(PODS_ON_NODE_1);
  t.same(
    cached.map((o) => o.metadata?.name),
    ['here'],
  );
  const here = r.informers.get(PODS_ON_NODE_1, 'here', 'demo') as KubernetesObject & {
    metadata: { labels: Record<string, string> };
  };
  t.equal(here.metadata.labels.v, '2');
  t.equal(here.kind, 'Pod', 'objects carry kind and apiVersion, listed ones included');
  t.equal(r.informers.get(NAMESPACES, 'demo')?.apiVersion, 'v1');
  t.throws(() => r.informers.list(RESOURCE_TYPES.Service), { message: /not one of the watched resources/ });
});

t.test('a failing list is retried with backoff; start() waits for it', async (t) => {
  const r = await rig(t);
  r.api.failNext(2, 500, podList);
  await r.informers.start();
  t.equal(r.api.requests.filter(podList).length, 3);
  t.same(
    r.warnings.items,
    [
      'pods (fieldSelector spec.nodeName=node-1): list failed: HTTP 500: injected failure (InternalError); retrying in 20 ms',
      'pods (fieldSelector spec.nodeName=node-1): list failed: HTTP 500: injected failure (InternalError); retrying in 40 ms',
    ],
    'each failure is a warning with a doubling delay',
  );
});

t.test('a refused watch is restarted with growing backoff, reset once it works', async (t) => {
  const r = await rig(t);
  await r.informers.start();
  r.api.failNext(3, 503, podWatch);
  r.api.closeWatches({ graceful: true });
  await r.warnings.until((w) => w.length === 3, 'three warnings');
  t.same(
    r.warnings.items.map((w) => /retrying in (\d+) ms/.exec(w)?.[1]),
    ['20', '40', '80'],
  );
  t.match(
    r.warnings.items[0],
    /^pods \(fieldSelector spec\.nodeName=node-1\): watch failed: Service Unavailable \(HTTP 503\); retrying in 20 ms$/,
  );
  r.api.create(pod('after', 'node-1'));
  await r.events.until((e) => e.includes('add Pod after'), 'the event after the restart');
  t.equal(r.api.requests.filter(podList).length, 1, 'restarts resume from the resourceVersion: no relist');

  // The next failure starts from the initial delay again.
  r.api.closeWatches();
  await r.warnings.until((w) => w.length >= 4, 'a fourth warning');
  t.match(r.warnings.items[3], /retrying in 20 ms$/);
});

t.test('an abrupt drop is survived without losing events or relisting', async (t) => {
  const r = await rig(t);
  await r.informers.start();
  r.events.clear();
  r.api.closeWatches();
  r.api.create(pod('during', 'node-1'));
  r.api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'during' } });
  await r.events.until((e) => e.length === 2, 'both changes');
  t.same([...r.events.items].sort(), ['add Namespace during', 'add Pod during']);
  t.equal(r.warnings.items.length, 2, 'one warning per informer');
  t.equal(r.api.requests.filter((q) => q.verb === 'list').length, 2, 'no relist');
});

t.test('410 Gone: relist, deletions reported, a warning says so', async (t) => {
  const r = await rig(t, { resources: [PODS_ON_NODE_1] });
  r.api.create(pod('stays', 'node-1'));
  r.api.create(pod('goes', 'node-1'));
  await r.informers.start();
  r.events.clear();
  r.api.holdWatches();
  const held = r.api.nextRequest(podWatch);
  r.api.closeWatches({ graceful: true });
  await held;
  r.api.remove('v1', 'Pod', 'demo', 'goes');
  r.api.create(pod('new', 'node-1'));
  r.api.compact();
  r.api.releaseWatches();
  await r.events.until((e) => e.length === 2, 'the relist differences');
  t.same([...r.events.items].sort(), ['add Pod new', 'delete Pod goes']);
  t.same(
    r.informers
      .list(PODS_ON_NODE_1)
      .map((o) => o.metadata?.name)
      .sort(),
    ['new', 'stays'],
  );
  t.match(r.warnings.items, [/resourceVersion expired \(410 Gone\); relisted/]);
});

t.test(
  'watch timeouts: the server ends the watch, the informer resumes from the last bookmark',
  async (t) => {
    const r = await rig(t, { resources: [PODS_ON_NODE_1], informers: { watchTimeoutSeconds: 1 } });
    await r.informers.start();
    t.equal(r.api.requests.find(podWatch)?.query.timeoutSeconds, '1');
    // Move the global version on without touching pods; the closing bookmark carries it.
    r.api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bump' } });
    const expected = String(r.api.store.resourceVersion);
    const rewatch = await r.api.nextRequest(podWatch);
    t.equal(rewatch.query.resourceVersion, expected, 'resumed from the bookmark sent before the timeout');
    t.equal(r.api.requests.filter(podList).length, 1);
    t.same(r.warnings.items, [], 'a timeout is not a failure');
  },
);

t.test('stop(): a pending start() rejects; no request, restart or event afterwards', async (t) => {
  const r = await rig(t, { resources: [PODS_ON_NODE_1] });
  r.api.failNext(1000, 500, podList);
  const started = r.informers.start();
  await r.warnings.until((w) => w.length >= 2, 'retries under way');
  await r.informers.stop();
  await t.rejects(started, { code: 'KUBE_ERR_STOPPED' });
  const requests = r.api.requests.length;
  // Long enough for several more retries at 20–160 ms if anything were still scheduled.
  await new Promise((res) => setTimeout(res, 400));
  t.equal(r.api.requests.length, requests, 'nothing more was requested');

  const s = await rig(t, { resources: [PODS_ON_NODE_1] });
  await s.informers.start();
  await s.informers.stop();
  await s.api.untilWatches(0);
  t.pass('the watch was closed');
  s.api.create(pod('after-stop', 'node-1'));
  await new Promise((res) => setTimeout(res, 100));
  t.same(s.events.items, []);
  t.same(s.warnings.items, [], 'stopping is not reported as a failure');
});

t.test('credentials failing while a re-watch is built: an error and a retry, not a crash', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  const kc = kubeConfigFor(api);
  let calls = 0;
  kc.addAuthenticator({
    isAuthProvider: (_user: User) => true,
    applyAuthentication: async () => {
      calls++;
      if (calls === 3) throw new Error('credential plugin exited 1');
    },
  });
  const informers = new KubeInformers(kc, [PODS_ON_NODE_1], FAST);
  const warnings = new Recorder<string>();
  informers.on('warning', warnings.push);
  t.teardown(() => informers.stop());
  await informers.start(); // calls 1 and 2: the list and the watch
  // ListWatch re-watches by itself after a normal end (call 3, which fails): outside any
  // promise chain of ours, so without a catch in the Watch the rejection would be unhandled.
  api.closeWatches({ graceful: true });
  await warnings.until((w) => w.length === 1, 'the failure');
  t.match(
    warnings.items[0],
    /^pods \(fieldSelector spec\.nodeName=node-1\): watch failed: credential plugin exited 1; retrying in 20 ms$/,
  );
  await api.untilWatches(1, 'pods');
  t.equal(calls, 4, 'the retry watches again');
});

t.test('a listener that throws is reported, and the informer carries on', async (t) => {
  const r = await rig(t, { resources: [PODS_ON_NODE_1] });
  await r.informers.start();
  r.informers.on('event', (e) => {
    if (e.object.metadata?.name === 'poison') throw new Error('model bug');
  });
  r.api.create(pod('poison', 'node-1'));
  r.api.create(pod('fine', 'node-1'));
  await r.events.until((e) => e.includes('add Pod fine'), 'the next event');
  t.match(r.warnings.items, [
    /^a listener failed on add of pods \(fieldSelector spec\.nodeName=node-1\) poison: model bug$/,
  ]);
});

t.test('an unreachable API server: warnings that say why, start() keeps waiting', async (t) => {
  const api = await startKubeApi();
  const kc = kubeConfigFor(api);
  await api.close(); // nothing listens on its port any more
  const informers = new KubeInformers(kc, [NAMESPACES], FAST);
  const warnings = new Recorder<string>();
  informers.on('warning', warnings.push);
  const started = informers.start();
  await warnings.until((w) => w.length >= 2, 'two attempts');
  t.match(warnings.items[0], /^namespaces: list failed: fetch failed: .*ECONNREFUSED.*; retrying in 20 ms$/);
  await informers.stop();
  await t.rejects(started, { code: 'KUBE_ERR_STOPPED' });
});

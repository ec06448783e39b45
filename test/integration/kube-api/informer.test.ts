// SPDX-License-Identifier: Apache-2.0
// client-node's informers (makeInformer / ListWatch) against the Kubernetes API stand-in: list
// then watch, re-watches after a watch timeout and after a graceful end without losing events,
// bookmarks advancing the resourceVersion a re-watch resumes from, `410 Gone` (as an ERROR event
// and as HTTP 410) leading to a relist that reports what was deleted meanwhile, and an abrupt
// drop, which stops the library's informer with an error (why src/shared/kube/informers.ts
// restarts it).
import t from 'tap';
import type { Test } from 'tap';
import {
  CoreV1Api,
  ListWatch,
  makeInformer,
  Watch,
  type KubeConfig,
  type KubernetesObject,
  type V1Pod,
} from '@kubernetes/client-node';
import {
  kubeConfigFor,
  Recorder,
  startKubeApi,
  type JsonObject,
  type KubeApiOptions,
  type KubeApiServer,
  type RequestRecord,
} from '../../helpers/kube-api/index.ts';

type Seen = `${'add' | 'update' | 'delete' | 'error'} ${string}`;

interface Rig {
  api: KubeApiServer;
  kc: KubeConfig;
  core: CoreV1Api;
}

async function standIn(t: Test, opts: KubeApiOptions = {}): Promise<Rig> {
  const api = await startKubeApi(opts);
  t.teardown(() => api.close());
  const kc = kubeConfigFor(api);
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } });
  return { api, kc, core: kc.makeApiClient(CoreV1Api) };
}

/** A started pod informer whose callbacks are recorded as `add name`, `delete name`, …. */
async function podInformer(
  t: Test,
  rig: Rig,
  watch?: Watch,
): Promise<{ inf: ListWatch<V1Pod>; seen: Recorder<Seen> }> {
  const seen = new Recorder<Seen>();
  const list = (): ReturnType<CoreV1Api['listPodForAllNamespaces']> => rig.core.listPodForAllNamespaces();
  const inf = watch
    ? new ListWatch<V1Pod>('/api/v1/pods', watch, list, false)
    : (makeInformer(rig.kc, '/api/v1/pods', list) as ListWatch<V1Pod>);
  const name = (o: KubernetesObject): string => o.metadata?.name ?? '?';
  inf.on('add', (o) => seen.push(`add ${name(o)}`));
  inf.on('update', (o) => seen.push(`update ${name(o)}`));
  inf.on('delete', (o) => seen.push(`delete ${name(o)}`));
  inf.on('error', (e: unknown) => seen.push(`error ${String(e)}`));
  await inf.start();
  t.teardown(() => inf.stop());
  return { inf, seen };
}

function pod(name: string, labels: Record<string, string> = {}): JsonObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'demo', labels },
    spec: { containers: [] },
  };
}

const isPodWatch = (r: RequestRecord): boolean => r.verb === 'watch' && r.resource === 'pods';
const isPodList = (r: RequestRecord): boolean => r.verb === 'list' && r.resource === 'pods';
const names = (inf: ListWatch<V1Pod>): string[] =>
  inf
    .list()
    .map((p) => p.metadata?.name ?? '')
    .sort();

t.test('makeInformer: lists, then watches from the list resourceVersion', async (t) => {
  const rig = await standIn(t);
  rig.api.create(pod('a'));
  const { inf, seen } = await podInformer(t, rig);
  t.same(seen.items, ['add a'], 'the list is reported as adds');
  const watchReq = rig.api.requests.find(isPodWatch)!;
  t.equal(
    watchReq.query.resourceVersion,
    String(rig.api.store.resourceVersion),
    'the watch starts at the list version',
  );

  await rig.core.createNamespacedPod({
    namespace: 'demo',
    body: { metadata: { name: 'b' }, spec: { containers: [] } },
  });
  rig.api.replace(pod('a', { v: '2' }));
  rig.api.remove('v1', 'Pod', 'demo', 'b');
  await seen.until((s) => s.length === 4, 'the watch events');
  t.same(seen.items, ['add a', 'add b', 'update a', 'delete b']);
  t.same(names(inf), ['a']);
  t.equal(inf.get('a', 'demo')?.metadata?.labels?.v, '2', 'the cache holds the newest state');
});

t.test('watch timeout: the informer re-watches from its resourceVersion and loses no event', async (t) => {
  const rig = await standIn(t, { watchTimeoutMs: 150 });
  const { inf, seen } = await podInformer(t, rig);
  for (let i = 0; i < 4; i++) {
    const rewatch = rig.api.nextRequest(isPodWatch);
    rig.api.create(pod(`p${i}`));
    await rewatch; // the watch that saw (or will replay) p<i> timed out and was renewed
  }
  // One change while no watch is open: the next watch must replay it.
  rig.api.holdWatches();
  const held = await rig.api.nextRequest(isPodWatch);
  rig.api.create(pod('while-away'));
  rig.api.releaseWatches();
  await seen.until((s) => s.includes('add while-away'), 'the change made between two watches');
  t.same(names(inf), ['p0', 'p1', 'p2', 'p3', 'while-away']);
  t.equal(seen.items.filter((s) => s.startsWith('add')).length, 5, 'each pod reported once');
  t.equal(rig.api.requests.filter(isPodList).length, 1, 'no relist: every re-watch resumed');
  t.ok(Number(held.query.resourceVersion) > 0);
});

t.test('a graceful end of the watch: re-watch from the last version, no relist', async (t) => {
  const rig = await standIn(t);
  const { seen } = await podInformer(t, rig);
  rig.api.create(pod('a'));
  await seen.until((s) => s.includes('add a'), 'add a');
  const rewatch = rig.api.nextRequest(isPodWatch);
  t.equal(rig.api.closeWatches({ graceful: true }), 1);
  const r = await rewatch;
  t.equal(r.query.resourceVersion, String(rig.api.store.resourceVersion));
  rig.api.create(pod('b'));
  await seen.until((s) => s.includes('add b'), 'add b on the new watch');
  t.equal(rig.api.requests.filter(isPodList).length, 1);
  t.notOk(seen.items.some((s) => s.startsWith('error')));
});

/** Adds allowWatchBookmarks, which client-node's informers do not request themselves. */
class BookmarkWatch extends Watch {
  override watch(...args: Parameters<Watch['watch']>): ReturnType<Watch['watch']> {
    const [path, query, callback, done] = args;
    return super.watch(path, { ...query, allowWatchBookmarks: true }, callback, done);
  }
}

t.test('bookmarks advance the resourceVersion the informer resumes from', async (t) => {
  const rig = await standIn(t);
  const { seen } = await podInformer(t, rig, new BookmarkWatch(rig.kc));
  const listedAt = rig.api.requests.find(isPodWatch)!.query.resourceVersion;
  // Other resources move the global version; the pod informer sees none of it but a bookmark.
  for (let i = 0; i < 5; i++)
    rig.api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `ns-${i}` } });
  const newest = String(rig.api.store.resourceVersion);
  t.not(newest, listedAt);
  rig.api.holdWatches();
  const rewatch = rig.api.nextRequest(isPodWatch);
  rig.api.sendBookmarks();
  rig.api.closeWatches({ graceful: true });
  const r = await rewatch;
  t.equal(r.query.resourceVersion, newest, 'the re-watch resumes from the bookmark');
  rig.api.compact(); // the bookmark's version is still valid: no 410, no relist
  rig.api.releaseWatches();
  rig.api.create(pod('after'));
  await seen.until((s) => s.includes('add after'), 'an event on the resumed watch');
  t.equal(rig.api.requests.filter(isPodList).length, 1, 'no relist');
});

for (const goneAsHttpStatus of [false, true]) {
  t.test(
    `410 Gone (${goneAsHttpStatus ? 'HTTP 410' : 'ERROR event'}): relist, with the deletes that happened meanwhile`,
    async (t) => {
      const rig = await standIn(t, { goneAsHttpStatus });
      for (const n of ['keep', 'change', 'remove']) rig.api.create(pod(n));
      const { inf, seen } = await podInformer(t, rig);
      seen.clear();
      // A partition: the watch ends and the next one is held while the cluster moves on.
      rig.api.holdWatches();
      const held = rig.api.nextRequest(isPodWatch);
      rig.api.closeWatches({ graceful: true });
      await held;
      rig.api.remove('v1', 'Pod', 'demo', 'remove');
      rig.api.replace(pod('change', { v: '2' }));
      rig.api.create(pod('new'));
      rig.api.compact();
      const relist = rig.api.nextRequest(isPodList);
      rig.api.releaseWatches();
      await relist;
      await seen.until((s) => s.length === 3, 'the relist differences');
      t.same([...seen.items].sort(), ['add new', 'delete remove', 'update change']);
      t.same(names(inf), ['change', 'keep', 'new'], 'the cache matches the cluster');
      t.equal(inf.get('change', 'demo')?.metadata?.labels?.v, '2');
      const lastWatch = await rig.api.nextRequest(isPodWatch);
      t.equal(
        lastWatch.query.resourceVersion,
        String(rig.api.store.resourceVersion),
        'watching again from the relist version',
      );
    },
  );
}

t.test(
  'an abrupt drop stops client-node’s informer with an error (it does not retry by itself)',
  async (t) => {
    const rig = await standIn(t);
    const { seen } = await podInformer(t, rig);
    rig.api.closeWatches();
    await seen.until((s) => s.some((x) => x.startsWith('error')), 'the error callback');
    rig.api.create(pod('unseen'));
    // Nothing is watching any more: no new watch request is made.
    await t.rejects(rig.api.nextRequest(isPodWatch, 1500), 'no re-watch');
    t.notOk(seen.items.includes('add unseen'));
  },
);

// SPDX-License-Identifier: Apache-2.0
// Watches of the Kubernetes API stand-in through client-node's own Watch class: initial ADDED
// events, resuming from a resourceVersion, objects entering and leaving a selector, bookmarks,
// timeoutSeconds, the two shapes of `410 Gone`, history overflow, and the test controls that end
// or hold watches.
import t from 'tap';
import type { Test } from 'tap';
import { CoreV1Api, Watch, type KubeConfig } from '@kubernetes/client-node';
import {
  kubeConfigFor,
  Recorder,
  startKubeApi,
  type JsonObject,
  type KubeApiOptions,
  type KubeApiServer,
} from '../../helpers/kube-api/index.ts';

interface Line {
  type: string;
  object: JsonObject & { metadata?: { name?: string; resourceVersion?: string } };
}

async function standIn(t: Test, opts: KubeApiOptions = {}): Promise<{ api: KubeApiServer; kc: KubeConfig }> {
  const api = await startKubeApi(opts);
  t.teardown(() => api.close());
  const kc = kubeConfigFor(api);
  return { api, kc };
}

/** Opens a watch; `ended` resolves with what client-node passed to its done callback. */
async function watch(
  t: Test,
  kc: KubeConfig,
  path: string,
  query: Record<string, string | number | boolean>,
): Promise<{ lines: Recorder<Line>; ended: Promise<unknown> }> {
  const lines = new Recorder<Line>();
  const { promise: ended, resolve } = Promise.withResolvers<unknown>();
  const controller = await new Watch(kc).watch(
    path,
    query,
    (type: string, object: Line['object']) => lines.push({ type, object }),
    (err: unknown) => resolve(err ?? null),
  );
  t.teardown(() => controller.abort());
  return { lines, ended };
}

const summary = (lines: readonly Line[]): string[] =>
  lines.map((l) => `${l.type} ${l.object.metadata?.name ?? ''}`);

function pod(name: string, labels: Record<string, string> = {}, nodeName?: string): JsonObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'demo', labels },
    spec: { containers: [], ...(nodeName === undefined ? {} : { nodeName }) },
  };
}

function withNamespace(api: KubeApiServer): void {
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } });
}

t.test('without a resourceVersion: current objects as ADDED, then every change in order', async (t) => {
  const { api, kc } = await standIn(t);
  withNamespace(api);
  api.create(pod('a'));
  const { lines } = await watch(t, kc, '/api/v1/pods', {});
  await lines.until((l) => l.length === 1, 'the initial ADDED');
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNamespacedPod({
    namespace: 'demo',
    body: { metadata: { name: 'b' }, spec: { containers: [] } },
  });
  await core.patchNamespacedPod({
    namespace: 'demo',
    name: 'a',
    body: [{ op: 'add', path: '/metadata/labels/x', value: 'y' }],
  });
  const deleted = await core.deleteNamespacedPod({ namespace: 'demo', name: 'b' });
  await lines.until((l) => l.length === 4, 'four events');
  t.same(summary(lines.items), ['ADDED a', 'ADDED b', 'MODIFIED a', 'DELETED b']);
  const rvs = lines.items.map((l) => Number(l.object.metadata?.resourceVersion));
  t.same(
    [...rvs].sort((x, y) => x - y),
    rvs,
    'resourceVersions increase',
  );
  t.equal(
    lines.items[3]!.object.metadata?.resourceVersion,
    deleted.metadata?.resourceVersion,
    'a DELETED object carries the version of its deletion',
  );
  t.equal(lines.items[1]!.object.kind, 'Pod', 'watched objects carry kind and apiVersion');
});

t.test('from a resourceVersion: replays what happened after it, nothing before', async (t) => {
  const { api, kc } = await standIn(t);
  withNamespace(api);
  api.create(pod('old'));
  const from = api.store.resourceVersion;
  api.create(pod('new'));
  api.remove('v1', 'Pod', 'demo', 'old');
  const { lines } = await watch(t, kc, '/api/v1/namespaces/demo/pods', { resourceVersion: String(from) });
  await lines.until((l) => l.length === 2, 'the replay');
  t.same(summary(lines.items), ['ADDED new', 'DELETED old']);
});

t.test('selectors on a watch: objects entering the selection are ADDED, leaving it DELETED', async (t) => {
  const { api, kc } = await standIn(t);
  withNamespace(api);
  const { lines } = await watch(t, kc, '/api/v1/pods', {
    fieldSelector: 'spec.nodeName=node-1',
    labelSelector: 'mesh=on',
  });
  api.create(pod('p', { mesh: 'on' })); // unscheduled: not selected
  api.create(pod('elsewhere', { mesh: 'on' }, 'node-2'));
  api.replace(pod('p', { mesh: 'on' }, 'node-1')); // scheduled here: enters
  api.replace(pod('p', { mesh: 'on', v: '2' }, 'node-1')); // stays
  api.replace(pod('p', { mesh: 'off' }, 'node-1')); // label change: leaves
  api.replace(pod('p', { mesh: 'on' }, 'node-1')); // back
  api.remove('v1', 'Pod', 'demo', 'p');
  api.remove('v1', 'Pod', 'demo', 'elsewhere'); // never selected: nothing
  await lines.until((l) => l.length === 5, 'five events');
  t.same(summary(lines.items), ['ADDED p', 'MODIFIED p', 'DELETED p', 'ADDED p', 'DELETED p']);
  t.same(
    (lines.items[2]!.object.metadata as { labels?: unknown }).labels,
    { mesh: 'off' },
    'the DELETED of an object leaving carries its new state',
  );
});

t.test('bookmarks: only when allowed, with the current resourceVersion', async (t) => {
  const { api, kc } = await standIn(t);
  withNamespace(api);
  const withBookmarks = await watch(t, kc, '/api/v1/pods', {
    allowWatchBookmarks: true,
    resourceVersion: String(api.store.resourceVersion),
  });
  const without = await watch(t, kc, '/api/v1/namespaces', {
    resourceVersion: String(api.store.resourceVersion),
  });
  for (let i = 0; i < 3; i++)
    api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `ns-${i}` } });
  api.sendBookmarks();
  await withBookmarks.lines.until((l) => l.length === 1, 'a bookmark');
  const b = withBookmarks.lines.items[0]!;
  t.equal(b.type, 'BOOKMARK');
  t.equal(b.object.kind, 'Pod');
  t.equal(
    b.object.metadata?.resourceVersion,
    String(api.store.resourceVersion),
    'the bookmark carries the newest version',
  );
  await without.lines.until((l) => l.length === 3, 'the namespace events');
  t.same(
    without.lines.items.map((l) => l.type),
    ['ADDED', 'ADDED', 'ADDED'],
    'no bookmark without allowWatchBookmarks',
  );

  const periodic = await standIn(t, { bookmarkIntervalMs: 50 });
  const p = await watch(t, periodic.kc, '/api/v1/pods', { allowWatchBookmarks: true, resourceVersion: '1' });
  await p.lines.until((l) => l.filter((x) => x.type === 'BOOKMARK').length >= 2, 'periodic bookmarks');
  t.pass('bookmarks are sent periodically');
});

t.test('timeoutSeconds ends the watch cleanly, after a last bookmark', async (t) => {
  const { api, kc } = await standIn(t);
  withNamespace(api);
  const w = await watch(t, kc, '/api/v1/pods', {
    timeoutSeconds: 1,
    allowWatchBookmarks: true,
    resourceVersion: String(api.store.resourceVersion),
  });
  api.create(pod('a'));
  t.equal(await w.ended, null, 'done() without an error: a normal end');
  t.same(
    w.lines.items.map((l) => l.type),
    ['ADDED', 'BOOKMARK'],
  );
  t.equal(api.openWatches(), 0);

  const short = await standIn(t, { watchTimeoutMs: 100 });
  const w2 = await watch(t, short.kc, '/api/v1/pods', {});
  t.equal(await w2.ended, null, 'the server-side default timeout applies when the client sends none');
});

t.test(
  '410 Gone: an ERROR event with an Expired Status (or HTTP 410), after compaction or history overflow',
  async (t) => {
    const { api, kc } = await standIn(t, { historyLimit: 3 });
    withNamespace(api);
    const start = api.store.resourceVersion;
    api.create(pod('a'));
    const afterA = api.store.resourceVersion;
    for (const n of ['b', 'c', 'd']) api.create(pod(n));
    const overflow = await watch(t, kc, '/api/v1/pods', { resourceVersion: String(start) });
    t.equal(await overflow.ended, null, 'the stream ends after the error');
    t.equal(overflow.lines.items.length, 1);
    t.match(overflow.lines.items[0], {
      type: 'ERROR',
      object: {
        kind: 'Status',
        status: 'Failure',
        reason: 'Expired',
        code: 410,
        message: /^too old resource version: \d+ \(\d+\)$/,
      },
    });
    const kept = await watch(t, kc, '/api/v1/pods', { resourceVersion: String(afterA) });
    await kept.lines.until((l) => l.length === 3, 'the three kept events');
    t.same(
      summary(kept.lines.items),
      ['ADDED b', 'ADDED c', 'ADDED d'],
      'a version still in the history resumes',
    );

    api.compact();
    const compacted = await watch(t, kc, '/api/v1/pods', { resourceVersion: String(afterA) });
    await compacted.ended;
    t.equal(compacted.lines.items[0]?.type, 'ERROR', 'compact() expires every older version');
    const current = await watch(t, kc, '/api/v1/pods', {
      resourceVersion: String(api.store.resourceVersion),
    });
    api.create(pod('e'));
    await current.lines.until((l) => l.length === 1, 'a live event');
    t.equal(current.lines.items[0]?.type, 'ADDED', 'the current version is still valid after compaction');

    const http = await standIn(t, { goneAsHttpStatus: true });
    http.api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'x' } });
    http.api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'y' } });
    http.api.compact();
    const gone = await watch(t, http.kc, '/api/v1/pods', { resourceVersion: '1' });
    const err = (await gone.ended) as { statusCode?: number };
    t.equal(err.statusCode, 410, 'with goneAsHttpStatus the watch request itself is answered 410');
  },
);

t.test('closeWatches: abrupt drops are errors to the client, graceful ends are not', async (t) => {
  const { api, kc } = await standIn(t);
  const pods = await watch(t, kc, '/api/v1/pods', {});
  const namespaces = await watch(t, kc, '/api/v1/namespaces', {});
  t.equal(api.openWatches(), 2);
  t.equal(api.openWatches('pods'), 1);
  t.equal(api.closeWatches({ graceful: true }), 2);
  t.equal(await pods.ended, null, 'a graceful end reaches done() without an error');
  t.equal(await namespaces.ended, null);
  t.equal(api.openWatches(), 0);

  const abrupt = await watch(t, kc, '/api/v1/pods', {});
  t.equal(api.closeWatches(), 1);
  const err = await abrupt.ended;
  t.ok(err instanceof Error, `an abrupt drop reaches done() as an error (${String(err)})`);
});

t.test(
  'holdWatches: watch requests wait unanswered until release, then see the state at release',
  async (t) => {
    const { api, kc } = await standIn(t);
    withNamespace(api);
    api.create(pod('a'));
    const from = api.store.resourceVersion;
    api.holdWatches();
    const held = api.nextRequest((r) => r.verb === 'watch');
    const pending = watch(t, kc, '/api/v1/pods', { resourceVersion: String(from) });
    const record = await held;
    t.equal(record.status, undefined, 'no answer yet, not even headers');
    api.remove('v1', 'Pod', 'demo', 'a');
    api.compact();
    api.releaseWatches();
    const w = await pending;
    await w.ended;
    t.equal(w.lines.items[0]?.type, 'ERROR', 'the held watch is answered from the state at release: 410');
    t.equal(record.status, 200);
  },
);

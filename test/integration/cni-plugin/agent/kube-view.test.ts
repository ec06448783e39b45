// SPDX-License-Identifier: Apache-2.0
// The node agent against a Kubernetes API (the stand-in, through the real client library):
// it sees only its node's pods, reads a pod the informer has not delivered yet, enrols on a
// namespace label, and marks pods with the redirection annotation by merge patch, which the API
// then reports back through the watch.
import t from 'tap';
import type { V1Pod } from '@kubernetes/client-node';
import { KubeClusterView } from '../../../../cni-plugin/src/agent/kube-view.ts';
import { kubeConfigFor, startKubeApi, type JsonObject } from '../../../helpers/kube-api/index.ts';
import { waitFor } from '../../../helpers/wait.ts';

function pod(name: string, node: string): JsonObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'apps' },
    spec: { nodeName: node, containers: [{ name: 'app', image: 'x' }] },
  };
}

t.test('node-scoped pods, fresh reads, namespace events and annotation patches', async (t) => {
  const api = await startKubeApi();
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'apps' } });
  api.create(pod('mine', 'node-0'));
  api.create(pod('theirs', 'node-1'));
  const view = new KubeClusterView(kubeConfigFor(api), 'node-0');
  const events: string[] = [];
  view.on('pod', (p) =>
    events.push(`pod ${p.metadata?.name ?? ''} ${JSON.stringify(p.metadata?.annotations ?? {})}`),
  );
  view.on('podDeleted', (p) => events.push(`deleted ${p.metadata?.name ?? ''}`));
  view.on('namespace', (ns) =>
    events.push(`namespace ${ns.metadata?.name ?? ''} ${JSON.stringify(ns.metadata?.labels ?? {})}`),
  );
  t.teardown(async () => {
    await view.stop();
    await api.close();
  });
  await view.start();

  t.same(
    [...view.pods()].map((p) => p.metadata?.name),
    ['mine'],
    'only this node’s pods (field selector spec.nodeName)',
  );
  t.ok(view.namespace('apps'), 'namespaces are cached');

  api.create(pod('fresh', 'node-0'));
  const fresh = await view.getPod('apps', 'fresh');
  t.equal(fresh?.metadata?.name, 'fresh', 'a pod is read from the API when the cache lacks it');
  t.equal(await view.getPod('apps', 'ghost'), undefined, '404 is "no such pod"');
  t.equal(await view.getNamespace('nowhere'), undefined);

  const mine = [...view.pods()].find((p) => p.metadata?.name === 'mine') as V1Pod;
  await view.annotatePod(mine, { 'ambient.istio.io/redirection': 'enabled' });
  await waitFor(
    () =>
      events.some((e) => e.startsWith('pod mine') && e.includes('"ambient.istio.io/redirection":"enabled"')),
    'the annotation to come back through the watch',
    10_000,
  );
  await view.annotatePod(mine, { 'ambient.istio.io/redirection': null });
  await waitFor(
    () => !JSON.stringify(api.get('v1', 'Pod', 'apps', 'mine')).includes('redirection'),
    'the annotation to be removed (null in a merge patch)',
    10_000,
  );

  api.replace({
    ...api.get('v1', 'Namespace', undefined, 'apps'),
    metadata: {
      ...(api.get('v1', 'Namespace', undefined, 'apps').metadata as object),
      labels: { 'istio.io/dataplane-mode': 'ambient' },
    },
  });
  await waitFor(
    () => events.some((e) => e.includes('namespace apps {"istio.io/dataplane-mode":"ambient"}')),
    'the namespace label event',
    10_000,
  );
  t.pass('label changes on namespaces reach the agent');

  api.remove('v1', 'Pod', 'apps', 'theirs');
  api.remove('v1', 'Pod', 'apps', 'fresh');
  // Events arrive in order: once ours is reported deleted, another node's would have been too.
  await waitFor(() => events.includes('deleted fresh'), 'the delete of our own pod', 10_000);
  t.notOk(
    events.some((e) => e.includes('theirs')),
    'never an event for another node’s pod',
  );
});

t.test('a pod recreated under the same name: the ADD’s uid reads past the stale cache', async (t) => {
  const api = await startKubeApi();
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'apps' } });
  api.create(pod('web-0', 'node-0'));
  const view = new KubeClusterView(kubeConfigFor(api), 'node-0');
  t.teardown(async () => {
    api.releaseWatches();
    await view.stop();
    await api.close();
  });
  await view.start();
  const oldUid = [...view.pods()].find((p) => p.metadata?.name === 'web-0')?.metadata?.uid;
  t.ok(oldUid, 'cached');
  // A StatefulSet replaces the pod; the informer has not seen it yet (its watch is cut and the
  // re-watch held, so the cache stays as it was).
  api.holdWatches();
  api.closeWatches();
  api.remove('v1', 'Pod', 'apps', 'web-0');
  const newUid = (api.create(pod('web-0', 'node-0')).metadata as { uid: string }).uid;
  t.not(newUid, oldUid);
  t.equal((await view.getPod('apps', 'web-0'))?.metadata?.uid, oldUid, 'without a uid: the cache, as before');
  t.equal(
    (await view.getPod('apps', 'web-0', newUid))?.metadata?.uid,
    newUid,
    'with the new uid: read from the API, not reported as a stale sandbox',
  );
  t.equal(
    (await view.getPod('apps', 'web-0', oldUid))?.metadata?.uid,
    oldUid,
    'a matching cached pod is taken',
  );
  // An annotation decided for the old pod never lands on its replacement.
  const stale = (await view.getPod('apps', 'web-0', oldUid)) as V1Pod;
  await t.rejects(
    view.annotatePod(stale, { 'ambient.istio.io/redirection': 'enabled' }),
    /409|Precondition|UID/,
  );
  t.notMatch(
    JSON.stringify(api.get('v1', 'Pod', 'apps', 'web-0')),
    'redirection',
    'the new pod is untouched',
  );
  const fresh = (await view.getPod('apps', 'web-0', newUid)) as V1Pod;
  await view.annotatePod(fresh, { 'ambient.istio.io/redirection': 'enabled' });
  t.match(JSON.stringify(api.get('v1', 'Pod', 'apps', 'web-0')), 'redirection', 'the right pod is annotated');
});

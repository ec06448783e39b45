// SPDX-License-Identifier: Apache-2.0
// The Kubernetes API stand-in driven by the real @kubernetes/client-node typed clients: create,
// get, list, update, patch and delete of every served type, the server-filled fields, optimistic
// concurrency, the status subresource, selectors, errors as Status objects, TokenReviews,
// discovery (KubernetesObjectApi), bearer-token auth, injected failures and HTTPS.
import t from 'tap';
import type { Test } from 'tap';
import {
  ApiException,
  AuthenticationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Pod,
} from '@kubernetes/client-node';
import {
  kubeConfigFor,
  startKubeApi,
  type KubeApiOptions,
  type KubeApiServer,
} from '../../helpers/kube-api/index.ts';

async function standIn(
  t: Test,
  opts: KubeApiOptions = {},
): Promise<{ api: KubeApiServer; kc: KubeConfig; core: CoreV1Api }> {
  const api = await startKubeApi(opts);
  t.teardown(() => api.close());
  const kc = kubeConfigFor(api, opts.token === undefined ? {} : { token: opts.token });
  return { api, kc, core: kc.makeApiClient(CoreV1Api) };
}

/** The HTTP code and parsed Status of a rejected client call. */
async function failure(p: Promise<unknown>): Promise<{ code: number; status: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof ApiException)) throw err;
    // The generated client drops the body of some codes (401); those come back as {}.
    const body: unknown = typeof err.body === 'string' ? JSON.parse(err.body) : (err.body ?? {});
    return { code: err.code, status: body as Record<string, unknown> };
  }
  throw new Error('the call succeeded; expected an API error');
}

function pod(name: string, extra: Partial<V1Pod> = {}): V1Pod {
  return {
    metadata: { name, ...extra.metadata },
    spec: { containers: [{ name: 'app', image: 'example' }], ...extra.spec },
    ...(extra.status ? { status: extra.status } : {}),
  };
}

t.test('core objects: server-filled fields, get, list, optimistic replace, delete', async (t) => {
  const { api, core } = await standIn(t);
  const ns = await core.createNamespace({ body: { metadata: { name: 'demo' } } });
  t.equal(ns.status?.phase, 'Active');
  const created = await core.createNamespacedPod({
    namespace: 'demo',
    body: pod('web', { metadata: { labels: { app: 'web' } } }),
  });
  t.equal(created.metadata?.namespace, 'demo', 'namespace comes from the path');
  t.match(created.metadata?.uid, /^[0-9a-f-]{36}$/);
  t.equal(created.metadata?.generation, 1);
  t.ok(
    created.metadata?.creationTimestamp instanceof Date,
    'creationTimestamp is an RFC 3339 time the client parses',
  );
  const rv1 = Number(created.metadata?.resourceVersion);
  t.ok(rv1 > Number(ns.metadata?.resourceVersion), 'one global resourceVersion counter');

  const got = await core.readNamespacedPod({ namespace: 'demo', name: 'web' });
  t.equal(got.metadata?.uid, created.metadata?.uid);

  const list = await core.listNamespacedPod({ namespace: 'demo' });
  t.equal(
    list.metadata?.resourceVersion,
    String(api.store.resourceVersion),
    'the list carries the current resourceVersion',
  );
  t.same(
    list.items.map((p) => p.metadata?.name),
    ['web'],
  );

  // Replace with the version read: accepted, new version. With the old version again: 409.
  got.metadata!.labels = { app: 'web', tier: 'front' };
  const replaced = await core.replaceNamespacedPod({ namespace: 'demo', name: 'web', body: got });
  t.ok(Number(replaced.metadata?.resourceVersion) > rv1);
  t.equal(replaced.metadata?.uid, created.metadata?.uid, 'uid is kept');
  t.equal(replaced.metadata?.generation, 1, 'a metadata-only change does not bump generation');
  const stale = await failure(core.replaceNamespacedPod({ namespace: 'demo', name: 'web', body: got }));
  t.equal(stale.code, 409);
  t.equal(stale.status.reason, 'Conflict');
  t.match(stale.status.message, 'the object has been modified');

  // A replace that changes nothing writes nothing.
  const same = await core.replaceNamespacedPod({ namespace: 'demo', name: 'web', body: replaced });
  t.equal(
    same.metadata?.resourceVersion,
    replaced.metadata?.resourceVersion,
    'a no-op update keeps the version',
  );

  const deleted = await core.deleteNamespacedPod({ namespace: 'demo', name: 'web' });
  t.ok(
    Number(deleted.metadata?.resourceVersion) > Number(replaced.metadata?.resourceVersion),
    'deletion has its own version',
  );
  t.equal((await failure(core.readNamespacedPod({ namespace: 'demo', name: 'web' }))).code, 404);
});

t.test('errors are Kubernetes Status objects with the API server reasons', async (t) => {
  const { core } = await standIn(t);
  const nf = await failure(core.readNamespacedPod({ namespace: 'demo', name: 'nope' }));
  t.equal(nf.code, 404);
  t.match(nf.status, {
    kind: 'Status',
    apiVersion: 'v1',
    status: 'Failure',
    reason: 'NotFound',
    code: 404,
    message: 'pods "nope" not found',
  });

  const noNs = await failure(core.createNamespacedPod({ namespace: 'missing', body: pod('a') }));
  t.equal(noNs.code, 404, 'creating in a namespace that does not exist');
  t.equal(noNs.status.message, 'namespaces "missing" not found');

  await core.createNamespace({ body: { metadata: { name: 'demo' } } });
  await core.createNamespacedPod({ namespace: 'demo', body: pod('a') });
  const dup = await failure(core.createNamespacedPod({ namespace: 'demo', body: pod('a') }));
  t.equal(dup.code, 409);
  t.equal(dup.status.reason, 'AlreadyExists');
  t.equal(dup.status.message, 'pods "a" already exists');

  const mismatch = await failure(
    core.createNamespacedPod({ namespace: 'demo', body: pod('b', { metadata: { namespace: 'other' } }) }),
  );
  t.equal(mismatch.code, 400);
  t.match(mismatch.status.message, 'does not match the namespace');

  const badName = await failure(core.createNamespacedPod({ namespace: 'demo', body: pod('Not_Valid') }));
  t.equal(badName.code, 422);
  t.equal(badName.status.reason, 'Invalid');

  const noName = await failure(core.createNamespacedPod({ namespace: 'demo', body: pod('') }));
  t.equal(noName.code, 422);
  const generated = await core.createNamespacedPod({
    namespace: 'demo',
    body: { metadata: { generateName: 'gen-' }, spec: { containers: [] } },
  });
  t.match(generated.metadata?.name, /^gen-[0-9a-f]{5}$/, 'generateName');

  const renamed = await failure(core.replaceNamespacedPod({ namespace: 'demo', name: 'a', body: pod('z') }));
  t.equal(renamed.code, 400, 'the body name must match the URL');

  const uidPre = await failure(
    core.deleteNamespacedPod({
      namespace: 'demo',
      name: 'a',
      body: { preconditions: { uid: 'not-the-uid' } },
    }),
  );
  t.equal(uidPre.code, 409, 'delete preconditions are checked');
});

t.test('patch: JSON patch (the client default), merge patch, strategic merge patch as merge', async (t) => {
  const { core } = await standIn(t);
  await core.createNamespace({ body: { metadata: { name: 'demo' } } });
  const p0 = await core.createNamespacedPod({
    namespace: 'demo',
    body: pod('p', { metadata: { labels: { a: '1' }, annotations: { x: 'y' } } }),
  });

  const p1 = await core.patchNamespacedPod({
    namespace: 'demo',
    name: 'p',
    body: [
      { op: 'add', path: '/metadata/labels/b', value: '2' },
      { op: 'remove', path: '/metadata/annotations/x' },
      { op: 'test', path: '/metadata/labels/a', value: '1' },
    ],
  });
  t.same(p1.metadata?.labels, { a: '1', b: '2' });
  t.same(p1.metadata?.annotations ?? {}, {});
  t.ok(Number(p1.metadata?.resourceVersion) > Number(p0.metadata?.resourceVersion));

  const failedTest = await failure(
    core.patchNamespacedPod({
      namespace: 'demo',
      name: 'p',
      body: [{ op: 'test', path: '/metadata/labels/a', value: 'no' }],
    }),
  );
  t.equal(failedTest.code, 422, 'a failing JSON patch test op rejects the patch');

  const p2 = await core.patchNamespacedPod(
    { namespace: 'demo', name: 'p', body: { metadata: { labels: { a: null, c: '3' } } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  t.same(p2.metadata?.labels, { b: '2', c: '3' }, 'merge patch: null deletes, others merge');

  const p3 = await core.patchNamespacedPod(
    { namespace: 'demo', name: 'p', body: { metadata: { labels: { d: '4' } } } },
    setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
  );
  t.same(p3.metadata?.labels, { b: '2', c: '3', d: '4' });

  const stale = await failure(
    core.patchNamespacedPod(
      {
        namespace: 'demo',
        name: 'p',
        body: { metadata: { resourceVersion: p0.metadata?.resourceVersion, labels: { e: '5' } } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    ),
  );
  t.equal(stale.code, 409, 'a patch carrying a stale resourceVersion conflicts');

  const noop = await core.patchNamespacedPod(
    { namespace: 'demo', name: 'p', body: { metadata: { labels: { d: '4' } } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  t.equal(
    noop.metadata?.resourceVersion,
    p3.metadata?.resourceVersion,
    'a patch that changes nothing writes nothing',
  );
});

t.test('status subresource: the main resource ignores status, /status takes only status', async (t) => {
  const { core } = await standIn(t);
  await core.createNamespace({ body: { metadata: { name: 'demo' } } });
  const created = await core.createNamespacedPod({
    namespace: 'demo',
    body: pod('p', { status: { phase: 'Running' } }),
  });
  t.equal(created.status, undefined, 'create through the main resource does not set status');

  const withStatus = await core.replaceNamespacedPodStatus({
    namespace: 'demo',
    name: 'p',
    body: {
      ...created,
      status: { phase: 'Running', podIP: '198.18.1.5' },
      spec: { containers: [], nodeName: 'ignored' },
    },
  });
  t.equal(withStatus.status?.podIP, '198.18.1.5');
  t.equal(withStatus.spec?.nodeName, undefined, '/status ignores spec');
  t.equal(withStatus.metadata?.generation, 1);

  const specChange = await core.replaceNamespacedPod({
    namespace: 'demo',
    name: 'p',
    body: { ...withStatus, spec: { ...withStatus.spec!, nodeName: 'node-1' }, status: { phase: 'Failed' } },
  });
  t.equal(specChange.spec?.nodeName, 'node-1');
  t.equal(specChange.status?.phase, 'Running', 'the main resource keeps the stored status');
  t.equal(specChange.metadata?.generation, 2, 'a spec change bumps generation');

  const patched = await core.patchNamespacedPodStatus(
    { namespace: 'demo', name: 'p', body: { status: { phase: 'Succeeded' } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  t.equal(patched.status?.phase, 'Succeeded');
  t.equal(patched.status?.podIP, '198.18.1.5');
});

t.test('custom resources (Istio security, Gateway API) and EndpointSlices', async (t) => {
  const { kc, core } = await standIn(t);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  await core.createNamespace({ body: { metadata: { name: 'demo' } } });
  const ap = {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'deny-all' },
    spec: { action: 'DENY', rules: [{}] },
  };
  const created = (await custom.createNamespacedCustomObject({
    group: 'security.istio.io',
    version: 'v1',
    namespace: 'demo',
    plural: 'authorizationpolicies',
    body: ap,
  })) as { metadata: { resourceVersion: string; uid: string } };
  t.ok(created.metadata.uid);
  await custom.createNamespacedCustomObject({
    group: 'security.istio.io',
    version: 'v1',
    namespace: 'demo',
    plural: 'peerauthentications',
    body: {
      apiVersion: 'security.istio.io/v1',
      kind: 'PeerAuthentication',
      metadata: { name: 'strict' },
      spec: { mtls: { mode: 'STRICT' } },
    },
  });
  await custom.createNamespacedCustomObject({
    group: 'gateway.networking.k8s.io',
    version: 'v1',
    namespace: 'demo',
    plural: 'gateways',
    body: {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: 'waypoint' },
      spec: {
        gatewayClassName: 'istio-waypoint',
        listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      },
    },
  });
  const wrongKind = await failure(
    custom.createNamespacedCustomObject({
      group: 'security.istio.io',
      version: 'v1',
      namespace: 'demo',
      plural: 'authorizationpolicies',
      body: { ...ap, kind: 'PeerAuthentication' },
    }),
  );
  t.equal(wrongKind.code, 400, 'the body kind must match the resource');

  const list = (await custom.listClusterCustomObject({
    group: 'security.istio.io',
    version: 'v1',
    plural: 'authorizationpolicies',
  })) as { kind: string; items: { apiVersion?: string; kind?: string }[] };
  t.equal(list.kind, 'AuthorizationPolicyList');
  t.same(
    list.items.map((i) => [i.apiVersion, i.kind]),
    [['security.istio.io/v1', 'AuthorizationPolicy']],
    'custom resource list items keep apiVersion and kind',
  );
  const raw = (await (await fetch(`${kc.getCurrentCluster()!.server}/api/v1/namespaces`)).json()) as {
    items: Record<string, unknown>[];
  };
  t.notOk(
    'kind' in raw.items[0]! || 'apiVersion' in raw.items[0]!,
    'built-in list items leave them out, like the API server',
  );

  const st = (await custom.patchNamespacedCustomObjectStatus(
    {
      group: 'gateway.networking.k8s.io',
      version: 'v1',
      namespace: 'demo',
      plural: 'gateways',
      name: 'waypoint',
      body: { status: { addresses: [{ value: '198.19.0.9' }] } },
    },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  )) as { status: { addresses: { value: string }[] } };
  t.equal(st.status.addresses[0]?.value, '198.19.0.9', 'Gateway status is written through /status');

  const replaced = (await custom.replaceNamespacedCustomObject({
    group: 'security.istio.io',
    version: 'v1',
    namespace: 'demo',
    plural: 'authorizationpolicies',
    name: 'deny-all',
    body: {
      ...ap,
      metadata: { ...ap.metadata, resourceVersion: created.metadata.resourceVersion },
      spec: { action: 'ALLOW' },
    },
  })) as { spec: { action: string }; metadata: { generation: number } };
  t.equal(replaced.spec.action, 'ALLOW');
  t.equal(replaced.metadata.generation, 2);
  await custom.deleteNamespacedCustomObject({
    group: 'security.istio.io',
    version: 'v1',
    namespace: 'demo',
    plural: 'authorizationpolicies',
    name: 'deny-all',
  });
  const gone = await failure(
    custom.getNamespacedCustomObject({
      group: 'security.istio.io',
      version: 'v1',
      namespace: 'demo',
      plural: 'authorizationpolicies',
      name: 'deny-all',
    }),
  );
  t.equal(gone.status.message, 'authorizationpolicies.security.istio.io "deny-all" not found');

  await discovery.createNamespacedEndpointSlice({
    namespace: 'demo',
    body: {
      metadata: { name: 'web-abc', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['198.18.1.5'] }],
      ports: [{ port: 8080 }],
    },
  });
  const slices = await discovery.listEndpointSliceForAllNamespaces({
    labelSelector: 'kubernetes.io/service-name=web',
  });
  t.same(
    slices.items.map((s) => s.endpoints?.[0]?.addresses),
    [['198.18.1.5']],
  );
});

t.test('label and field selectors on list; unsupported fields are refused', async (t) => {
  const { core } = await standIn(t);
  for (const ns of ['a', 'b']) await core.createNamespace({ body: { metadata: { name: ns } } });
  await core.createNamespacedPod({
    namespace: 'a',
    body: pod('p1', {
      metadata: { labels: { app: 'web', tier: 'front' } },
      spec: { containers: [], nodeName: 'n1' },
    }),
  });
  await core.createNamespacedPod({
    namespace: 'a',
    body: pod('p2', { metadata: { labels: { app: 'db' } }, spec: { containers: [], nodeName: 'n2' } }),
  });
  await core.createNamespacedPod({
    namespace: 'b',
    body: pod('p3', { metadata: { labels: { app: 'web' } }, spec: { containers: [], nodeName: 'n1' } }),
  });
  await core.createNamespacedPod({ namespace: 'b', body: pod('p4') });
  const names = async (q: { labelSelector?: string; fieldSelector?: string }): Promise<string[]> =>
    (await core.listPodForAllNamespaces(q)).items.map(
      (p) => `${p.metadata!.namespace!}/${p.metadata!.name!}`,
    );

  t.same(await names({ labelSelector: 'app=web' }), ['a/p1', 'b/p3']);
  t.same(await names({ labelSelector: 'app==web,tier' }), ['a/p1']);
  t.same(
    await names({ labelSelector: 'app!=web' }),
    ['a/p2', 'b/p4'],
    '!= also selects objects without the label',
  );
  t.same(await names({ labelSelector: 'app in (db, web),!tier' }), ['a/p2', 'b/p3']);
  t.same(await names({ labelSelector: 'app notin (web)' }), ['a/p2', 'b/p4']);
  t.same(await names({ fieldSelector: 'spec.nodeName=n1' }), ['a/p1', 'b/p3']);
  t.same(
    await names({ fieldSelector: 'spec.nodeName=' }),
    ['b/p4'],
    'an empty value selects unscheduled pods',
  );
  t.same(await names({ fieldSelector: 'metadata.namespace=b,metadata.name!=p3' }), ['b/p4']);
  t.same(await names({ fieldSelector: 'spec.nodeName=n1', labelSelector: 'tier=front' }), ['a/p1']);

  const unsupported = await failure(core.listPodForAllNamespaces({ fieldSelector: 'spec.hostname=x' }));
  t.equal(unsupported.code, 400);
  t.equal(unsupported.status.message, 'field label not supported: spec.hostname');
  const malformed = await failure(core.listPodForAllNamespaces({ labelSelector: 'app in web' }));
  t.equal(malformed.code, 400);
});

t.test('deleting a namespace deletes the objects in it', async (t) => {
  const { core } = await standIn(t);
  await core.createNamespace({ body: { metadata: { name: 'gone' } } });
  await core.createNamespace({ body: { metadata: { name: 'kept' } } });
  await core.createNamespacedPod({ namespace: 'gone', body: pod('p') });
  await core.createNamespacedService({
    namespace: 'gone',
    body: { metadata: { name: 's' }, spec: { ports: [{ port: 80 }] } },
  });
  await core.createNamespacedPod({ namespace: 'kept', body: pod('p') });
  await core.deleteNamespace({ name: 'gone' });
  t.same(
    (await core.listPodForAllNamespaces()).items.map((p) => p.metadata?.namespace),
    ['kept'],
  );
  t.same((await core.listServiceForAllNamespaces()).items, []);
});

t.test('TokenReview answers from registered tokens and honours audiences', async (t) => {
  const { api, kc } = await standIn(t);
  const authn = kc.makeApiClient(AuthenticationV1Api);
  api.registerServiceAccountToken(
    'ztunnel-token',
    { namespace: 'istio-system', name: 'ztunnel', podName: 'ztunnel-x', podUid: 'uid-1', nodeName: 'node-1' },
    ['istio-ca'],
  );
  const ok = await authn.createTokenReview({
    body: { spec: { token: 'ztunnel-token', audiences: ['istio-ca'] } },
  });
  t.equal(ok.status?.authenticated, true);
  t.equal(ok.status?.user?.username, 'system:serviceaccount:istio-system:ztunnel');
  t.same(ok.status?.user?.extra?.['authentication.kubernetes.io/node-name'], ['node-1']);
  t.same(ok.status?.user?.extra?.['authentication.kubernetes.io/pod-uid'], ['uid-1']);
  t.ok(ok.status?.user?.groups?.includes('system:serviceaccounts:istio-system'));
  t.same(ok.status?.audiences, ['istio-ca']);

  const wrongAudience = await authn.createTokenReview({
    body: { spec: { token: 'ztunnel-token', audiences: ['other'] } },
  });
  t.equal(wrongAudience.status?.authenticated, false);
  t.match(wrongAudience.status?.error, 'is invalid for the target audiences');
  const defaultAudience = await authn.createTokenReview({ body: { spec: { token: 'ztunnel-token' } } });
  t.equal(defaultAudience.status?.authenticated, false, 'no audiences means the API server audience');

  const unknown = await authn.createTokenReview({
    body: { spec: { token: 'forged', audiences: ['istio-ca'] } },
  });
  t.equal(unknown.status?.authenticated, false);
  t.match(unknown.status?.error, 'invalid bearer token');

  api.unregisterToken('ztunnel-token');
  const revoked = await authn.createTokenReview({
    body: { spec: { token: 'ztunnel-token', audiences: ['istio-ca'] } },
  });
  t.equal(revoked.status?.authenticated, false);
});

t.test('bearer token required, injected failures, request log', async (t) => {
  const { api, core } = await standIn(t, { token: 'admin-token' });
  const anonymous = kubeConfigFor(api).makeApiClient(CoreV1Api);
  t.equal((await failure(anonymous.listNamespace())).code, 401);
  const raw = await fetch(`${api.url}/api/v1/namespaces`, { headers: { authorization: 'Bearer wrong' } });
  t.equal(raw.status, 401);
  t.match(await raw.json(), { kind: 'Status', reason: 'Unauthorized', code: 401 });

  api.failNext(2, 503, (r) => r.verb === 'list' && r.resource === 'namespaces');
  t.equal((await failure(core.listNamespace())).code, 503);
  await core.readNamespace({ name: 'x' }).catch(() => undefined); // a get does not match the fault
  t.equal((await failure(core.listNamespace())).code, 503);
  t.same((await core.listNamespace()).items, [], 'after n failures requests succeed again');

  const lists = api.requests.filter((r) => r.verb === 'list' && r.resource === 'namespaces');
  t.same(
    lists.map((r) => r.status),
    [401, 401, 503, 503, 200],
  );
  const gets = api.requests.filter((r) => r.verb === 'get');
  t.same(
    gets.map((r) => [r.name, r.status]),
    [['x', 404]],
  );
});

t.test('HTTPS with a test CA; KubernetesObjectApi finds resources through discovery', async (t) => {
  const { api, kc, core } = await standIn(t, { tls: true });
  t.match(api.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  t.notOk(kc.getCurrentCluster()?.skipTLSVerify, 'the client verifies the server certificate');
  await core.createNamespace({ body: { metadata: { name: 'demo' } } });
  const objects = KubernetesObjectApi.makeApiClient(kc);
  await objects.create({
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name: 'default', namespace: 'demo' },
  });
  const read = await objects.read({
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name: 'default', namespace: 'demo' },
  });
  t.equal(read.metadata?.namespace, 'demo');
  t.ok(api.requests.some((r) => r.verb === 'discovery' && r.path === '/apis/security.istio.io/v1'));
});

// SPDX-License-Identifier: Apache-2.0
// AmbientModel: deltas carry exactly what changed; attachments move with selector, scope and
// namespace edits and leave nothing behind (checklist C.46, istio/ztunnel#1247, istio#51556);
// every listed policy is emitted (C.45 invariant); the CA lookups (pod by uid, node identity,
// spec §4); option validation; objects with unusable names; diagnostics reach the logger.
import { PassThrough } from 'node:stream';
import t from 'tap';
import { AmbientModel } from '../../../../src/controller/model/ambient-model.ts';
import { CTL_ERR_MODEL_OPTIONS } from '../../../../src/controller/model/options.ts';
import { Logger } from '../../../../src/shared/telemetry/logger.ts';
import { authorizationPolicy, endpointSlice, namespace, pod, remove, service, upsert } from './fixtures.ts';

const UID = 'Kubernetes//Pod/apps/a';
const SVC = 'apps/web.apps.svc.cluster.local';

function listedBy(m: AmbientModel, uid: string): string[] | undefined {
  const a = m.addresses().get(uid);
  return a?.type?.$case === 'workload' ? a.type.value.authorizationPolicies : undefined;
}

function servicesOf(m: AmbientModel, uid: string): string[] | undefined {
  const a = m.addresses().get(uid);
  return a?.type?.$case === 'workload' ? [...a.type.value.services.keys()] : undefined;
}

t.test('deltas: everything first, nothing when nothing changed, then exactly the change', async (t) => {
  const m = new AmbientModel();
  const objects = [
    upsert('Namespace', namespace('apps')),
    upsert('Pod', pod('apps', 'a', { labels: { app: 'web' } })),
    upsert('Pod', pod('apps', 'b', { labels: { app: 'web' }, ips: ['10.0.0.2'] })),
    upsert('Service', service('apps', 'web', { selector: { app: 'web' } })),
    upsert('AuthorizationPolicy', authorizationPolicy('apps', 'p', { rules: [{}] })),
  ];
  let d = m.apply(objects);
  t.same([...d.addresses.upserted.keys()].sort(), [UID, 'Kubernetes//Pod/apps/b', SVC]);
  t.same([...d.authorizations.upserted.keys()], ['apps/p']);
  t.same(m.encodedAddresses().size, 3);

  d = m.apply(objects);
  t.same([...d.addresses.upserted.keys()], [], 'replaying identical objects changes nothing');
  t.same(d.authorizations.upserted.size, 0);

  d = m.apply([upsert('Pod', pod('apps', 'a', { labels: { app: 'web' }, ready: false }))]);
  t.same([...d.addresses.upserted.keys()], [UID], 'one pod changed: one resource');
  d = m.apply([upsert('Pod', pod('apps', 'b', { labels: { app: 'web' }, ips: ['10.0.0.2'], ready: true }))]);
  t.same(d.addresses.upserted.size, 0, 'an update that changes no field is not reported');

  d = m.apply([remove('Pod', pod('apps', 'a'))]);
  t.same(d.addresses.removed, [UID]);
  t.equal(m.addresses().has(UID), false);
  d = m.apply([upsert('Pod', pod('apps', 'a', { labels: { app: 'web' } })), remove('Pod', pod('apps', 'a'))]);
  t.same(
    [d.addresses.upserted.size, d.addresses.removed.length],
    [0, 0],
    'created and deleted within one batch: no change',
  );
});

t.test('a service selector change moves its endpoints', async (t) => {
  const m = new AmbientModel();
  m.apply([
    upsert('Pod', pod('apps', 'a', { labels: { app: 'web' } })),
    upsert('Pod', pod('apps', 'b', { labels: { app: 'api' }, ips: ['10.0.0.2'] })),
    upsert('Service', service('apps', 'web', { selector: { app: 'web' } })),
  ]);
  t.same(servicesOf(m, UID), [SVC]);
  const d = m.apply([upsert('Service', service('apps', 'web', { selector: { app: 'api' } }))]);
  t.same(
    [...d.addresses.upserted.keys()].sort(),
    ['Kubernetes//Pod/apps/a', 'Kubernetes//Pod/apps/b'],
    'both pods, not the unchanged service',
  );
  t.same(servicesOf(m, UID), []);
  t.same(servicesOf(m, 'Kubernetes//Pod/apps/b'), [SVC]);
  m.apply([remove('Service', service('apps', 'web'))]);
  t.same(servicesOf(m, 'Kubernetes//Pod/apps/b'), [], 'deleting the service removes it from its endpoints');
  t.notOk(m.addresses().has(SVC));
});

t.test('C.46 / istio/ztunnel#1247: scope and selector edits leave no stale attachment', async (t) => {
  const m = new AmbientModel();
  m.apply([
    upsert('Pod', pod('apps', 'a', { labels: { app: 'web' } })),
    upsert('Pod', pod('apps', 'b', { labels: { app: 'api' }, ips: ['10.0.0.2'] })),
    upsert(
      'AuthorizationPolicy',
      authorizationPolicy('apps', 'p', { selector: { matchLabels: { app: 'web' } }, action: 'DENY' }),
    ),
  ]);
  t.same(listedBy(m, UID), ['apps/p']);
  m.apply([
    upsert(
      'AuthorizationPolicy',
      authorizationPolicy('apps', 'p', { selector: { matchLabels: { app: 'api' } }, action: 'DENY' }),
    ),
  ]);
  t.same(listedBy(m, UID), [], 'old selector gone');
  t.same(listedBy(m, 'Kubernetes//Pod/apps/b'), ['apps/p'], 'new selector applied');
  const d = m.apply([upsert('AuthorizationPolicy', authorizationPolicy('apps', 'p', { action: 'DENY' }))]);
  t.same(listedBy(m, 'Kubernetes//Pod/apps/b'), [], 'selector → namespace scope: no longer listed');
  t.equal(d.authorizations.upserted.get('apps/p')?.scope, 1, 'now NAMESPACE scope');
  m.apply([
    upsert(
      'AuthorizationPolicy',
      authorizationPolicy('apps', 'p', { selector: { matchLabels: { app: 'web' } }, action: 'DENY' }),
    ),
  ]);
  t.same(listedBy(m, UID), ['apps/p'], 'namespace → selector scope: listed again');
  m.apply([remove('AuthorizationPolicy', authorizationPolicy('apps', 'p', {}))]);
  t.same(listedBy(m, UID), [], 'deleted: unlisted');
  t.notOk(m.authorizations().has('apps/p'));
});

t.test('istio#51556: same labels in two namespaces, a selector policy in one', async (t) => {
  const m = new AmbientModel();
  m.apply([
    upsert('Pod', pod('a', 'x', { labels: { app: 'web' } })),
    upsert('Pod', pod('b', 'x', { labels: { app: 'web' }, ips: ['10.0.0.2'] })),
    upsert(
      'AuthorizationPolicy',
      authorizationPolicy('a', 'deny', {
        selector: { matchLabels: { app: 'web' } },
        action: 'DENY',
        rules: [{}],
      }),
    ),
  ]);
  t.same(listedBy(m, 'Kubernetes//Pod/a/x'), ['a/deny']);
  t.same(listedBy(m, 'Kubernetes//Pod/b/x'), []);
  // A "move" between namespaces is a delete in one and a create in the other.
  m.apply([
    remove('AuthorizationPolicy', authorizationPolicy('a', 'deny', {})),
    upsert(
      'AuthorizationPolicy',
      authorizationPolicy('b', 'deny', {
        selector: { matchLabels: { app: 'web' } },
        action: 'DENY',
        rules: [{}],
      }),
    ),
  ]);
  t.same(listedBy(m, 'Kubernetes//Pod/a/x'), []);
  t.same(listedBy(m, 'Kubernetes//Pod/b/x'), ['b/deny']);
});

t.test(
  'pod label changes re-select services and policies; root-namespace selectors reach every namespace',
  async (t) => {
    const m = new AmbientModel();
    m.apply([
      upsert('Pod', pod('apps', 'a', { labels: { app: 'web' } })),
      upsert('Service', service('apps', 'web', { selector: { app: 'web', tier: 'front' } })),
      upsert(
        'AuthorizationPolicy',
        authorizationPolicy('istio-system', 'mesh-front', {
          selector: { matchLabels: { tier: 'front' } },
          action: 'DENY',
        }),
      ),
    ]);
    t.same([servicesOf(m, UID), listedBy(m, UID)], [[], []]);
    m.apply([upsert('Pod', pod('apps', 'a', { labels: { app: 'web', tier: 'front' } }))]);
    t.same([servicesOf(m, UID), listedBy(m, UID)], [[SVC], ['istio-system/mesh-front']]);
  },
);

t.test('C.45 invariant: every listed policy is emitted', async (t) => {
  const m = new AmbientModel();
  m.apply([
    upsert('Pod', pod('apps', 'a', { labels: { app: 'web' } })),
    upsert(
      'AuthorizationPolicy',
      authorizationPolicy('apps', 'inv', { selector: { matchLabels: { app: 'web' } }, action: 'NOPE' }),
    ),
    upsert(
      'AuthorizationPolicy',
      authorizationPolicy('apps', 'audit', { selector: { matchLabels: { app: 'web' } }, action: 'AUDIT' }),
    ),
    upsert(
      'AuthorizationPolicy',
      authorizationPolicy('apps', 'badsel', { selector: 'app=web', action: 'ALLOW' }),
    ),
  ]);
  const listed = listedBy(m, UID) ?? [];
  t.same(listed, ['apps/badsel', 'apps/inv'], 'invalid policies are listed (deny-all); AUDIT is not');
  for (const key of listed) t.ok(m.authorizations().has(key), key);
});

t.test('CA lookups: pod by Kubernetes uid, by name, and node identities', async (t) => {
  const m = new AmbientModel();
  m.apply([
    upsert('Pod', pod('apps', 'a', { uid: 'k8s-uid-1', node: 'n1', serviceAccount: 'web' })),
    upsert('Pod', pod('apps', 'b', { node: 'n1', ips: [] })),
    upsert('Pod', pod('apps', 'done', { node: 'n2', serviceAccount: 'batch', phase: 'Succeeded' })),
  ]);
  t.equal(m.podByUid('k8s-uid-1')?.metadata?.name, 'a');
  t.equal(m.podByUid('nope'), undefined);
  t.equal(m.pod('apps', 'b')?.metadata?.name, 'b');
  t.equal(m.nodeHasIdentity('n1', 'apps', 'web'), true);
  t.equal(m.nodeHasIdentity('n1', 'apps', 'default'), true, 'a pod without an IP yet still counts');
  t.equal(m.nodeHasIdentity('n2', 'apps', 'web'), false, 'another node');
  t.equal(m.nodeHasIdentity('n1', 'other', 'web'), false, 'another namespace');
  t.equal(m.nodeHasIdentity('n2', 'apps', 'batch'), false, 'a finished pod holds no identity');
  m.apply([upsert('Pod', pod('apps', 'a', { uid: 'k8s-uid-1', node: 'n1', serviceAccount: 'other' }))]);
  t.equal(m.nodeHasIdentity('n1', 'apps', 'web'), false, 'service account change');
  m.apply([remove('Pod', pod('apps', 'a', { uid: 'k8s-uid-1' })), remove('Pod', pod('apps', 'b'))]);
  t.equal(m.podByUid('k8s-uid-1'), undefined);
  t.equal(m.nodeHasIdentity('n1', 'apps', 'default'), false, 'deleted');
});

t.test('options: defaults and validation', async (t) => {
  t.same(new AmbientModel().options, {
    clusterId: 'Kubernetes',
    trustDomain: 'cluster.local',
    rootNamespace: 'istio-system',
    domainSuffix: 'cluster.local',
  });
  for (const bad of [
    { clusterId: '' },
    { clusterId: 'a/b' },
    { trustDomain: 'Bad Domain' },
    { rootNamespace: 'Istio_System' },
    { domainSuffix: '-x' },
  ]) {
    t.throws(
      () => new AmbientModel(bad),
      { name: 'MeshError', code: CTL_ERR_MODEL_OPTIONS },
      JSON.stringify(bad),
    );
  }
  const m = new AmbientModel({ rootNamespace: 'mesh-root' });
  m.apply([upsert('AuthorizationPolicy', authorizationPolicy('mesh-root', 'g', { action: 'DENY' }))]);
  t.equal(m.authorizations().get('mesh-root/g')?.scope, 0, 'GLOBAL in the configured root namespace');
});

t.test(
  'objects whose names cannot be Kubernetes names are ignored, and Gateways are not consumed yet',
  async (t) => {
    const out = new PassThrough();
    let logged = '';
    out.on('data', (b: Buffer) => (logged += b.toString()));
    const m = new AmbientModel({ logger: new Logger({ destination: out }) });
    const d = m.apply([
      upsert(
        'AuthorizationPolicy',
        authorizationPolicy('istio-system', 'istio_converted_static_strict', { rules: [{}] }),
      ),
      upsert('Pod', pod('Apps', 'x')),
      upsert('Gateway', {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'Gateway',
        metadata: { namespace: 'apps', name: 'waypoint' },
      }),
    ]);
    t.same([d.addresses.upserted.size, d.authorizations.upserted.size], [0, 0]);
    t.match(
      logged,
      /ignoring AuthorizationPolicy \\"istio-system\/istio_converted_static_strict\\": not a valid Kubernetes namespace and name/,
    );
    t.match(logged, /ignoring Pod \\"Apps\/x\\"/);
  },
);

t.test('diagnostics are logged when they change and cleared with the object', async (t) => {
  const out = new PassThrough();
  const lines: string[] = [];
  out.on('data', (b: Buffer) => lines.push(...b.toString().trim().split('\n')));
  const m = new AmbientModel({ logger: new Logger({ destination: out }) });
  const p = authorizationPolicy('apps', 'l7', { rules: [{ to: [{ operation: { methods: ['GET'] } }] }] });
  m.apply([upsert('AuthorizationPolicy', p)]);
  m.apply([upsert('AuthorizationPolicy', p)]);
  await new Promise((r) => setImmediate(r));
  const warnings = lines.map((l) => JSON.parse(l) as { level: string; object: string; message: string });
  t.equal(warnings.length, 1, 'logged once, not on every identical update');
  t.equal(warnings[0]?.object, 'AuthorizationPolicy apps/l7');
  t.match(warnings[0]?.message, /ztunnel does not support HTTP attributes/);
  m.apply([remove('AuthorizationPolicy', p)]);
  t.equal(m.diagnostics().has('AuthorizationPolicy apps/l7'), false);
});

t.test(
  'malformed objects (not what the API server returns) are reported and never abort a batch',
  async (t) => {
    const m = new AmbientModel();
    const badPod = pod('apps', 'bad');
    (badPod.status as Record<string, unknown>).podIPs = 'not-a-list';
    const badService = service('apps', 'bad', { selector: { app: 'web' } });
    (badService.spec as Record<string, unknown>).ports = { port: 80 };
    const badSlice = endpointSlice('apps', 'bad', 'headless', []);
    (badSlice as unknown as Record<string, unknown>).endpoints = 'nope';
    const outOfRange = pod('apps', 'ports', {
      labels: { app: 'web' },
      ports: [{ name: 'http', containerPort: -1 }],
    });
    const d = m.apply([
      upsert('Pod', badPod),
      upsert('Service', badService),
      upsert('Service', service('apps', 'headless', { ports: [{ name: 'http', port: 80 }] })),
      upsert('EndpointSlice', badSlice),
      upsert(
        'EndpointSlice',
        endpointSlice(
          'apps',
          'neg',
          'headless',
          [{ addresses: ['192.168.0.9'] }],
          [{ name: 'http', port: -5 }],
        ),
      ),
      upsert(
        'Service',
        service('apps', 'named', {
          selector: { app: 'web' },
          ports: [{ name: 'h', port: 80, targetPort: 'http' }],
        }),
      ),
      upsert('Pod', outOfRange),
      upsert('Pod', pod('apps', 'a', { ips: ['10.0.0.7'] })),
    ]);
    t.ok(d.addresses.upserted.has(UID), 'the well-formed pod of the same batch is applied');
    t.notOk(m.addresses().has('Kubernetes//Pod/apps/bad'));
    t.notOk(m.addresses().has('apps/bad.apps.svc.cluster.local'));
    for (const id of ['Pod apps/bad', 'Service apps/bad', 'EndpointSlice apps/bad']) {
      t.match(m.diagnostics().get(id), [/malformed object/], id);
    }
    const ports = m.addresses().get('Kubernetes//Pod/apps/ports');
    t.same(
      ports?.type?.$case === 'workload'
        ? ports.type.value.services.get('apps/named.apps.svc.cluster.local')?.ports
        : undefined,
      [],
      'a container port out of range is not used',
    );
    const neg = m.addresses().get('Kubernetes/discovery.k8s.io/EndpointSlice/apps/neg/192.168.0.9');
    t.same(
      neg?.type?.$case === 'workload'
        ? neg.type.value.services.get('apps/headless.apps.svc.cluster.local')?.ports
        : undefined,
      [],
      'a slice port out of range is not used',
    );
  },
);

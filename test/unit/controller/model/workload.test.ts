// SPDX-License-Identifier: Apache-2.0
// Pod → Workload (spec ambient-protocols §3.5): uid and names, raw address bytes, HBONE only for
// enrolled pods (§2.1 step 3.4) or native tunnels, elided defaults (§9.13), health, host
// network, owner-derived workload names, canonical labels, and the per-service port mapping
// with named target ports resolved through the pod's container ports.
import t from 'tap';
import { AmbientModel } from '../../../../src/controller/model/ambient-model.ts';
import { DEFAULT_MODEL_OPTIONS } from '../../../../src/controller/model/options.ts';
import { translatePod, workloadName } from '../../../../src/controller/model/workload.ts';
import type { Workload } from '../../../../src/shared/gen/workload.ts';
import {
  NetworkMode,
  TunnelProtocol,
  WorkloadStatus,
  WorkloadType,
} from '../../../../src/shared/gen/workload.ts';
import type { PodOptions } from './fixtures.ts';
import { pod, service, upsert } from './fixtures.ts';

const meta = { namespace: 'apps', name: 'server' };
const noContext = { services: [], authorizationPolicies: [] };

function wl(o: PodOptions = {}, opts = DEFAULT_MODEL_OPTIONS): Workload {
  const w = translatePod(pod('apps', 'server', o), meta, noContext, opts).workload;
  if (w === undefined) throw new Error('no workload');
  return w;
}

t.test('identity fields, addresses and defaults', async (t) => {
  const w = wl({ ips: ['10.0.0.7', 'fd00::7'], node: 'node-3' });
  t.equal(w.uid, 'Kubernetes//Pod/apps/server');
  t.equal(w.name, 'server', 'name is sent: in-pod ztunnel matches ZDS on it');
  t.equal(w.namespace, 'apps');
  t.same(w.addresses, [
    Uint8Array.from([10, 0, 0, 7]),
    Uint8Array.from([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]),
  ]);
  t.equal(w.node, 'node-3');
  t.equal(w.clusterId, 'Kubernetes');
  t.equal(w.trustDomain, '', 'cluster.local elided');
  t.equal(w.serviceAccount, '', 'default elided');
  t.equal(w.workloadType, WorkloadType.POD);
  t.equal(w.network, '');
  t.equal(w.networkMode, NetworkMode.STANDARD);
  t.equal(w.status, WorkloadStatus.HEALTHY);

  const custom = wl(
    { serviceAccount: 'server' },
    { ...DEFAULT_MODEL_OPTIONS, clusterId: 'c1', trustDomain: 'example.org' },
  );
  t.equal(custom.uid, 'c1//Pod/apps/server');
  t.equal(custom.clusterId, 'c1');
  t.equal(custom.trustDomain, 'example.org');
  t.equal(custom.serviceAccount, 'server');
  const legacy = pod('apps', 'server');
  if (legacy.spec !== undefined) legacy.spec.serviceAccount = 'old-field';
  t.equal(translatePod(legacy, meta, noContext, DEFAULT_MODEL_OPTIONS).workload?.serviceAccount, 'old-field');
});

t.test('tunnel protocol: HBONE only once enrolled, or for native HBONE workloads', async (t) => {
  t.equal(wl().tunnelProtocol, TunnelProtocol.NONE, 'not enrolled');
  t.equal(
    wl({ annotations: { 'ambient.istio.io/redirection': 'pending' } }).tunnelProtocol,
    TunnelProtocol.NONE,
    'pending',
  );
  t.equal(
    wl({ annotations: { 'ambient.istio.io/redirection': 'enabled' } }).tunnelProtocol,
    TunnelProtocol.HBONE,
    'enabled',
  );
  t.equal(
    wl({ labels: { 'istio.io/dataplane-mode': 'ambient' } }).tunnelProtocol,
    TunnelProtocol.NONE,
    'the label alone is not enrolment',
  );
  const native = wl({ labels: { 'networking.istio.io/tunnel': 'tcp,http' } });
  t.equal(native.tunnelProtocol, TunnelProtocol.HBONE);
  t.equal(native.nativeTunnel, true);
  t.equal(wl({ labels: { 'networking.istio.io/tunnel': 'https' } }).nativeTunnel, false, 'exact value match');
});

t.test('status, host network, skipped pods', async (t) => {
  t.equal(wl({ ready: false }).status, WorkloadStatus.UNHEALTHY, 'not Ready');
  t.equal(wl({ deleting: true }).status, WorkloadStatus.UNHEALTHY, 'being deleted');
  t.equal(wl({ hostNetwork: true }).networkMode, NetworkMode.HOST_NETWORK);
  const skipped: [string, PodOptions][] = [
    ['no IP yet', { ips: [] }],
    ['Succeeded', { phase: 'Succeeded' }],
    ['Failed', { phase: 'Failed' }],
  ];
  for (const [label, o] of skipped) {
    const r = translatePod(pod('apps', 'server', o), meta, noContext, DEFAULT_MODEL_OPTIONS);
    t.equal(r.workload, undefined, label);
    t.same(r.warnings, [], `${label}: not a problem`);
  }
  const bad = translatePod(
    pod('apps', 'server', { ips: ['10.0.0.1', '10.0.0.256'] }),
    meta,
    noContext,
    DEFAULT_MODEL_OPTIONS,
  );
  t.equal(bad.workload, undefined, 'an unusable IP leaves the pod out');
  t.match(bad.warnings, [/"10.0.0.256" is not an IP address/]);
});

t.test('workload name from the controlling owner (istiod heuristics)', async (t) => {
  const owned = (kind: string, name: string, labels?: Record<string, string>): string =>
    workloadName(
      pod('apps', 'x-abc', {
        generateName: 'x-',
        labels,
        owner: { apiVersion: 'apps/v1', kind, name, uid: 'o', controller: true },
      }),
    );
  t.equal(owned('ReplicaSet', 'web-7d9f8c', { 'pod-template-hash': '7d9f8c' }), 'web', 'Deployment');
  t.equal(owned('ReplicaSet', 'web-7d9f8c'), 'web-7d9f8c', 'bare ReplicaSet');
  t.equal(owned('Job', 'backup-28930140'), 'backup', 'CronJob');
  t.equal(owned('Job', 'migrate'), 'migrate', 'Job');
  t.equal(owned('StatefulSet', 'db'), 'db');
  t.equal(workloadName(pod('apps', 'standalone')), 'standalone', 'not generated');
  t.equal(
    workloadName(
      pod('apps', 'x-1', {
        generateName: 'x-',
        owner: { apiVersion: 'v1', kind: 'ReplicaSet', name: 'r', uid: 'o' },
      }),
    ),
    'x-1',
    'an owner that is not the controller does not count',
  );
});

t.test('canonical name and revision labels', async (t) => {
  const deployed = (labels: Record<string, string>): Workload =>
    wl({
      labels: { 'pod-template-hash': 'h', ...labels },
      generateName: 'web-h-',
      owner: { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-h', uid: 'o', controller: true },
    });
  let w = deployed({});
  t.same([w.canonicalName, w.canonicalRevision, w.workloadName], ['web', 'latest', 'web'], 'fallbacks');
  w = deployed({ app: 'shop', version: 'v2' });
  t.same([w.canonicalName, w.canonicalRevision], ['shop', 'v2']);
  w = deployed({ app: 'shop', 'app.kubernetes.io/name': 'store', 'app.kubernetes.io/version': '3' });
  t.same([w.canonicalName, w.canonicalRevision], ['store', '3']);
  w = deployed({
    app: 'shop',
    'service.istio.io/canonical-name': 'c',
    'service.istio.io/canonical-revision': 'r',
  });
  t.same([w.canonicalName, w.canonicalRevision], ['c', 'r']);
});

t.test('services map: selected services, numeric and named target ports, sorted keys', async (t) => {
  const m = new AmbientModel();
  m.apply([
    upsert(
      'Pod',
      pod('apps', 'server', {
        labels: { app: 'server', tier: 'web' },
        ports: [
          { name: 'web', containerPort: 8081 },
          { name: 'metrics', containerPort: 9100, protocol: 'UDP' },
        ],
      }),
    ),
    upsert(
      'Service',
      service('apps', 'zeta', {
        selector: { app: 'server' },
        ports: [
          { name: 'http', port: 80, targetPort: 8080 },
          { name: 'named', port: 81, targetPort: 'web' },
          { name: 'missing', port: 82, targetPort: 'nope' },
          { name: 'udp-port', port: 83, targetPort: 'metrics' },
          { name: 'dns', port: 53, protocol: 'UDP' },
        ],
      }),
    ),
    upsert('Service', service('apps', 'alpha', { selector: { tier: 'web' }, ports: [{ port: 443 }] })),
    upsert('Service', service('apps', 'unrelated', { selector: { app: 'other' } })),
    upsert('Service', service('apps', 'no-selector', {})),
    upsert('Service', service('apps', 'empty-selector', { selector: {} })),
    upsert('Service', service('other', 'same-labels', { selector: { app: 'server' } })),
  ]);
  const a = m.addresses().get('Kubernetes//Pod/apps/server');
  const w = a?.type?.$case === 'workload' ? a.type.value : undefined;
  t.same(
    [...(w?.services.keys() ?? [])],
    ['apps/alpha.apps.svc.cluster.local', 'apps/zeta.apps.svc.cluster.local'],
    'only selecting services of its namespace, sorted',
  );
  t.same(
    w?.services.get('apps/zeta.apps.svc.cluster.local')?.ports,
    [
      { servicePort: 80, targetPort: 8080, appProtocol: 0 },
      { servicePort: 81, targetPort: 8081, appProtocol: 0 },
    ],
    'named target port resolved; a name the pod lacks (or only has for UDP) leaves the port out; UDP service ports skipped',
  );
  t.same(
    w?.services.get('apps/alpha.apps.svc.cluster.local')?.ports,
    [{ servicePort: 443, targetPort: 443, appProtocol: 0 }],
    'absent targetPort is the port',
  );
});

// SPDX-License-Identifier: Apache-2.0
// Service → Service (spec ambient-protocols §3.5): hostname, VIPs as raw bytes, headless and
// ExternalName services, ports (named target ports as 0), app protocols, load balancing and IP
// families as istiod sets them; and Services without selectors, whose endpoints come from
// EndpointSlices: targeted pods list the service, other endpoints become workloads.
import t from 'tap';
import { AmbientModel } from '../../../../src/controller/model/ambient-model.ts';
import { translateService } from '../../../../src/controller/model/service.ts';
import type { Service, Workload } from '../../../../src/shared/gen/workload.ts';
import {
  AppProtocol,
  IPFamilies,
  LoadBalancing_HealthPolicy,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  NetworkMode,
  WorkloadStatus,
} from '../../../../src/shared/gen/workload.ts';
import type { ServiceOptions } from './fixtures.ts';
import { endpointSlice, namespace, pod, remove, service, upsert } from './fixtures.ts';

function svc(o: ServiceOptions = {}, ns = namespace('apps')): Service {
  const r = translateService(
    service('apps', 'web', o),
    { namespace: 'apps', name: 'web' },
    ns,
    'cluster.local',
  );
  if (r === undefined) throw new Error('no service');
  return r.service;
}

function workload(m: AmbientModel, uid: string): Workload | undefined {
  const a = m.addresses().get(uid);
  return a?.type?.$case === 'workload' ? a.type.value : undefined;
}

t.test('hostname, VIPs, canonical, headless, ExternalName', async (t) => {
  const s = svc({ clusterIPs: ['10.96.0.10', 'fd00:96::a'], ipFamilies: ['IPv4', 'IPv6'] });
  t.equal(s.hostname, 'web.apps.svc.cluster.local');
  t.equal(s.name, 'web');
  t.equal(s.namespace, 'apps');
  t.same(s.addresses, [
    { network: '', address: Uint8Array.from([10, 96, 0, 10]) },
    { network: '', address: Uint8Array.from([0xfd, 0, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a]) },
  ]);
  t.equal(s.canonical, true, 'a Kubernetes Service is always canonical');
  t.equal(s.ipFamilies, IPFamilies.DUAL);
  t.equal(svc({ ipFamilies: ['IPv6'] }).ipFamilies, IPFamilies.IPV6_ONLY);
  t.equal(svc({ ipFamilies: ['IPv4'] }).ipFamilies, IPFamilies.IPV4_ONLY);
  t.same(svc({ clusterIPs: ['None'] }).addresses, [], 'headless: no VIP');
  t.equal(
    translateService(
      service('apps', 'ext', { type: 'ExternalName' }),
      { namespace: 'apps', name: 'ext' },
      undefined,
      'cluster.local',
    ),
    undefined,
    'ExternalName is not in WDS',
  );
  const other = translateService(
    service('apps', 'web'),
    { namespace: 'apps', name: 'web' },
    undefined,
    'corp.example',
  );
  t.equal(other?.key, 'apps/web.apps.svc.corp.example', 'domain suffix');
  const bad = translateService(
    service('apps', 'web', { clusterIPs: ['10.96.0.300', '10.96.0.11'] }),
    { namespace: 'apps', name: 'web' },
    undefined,
    'cluster.local',
  );
  t.same(bad?.service.addresses.length, 1, 'an unparseable VIP is left out, the rest kept');
  t.match(bad?.warnings, [/"10.96.0.300" is not an IP address/]);
});

t.test('ports: numeric and named targets, app protocols, TCP only', async (t) => {
  const s = svc({
    ports: [
      { name: 'http', port: 80, targetPort: 8080 },
      { name: 'grpc-api', port: 81, targetPort: 'api' },
      { name: 'x', port: 82, appProtocol: 'kubernetes.io/h2c' },
      { name: 'y', port: 83, appProtocol: 'HTTP' },
      { name: 'tcp-db', port: 84 },
      { name: 'dns', port: 53, protocol: 'UDP' },
    ],
  });
  t.same(s.ports, [
    { servicePort: 80, targetPort: 8080, appProtocol: AppProtocol.HTTP11 },
    { servicePort: 81, targetPort: 0, appProtocol: AppProtocol.GRPC },
    { servicePort: 82, targetPort: 82, appProtocol: AppProtocol.HTTP2 },
    { servicePort: 83, targetPort: 83, appProtocol: AppProtocol.HTTP11 },
    { servicePort: 84, targetPort: 84, appProtocol: AppProtocol.UNKNOWN },
  ]);
  const bad = translateService(
    service('apps', 'web', {
      ports: [
        { name: 'a', port: 80, targetPort: '8080' },
        { name: 'b', port: 81, targetPort: 'Bad_Name' },
        { name: 'c', port: 70000 },
        { name: 'd', port: 82, targetPort: 'ok-name' },
      ],
    }),
    { namespace: 'apps', name: 'web' },
    undefined,
    'cluster.local',
  );
  t.same(
    bad?.service.ports.map((p) => p.servicePort),
    [82],
    'invalid ports and port names are left out',
  );
  t.equal(bad?.warnings.length, 3);
});

t.test('load balancing (spec §3.5)', async (t) => {
  t.equal(svc().loadBalancing, undefined, 'none by default');
  t.same(svc({ internalTrafficPolicy: 'Local' }).loadBalancing, {
    routingPreference: [LoadBalancing_Scope.NODE],
    mode: LoadBalancing_Mode.STRICT,
    healthPolicy: LoadBalancing_HealthPolicy.ONLY_HEALTHY,
  });
  const zone = [LoadBalancing_Scope.NETWORK, LoadBalancing_Scope.REGION, LoadBalancing_Scope.ZONE];
  t.same(svc({ trafficDistribution: 'PreferClose' }).loadBalancing?.routingPreference, zone);
  t.equal(svc({ trafficDistribution: 'PreferClose' }).loadBalancing?.mode, LoadBalancing_Mode.FAILOVER);
  t.same(
    svc({ annotations: { 'networking.istio.io/traffic-distribution': 'PreferSameNode' } }).loadBalancing
      ?.routingPreference,
    [...zone, LoadBalancing_Scope.SUBZONE, LoadBalancing_Scope.NODE],
  );
  const fromNs = svc(
    {},
    namespace('apps', { annotations: { 'networking.istio.io/traffic-distribution': 'PreferClose' } }),
  );
  t.same(fromNs.loadBalancing?.routingPreference, zone, 'inherited from the namespace');
  t.same(svc({ publishNotReadyAddresses: true }).loadBalancing, {
    routingPreference: [],
    mode: LoadBalancing_Mode.UNSPECIFIED_MODE,
    healthPolicy: LoadBalancing_HealthPolicy.ALLOW_ALL,
  });
});

t.test('a namespace annotation change re-translates its services', async (t) => {
  const m = new AmbientModel();
  m.apply([upsert('Namespace', namespace('apps')), upsert('Service', service('apps', 'web'))]);
  const d = m.apply([
    upsert(
      'Namespace',
      namespace('apps', { annotations: { 'networking.istio.io/traffic-distribution': 'PreferClose' } }),
    ),
  ]);
  const a = d.addresses.upserted.get('apps/web.apps.svc.cluster.local');
  t.equal(
    a?.type?.$case === 'service' ? a.type.value.loadBalancing?.mode : undefined,
    LoadBalancing_Mode.FAILOVER,
  );
});

t.test('Services without a selector take endpoints from their EndpointSlices', async (t) => {
  const m = new AmbientModel();
  m.apply([
    upsert('Pod', pod('apps', 'db-0', { uid: 'u-db-0', ips: ['10.0.0.5'] })),
    upsert('Pod', pod('apps', 'db-1', { uid: 'u-db-1', ips: ['10.0.0.6'] })),
    upsert('Service', service('apps', 'db', { ports: [{ name: 'sql', port: 5432, targetPort: 15432 }] })),
    upsert(
      'EndpointSlice',
      endpointSlice(
        'apps',
        'db-abc',
        'db',
        [
          { addresses: ['10.0.0.5'], pod: 'db-0', podUid: 'u-db-0' },
          { addresses: ['10.0.0.6'], pod: 'db-1', podUid: 'stale-uid' },
          { addresses: ['192.168.1.20'] },
          { addresses: ['192.168.1.21'], ready: false },
          { addresses: ['not-an-ip'] },
        ],
        [{ name: 'sql', port: 15432 }],
      ),
    ),
  ]);
  const key = 'apps/db.apps.svc.cluster.local';
  t.same(
    workload(m, 'Kubernetes//Pod/apps/db-0')?.services.get(key)?.ports,
    [{ servicePort: 5432, targetPort: 15432, appProtocol: 0 }],
    'the targeted pod lists the service',
  );
  t.notOk(
    workload(m, 'Kubernetes//Pod/apps/db-1')?.services.has(key),
    'a targetRef for another pod incarnation does not count',
  );
  const ext = workload(m, 'Kubernetes/discovery.k8s.io/EndpointSlice/apps/db-abc/192.168.1.20');
  t.ok(ext, 'an endpoint without a pod is a workload of its own');
  t.equal(ext?.networkMode, NetworkMode.HOST_NETWORK);
  t.equal(ext?.serviceAccount, '');
  t.same(
    ext?.services.get(key)?.ports,
    [{ servicePort: 5432, targetPort: 15432, appProtocol: 0 }],
    'slice port matched by service port name',
  );
  t.equal(
    workload(m, 'Kubernetes/discovery.k8s.io/EndpointSlice/apps/db-abc/192.168.1.21')?.status,
    WorkloadStatus.UNHEALTHY,
  );
  t.match(m.diagnostics().get('EndpointSlice apps/db-abc'), [/"not-an-ip"/]);

  // A slice that stops pointing at a pod takes the service off it.
  m.apply([
    upsert(
      'EndpointSlice',
      endpointSlice(
        'apps',
        'db-abc',
        'db',
        [{ addresses: ['192.168.1.20'] }, { addresses: ['192.168.1.21'], ready: false }],
        [{ name: 'sql', port: 15432 }],
      ),
    ),
  ]);
  t.notOk(workload(m, 'Kubernetes//Pod/apps/db-0')?.services.has(key), 'no longer targeted');
  t.match(
    m.diagnostics().has('EndpointSlice apps/db-abc'),
    false,
    'the bad endpoint is gone, and its diagnostic',
  );

  // Giving the service a selector makes its slices irrelevant.
  let d = m.apply([
    upsert(
      'Service',
      service('apps', 'db', {
        selector: { app: 'db' },
        ports: [{ name: 'sql', port: 5432, targetPort: 15432 }],
      }),
    ),
  ]);
  t.same(d.addresses.removed, [
    'Kubernetes/discovery.k8s.io/EndpointSlice/apps/db-abc/192.168.1.20',
    'Kubernetes/discovery.k8s.io/EndpointSlice/apps/db-abc/192.168.1.21',
  ]);
  t.notOk(workload(m, 'Kubernetes//Pod/apps/db-0')?.services.has(key));
  d = m.apply([remove('EndpointSlice', endpointSlice('apps', 'db-abc', 'db', []))]);
  t.same(d.addresses.removed, [], 'nothing left to remove');
});

t.test('an EndpointSlice for an unknown Service or of FQDN type yields nothing', async (t) => {
  const m = new AmbientModel();
  m.apply([upsert('EndpointSlice', endpointSlice('apps', 's1', 'ghost', [{ addresses: ['192.168.1.1'] }]))]);
  t.equal(m.addresses().size, 0);
  const fqdn = endpointSlice('apps', 's2', 'db', [{ addresses: ['db.example.com'] }]);
  fqdn.addressType = 'FQDN';
  m.apply([upsert('Service', service('apps', 'db')), upsert('EndpointSlice', fqdn)]);
  t.same([...m.addresses().keys()], ['apps/db.apps.svc.cluster.local']);
});

// SPDX-License-Identifier: Apache-2.0
// xDS node id parsing (src/controller/xds/node-id.ts, spec ambient-protocols §3.1).
import t from 'tap';
import { parseNode, parseNodeId } from '../../../../src/controller/xds/node-id.ts';

t.test('parses ztunnel node ids', async (t) => {
  t.same(parseNodeId('ztunnel~10.0.0.5~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local'), {
    id: 'ztunnel~10.0.0.5~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local',
    proxyType: 'ztunnel',
    ip: '10.0.0.5',
    podName: 'ztunnel-x7k2p',
    podNamespace: 'istio-system',
    domain: 'istio-system.svc.cluster.local',
  });
  const v6 = parseNodeId('ztunnel~fd00::5~zt.a.b.ns~ns.svc.example.org');
  t.equal(v6.ip, 'fd00::5');
  t.equal(v6.podName, 'zt.a.b', 'pod names may contain dots');
  t.equal(v6.podNamespace, 'ns');
});

t.test('refuses malformed node ids, saying what is wrong', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /has 1 '~'-separated fields/],
    ['ztunnel~10.0.0.5~zt.ns', /has 3 '~'-separated fields/],
    ['ztunnel~10.0.0.5~zt.ns~ns.svc.cluster.local~x', /has 5/],
    ['Ztunnel~10.0.0.5~zt.ns~ns.svc.cluster.local', /invalid proxy type/],
    ['ztunnel~10.0.0.500~zt.ns~ns.svc.cluster.local', /where the proxy's IP address belongs/],
    ['ztunnel~~zt.ns~ns.svc.cluster.local', /where the proxy's IP address belongs/],
    ['ztunnel~10.0.0.5~zt.ns~ns.cluster.local', /invalid DNS domain/],
    ['ztunnel~10.0.0.5~zt.ns~NS.svc.cluster.local', /invalid DNS domain/],
    ['ztunnel~10.0.0.5~zt.other~ns.svc.cluster.local', /does not end in \.ns/],
    ['ztunnel~10.0.0.5~.ns~ns.svc.cluster.local', /invalid pod name ""/],
    ['ztunnel~10.0.0.5~Zt_1.ns~ns.svc.cluster.local', /invalid pod name/],
    [`ztunnel~10.0.0.5~${'a'.repeat(1100)}.ns~ns.svc.cluster.local`, /longer than 1024/],
  ];
  for (const [id, re] of cases) {
    t.throws(
      () => parseNodeId(id),
      { code: 'CTL_ERR_XDS_NODE_ID', message: re },
      JSON.stringify(id.slice(0, 60)),
    );
  }
});

t.test('parseNode requires a node and keeps the logged metadata strings only', async (t) => {
  t.throws(() => parseNode(undefined), /carries no node id/);
  const n = parseNode({
    id: 'ztunnel~10.0.0.5~zt.ns~ns.svc.cluster.local',
    cluster: '',
    metadata: { NODE_NAME: 'node-1', NAME: 'zt', INSTANCE_IPS: 42, OTHER: 'x', NAMESPACE: 'n'.repeat(300) },
    userAgentName: '',
    clientFeatures: [],
  });
  t.same(Object.keys(n.metadata).sort(), ['NAME', 'NAMESPACE', 'NODE_NAME']);
  t.equal(n.metadata.NAMESPACE?.length, 256, 'long values are cut');
});

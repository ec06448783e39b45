// SPDX-License-Identifier: Apache-2.0
// ztunnel end to end in network namespaces (issue: ztunnel data plane, "Proof"): two nodes, real
// CNI-attached pods, in-pod redirection rules, one ztunnel process per node from a static config.
import t from 'tap';
import { startMeshBed, type MeshBed } from '../../helpers/mesh-bed.ts';
import { startTcpServer, tcpRequest } from '../../helpers/testbed-apps.ts';
import type { Pod } from '../../helpers/testbed.ts';

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  const workload = (
    pod: Pod,
    sa: string,
    node: number,
    extra: Record<string, unknown> = {},
  ): Record<string, unknown> => ({
    name: pod.name,
    namespace: pod.namespace,
    serviceAccount: sa,
    addresses: [pod.ip],
    tunnelProtocol: 'HBONE',
    node: `node-${node}`,
    workloadName: pod.name,
    canonicalName: pod.name,
    ...extra,
  });

  let bed: MeshBed;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 2,
      pods: [
        { name: 'client', node: 0, namespace: 'demo', serviceAccount: 'client' },
        { name: 'server1', node: 0, namespace: 'demo', serviceAccount: 'server' },
        { name: 'server2', node: 1, namespace: 'demo', serviceAccount: 'server' },
        { name: 'other', node: 1, namespace: 'demo', serviceAccount: 'other' },
        { name: 'legacy', node: 1, namespace: 'legacy', mesh: false },
      ],
      config: (p) => ({
        workloads: [
          workload(p.client!, 'client', 0),
          workload(p.server1!, 'server', 0, {
            services: { 'demo/echo.demo.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] },
          }),
          workload(p.server2!, 'server', 1, {
            authorizationPolicies: ['istio-system/istio_converted_static_strict'],
            services: { 'demo/echo.demo.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] },
          }),
          workload(p.other!, 'other', 1),
          {
            name: 'legacy',
            namespace: 'legacy',
            addresses: [p.legacy!.ip],
            tunnelProtocol: 'NONE',
            node: 'node-1',
          },
        ],
        services: [
          {
            name: 'echo',
            namespace: 'demo',
            hostname: 'echo.demo.svc.cluster.local',
            addresses: ['198.19.0.10'],
            ports: [{ servicePort: 80, targetPort: 8080 }],
          },
        ],
        policies: [
          {
            name: 'istio_converted_static_strict',
            namespace: 'istio-system',
            scope: 'WORKLOAD_SELECTOR',
            action: 'DENY',
            rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: true }] }] }] }],
          },
        ],
      }),
    });
    for (const name of ['server1', 'server2', 'other', 'legacy'] as const) {
      await startTcpServer(bed.pods[name]!, name, [8080]);
    }
  });
  t.teardown(async () => {
    await bed.destroy();
  });

  t.test('same-node pod to pod: encrypted via HBONE, app sees the client pod IP', async (t) => {
    const r = await tcpRequest(bed.pods.client!, bed.pods.server1!.ip, 8080, { payload: 'hello-same-node' });
    t.ok(r.ok, r.output);
    t.equal(r.server, 'server1');
    t.equal(r.landedPort, 8080, 'delivered to the app port');
    t.match(r.output, `peer=${bed.pods.client!.ip}`, 'the app sees the real client IP');
    t.match(r.output, 'hello-same-node');
    // The destination side saw the verified identity of the client.
    await new Promise((res) => setTimeout(res, 200));
    const inbound = bed.ztunnels[0]!.accessLogs().filter(
      (l) => l.direction === 'inbound' && l['dst.workload'] === 'server1',
    );
    t.ok(inbound.length > 0, 'an inbound access log line exists');
    t.equal(inbound.at(-1)?.['src.identity'], 'spiffe://cluster.local/ns/demo/sa/client');
  });

  t.test('cross-node pod to pod', async (t) => {
    const r = await tcpRequest(bed.pods.client!, bed.pods.server2!.ip, 8080, { payload: 'hello-cross-node' });
    t.ok(r.ok, r.output);
    t.equal(r.server, 'server2');
    t.match(r.output, `peer=${bed.pods.client!.ip}`);
    t.match(r.output, 'hello-cross-node');
  });

  t.test('service VIP is load-balanced over its endpoints', async (t) => {
    const seen = new Set<string>();
    for (let i = 0; i < 12 && seen.size < 2; i++) {
      const r = await tcpRequest(bed.pods.client!, '198.19.0.10', 80);
      t.ok(r.ok, r.output);
      if (r.server) seen.add(r.server);
    }
    t.same([...seen].sort(), ['server1', 'server2']);
  });

  t.test('STRICT refuses plaintext from an unenrolled pod; PERMISSIVE accepts it', async (t) => {
    const strict = await tcpRequest(bed.pods.legacy!, bed.pods.server2!.ip, 8080);
    t.notOk(strict.ok, `refused: ${strict.output}`);
    const permissive = await tcpRequest(bed.pods.legacy!, bed.pods.server1!.ip, 8080);
    t.ok(permissive.ok, permissive.output);
    t.match(permissive.output, `peer=${bed.pods.legacy!.ip}`);
  });

  t.test('passthrough to a pod outside the mesh', async (t) => {
    const r = await tcpRequest(bed.pods.client!, bed.pods.legacy!.ip, 8080);
    t.ok(r.ok, r.output);
    t.equal(r.server, 'legacy');
  });

  t.test('metrics carry istio_tcp_* with identities', async (t) => {
    const m = await bed.ztunnels[0]!.get(15020, '/metrics');
    t.equal(m.status, 200);
    t.match(
      m.body,
      /istio_tcp_connections_opened_total\{reporter="destination",[^}]*source_principal="spiffe:\/\/cluster.local\/ns\/demo\/sa\/client"/,
    );
    const dump = await bed.ztunnels[0]!.get(15000, '/config_dump');
    const j = JSON.parse(dump.body) as {
      workloads: unknown[];
      workloadState: Record<string, { state: string }>;
    };
    t.ok(j.workloads.length >= 5);
    t.equal(j.workloadState['uid-client']?.state, 'Up');
  });
}

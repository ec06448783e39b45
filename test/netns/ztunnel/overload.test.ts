// SPDX-License-Identifier: Apache-2.0
// Load shedding across processes (checklist F.80): the server node's ztunnel runs with a memory
// limit below what it already uses (OVERLOAD_MEMORY_LIMIT, against its RSS), so it is under
// pressure from the start. A meshed client's new connection is refused there, before TLS, and
// reaches no app; the ztunnel stays up and says why (metrics, /config_dump, log), while the
// client node's ztunnel, not under pressure, still carries its pod's other traffic.
// (That connections open before the pressure carry on is proved where the pressure can be
// changed at will: test/integration/ztunnel/inpod/workload-proxy.test.ts.)
import t from 'tap';
import { CLIENT_SERVER_PODS, meshWorkload, startMeshBed, type MeshBed } from '../../helpers/mesh-bed.ts';
import { startTcpServer, tcpRequest } from '../../helpers/testbed-apps.ts';

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  let bed: MeshBed;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 2,
      pods: [...CLIENT_SERVER_PODS, { name: 'other', node: 0, namespace: 'demo', serviceAccount: 'other' }],
      config: (p) => ({
        workloads: [meshWorkload(p.client!, 0), meshWorkload(p.server!, 1), meshWorkload(p.other!, 0)],
      }),
      // 16 MiB: far below any Node process's RSS.
      nodeEnv: (node): Record<string, string> => (node === 1 ? { OVERLOAD_MEMORY_LIMIT: '16Mi' } : {}),
    });
    await startTcpServer(bed.pods.server!, 'server', [8080]);
    await startTcpServer(bed.pods.other!, 'other', [8080]);
  });
  t.teardown(async () => {
    await bed.destroy();
  });

  t.test(
    'a ztunnel over its memory limit refuses new connections and says why',
    { timeout: 60_000 },
    async (t) => {
      const [zt0, zt1] = bed.ztunnels;
      const r = await tcpRequest(bed.pods.client!, bed.pods.server!.ip, 8080, { timeoutMs: 3000 });
      t.notOk(r.ok, `refused: ${r.output}`);
      t.equal(r.server, undefined, 'it reached no app');

      const metrics = (await zt1!.get(15020, '/metrics')).body;
      t.match(metrics, /^ztunnel_overload_shedding 1$/m, 'the gauge says it sheds');
      const shed = /^ztunnel_overload_shed_connections_total\{listener="inbound"\} (\d+)$/m.exec(metrics);
      t.ok(shed && Number(shed[1]) >= 1, `counted: ${shed?.[0] ?? 'no series'}`);
      const dump = JSON.parse((await zt1!.get(15000, '/config_dump')).body) as {
        overload: { shedding: boolean; source: string; limitBytes: number; usedBytes: number };
      };
      t.match(dump.overload, { shedding: true, source: 'process RSS', limitBytes: 16 * 2 ** 20 });
      t.ok(dump.overload.usedBytes > dump.overload.limitBytes, 'the working figure is over the limit');
      t.ok(
        zt1!.logs.some((l) => l.includes('memory near its limit: refusing new connections')),
        'the episode is logged once',
      );
      t.equal((await zt1!.get(15021, '/healthz/ready')).status, 200, 'it stays up and ready');

      // The client's node is not under pressure: its pod still reaches a pod on its own node.
      const local = await tcpRequest(bed.pods.client!, bed.pods.other!.ip, 8080, { timeoutMs: 3000 });
      t.ok(local.ok, `the other node carries on: ${local.output}`);
      t.match((await zt0!.get(15020, '/metrics')).body, /^ztunnel_overload_shedding 0$/m);
    },
  );
}

// SPDX-License-Identifier: Apache-2.0
// TCP semantics through the mesh (checklist G.84–G.86) and a load proof (F.77): half-close in both
// directions, resets propagated as resets both ways, and 1,000 concurrent connections through one
// ztunnel pair with no loss. Cross-node, so both ztunnels and the HBONE hop are on the path.
import t from 'tap';
import { CLIENT_SERVER_PODS, meshWorkload, startMeshBed, type MeshBed } from '../../helpers/mesh-bed.ts';
import { runPodClient, startPodServer, type PodServer } from '../../helpers/pod-apps.ts';

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  let bed: MeshBed;
  let report: PodServer;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 2,
      pods: [...CLIENT_SERVER_PODS],
      config: (p) => ({ workloads: [meshWorkload(p.client!, 0), meshWorkload(p.server!, 1)] }),
    });
    const server = bed.pods.server!;
    await startPodServer(server, 'halfclose', 7001, 200_000);
    await startPodServer(server, 'reset', 7002);
    report = await startPodServer(server, 'report', 7003);
  });
  t.teardown(async () => {
    await bed.destroy();
  });

  t.test(
    'G.84 half-close: client FIN reaches the server, which keeps sending until its own FIN',
    async (t) => {
      const r = await runPodClient(bed.pods.client!, 'halfclose', bed.pods.server!.ip, 7001);
      t.equal(r.ok, true, JSON.stringify(r));
      t.equal(r.head, 'got 3\nxxxxxxxxxx', 'the server saw exactly the 3 bytes, then FIN');
      t.equal(r.length, 'got 3\n'.length + 200_000, 'every byte sent after the half-close arrived');
    },
  );

  t.test('G.85 an upstream RST reaches the client as a reset, not a clean FIN', async (t) => {
    const r = await runPodClient(bed.pods.client!, 'reset-victim', bed.pods.server!.ip, 7002);
    t.equal(r.ended, 'error', JSON.stringify(r));
    t.equal(r.code, 'ECONNRESET');
    t.ok(Number(r.ms) < 2000, `observed within ${String(r.ms)} ms`);
  });

  t.test('G.86 a client RST aborts the upstream connection promptly', async (t) => {
    const before = report.events.length;
    const r = await runPodClient(bed.pods.client!, 'client-reset', bed.pods.server!.ip, 7003);
    t.equal(r.reset, true);
    const deadline = Date.now() + 3000;
    while (report.events.length === before && Date.now() < deadline)
      await new Promise((res) => setTimeout(res, 50));
    const ev = report.events.at(-1);
    t.equal(ev?.event, 'close', 'the server side closed');
    t.equal(ev?.hadError, true, 'with an error (reset), not a graceful FIN');
  });

  t.test('F.77 1,000 concurrent connections through one ztunnel pair, no loss', async (t) => {
    const r = await runPodClient(bed.pods.client!, 'many', bed.pods.server!.ip, 7003, '1000');
    t.equal(r.failed, 0, JSON.stringify(r));
    t.equal(r.ok, 1000);
    t.equal(r.maxOpen, 1000, 'all 1,000 were open at once');
  });
}

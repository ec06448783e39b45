// SPDX-License-Identifier: Apache-2.0
// TCP semantics through the mesh (checklist G.84–G.86, G.89), pool keying and spreading (A.19,
// F.78) and a load proof (F.77): half-close in both directions, resets propagated as resets both
// ways, a server-first protocol's greeting delivered without client data, two identities on one
// node never sharing an HBONE connection, and 1,000 concurrent connections through one ztunnel
// pair with no loss, spread over pooled connections of at most 100 streams. Cross-node, so both
// ztunnels and the HBONE hop are on the path.
import t from 'tap';
import { CLIENT_SERVER_PODS, meshWorkload, startMeshBed, type MeshBed } from '../../helpers/mesh-bed.ts';
import { runPodClient, startPodServer, type PodServer } from '../../helpers/pod-apps.ts';
import { waitFor } from '../../helpers/wait.ts';

/** ztunnel's pool: at most this many streams on one HBONE connection (spec §1.5). */
const POOL_MAX_STREAMS = 100;
const identity = (sa: string): string => `spiffe://cluster.local/ns/demo/sa/${sa}`;

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  let bed: MeshBed;
  let report: PodServer;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 2,
      // A second client on the client's node, with its own service account (A.19).
      pods: [
        ...CLIENT_SERVER_PODS,
        { name: 'client2', node: 0, namespace: 'demo', serviceAccount: 'client2' },
      ],
      config: (p) => ({
        workloads: [meshWorkload(p.client!, 0), meshWorkload(p.client2!, 0), meshWorkload(p.server!, 1)],
      }),
    });
    const server = bed.pods.server!;
    await startPodServer(server, 'halfclose', 7001, 200_000);
    await startPodServer(server, 'reset', 7002);
    report = await startPodServer(server, 'report', 7003);
    await startPodServer(server, 'greet', 7004, 7004);
  });

  /** Established HBONE connections into the server pod's 15008 from `clientIp` (seen in its netns). */
  async function hboneConnectionsFrom(clientIp: string): Promise<number> {
    const r = await bed.pods.server!.exec('ss', [
      '-Htn',
      'state',
      'established',
      '( sport = :15008 )',
      'dst',
      clientIp,
    ]);
    if (r.code !== 0) throw new Error(`ss in the server pod: ${r.stderr}`);
    return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
  }
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

  t.test('G.89 a server-first greeting arrives before the client sends anything', async (t) => {
    const r = await runPodClient(bed.pods.client!, 'listen-first', bed.pods.server!.ip, 7004);
    t.equal(r.line, '220 7004 ready', JSON.stringify(r));
    t.ok(Number(r.ms) < 2000, `first byte after ${String(r.ms)} ms, with no client data sent`);
  });

  t.test('A.19 two identities on one node calling one destination never share a connection', async (t) => {
    const { client, client2, server } = bed.pods as Required<typeof bed.pods>;
    const inbound = (): Record<string, unknown>[] =>
      bed.ztunnels[1]!.accessLogs().filter(
        (l) => l.direction === 'inbound' && String(l['dst.addr']).endsWith(':7003'),
      );
    const before = inbound().length;
    // ztunnel gives each pod its own HBONE client (pool), whose key also carries the source
    // identity (§1.5); what matters is the result at the destination, checked per connection.
    const each = 150;
    // Interleaved: both pods' connections are open at the same time through node 0's ztunnel.
    const [a, b] = await Promise.all([
      runPodClient(client!, 'many', server!.ip, 7003, String(each)),
      runPodClient(client2!, 'many', server!.ip, 7003, String(each)),
    ]);
    t.equal(a.ok, each, JSON.stringify(a));
    t.equal(b.ok, each, JSON.stringify(b));
    await waitFor(
      () => inbound().length - before >= 2 * each,
      'the destination access log of every connection',
    );
    const want = new Map([
      [client!.ip, identity('client')],
      [client2!.ip, identity('client2')],
    ]);
    const seen = new Map<string, number>();
    const wrong: string[] = [];
    for (const l of inbound().slice(before)) {
      const ip = String(l['src.addr']).split(':')[0]!;
      const id = String(l['src.identity']);
      seen.set(id, (seen.get(id) ?? 0) + 1);
      if (want.get(ip) !== id) wrong.push(`${String(l['src.addr'])} arrived as ${id}`);
    }
    t.same(wrong, [], "the destination saw each connection under its own pod's verified identity");
    t.same(
      Object.fromEntries(seen),
      { [identity('client')]: each, [identity('client2')]: each },
      'both identities, each for its own connections',
    );
  });

  t.test('F.77 1,000 concurrent connections through one ztunnel pair, no loss', async (t) => {
    const r = await runPodClient(bed.pods.client!, 'many', bed.pods.server!.ip, 7003, '1000');
    t.equal(r.failed, 0, JSON.stringify(r));
    t.equal(r.ok, 1000);
    t.equal(r.maxOpen, 1000, 'all 1,000 were open at once');
    // F.78: the pool spread them over HBONE connections of at most 100 streams each, and pooled
    // them (not a connection per stream). The sessions stay idle in the pool (released after 5 min).
    const sessions = await hboneConnectionsFrom(bed.pods.client!.ip);
    t.ok(sessions >= 1000 / POOL_MAX_STREAMS, `${sessions} HBONE connections carried 1,000 streams (≥ 10)`);
    t.ok(
      sessions <= 1000 / POOL_MAX_STREAMS + 3,
      `${sessions} HBONE connections: pooled, not one per stream`,
    );
  });
}

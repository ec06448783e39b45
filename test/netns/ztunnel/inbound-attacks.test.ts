// SPDX-License-Identifier: Apache-2.0
// Malicious CONNECTs against a pod's ztunnel in network namespaces (checklist A.4–A.7, like
// upstream's `malicious_calls_inpod` and `hbone_ip_mismatch`): a raw HBONE client holding a valid
// mesh certificate dials server's 15008 from inside the client pod's netns (with ztunnel's mark,
// so the client pod's own capture does not intercept it) and asks for targets it must not get, or
// claims another identity or source address in CONNECT headers (A.14, C.51).
import t from 'tap';
import { HboneClient } from '../../../src/shared/hbone/client.ts';
import { HboneError } from '../../../src/shared/hbone/errors.ts';
import { issueWorkloadCert } from '../../helpers/pki.ts';
import { startMeshBed, type MeshBed } from '../../helpers/mesh-bed.ts';
import { connectInNetns } from '../../helpers/netns-net.ts';
import { startTcpServer } from '../../helpers/testbed-apps.ts';

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  let bed: MeshBed;
  let client: HboneClient;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 1,
      pods: [
        { name: 'attacker', node: 0, namespace: 'demo', serviceAccount: 'attacker' },
        { name: 'server', node: 0, namespace: 'demo', serviceAccount: 'server' },
        { name: 'bystander', node: 0, namespace: 'demo', serviceAccount: 'bystander' },
        { name: 'guarded', node: 0, namespace: 'demo', serviceAccount: 'guarded' },
      ],
      config: (p) => ({
        workloads: ['attacker', 'server', 'bystander', 'guarded'].map((n) => ({
          name: n,
          namespace: 'demo',
          serviceAccount: n,
          addresses: [p[n]!.ip],
          tunnelProtocol: 'HBONE',
          node: 'node-0',
          ...(n === 'guarded' && { authorizationPolicies: ['demo/only-bystander'] }),
        })),
        policies: [
          {
            // Two ORed rules: the bystander's identity, or the bystander's address.
            name: 'only-bystander',
            namespace: 'demo',
            scope: 'WORKLOAD_SELECTOR',
            action: 'ALLOW',
            rules: [
              { clauses: [{ matches: [{ principals: [{ exact: 'cluster.local/ns/demo/sa/bystander' }] }] }] },
              { clauses: [{ matches: [{ sourceIps: [`${p.bystander!.ip}/32`] }] }] },
            ],
          },
        ],
      }),
    });
    await startTcpServer(bed.pods.server!, 'server', [8080]);
    await startTcpServer(bed.pods.bystander!, 'bystander', [8080]);
    await startTcpServer(bed.pods.guarded!, 'guarded', [8080]);
    const cert = await issueWorkloadCert(bed.ca, 'spiffe://cluster.local/ns/demo/sa/attacker');
    const netns = bed.pods.attacker!.netnsPath;
    client = new HboneClient({
      certificate: () => cert,
      dial: (peer) => connectInNetns(netns, peer.host, peer.port, { mark: 0x539 }),
    });
  });
  t.teardown(async () => {
    await client.close();
    await bed.destroy();
  });

  const connect = async (
    authority: string,
    opts: { to?: string; headers?: Record<string, string>; via?: HboneClient } = {},
  ): Promise<number> => {
    const to = opts.to ?? 'server';
    try {
      const tunnel = await (opts.via ?? client).connect({
        peer: { host: bed.pods[to]!.ip, port: 15008 },
        authority,
        expectedIdentities: [`spiffe://cluster.local/ns/demo/sa/${to}`],
        ...(opts.headers !== undefined && { headers: opts.headers }),
      });
      tunnel.stream.destroy();
      return 200;
    } catch (err) {
      if (err instanceof HboneError && err.status !== undefined) return err.status;
      throw err;
    }
  };

  t.test('control: a legitimate CONNECT to the app port succeeds', async (t) => {
    t.equal(await connect(`${bed.pods.server!.ip}:8080`), 200);
  });

  t.test('A.5: ztunnel ports on the destination are refused as self-calls', async (t) => {
    for (const port of [15000, 15001, 15006, 15008, 15020, 15021, 15053, 15080]) {
      t.equal(await connect(`${bed.pods.server!.ip}:${port}`), 503, `port ${port}`);
    }
  });

  t.test('A.6: loopback, link-local and metadata targets are refused', async (t) => {
    for (const a of [
      '127.0.0.1:8080',
      '[::1]:8080',
      '169.254.169.254:80',
      '169.254.7.127:8080',
      '0.0.0.0:8080',
    ]) {
      t.equal(await connect(a), 400, a);
    }
  });

  t.test('A.4: an authority for another pod than the one dialled is refused (ip mismatch)', async (t) => {
    t.equal(await connect(`${bed.pods.bystander!.ip}:8080`), 400);
  });

  t.test('A.3/A.7: malformed and hostname authorities are refused', async (t) => {
    for (const a of [
      'server:8080',
      bed.pods.server!.ip,
      `${bed.pods.server!.ip}:0`,
      'unknown.svc.cluster.local:80',
    ]) {
      const status = await connect(a);
      t.ok(status === 400 || status === 503, `${a} → ${status}`);
    }
  });

  t.test('A.14/C.51: identity and address claimed in CONNECT headers change nothing', async (t) => {
    const bystander = bed.pods.bystander!;
    const attacker = bed.pods.attacker!;
    // Every header a proxy might read a source or an identity from, all claiming the bystander.
    const spoofed: Record<string, string> = {
      forwarded: `for="${bystander.ip}:40000";by=${bed.pods.guarded!.ip}`,
      'x-forwarded-for': bystander.ip,
      'x-real-ip': bystander.ip,
      'x-forwarded-network': 'network-of-the-bystander',
      'x-forwarded-client-cert': `By=spiffe://cluster.local/ns/demo/sa/guarded;URI=spiffe://cluster.local/ns/demo/sa/bystander`,
      baggage:
        'k8s.namespace.name=demo,k8s.pod.name=bystander,k8s.deployment.name=bystander,service.name=bystander',
      traceparent: '00-zzzz-not-a-trace-ff',
      'x-envoy-peer-metadata-id': 'sidecar~' + bystander.ip + '~bystander.demo~demo.svc.cluster.local',
    };
    const target = `${bed.pods.guarded!.ip}:8080`;
    t.equal(await connect(target, { to: 'guarded' }), 401, 'control: the attacker alone is denied');
    t.equal(
      await connect(target, { to: 'guarded', headers: spoofed }),
      401,
      "claiming the bystander's identity and address in headers: still denied",
    );
    // Control: the ALLOW is real, the bystander itself gets in.
    const cert = await issueWorkloadCert(bed.ca, 'spiffe://cluster.local/ns/demo/sa/bystander');
    const real = new HboneClient({
      certificate: () => cert,
      dial: (peer) => connectInNetns(bystander.netnsPath, peer.host, peer.port, { mark: 0x539 }),
    });
    t.teardown(() => real.close());
    t.equal(await connect(target, { to: 'guarded', via: real }), 200, 'control: the bystander is allowed');

    // Where the attacker is allowed (no policy on server), the app and the logs see the attacker.
    const tunnel = await client.connect({
      peer: { host: bed.pods.server!.ip, port: 15008 },
      authority: `${bed.pods.server!.ip}:8080`,
      expectedIdentities: ['spiffe://cluster.local/ns/demo/sa/server'],
      headers: spoofed,
    });
    const banner = await new Promise<string>((resolve, reject) => {
      tunnel.stream.once('data', (d: Buffer) => resolve(d.toString()));
      tunnel.stream.once('error', reject);
    });
    tunnel.stream.destroy();
    t.match(banner, `peer=${attacker.ip}`, 'the app sees the tunnel peer, not a header');
    await new Promise((r) => setTimeout(r, 300));
    const inbound = bed.ztunnels[0]!.accessLogs().filter(
      (l) => l.direction === 'inbound' && l['dst.workload'] === 'server' && l['src.identity'] !== undefined,
    );
    const last = inbound.at(-1);
    t.equal(last?.['src.identity'], 'spiffe://cluster.local/ns/demo/sa/attacker', 'logged identity');
    t.match(
      String(last?.['src.addr']),
      new RegExp(`^${attacker.ip.replaceAll('.', '\\.')}:`),
      'logged address',
    );
    const denied = bed.ztunnels[0]!.logs.filter((l) => l.includes('"connection failed"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l['dst.workload'] === 'guarded');
    t.ok(
      denied.every((l) => l['src.identity'] === 'spiffe://cluster.local/ns/demo/sa/attacker'),
      'every denial is logged with the verified identity',
    );
    t.ok(denied.length >= 2, `${denied.length} denials logged`);
  });

  t.test('the refusals are logged and counted with the verified identity of the attacker', async (t) => {
    const zt = bed.ztunnels[0]!;
    const failed = zt.logs.filter(
      (l) => l.includes('"connection failed"') && l.includes('"direction":"inbound"'),
    );
    // 14 from the self-port, forbidden-address and mismatch cases; malformed authorities may be
    // refused by the HBONE server itself before they reach ztunnel's handler.
    t.ok(failed.length >= 14, `${failed.length} refusals logged`);
    const identities = new Set(failed.map((l) => (JSON.parse(l) as Record<string, unknown>)['src.identity']));
    t.same([...identities], ['spiffe://cluster.local/ns/demo/sa/attacker'], 'each names the attacker');
    const m = await zt.get(15020, '/metrics');
    t.match(
      m.body,
      /istio_tcp_connections_failed_total\{reporter="destination",[^}]*source_principal="spiffe:\/\/cluster.local\/ns\/demo\/sa\/attacker"[^}]*response_flags="CONNECT"/,
    );
  });
}

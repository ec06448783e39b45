// SPDX-License-Identifier: Apache-2.0
// ztunnel killed without a drain (checklist I.100): the in-pod rules outlive the process, so while
// no ztunnel runs every connection to or from an enrolled pod is refused (the redirect points at
// listeners that are gone), and nothing reaches the STRICT app in plaintext or leaves the pod
// unproxied. A fresh ztunnel takes the pods over again, and the mesh works as before.
import t from 'tap';
import { startMeshBed, type MeshBed } from '../../helpers/mesh-bed.ts';
import { NODE_BIN, startTcpServer, tcpRequest, type TcpReply } from '../../helpers/testbed-apps.ts';

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  let bed: MeshBed;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 2,
      pods: [
        { name: 'client', node: 0, namespace: 'demo', serviceAccount: 'client' },
        { name: 'server', node: 1, namespace: 'demo', serviceAccount: 'server' },
        { name: 'legacy', node: 1, namespace: 'legacy', mesh: false },
      ],
      config: (p) => ({
        workloads: [
          ...(['client', 'server'] as const).map((n, i) => ({
            name: n,
            namespace: 'demo',
            serviceAccount: n,
            addresses: [p[n]!.ip],
            tunnelProtocol: 'HBONE',
            node: `node-${i}`,
            ...(n === 'server' && { authorizationPolicies: ['istio-system/istio_converted_static_strict'] }),
          })),
          {
            name: 'legacy',
            namespace: 'legacy',
            addresses: [p.legacy!.ip],
            tunnelProtocol: 'NONE',
            node: 'node-1',
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
    await startTcpServer(bed.pods.server!, 'server', [8080]);
    await startTcpServer(bed.pods.legacy!, 'legacy', [8080]);
  });
  t.teardown(async () => {
    await bed.destroy();
  });

  /** Every way traffic could reach the server pod's app, or leave it, without its ztunnel. */
  const attempts = (): [string, () => Promise<TcpReply>][] => {
    const { client, server, legacy } = bed.pods;
    const opts = { timeoutMs: 2000 };
    return [
      ['meshed client → server:8080 (HBONE)', () => tcpRequest(client!, server!.ip, 8080, opts)],
      ['unenrolled pod → server:8080 (plaintext)', () => tcpRequest(legacy!, server!.ip, 8080, opts)],
      ['unenrolled pod → server:15008 (plaintext)', () => tcpRequest(legacy!, server!.ip, 15008, opts)],
      ['server → unenrolled pod (outbound)', () => tcpRequest(server!, legacy!.ip, 8080, opts)],
    ];
  };

  t.test(
    'I.100 SIGKILL: refused while ztunnel is gone, never bypassed; a new ztunnel takes over',
    async (t) => {
      const [toServer, plaintext, plaintextHbonePort, outbound] = attempts();
      // Before: the mesh works and STRICT refuses plaintext.
      const before = await toServer![1]();
      t.ok(before.ok, `before: ${before.output}`);
      t.match(before.output, `peer=${bed.pods.client!.ip}`);
      t.notOk((await plaintext![1]()).ok, 'before: STRICT refuses plaintext');
      t.ok((await outbound![1]()).ok, 'before: the server reaches the unenrolled pod through ztunnel');

      // A connection open at the moment of the kill: its proxy dies with it, so it must end (reset
      // or closed), not hang and not carry on outside the mesh.
      const script = `
      const s = require('node:net').connect(8080, process.argv[1]);
      let echoed = 0;
      s.on('data', (d) => { echoed += (String(d).match(/tick/g) || []).length; });
      const iv = setInterval(() => s.write('tick\\n'), 50);
      const done = (how) => { clearInterval(iv); console.log(JSON.stringify({ how, echoed })); process.exit(0); };
      s.on('error', (e) => done(e.code)); s.on('close', () => done('closed'));
      setTimeout(() => done('still open'), 4000);
    `;
      const open = bed.pods.client!.exec(NODE_BIN, ['-e', script, bed.pods.server!.ip], {
        timeoutMs: 10_000,
      });
      await new Promise((r) => setTimeout(r, 500));

      const zt = bed.ztunnels[1]!;
      zt.child.kill('SIGKILL');
      await zt.exited;
      const killedAt = Date.now();

      const lived = JSON.parse((await open).stdout.trim()) as { how: string; echoed: number };
      t.ok(lived.echoed > 0, `the connection carried ${lived.echoed} echoes before the kill`);
      t.not(lived.how, 'still open', `the connection open at the kill ended (${lived.how})`);
      t.comment(`open connection at the kill: ${lived.how} after ${lived.echoed} echoes`);

      // The gap: three rounds of every attempt; each must fail without reaching an app.
      const seen: string[] = [];
      for (let round = 0; round < 3; round++) {
        for (const [name, attempt] of attempts()) {
          const r = await attempt();
          seen.push(`${name}: ${r.ok ? 'CONNECTED' : r.output.trim()}`);
          t.notOk(r.ok, `gap, round ${round}: ${name} is refused (${r.output.trim()})`);
          t.equal(r.server, undefined, `gap, round ${round}: ${name} reached no app`);
        }
      }
      t.comment(seen.join('\n'));
      t.ok(
        seen.every((s) => /ECONNREFUSED|ECONNRESET/.test(s)),
        'refused at once (a reset), not left to time out',
      );

      const restarted = await bed.restart(1);
      const gapMs = Date.now() - killedAt;
      t.comment(`new ztunnel ready ${gapMs} ms after the kill`);
      t.ok(restarted.logs.some((l) => l.includes('ztunnel started')));
      const after = await toServer![1]();
      t.ok(after.ok, `after: ${after.output}`);
      t.match(after.output, `peer=${bed.pods.client!.ip}`, 'after: the app sees the client again');
      t.notOk((await plaintext![1]()).ok, 'after: STRICT still refuses plaintext');
      t.notOk((await plaintextHbonePort![1]()).ok, 'after: plaintext to 15008 still refused');
      t.ok((await outbound![1]()).ok, 'after: outbound works again');
    },
  );
}

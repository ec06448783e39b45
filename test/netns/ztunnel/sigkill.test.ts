// SPDX-License-Identifier: Apache-2.0
// ztunnel killed without a drain (checklist I.100): the in-pod rules outlive the process, so while
// no ztunnel runs every connection to or from an enrolled pod is refused (the redirect points at
// listeners that are gone), and nothing reaches the STRICT app in plaintext or leaves the pod
// unproxied. A fresh ztunnel takes the pods over again, and the mesh works as before.
import t from 'tap';
import {
  CLIENT_SERVER_PODS,
  STRICT_POLICY,
  STRICT_POLICY_REF,
  meshWorkload,
  startMeshBed,
  type MeshBed,
} from '../../helpers/mesh-bed.ts';
import { holdConnection, startTcpServer, tcpRequest, type TcpReply } from '../../helpers/testbed-apps.ts';

/**
 * How soon the client's ztunnel must notice that its HBONE session died with the peer: from the
 * FIN/RST of the kill, not from the PING keepalive (10 s + 20 s, spec §1.4).
 */
const NOTICED_MS = 5_000;

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  let bed: MeshBed;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 2,
      pods: [...CLIENT_SERVER_PODS, { name: 'legacy', node: 1, namespace: 'legacy', mesh: false }],
      config: (p) => ({
        workloads: [
          meshWorkload(p.client!, 0),
          meshWorkload(p.server!, 1, { authorizationPolicies: [STRICT_POLICY_REF] }),
          { ...meshWorkload(p.legacy!, 1), tunnelProtocol: 'NONE' },
        ],
        policies: [STRICT_POLICY],
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
    { timeout: 120_000 },
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
      const holder = holdConnection(bed.pods.client!, bed.pods.server!.ip, 8080, 3 * NOTICED_MS);
      await holder.established;

      const zt = bed.ztunnels[1]!;
      zt.child.kill('SIGKILL');
      await zt.exited;
      const killedAt = Date.now();
      holder.mark();

      // The gap: every way in or out of the server pod fails without reaching an app. The
      // connections that hit the dead ztunnel's ports are refused at once (their listeners are
      // gone); the meshed client's fail on its own ztunnel's side.
      const seen: string[] = [];
      for (let round = 0; round < 3; round++) {
        for (const [name, attempt] of attempts()) {
          const r = await attempt();
          seen.push(`${name}: ${r.ok ? 'CONNECTED' : r.output.trim()}`);
          t.notOk(r.ok, `gap, round ${round}: ${name} is refused (${r.output.trim()})`);
          t.equal(r.server, undefined, `gap, round ${round}: ${name} reached no app`);
          t.match(r.output, /ECONNREFUSED|ECONNRESET/, `gap, round ${round}: ${name} refused at once`);
        }
      }
      t.comment(seen.join('\n'));

      const restarted = await bed.restart(1);
      t.comment(`new ztunnel ready ${Date.now() - killedAt} ms after the kill`);
      t.ok(restarted.logs.some((l) => l.includes('ztunnel started')));
      t.notOk((await plaintext![1]()).ok, 'after: STRICT still refuses plaintext');
      // 15008 is back: it takes the TCP connection and closes it, the plaintext goes nowhere.
      const hbonePort = await plaintextHbonePort![1]();
      t.equal(hbonePort.server, undefined, 'after: plaintext to 15008 reaches no app');
      t.notOk(hbonePort.output.includes('ping'), 'after: plaintext to 15008 is not echoed');
      t.ok((await outbound![1]()).ok, 'after: outbound from the server pod works again');

      // The client's own ztunnel noticed at once that its HBONE session died with the peer (the
      // kill's FIN/RST), so the connection open at the kill was reset, and the pool holds no
      // dead session: the first attempt after the restart dials the new ztunnel.
      const r = await holder.ended;
      t.not(r.how, 'still open', `the connection open at the kill ended: ${r.how}`);
      t.ok(
        r.afterMarkMs < NOTICED_MS,
        `it ended ${r.afterMarkMs > 0 ? `${r.afterMarkMs} ms after the kill` : 'before the kill was announced'}`,
      );
      t.ok(r.echoed > 0, `it carried ${r.echoed} echoes before the kill`);
      const after = await toServer![1]();
      t.ok(after.ok, `after: the meshed client reaches the server at the first attempt (${after.output})`);
      t.match(after.output, `peer=${bed.pods.client!.ip}`, 'after: the app sees the client again');
      t.comment(`meshed client through again ${Date.now() - killedAt} ms after the kill`);
    },
  );
}

// SPDX-License-Identifier: Apache-2.0
// ztunnel lifecycle in network namespaces (checklist I.96; SIGKILL, I.100, is sigkill.test.ts): on
// SIGTERM the listeners close at once, established
// connections keep flowing until the drain deadline, then the process exits on its own before a
// SIGKILL would be needed.
import t from 'tap';
import { CLIENT_SERVER_PODS, meshWorkload, startMeshBed, type MeshBed } from '../../helpers/mesh-bed.ts';
import { startTcpServer, tcpRequest, NODE_BIN } from '../../helpers/testbed-apps.ts';

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  let bed: MeshBed;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 2,
      pods: [...CLIENT_SERVER_PODS],
      // grace 4 s → drain deadline 3 s (spec: grace − 1 s when ≤ 10 s)
      env: { TERMINATION_GRACE_PERIOD_SECONDS: '4' },
      config: (p) => ({ workloads: [meshWorkload(p.client!, 0), meshWorkload(p.server!, 1)] }),
    });
    await startTcpServer(bed.pods.server!, 'server', [8080]);
  });
  t.teardown(async () => {
    await bed.destroy();
  });

  t.test(
    'SIGTERM: established connection keeps working through the drain, new ones are refused, exit before the deadline',
    async (t) => {
      // A long-lived client inside the client pod: sends a line every 100 ms for 2.5 s, counts echoes.
      const script = `
      const s = require('node:net').connect(8080, process.argv[1]);
      let sent = 0, echoed = 0, buf = '';
      s.on('data', (d) => { buf += d; echoed = (buf.match(/tick/g) || []).length; });
      s.on('connect', () => { const iv = setInterval(() => { s.write('tick\\n'); sent++; }, 100);
        setTimeout(() => { clearInterval(iv); setTimeout(() => { console.log(JSON.stringify({ sent, echoed })); process.exit(0); }, 300); }, 2500); });
      s.on('error', (e) => { console.log(JSON.stringify({ sent, echoed, error: e.code })); process.exit(0); });
    `;
      const long = bed.pods.client!.exec(NODE_BIN, ['-e', script, bed.pods.server!.ip], {
        timeoutMs: 15_000,
      });
      await new Promise((res) => setTimeout(res, 500));
      const zt = bed.ztunnels[0]!;
      const t0 = Date.now();
      zt.child.kill('SIGTERM');
      await new Promise((res) => setTimeout(res, 300));
      const fresh = await tcpRequest(bed.pods.client!, bed.pods.server!.ip, 8080, { timeoutMs: 2000 });
      t.notOk(fresh.ok, `a new connection during drain is refused (${fresh.output})`);
      t.equal(fresh.server, undefined, 'and never reached the server in plaintext');
      const r = JSON.parse((await long).stdout.trim()) as { sent: number; echoed: number; error?: string };
      t.equal(r.error, undefined, 'the established connection was not cut during the drain');
      t.ok(r.sent >= 20, `sent ${r.sent}`);
      t.equal(r.echoed, r.sent, 'every tick was echoed');
      const code = await zt.exited;
      const took = Date.now() - t0;
      t.equal(
        code,
        0,
        `exited cleanly (code ${String(code)}, signal ${String(zt.child.signalCode)}): ${zt.logs.slice(-4).join(' | ')}`,
      );
      t.ok(took < 3000 + 2000, `exited ${took} ms after SIGTERM (deadline 3 s)`);
      t.ok(zt.logs.some((l) => l.includes('"draining"')));
    },
  );
}

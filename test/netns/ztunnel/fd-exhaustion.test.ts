// SPDX-License-Identifier: Apache-2.0
// ztunnel out of file descriptors (checklist F.79): with its soft open-file limit lowered to a
// little above what it uses, a burst of connections from a pod exhausts it. Connections beyond
// the limit fail at once (libuv accepts and closes them; they do not hang), ztunnel neither
// crashes nor floods its log, process_open_fds / process_max_fds show the exhaustion (libuv hands
// no accept error to the process, so there is nothing to log per connection), and once the held
// connections close, new ones work again.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { CLIENT_SERVER_PODS, meshWorkload, startMeshBed, type MeshBed } from '../../helpers/mesh-bed.ts';
import { NODE_BIN, startTcpServer, tcpRequest } from '../../helpers/testbed-apps.ts';

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  let bed: MeshBed;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 2,
      pods: [...CLIENT_SERVER_PODS],
      config: (p) => ({ workloads: [meshWorkload(p.client!, 0), meshWorkload(p.server!, 1)] }),
    });
    await startTcpServer(bed.pods.server!, 'server', [8080]);
  });
  t.teardown(async () => {
    await bed.destroy();
  });

  // Opens `n` connections (16 at a time) that each wait for the app's greeting line, reports how
  // many got it, and holds the ones that did until stdin closes; each byte on stdin closes 4.
  const HOLDER = `
    const net = require('node:net');
    const [host, n] = [process.argv[1], Number(process.argv[2])];
    let ok = 0, failed = 0, started = 0;
    const errors = {};
    const held = [];
    const next = () => {
      if (started >= n) return;
      started++;
      const s = net.connect(8080, host);
      let done = false;
      const finish = (good, why) => {
        if (done) return; done = true;
        if (good) { ok++; held.push(s); } else { failed++; errors[why] = (errors[why] || 0) + 1; s.destroy(); }
        if (ok + failed === n) console.log(JSON.stringify({ ok, failed, errors }));
        else next();
      };
      s.setTimeout(3000, () => finish(false, 'timeout'));
      s.on('data', () => finish(true));
      s.on('error', (e) => finish(false, e.code));
      s.on('close', () => finish(false, 'closed'));
    };
    for (let i = 0; i < 16; i++) next();
    process.stdin.on('data', (d) => { for (let i = 0; i < 4 * d.length; i++) held.pop()?.destroy(); });
    process.stdin.on('end', () => process.exit(0));
    process.stdin.resume();
  `;

  t.test('F.79 fd exhaustion: refused at once, no crash, recovery when fds free up', async (t) => {
    const zt = bed.ztunnels[0]!;
    const pid = zt.child.pid!;
    const open = readdirSync(`/proc/${pid}/fd`).length;
    const soft = open + 40;
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
    t.teardown(() => {
      if (zt.child.exitCode === null) execFileSync('prlimit', ['--pid', String(pid), '--nofile=20000:']);
    });
    const logsBefore = zt.logs.length;

    const holder = bed.pods.client!.spawn(NODE_BIN, ['-e', HOLDER, bed.pods.server!.ip, '200'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const summary = await new Promise<{ ok: number; failed: number; errors: Record<string, number> }>(
      (resolve, reject) => {
        let out = '';
        holder.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) resolve(JSON.parse(out.trim()) as never);
        });
        holder.once('exit', (code) => reject(new Error(`holder exited (${String(code)}) before reporting`)));
      },
    );
    t.comment(`soft limit ${soft} (${open} open before): ${JSON.stringify(summary)}`);
    t.ok(summary.ok > 0, `${summary.ok} connections fit`);
    t.ok(summary.ok < 200, 'the limit was reached');
    t.equal(summary.ok + summary.failed, 200, 'every connection ended one way or the other');
    t.notOk('timeout' in summary.errors, 'none hung: the ones over the limit failed at once');
    t.equal(zt.child.exitCode, null, 'ztunnel is still running');
    t.equal(zt.child.signalCode, null);

    // With a few descriptors back, a scrape shows how close to the limit ztunnel runs.
    holder.stdin!.write('x');
    let metrics = '';
    for (let i = 0; i < 20 && metrics === ''; i++) {
      await new Promise((r) => setTimeout(r, 100));
      metrics = await zt.get(15020, '/metrics').then(
        (m) => (m.status === 200 ? m.body : ''),
        () => '',
      );
    }
    const gauge = (name: string): number => Number(new RegExp(`\\n${name} (\\d+)\\n`).exec(metrics)?.[1]);
    t.equal(gauge('process_max_fds'), soft, 'process_max_fds is the soft limit');
    t.ok(
      gauge('process_open_fds') >= soft - 12,
      `process_open_fds ${gauge('process_open_fds')} of ${soft}: the exhaustion is visible`,
    );

    // Free the descriptors; new connections must work again.
    holder.stdin!.end();
    await new Promise((r) => holder.once('exit', r));
    let recovered = false;
    const deadline = Date.now() + 10_000;
    while (!recovered && Date.now() < deadline) {
      recovered = (await tcpRequest(bed.pods.client!, bed.pods.server!.ip, 8080, { timeoutMs: 2000 })).ok;
      if (!recovered) await new Promise((r) => setTimeout(r, 200));
    }
    t.ok(recovered, 'a new connection succeeds once the held ones closed');
    t.equal((await zt.get(15021, '/healthz/ready')).status, 200, 'ztunnel ready');
    const logged = zt.logs.slice(logsBefore);
    t.ok(logged.length < 1000, `no log flood: ${logged.length} lines for 200 connections`);
  });
}

// SPDX-License-Identifier: Apache-2.0
// Late rejection (checklist C.49): a policy tightened while connections are open closes the ones
// it no longer allows, within a bound, and no other (collateral closes = 0); loosening one closes
// nothing. One node, real pods and in-pod rules, ztunnel from a static config it reloads on change.
import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { startMeshBed, type MeshBed } from '../../helpers/mesh-bed.ts';
import { NODE_BIN, startTcpServer } from '../../helpers/testbed-apps.ts';
import type { Pod } from '../../helpers/testbed.ts';

// A long-lived client: sends a byte every 50 ms and counts echoes; prints `open` once echoes
// flow, `echoes <n>` every 200 ms, and `closed <code>` when the connection ends.
const HOLDER = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
let greeted = false, echoes = 0;
s.on('data', (d) => {
  let text = d.toString();
  if (!greeted) { const i = text.indexOf('\\n'); if (i < 0) return; greeted = true; text = text.slice(i + 1); }
  const before = echoes;
  echoes += text.length;
  if (before < 5 && echoes >= 5) console.log('open');
});
const tick = setInterval(() => s.write('x'), 50);
const end = (why) => { clearInterval(tick); console.log('closed ' + why); process.exit(0); };
s.on('error', (e) => end(e.code || e.message));
s.on('close', () => end('eof'));
setInterval(() => console.log('echoes ' + echoes), 200);
setTimeout(() => end('test-timeout'), 60000).unref();
`;

// A server that streams a byte every 50 ms on each connection and keeps doing so after the
// client's FIN, and a client that half-closes at once and only reads: the connection a late
// rejection must still be able to reset although ztunnel has already sent the app its FIN.
const STREAMER = `
const net = require('node:net');
net.createServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => {});
  const t = setInterval(() => s.write('y'), 50);
  s.on('close', () => clearInterval(t));
}).listen(9090, '0.0.0.0', () => console.log('ready'));
setTimeout(() => process.exit(0), 120000).unref();
`;
const HALF_HOLDER = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port), allowHalfOpen: true }, () => s.end());
let got = 0;
s.on('data', (d) => { const before = got; got += d.length; if (before < 5 && got >= 5) console.log('open'); });
const end = (why) => { console.log('closed ' + why); process.exit(0); };
s.on('error', (e) => end(e.code || e.message));
s.on('close', () => end('eof'));
setTimeout(() => end('test-timeout'), 60000).unref();
`;

interface Holder {
  child: ChildProcess;
  lines: string[];
  /** Resolves with the first line matching `re`. */
  next(re: RegExp, timeoutMs: number): Promise<string>;
}

function hold(from: Pod, host: string, port: number, script = HOLDER): Holder {
  const child = from.spawn(NODE_BIN, ['-e', script, host, String(port)]);
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  let partial = '';
  child.stdout?.on('data', (b: Buffer) => {
    partial += b.toString('utf8');
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) {
      lines.push(l);
      for (const w of [...waiters]) {
        if (w.re.test(l)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(l);
        }
      }
    }
  });
  return {
    child,
    lines,
    next: (re, timeoutMs) =>
      new Promise((resolve, reject) => {
        const seen = lines.find((l) => re.test(l));
        if (seen !== undefined) {
          resolve(seen);
          return;
        }
        const timer = setTimeout(
          () => reject(new Error(`no line ${String(re)} in ${timeoutMs} ms: ${lines.join(' | ')}`)),
          timeoutMs,
        );
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
      }),
  };
}

/** The latest echo count the holder printed. */
function echoes(h: Holder): number {
  const last = [...h.lines].reverse().find((l) => /^echoes \d+$/.test(l));
  return last === undefined ? -1 : Number(last.split(' ')[1]);
}

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  const DENY_CLIENT = {
    name: 'deny-client',
    namespace: 'demo',
    scope: 'NAMESPACE',
    action: 'DENY',
    rules: [{ clauses: [{ matches: [{ principals: [{ exact: 'cluster.local/ns/demo/sa/client' }] }] }] }],
  };
  // Plaintext from outside the mesh, by source address: the inbound passthrough path (15006).
  const denyLegacy = (p: Record<string, Pod>): Record<string, unknown> => ({
    name: 'deny-legacy',
    namespace: 'demo',
    scope: 'NAMESPACE',
    action: 'DENY',
    rules: [{ clauses: [{ matches: [{ sourceIps: [`${p.legacy!.ip}/32`] }] }] }],
  });
  const config = (p: Record<string, Pod>, policies: unknown[]): Record<string, unknown> => ({
    workloads: [
      ...(['client', 'bystander', 'server'] as const).map((name) => ({
        name,
        namespace: 'demo',
        serviceAccount: name,
        addresses: [p[name]!.ip],
        tunnelProtocol: 'HBONE',
        node: 'node-0',
        workloadName: name,
        canonicalName: name,
      })),
      {
        name: 'legacy',
        namespace: 'legacy',
        addresses: [p.legacy!.ip],
        tunnelProtocol: 'NONE',
        node: 'node-0',
      },
    ],
    services: [],
    policies,
  });

  let bed: MeshBed;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 1,
      pods: [
        { name: 'client', node: 0, namespace: 'demo', serviceAccount: 'client' },
        { name: 'bystander', node: 0, namespace: 'demo', serviceAccount: 'bystander' },
        { name: 'server', node: 0, namespace: 'demo', serviceAccount: 'server' },
        { name: 'legacy', node: 0, namespace: 'legacy', mesh: false },
      ],
      config: (p) => config(p, []),
    });
    await startTcpServer(bed.pods.server!, 'server', [8080]);
    const streamer = bed.pods.server!.spawn(NODE_BIN, ['-e', STREAMER]);
    await new Promise<void>((resolve, reject) => {
      streamer.stdout?.once('data', () => resolve());
      streamer.once('exit', (code) => reject(new Error(`streamer exited (${String(code)})`)));
    });
  });
  t.teardown(async () => {
    await bed.destroy();
  });

  t.test('a DENY pushed while connections are open closes exactly the ones it denies', async (t) => {
    const server = bed.pods.server!.ip;
    const victim = hold(bed.pods.client!, server, 8080);
    const bystander = hold(bed.pods.bystander!, server, 8080);
    const halfClosed = hold(bed.pods.client!, server, 9090, HALF_HOLDER);
    t.teardown(() => {
      victim.child.kill('SIGKILL');
      bystander.child.kill('SIGKILL');
      halfClosed.child.kill('SIGKILL');
    });
    await victim.next(/^open$/, 10_000);
    await bystander.next(/^open$/, 10_000);
    await halfClosed.next(/^open$/, 10_000);

    const pushed = performance.now();
    bed.writeConfig(config(bed.pods, [DENY_CLIENT]));
    const closed = await victim.next(/^closed /, 10_000);
    const ms = performance.now() - pushed;
    t.match(closed, /^closed (ECONNRESET|eof)$/, 'the denied connection was closed');
    // The spec's target is 1 s from the push; the file watcher's own delay is part of it here.
    t.ok(ms < 5_000, `closed ${Math.round(ms)} ms after the policy was written`);
    t.comment(`push to close: ${Math.round(ms)} ms`);
    t.match(
      await halfClosed.next(/^closed /, 5_000),
      /^closed (ECONNRESET|eof)$/,
      'a connection the client had half-closed is closed too',
    );

    await bystander.next(/^echoes \d+$/, 5_000);
    const a = echoes(bystander);
    await new Promise((r) => setTimeout(r, 1_000));
    const b = echoes(bystander);
    t.ok(b > a, `the connection the policy does not deny keeps flowing (${a} → ${b} echoes)`);
    t.notOk(
      bystander.lines.some((l) => l.startsWith('closed')),
      'collateral closes: 0',
    );

    const line = bed.ztunnels[0]!.accessLogs().find(
      (l) => l.direction === 'inbound' && typeof l.error === 'string' && /policy change/.test(l.error),
    );
    t.match(
      line?.error,
      /closed by a policy change: explicitly denied by: demo\/deny-client/,
      'the access log says why',
    );
    t.equal(line?.['src.identity'], 'spiffe://cluster.local/ns/demo/sa/client');

    // The same for plaintext from outside the mesh (inbound passthrough, PERMISSIVE).
    const plain = hold(bed.pods.legacy!, server, 8080);
    t.teardown(() => plain.child.kill('SIGKILL'));
    await plain.next(/^open$/, 10_000);
    bed.writeConfig(config(bed.pods, [DENY_CLIENT, denyLegacy(bed.pods)]));
    t.match(
      await plain.next(/^closed /, 10_000),
      /^closed (ECONNRESET|eof)$/,
      'the plaintext connection was closed',
    );
    t.notOk(
      bystander.lines.some((l) => l.startsWith('closed')),
      'collateral closes: still 0',
    );

    // Loosening never closes anything.
    bed.writeConfig(config(bed.pods, []));
    await new Promise((r) => setTimeout(r, 1_000));
    t.notOk(
      bystander.lines.some((l) => l.startsWith('closed')),
      'removing the policy closes nothing',
    );
  });
}

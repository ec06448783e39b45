// SPDX-License-Identifier: Apache-2.0
// Purpose-built pod applications for the TCP-semantics and load proofs (checklist G, F.77):
// each runs with the pinned Node inside a pod netns and reports on stdout as JSON lines.
import type { ChildProcess } from 'node:child_process';
import { NODE_BIN } from './testbed-apps.ts';
import type { NetnsHandle } from './testbed.ts';

// Modes (argv[1]):
//   halfclose: read until FIN, then answer "got <n>" plus <size> bytes, then FIN.
//   reset:     on first data, reset the connection (RST).
//   report:    echo; print {"event":"close","hadError":..,"bytes":..} when a connection closes.
//   greet:     server-first: write "220 <size> ready\n" on accept, before reading anything; then echo.
const SERVER = `
const net = require('node:net');
const [mode, port, size] = process.argv.slice(1);
const srv = net.createServer({ allowHalfOpen: true }, (s) => {
  let n = 0;
  s.on('error', () => {});
  if (mode === 'halfclose') {
    s.on('data', (d) => { n += d.length; });
    s.on('end', () => { s.write('got ' + n + '\\n'); s.end(Buffer.alloc(Number(size), 120)); });
  } else if (mode === 'reset') {
    s.once('data', () => s.resetAndDestroy());
  } else if (mode === 'greet') {
    s.write('220 ' + size + ' ready\\n');
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end());
  } else {
    s.on('data', (d) => { n += d.length; s.write(d); });
    s.on('end', () => s.end());
    s.on('close', (hadError) => console.log(JSON.stringify({ event: 'close', hadError, bytes: n })));
  }
});
srv.listen(Number(port), '0.0.0.0', () => console.log(JSON.stringify({ event: 'ready' })));
setTimeout(() => process.exit(0), 300000).unref();
`;

// Modes: halfclose (send, FIN, read all), reset-victim (send, expect an error), client-reset
// (send, wait for the echo, then RST), many (N concurrent echo connections), listen-first (connect,
// send nothing, report the first line the server sends and how long it took).
const CLIENT = `
const net = require('node:net');
const [mode, host, port, arg] = process.argv.slice(1);
const out = (o) => { process.stdout.write(JSON.stringify(o) + '\\n'); };
const deadline = setTimeout(() => { out({ error: 'timeout' }); process.exit(1); }, 60000);
if (mode === 'halfclose') {
  const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
  const chunks = [];
  s.on('connect', () => s.end('abc'));
  s.on('data', (d) => chunks.push(d));
  s.on('end', () => { const b = Buffer.concat(chunks); out({ ok: true, head: b.subarray(0, 16).toString(), length: b.length }); process.exit(0); });
  s.on('error', (e) => { out({ ok: false, error: e.code }); process.exit(1); });
} else if (mode === 'reset-victim') {
  const s = net.connect({ host, port: Number(port) });
  const t0 = Date.now();
  s.on('connect', () => s.write('boom'));
  s.on('end', () => { out({ ended: 'fin', ms: Date.now() - t0 }); process.exit(0); });
  s.on('error', (e) => { out({ ended: 'error', code: e.code, ms: Date.now() - t0 }); process.exit(0); });
} else if (mode === 'client-reset') {
  const s = net.connect({ host, port: Number(port) });
  s.on('connect', () => s.write('hello'));
  s.once('data', () => { s.resetAndDestroy(); out({ reset: true }); setTimeout(() => process.exit(0), 100); });
  s.on('error', () => {});
} else if (mode === 'listen-first') {
  const s = net.connect({ host, port: Number(port) });
  let t0 = 0, buf = '';
  s.on('connect', () => { t0 = Date.now(); });
  s.on('data', (d) => {
    buf += d.toString();
    const nl = buf.indexOf('\\n');
    if (nl >= 0) { out({ line: buf.slice(0, nl), ms: Date.now() - t0 }); s.destroy(); process.exit(0); }
  });
  s.on('error', (e) => { out({ error: e.code }); process.exit(1); });
} else if (mode === 'many') {
  const n = Number(arg);
  let ok = 0, failed = 0, open = 0, maxOpen = 0;
  const sockets = [];
  const payload = Buffer.alloc(1024, 97);
  let done = 0;
  const finish = () => { if (++done === n) { out({ ok, failed, maxOpen }); for (const s of sockets) s.destroy(); clearTimeout(deadline); process.exit(0); } };
  for (let i = 0; i < n; i++) {
    const s = net.connect({ host, port: Number(port) });
    sockets.push(s);
    let got = 0, counted = false;
    s.on('connect', () => { open++; maxOpen = Math.max(maxOpen, open); s.write(payload); });
    s.on('data', (d) => { got += d.length; if (got >= 1024 && !counted) { counted = true; ok++; finish(); } });
    s.on('error', () => { if (!counted) { counted = true; failed++; finish(); } });
  }
}
`;

export interface PodServer {
  child: ChildProcess;
  events: Record<string, unknown>[];
}

export function startPodServer(
  where: NetnsHandle,
  mode: 'halfclose' | 'reset' | 'report' | 'greet',
  port: number,
  size = 0,
): Promise<PodServer> {
  const child = where.spawn(NODE_BIN, ['-e', SERVER, mode, String(port), String(size)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: Record<string, unknown>[] = [];
  let buf = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pod server (${mode}) not ready`)), 10_000);
    child.stdout?.on('data', (b: Buffer) => {
      buf += b.toString('utf8');
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        const e = JSON.parse(l) as Record<string, unknown>;
        events.push(e);
        if (e.event === 'ready') {
          clearTimeout(timer);
          resolve({ child, events });
        }
      }
    });
  });
}

export async function runPodClient(
  where: NetnsHandle,
  mode: 'halfclose' | 'reset-victim' | 'client-reset' | 'many' | 'listen-first',
  host: string,
  port: number,
  arg = '',
): Promise<Record<string, unknown>> {
  const r = await where.exec(NODE_BIN, ['-e', CLIENT, mode, host, String(port), arg], { timeoutMs: 70_000 });
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(last) as Record<string, unknown>;
  } catch {
    return { error: `no result: ${r.stdout} ${r.stderr}` };
  }
}

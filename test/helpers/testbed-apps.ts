// SPDX-License-Identifier: Apache-2.0
// Pod "workloads" for the netns test bed (DESIGN.md §4: "pods run plain processes (an echo
// server, a client) started inside their netns"): a TCP server that can listen on several ports
// and a one-shot TCP client, both run with the pinned Node binary inside a netns.
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { NetnsHandle } from './testbed.ts';

/** The pinned Node 24 (the system node is older and must not be used). */
export const NODE_BIN = join(import.meta.dirname, '../../node_modules/.bin/node');

// Each accepted connection first gets one line `<name> port=<local port> local=<addr> peer=<addr>`
// (so a test sees which listener a connection landed on: a redirected connection lands on the
// redirect port, not the port it dialled), then everything it sends is echoed back.
const SERVER_SCRIPT = `
const net = require('node:net');
const [name, ...ports] = process.argv.slice(1);
let pending = ports.length;
for (const p of ports) {
  const srv = net.createServer((s) => {
    s.on('error', () => {});
    s.write(name + ' port=' + s.localPort + ' local=' + s.localAddress + ' peer=' + s.remoteAddress + '\\n');
    s.pipe(s);
  });
  srv.on('error', (e) => { console.error('listen ' + p + ': ' + e.message); process.exit(2); });
  srv.listen(Number(p), '0.0.0.0', () => { if (--pending === 0) console.log('ready'); });
}
setTimeout(() => process.exit(0), 120000).unref();
`;

// Connect, send the payload, half-close, print everything received; exit 1 with `ERR <code>` on
// failure or timeout. Optional source address to bind (probe SNAT tests).
const CLIENT_SCRIPT = `
const net = require('node:net');
const [host, port, payload, timeoutMs, localAddress] = process.argv.slice(1);
const opts = { host, port: Number(port) };
if (localAddress) opts.localAddress = localAddress;
const s = net.connect(opts);
let out = '';
const t = setTimeout(() => { process.stdout.write('ERR TIMEOUT ' + out); process.exit(1); }, Number(timeoutMs));
s.on('connect', () => { s.end(payload); });
s.on('data', (d) => { out += d; });
s.on('end', () => { clearTimeout(t); process.stdout.write(out); process.exit(0); });
s.on('error', (e) => { clearTimeout(t); process.stdout.write('ERR ' + (e.code || e.message)); process.exit(1); });
`;

export interface TcpServer {
  child: ChildProcess;
  ports: number[];
}

/**
 * Start a TCP server named `name` inside `where`, listening on 0.0.0.0 on every port of
 * `ports`; resolves once all are listening (rejects after `timeoutMs` or if it exits).
 */
export function startTcpServer(
  where: NetnsHandle,
  name: string,
  ports: number[],
  timeoutMs = 10_000,
): Promise<TcpServer> {
  const child = where.spawn(NODE_BIN, ['-e', SERVER_SCRIPT, name, ...ports.map(String)]);
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      reject(new Error(`server ${name} in ${where.netnsName} not ready after ${timeoutMs} ms: ${err}`));
    }, timeoutMs);
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString('utf8');
      if (out.includes('ready\n')) {
        clearTimeout(timer);
        resolve({ child, ports });
      }
    });
    child.stderr?.on('data', (b: Buffer) => (err += b.toString('utf8')));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server ${name} in ${where.netnsName} exited (${String(code)}) before ready: ${err}`));
    });
  });
}

export interface TcpReply {
  ok: boolean;
  /** Everything the server sent (the greeting line + the echo), or `ERR <code>`. */
  output: string;
  /** The greeting's `port=` value: which listener accepted the connection. */
  landedPort: number | undefined;
  /** The greeting's `<name>`: which server accepted it. */
  server: string | undefined;
}

/** One TCP exchange from inside `from` (bounded by `timeoutMs`, default 3 s). */
export async function tcpRequest(
  from: NetnsHandle,
  host: string,
  port: number,
  opts: { payload?: string; timeoutMs?: number; localAddress?: string } = {},
): Promise<TcpReply> {
  const timeoutMs = opts.timeoutMs ?? 3_000;
  const r = await from.exec(
    NODE_BIN,
    [
      '-e',
      CLIENT_SCRIPT,
      host,
      String(port),
      opts.payload ?? 'ping',
      String(timeoutMs),
      opts.localAddress ?? '',
    ],
    { timeoutMs: timeoutMs + 5_000 },
  );
  const m = /^(\S+) port=(\d+) /.exec(r.stdout);
  return {
    ok: r.code === 0,
    output: r.stdout,
    landedPort: m?.[2] !== undefined ? Number(m[2]) : undefined,
    server: m?.[1],
  };
}

// Connect, then write `tick\n` every 50 ms and count the echoes, until the connection ends (or
// `maxMs` passes: "still open"). It prints `up` at the first echo. One line on stdin marks the
// moment the test acts (a kill, a revocation); the final JSON line says how the connection ended
// and how long after the mark.
const HOLDER_SCRIPT = `
const s = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
let echoed = 0, markedAt = 0;
s.on('data', (d) => { const n = (String(d).match(/tick/g) || []).length; if (echoed === 0 && n > 0) console.log('up'); echoed += n; });
const iv = setInterval(() => s.write('tick\\n'), 50);
process.stdin.once('data', () => { markedAt = Date.now(); });
const done = (how) => {
  clearInterval(iv);
  console.log(JSON.stringify({ how, echoed, afterMarkMs: markedAt === 0 ? 0 : Date.now() - markedAt }));
  process.exit(0);
};
s.on('error', (e) => done(e.code)); s.on('close', () => done('closed'));
setTimeout(() => done('still open'), Number(process.argv[3]));
`;

export interface HeldConnection {
  /** Resolves at the first echo: the connection is through (act on it only then). */
  readonly established: Promise<void>;
  /** Marks the moment of the event the connection should react to (afterMarkMs counts from it). */
  mark(): void;
  /**
   * How the connection ended: an error code, 'closed', or 'still open' after maxMs; the echoes it
   * carried; and the ms from mark() to the end (0 if it ended before the mark).
   */
  readonly ended: Promise<{ how: string; echoed: number; afterMarkMs: number }>;
}

/** A long-lived echo connection from inside `from` to host:port (see HOLDER_SCRIPT). */
export function holdConnection(from: NetnsHandle, host: string, port: number, maxMs: number): HeldConnection {
  const child = from.spawn(NODE_BIN, ['-e', HOLDER_SCRIPT, host, String(port), String(maxMs)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let up: () => void = () => undefined;
  const established = new Promise<void>((resolve) => (up = resolve));
  const ended = new Promise<{ how: string; echoed: number; afterMarkMs: number }>((resolve) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
        const line = out.slice(0, nl).trim();
        out = out.slice(nl + 1);
        if (line === 'up') up();
        else if (line.startsWith('{')) {
          up(); // an end before any echo must not leave a waiter hanging
          resolve(JSON.parse(line) as never);
        }
      }
    });
  });
  return { established, mark: () => void child.stdin?.write('m\n'), ended };
}

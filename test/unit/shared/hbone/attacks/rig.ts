// SPDX-License-Identifier: Apache-2.0
// Shared rig for the HBONE attack suite (security-and-reliability.md §4 checklist A, B.20–22, F.75):
// a real HboneServer on 127.0.0.1 with test-CA certificates, an upstream echo server that onConnect
// dials, counters for every observable the checklist asks for (onConnect calls, upstream dials,
// aborted request signals, concurrent upstream sockets), and a "legitimate client" probe that
// opens a full tunnel and echoes bytes through it.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Test } from 'tap';
import { HboneServer } from '../../../../../src/shared/hbone/server.ts';
import type { HboneSettings } from '../../../../../src/shared/hbone/settings.ts';
import { issueWorkloadCert, newTestCa } from '../../../../helpers/pki.ts';
import { RawH2Client, connectBlock, dataFrame, headersFrame } from '../../../../helpers/h2-raw.ts';
import type { InFrame, RawH2ConnectOptions } from '../../../../helpers/h2-raw.ts';

export const TRUST_DOMAIN = 'cluster.local';
export const CLIENT_ID = 'spiffe://cluster.local/ns/a/sa/client';
export const SERVER_ID = 'spiffe://cluster.local/ns/b/sa/server';

export interface RigStats {
  /** onConnect invocations. */
  onConnect: number;
  /** onConnect calls in progress right now, and the maximum seen. */
  inFlight: number;
  maxInFlight: number;
  /** Upstream dials started (net.connect calls made by onConnect). */
  dials: number;
  /** onConnect calls that saw req.signal aborted before dialling. */
  cancelledBeforeDial: number;
  /** onConnect calls whose req.signal was aborted at some point. */
  signalsAborted: number;
  /** Upstream sockets open right now (client side, created by onConnect), and the maximum seen. */
  upstreamOpen: number;
  maxUpstreamOpen: number;
  /** Connections accepted by the upstream echo server. */
  upstreamAccepted: number;
  /** Firehose upstream only: bytes its sockets' kernel buffers have accepted so far. */
  upstreamBytesAccepted(): number;
  /** onTunnelClosed calls. */
  tunnelsClosed: number;
  /** The first 50 'sessionError' messages the server emitted. */
  sessionErrors: string[];
  /** The first 100 requests onConnect saw: authority and header names. */
  requests: { authority: string; headerNames: string[]; headers: Record<string, unknown> }[];
}

export interface RigOptions {
  settings?: Partial<HboneSettings>;
  /**
   * Hand the server upstream sockets whose resetAndDestroy() falls back to destroy() once end()
   * was called. Default true. On Node 24.21, `socket.end(); socket.resetAndDestroy()` fails in
   * libuv with EINVAL: the handle is never closed, 'close' is never emitted, and the event loop
   * then spins at 100 % CPU. relay.ts used to do exactly that when a client dropped a tunnel
   * (fixed; tunnel-abort.test.ts guards it, without this guard). The guard keeps a regression
   * from turning every other attack file into a CPU-spinning process that never exits.
   */
  guardResetAfterEnd?: boolean;
  /** Time onConnect waits before dialling (to widen the window in which a stream can be cancelled). */
  dialDelayMs?: number;
  /**
   * What the upstream server does: 'echo' (default) sends back what it reads; 'firehose' writes
   * 64 KiB chunks as fast as its socket takes them and counts what the kernel accepted
   * (`stats.upstreamBytesAccepted`), for flow-control tests.
   */
  upstream?: 'echo' | 'firehose';
}

export type Cred = Pick<RawH2ConnectOptions, 'port' | 'key' | 'cert' | 'ca'>;

export type TestCa = Awaited<ReturnType<typeof newTestCa>>;
export type TestCert = Awaited<ReturnType<typeof issueWorkloadCert>>;

export interface Rig {
  port: number;
  /** The mesh CA and the valid client certificate it issued. */
  ca: TestCa;
  clientCert: TestCert;
  echoPort: number;
  server: HboneServer;
  stats: RigStats;
  /** Credentials of a valid mesh client (our CA, our trust domain). */
  cred: Cred;
  /** The mesh roots (PEM). */
  rootsPem: readonly string[];
  /** Connect a raw client with the valid credentials (closed on teardown). */
  connect(opts?: Partial<RawH2ConnectOptions>): Promise<RawH2Client>;
  /** A fresh legitimate client opens a tunnel to the echo server and gets its bytes back. */
  legit(): Promise<LegitResult>;
}

export interface LegitResult {
  ok: boolean;
  status: number | undefined;
  ms: number;
  detail: string;
}

/** Start the rig; everything it creates is closed in t.teardown. */
export async function startRig(t: Test, opts: RigOptions = {}): Promise<Rig> {
  const ca = await newTestCa();
  const serverCert = await issueWorkloadCert(ca, SERVER_ID);
  const clientCert = await issueWorkloadCert(ca, CLIENT_ID);

  const stats: RigStats = {
    onConnect: 0,
    inFlight: 0,
    maxInFlight: 0,
    dials: 0,
    cancelledBeforeDial: 0,
    signalsAborted: 0,
    upstreamOpen: 0,
    maxUpstreamOpen: 0,
    upstreamAccepted: 0,
    upstreamBytesAccepted: () => {
      let n = 0;
      for (const s of echoSockets) n += s.bytesWritten - s.writableLength;
      return n + closedBytesAccepted;
    },
    tunnelsClosed: 0,
    requests: [],
    sessionErrors: [],
  };

  const echoSockets = new Set<net.Socket>();
  let closedBytesAccepted = 0;
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  const echo = net.createServer((s) => {
    stats.upstreamAccepted++;
    echoSockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => {
      echoSockets.delete(s);
      closedBytesAccepted += s.bytesWritten - s.writableLength;
    });
    if (opts.upstream === 'firehose') {
      const pump = (): void => {
        while (!s.destroyed && s.write(chunk));
      };
      s.on('drain', pump);
      s.resume();
      pump();
    } else {
      s.pipe(s);
    }
  });
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const echoPort = (echo.address() as net.AddressInfo).port;

  const upstreams = new Set<net.Socket>();
  const server = new HboneServer({
    certificate: () => serverCert,
    trustDomain: TRUST_DOMAIN,
    settings: opts.settings ?? {},
    onConnect: async (req) => {
      stats.onConnect++;
      if (stats.requests.length < 100) {
        stats.requests.push({
          authority: req.authority,
          headerNames: Object.keys(req.headers),
          headers: { ...req.headers },
        });
      }
      stats.inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
      let aborted = false;
      const onAbort = (): void => {
        if (!aborted) stats.signalsAborted++;
        aborted = true;
      };
      if (req.signal.aborted) onAbort();
      else req.signal.addEventListener('abort', onAbort, { once: true });
      try {
        if (opts.dialDelayMs !== undefined) await sleep(opts.dialDelayMs);
        if (req.signal.aborted) {
          stats.cancelledBeforeDial++;
          return { status: 503, reason: 'cancelled' };
        }
        stats.dials++;
        const up = net.connect({ host: '127.0.0.1', port: echoPort });
        if (opts.guardResetAfterEnd ?? true) {
          const reset = up.resetAndDestroy.bind(up);
          up.resetAndDestroy = () => (up.writableEnded ? up.destroy() : reset());
        }
        upstreams.add(up);
        stats.upstreamOpen++;
        stats.maxUpstreamOpen = Math.max(stats.maxUpstreamOpen, stats.upstreamOpen);
        up.on('close', () => {
          upstreams.delete(up);
          stats.upstreamOpen--;
        });
        await new Promise<void>((resolve, reject) => {
          up.once('connect', resolve);
          up.once('error', reject);
        });
        return { status: 200, upstream: up };
      } catch {
        return { status: 503, reason: 'upstream connect failed' };
      } finally {
        stats.inFlight--;
      }
    },
    onTunnelClosed: () => {
      stats.tunnelsClosed++;
    },
  });
  server.on('sessionError', (err) => {
    if (stats.sessionErrors.length < 50) stats.sessionErrors.push(err.message);
  });
  const addr = await server.listen({ port: 0, host: '127.0.0.1' });

  const clients = new Set<RawH2Client>();
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    // Bounded: a server that cannot drain must not hang the suite (tunnel-abort.test.ts).
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      server.close({ deadlineMs: 500 }).then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), 2000);
      }),
    ]);
    clearTimeout(timer);
    if (!drained)
      t.comment(`HboneServer.close() did not resolve within 2 s: ${JSON.stringify(server.stats())}`);
    for (const u of upstreams) u.destroy();
    for (const s of echoSockets) s.destroy();
    await new Promise<void>((resolve) => echo.close(() => resolve()));
  });

  const cred: Cred = {
    port: addr.port,
    key: clientCert.privateKeyPem,
    cert: clientCert.certChainPem,
    ca: clientCert.rootsPem,
  };
  const connect = async (o: Partial<RawH2ConnectOptions> = {}): Promise<RawH2Client> => {
    const c = await RawH2Client.connect({ ...cred, ...o });
    clients.add(c);
    c.socket.once('close', () => clients.delete(c));
    return c;
  };
  return {
    port: addr.port,
    ca,
    clientCert,
    echoPort,
    server,
    stats,
    cred,
    rootsPem: clientCert.rootsPem,
    connect,
    legit: async () => legitTunnel(connect, echoPort),
  };
}

async function legitTunnel(
  connect: (o?: Partial<RawH2ConnectOptions>) => Promise<RawH2Client>,
  echoPort: number,
): Promise<LegitResult> {
  const started = performance.now();
  let c: RawH2Client | undefined;
  try {
    c = await connect();
    c.send(headersFrame(1, connectBlock(`127.0.0.1:${echoPort}`)));
    const o = await c.outcome(1, 5000);
    if (o.kind !== 'status' || o.status !== 200) {
      return {
        ok: false,
        status: o.kind === 'status' ? o.status : undefined,
        ms: performance.now() - started,
        detail: JSON.stringify(o),
      };
    }
    c.send(dataFrame(1, Buffer.from('ping')));
    const d = await c.waitFor(
      (f): f is Extract<InFrame, { type: 'DATA' }> => f.type === 'DATA' && f.streamId === 1 && f.length > 0,
      5000,
    );
    const echoed = d?.data.toString() ?? '';
    return {
      ok: echoed === 'ping',
      status: 200,
      ms: performance.now() - started,
      detail: `echoed ${JSON.stringify(echoed)}`,
    };
  } catch (err) {
    return { ok: false, status: undefined, ms: performance.now() - started, detail: String(err) };
  } finally {
    c?.destroy();
  }
}

/** Wait until `cond` holds or `timeoutMs` passes; returns the final value of `cond`. */
export async function eventually(cond: () => boolean, timeoutMs: number, stepMs = 10): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > end) return false;
    await sleep(stepMs);
  }
  return true;
}

let gcFn: (() => void) | undefined;
/** Run a full GC (via --expose-gc set at runtime) so RSS readings are comparable. */
export function fullGc(): void {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
}

/** RSS in MiB after a full GC. */
export async function settledRssMiB(): Promise<number> {
  await sleep(20);
  fullGc();
  await sleep(20);
  fullGc();
  return process.memoryUsage().rss / 1048576;
}

/** V8 heap in use, in MiB, after a full GC (leaked sessions and sockets show up here). */
export async function settledHeapMiB(): Promise<number> {
  await sleep(20);
  fullGc();
  await sleep(20);
  fullGc();
  return process.memoryUsage().heapUsed / 1048576;
}

/** Count of active libuv handles/requests by type (TCPSocketWrap, TLSWrap, Timeout, ...). */
export function activeResources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
  return out;
}

/** Sockets among the active resources. */
export function socketHandles(): number {
  const r = activeResources();
  return (r.TCPSocketWrap ?? 0) + (r.TLSWrap ?? 0) + (r.TCPWrap ?? 0);
}

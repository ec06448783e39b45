// SPDX-License-Identifier: Apache-2.0
// Test helpers for the HBONE transport (src/shared/hbone): a client/server pair with test-CA
// certificates in one call, a loopback echo server, and a TCP "outbound" forwarder (app socket →
// HBONE tunnel, like ztunnel's 15001 path) for the benchmark and end-to-end tests.
//
//   const pair = await startHbonePair();                  // server on 127.0.0.1:0
//   const echo = await startEchoServer();
//   const tunnel = await pair.connect(`127.0.0.1:${echo.port}`);
//   ...
//   await pair.close(); await echo.close();
//
// The default onConnect dials the authority only when it is an IP in 127.0.0.0/8 (tests never send
// traffic anywhere else); other authorities get 400, connect failures 503.
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import type { CertificateAuthority } from '../../src/shared/identity/ca.ts';
import type { WorkloadCertificate } from '../../src/shared/identity/cert-manager.ts';
import {
  HboneClient,
  type HboneClientOptions,
  type HboneConnectRequest,
  type HboneDialer,
  type HboneTunnel,
} from '../../src/shared/hbone/client.ts';
import { relay } from '../../src/shared/hbone/relay.ts';
import {
  connectUpstream,
  HboneServer,
  type InboundConnect,
  type InboundDecision,
  type HboneServerOptions,
} from '../../src/shared/hbone/server.ts';
import type { HboneSettings } from '../../src/shared/hbone/settings.ts';
import { issueWorkloadCert, newTestCa } from './pki.ts';

export const TEST_TRUST_DOMAIN = 'cluster.local';
export const TEST_SERVER_ID = 'spiffe://cluster.local/ns/server/sa/server';
export const TEST_CLIENT_ID = 'spiffe://cluster.local/ns/client/sa/client';

/** True for an IPv4 address in 127.0.0.0/8 (or ::ffff:127.x), the only upstreams tests may dial. */
export function isLoopbackV4(ip: string): boolean {
  const v4 = ip.startsWith('::ffff:') ? ip.slice(7) : ip;
  return net.isIPv4(v4) && v4.startsWith('127.');
}

/** Counters kept by loopbackOnConnect. */
export interface UpstreamCounters {
  /** onConnect calls. */
  calls: number;
  /** Upstream dials started. */
  dials: number;
  /** Upstream sockets connected. */
  connected: number;
}

/**
 * The default test onConnect: dials IPv4 loopback authorities with connectUpstream (503 on
 * failure), answers 400 for anything else.
 */
export function loopbackOnConnect(
  counters: UpstreamCounters,
  timeoutMs = 2_000,
): (req: InboundConnect) => Promise<InboundDecision> {
  return async (req) => {
    counters.calls++;
    const t = req.target;
    if (t.kind !== 'ip' || !isLoopbackV4(t.ip)) {
      return { status: 400, reason: `test upstreams must be in 127.0.0.0/8, not ${req.authority}` };
    }
    counters.dials++;
    try {
      const upstream = await connectUpstream({ host: t.ip, port: t.port, timeoutMs, signal: req.signal });
      counters.connected++;
      return { status: 200, upstream };
    } catch (err) {
      return { status: 503, reason: (err as Error).message };
    }
  };
}

export interface HbonePairOptions {
  /** Reuse a CA (default: a fresh one for trust domain cluster.local). */
  ca?: CertificateAuthority;
  serverIdentity?: string;
  clientIdentity?: string;
  /** The server's trust domain (default cluster.local). */
  trustDomain?: string;
  serverSettings?: Partial<HboneSettings>;
  clientSettings?: Partial<HboneSettings>;
  /** Replace the default loopback onConnect. */
  onConnect?: HboneServerOptions['onConnect'];
  onTunnelClosed?: HboneServerOptions['onTunnelClosed'];
  dial?: HboneDialer;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Each side's certificate revocation lists. */
  serverRevocation?: HboneServerOptions['revocation'];
  clientRevocation?: HboneClientOptions['revocation'];
}

export interface HbonePair {
  ca: CertificateAuthority;
  server: HboneServer;
  client: HboneClient;
  address: AddressInfo;
  /** Where the client dials: the server's listener. */
  peer: { host: string; port: number };
  serverId: string;
  clientId: string;
  /** The certificates currently served by certificate() on each side (replace to rotate). */
  serverCert: WorkloadCertificate;
  clientCert: WorkloadCertificate;
  /** Counters of the default onConnect (unused when onConnect is replaced). */
  upstream: UpstreamCounters;
  /** client.connect to this pair's server, expecting the server identity. */
  connect(authority: string, extra?: Partial<HboneConnectRequest>): Promise<HboneTunnel>;
  /** Closes client then server (deadline 0 unless given). */
  close(opts?: { deadlineMs?: number }): Promise<void>;
}

export async function startHbonePair(opts: HbonePairOptions = {}): Promise<HbonePair> {
  const ca = opts.ca ?? (await newTestCa());
  const serverId = opts.serverIdentity ?? TEST_SERVER_ID;
  const clientId = opts.clientIdentity ?? TEST_CLIENT_ID;
  const [serverCert, clientCert] = await Promise.all([
    issueWorkloadCert(ca, serverId),
    issueWorkloadCert(ca, clientId),
  ]);
  const upstream: UpstreamCounters = { calls: 0, dials: 0, connected: 0 };
  // certificate() reads the pair object, so tests rotate by assigning pair.serverCert / clientCert.
  const server = new HboneServer({
    certificate: () => pair.serverCert,
    trustDomain: opts.trustDomain ?? TEST_TRUST_DOMAIN,
    settings: opts.serverSettings ?? {},
    onConnect: opts.onConnect ?? loopbackOnConnect(upstream),
    ...(opts.onTunnelClosed ? { onTunnelClosed: opts.onTunnelClosed } : {}),
    ...(opts.serverRevocation ? { revocation: opts.serverRevocation } : {}),
  });
  const client = new HboneClient({
    certificate: () => pair.clientCert,
    settings: opts.clientSettings ?? {},
    ...(opts.dial ? { dial: opts.dial } : {}),
    ...(opts.clientRevocation ? { revocation: opts.clientRevocation } : {}),
  });
  const host = opts.host ?? '127.0.0.1';
  const address = await server.listen({ host, port: 0 });
  const peer = { host, port: address.port };
  const pair: HbonePair = {
    ca,
    server,
    client,
    address,
    peer,
    serverId,
    clientId,
    serverCert,
    clientCert,
    upstream,
    connect: (authority, extra = {}) =>
      client.connect({ peer, authority, expectedIdentities: [serverId], ...extra }),
    close: async (o = {}) => {
      await client.close({ deadlineMs: o.deadlineMs ?? 0 });
      await server.close({ deadlineMs: o.deadlineMs ?? 0 });
    },
  };
  return pair;
}

export interface TestTcpServer {
  port: number;
  server: net.Server;
  /** Sockets accepted so far. */
  accepted: number;
  /** Sockets currently open. */
  readonly sockets: ReadonlySet<net.Socket>;
  close(): Promise<void>;
}

/**
 * A loopback TCP server (allowHalfOpen) running `handler` on each socket; default handler echoes.
 * close() destroys every socket it accepted.
 */
export async function startTcpServer(
  handler: (s: net.Socket) => void = (s) => s.pipe(s),
): Promise<TestTcpServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true, noDelay: true });
  const out: TestTcpServer = {
    port: 0,
    server,
    accepted: 0,
    sockets,
    close: async () => {
      for (const s of sockets) s.destroy();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('connection', (s: net.Socket) => {
    out.accepted++;
    sockets.add(s);
    s.on('error', () => undefined);
    s.once('close', () => sockets.delete(s));
    handler(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  out.port = (server.address() as AddressInfo).port;
  return out;
}

/** A loopback echo server (half-close aware: it ends its side after the client's FIN). */
export function startEchoServer(): Promise<TestTcpServer> {
  return startTcpServer((s) => s.pipe(s));
}

export interface TcpForwarder {
  port: number;
  /** Tunnels currently relayed. */
  readonly active: number;
  /** Connections refused because the CONNECT failed. */
  failed: number;
  close(): Promise<void>;
}

/**
 * A plaintext TCP listener on 127.0.0.1 that tunnels every accepted connection through `pair`'s
 * client to `authority` (what ztunnel's outbound 15001 path does). A failed CONNECT resets the
 * application socket.
 */
export async function startTcpForwarder(pair: HbonePair, authority: string): Promise<TcpForwarder> {
  const sockets = new Set<net.Socket>();
  let active = 0;
  const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true });
  const fwd: TcpForwarder = {
    port: 0,
    get active() {
      return active;
    },
    failed: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('connection', (app: net.Socket) => {
    sockets.add(app);
    app.on('error', () => undefined);
    app.once('close', () => sockets.delete(app));
    pair.connect(authority).then(
      async (tunnel) => {
        active++;
        try {
          await relay(app, tunnel.stream);
        } finally {
          active--;
        }
      },
      () => {
        fwd.failed++;
        app.resetAndDestroy();
      },
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  fwd.port = (server.address() as AddressInfo).port;
  return fwd;
}

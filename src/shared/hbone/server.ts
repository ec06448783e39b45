// SPDX-License-Identifier: Apache-2.0
// HBONE server: terminates mutual TLS and HTTP/2 CONNECT on port 15008 and hands each CONNECT to
// the caller's onConnect, which decides and dials the upstream (ambient-protocols.md §1.2 server
// side, §1.3 status codes, §1.4 settings and keepalive, §1.7 inbound processing steps 1-2 and 6;
// security-and-reliability.md §3.5 Node knobs, checklist A.1-A.3, A.13, B.20-B.23, F.75, I.96).
//
// * TLS: 1.3 only, AES-GCM, ALPN h2 only (no HTTP/1 fallback, checklist A.18), client certificate
//   required and chain-checked by OpenSSL against our roots (requestCert + rejectUnauthorized),
//   then checked again from DER as an X.509-SVID in our own trust domain before any stream is
//   served. No session resumption. Absolute handshake deadline (Node's handshakeTimeout starts
//   when the socket is handed to TLS and is not refreshed by handshake bytes).
// * CONNECT: non-CONNECT → 400, :path/:scheme present → 400, missing/invalid authority → 400,
//   all without calling onConnect. Stream data is not read until onConnect returns 200 (the
//   stream stays paused, flow control holds the rest), so early data of a refused CONNECT never
//   reaches an upstream (checklist A.13).
// * Drain: close() stops accepting, sends GOAWAY on every session, lets tunnels finish until the
//   deadline, then destroys what is left (ztunnel graceful_shutdown then forced close).
import http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import { EventEmitter } from 'eventemitter3';
import type { WorkloadCertificate } from '../identity/cert-manager.ts';
import { peerChainDer, verifySvidSync, type VerifiedSvid } from '../identity/svid.ts';
import { parseAuthority, type Authority } from './authority.ts';
import { HboneError } from './errors.ts';
import { relay, resetDuplex } from './relay.ts';
import { resolveHboneSettings, type HboneSettings } from './settings.ts';
import {
  CredentialCache,
  HBONE_ALPN,
  hboneSecureContextOptions,
  peerCertificateError,
  peerTrustOf,
  revocationOf,
  type PeerTrust,
  type RevocationSource,
  type RevokedSession,
} from './tls.ts';
import { setConnectionWindow, startKeepalive } from './session.ts';

export { connectUpstream, type ConnectUpstreamOptions } from './upstream.ts';
export type { RevocationSource, RevokedSession } from './tls.ts';
export type { HboneSettings } from './settings.ts';
export { DEFAULT_HBONE_SETTINGS } from './settings.ts';

const {
  NGHTTP2_CANCEL,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_NO_ERROR,
  NGHTTP2_REFUSED_STREAM,
  NGHTTP2_INADEQUATE_SECURITY,
} = http2.constants;

export interface InboundConnect {
  /** The :authority exactly as received. */
  authority: string;
  /** The parsed, canonical authority. */
  target: Authority;
  headers: http2.IncomingHttpHeaders;
  /** The verified identity of the client (first and only URI SAN of its leaf). */
  peer: VerifiedSvid;
  /** The TCP peer of the tunnel (the client pod, or the waypoint). */
  remoteAddress: string;
  remotePort: number;
  /** The address the TLS connection arrived on (the pod IP in-pod; checklist A.4 compares it to the authority). */
  localAddress: string;
  localPort: number;
  /** Aborted when the CONNECT stream goes away (reset, session closed, server closed). */
  signal: AbortSignal;
}

export type InboundDecision =
  | { status: 200; upstream: Duplex; responseHeaders?: Record<string, string> }
  | { status: 400 | 401 | 503; reason: string };

export interface HboneServerOptions {
  /** Our (the destination's) current certificate; a new object (rotation) is used by new connections. */
  certificate: () => WorkloadCertificate;
  /** Client certificates must carry an identity in this trust domain (§1.2). */
  trustDomain: string;
  /** Certificate revocation lists: a revoked client is refused at the handshake (checklist B.31). */
  revocation?: RevocationSource;
  settings?: Partial<HboneSettings>;
  /** Decide a CONNECT: dial the upstream and return 200 with it, or refuse. */
  onConnect: (req: InboundConnect) => Promise<InboundDecision>;
  /** Called once per 200 decision when its tunnel has ended (metrics, access log). */
  onTunnelClosed?: (
    req: InboundConnect,
    result: { bytesIn: number; bytesOut: number; error?: Error },
  ) => void;
}

/** A CONNECT refused by the server itself or by onConnect. */
export interface RejectedConnect {
  status: number;
  reason: string;
  authority: string | undefined;
  peer: VerifiedSvid;
  remoteAddress: string;
}

export interface HboneServerEvents {
  /**
   * A client session passed every check (TLS, SVID). For connection management: e.g. closing the
   * sessions of a peer whose certificate was revoked (checklist B.31) or is no longer authorized.
   */
  session: (session: http2.ServerHttp2Session, peer: VerifiedSvid) => void;
  /** A TLS handshake failed, timed out, or negotiated no ALPN. */
  tlsError: (err: Error, remoteAddress: string | undefined) => void;
  /** The client's certificate passed OpenSSL but is not an acceptable X.509-SVID (SPIFFE rules, trust domain). */
  peerRejected: (err: Error, remoteAddress: string | undefined) => void;
  /** A CONNECT was answered with a non-200 status. */
  rejected: (info: RejectedConnect) => void;
  /** onConnect threw or rejected (answered 503). */
  handlerError: (err: Error, req: InboundConnect) => void;
  /** An HTTP/2 session failed. */
  sessionError: (err: Error) => void;
  /** A listening socket failed after listen() resolved. */
  listenerError: (err: Error) => void;
}

export interface HboneServerStats {
  sessionsActive: number;
  /** CONNECT streams between 'stream' and the end of their handling (deciding or relaying). */
  streamsActive: number;
  tunnelsActive: number;
  secureContextsBuilt: number;
}

interface SessionInfo {
  readonly peer: VerifiedSvid;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /** CONNECT streams seen, and how many of them the peer reset before we answered. */
  streams: number;
  prematureResets: number;
}

/** Printable ASCII, space and tab: everything an HBONE header value is made of. */
const SAFE_HEADER_VALUE = /^[\t\x20-\x7e]*$/;

/**
 * The name of the first header whose value holds anything else (checklist A.15). nghttp2 already
 * drops fields carrying NUL, CR, LF, other controls or DEL; bytes above 0x7e (obs-text, which Node
 * hands over as Latin-1) are legal HTTP, but no HBONE header carries them, and a value that
 * reaches a log line or a policy as mojibake is where injections start. Names need no check:
 * nghttp2 refuses or drops every name that is not a lower-case token.
 */
function unsafeHeader(headers: http2.IncomingHttpHeaders): string | undefined {
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== undefined && !SAFE_HEADER_VALUE.test(v)) return name;
    }
  }
  return undefined;
}

/** Re-reads the stream state (a function call, so no stale narrowing across awaits). */
function streamGone(stream: http2.Http2Stream): boolean {
  return stream.closed || stream.destroyed;
}

export class HboneServer extends EventEmitter<HboneServerEvents> {
  readonly #opts: HboneServerOptions;
  readonly #settings: Readonly<HboneSettings>;
  readonly #h2: http2.Http2SecureServer;
  readonly #creds: CredentialCache<PeerTrust>;
  readonly #listeners = new Set<net.Server>();
  readonly #sockets = new Set<net.Socket>();
  readonly #sessions = new Map<http2.ServerHttp2Session, SessionInfo>();
  readonly #streams = new Set<http2.ServerHttp2Stream>();
  #tunnels = 0;
  #closing = false;
  #closed: Promise<void> | undefined;
  /** The identity verified in #onSecureConnection, for the 'session' event it triggers synchronously. */
  #verifiedPeer: VerifiedSvid | undefined;
  readonly #idleWaiters: (() => void)[] = [];

  constructor(opts: HboneServerOptions) {
    super();
    this.#opts = opts;
    const s = resolveHboneSettings(opts.settings);
    this.#settings = s;
    this.#h2 = http2.createSecureServer({
      // Certificate material arrives per connection via setSecureContext (see #prepareTls): the
      // certificate may not exist yet when the server is built (ztunnel loads it lazily).
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: [HBONE_ALPN],
      allowHTTP1: false,
      handshakeTimeout: s.handshakeTimeoutMs,
      unknownProtocolTimeout: s.unknownProtocolTimeoutMs,
      settings: {
        enablePush: false,
        initialWindowSize: s.streamWindowBytes,
        maxFrameSize: s.maxFrameSize,
        maxHeaderListSize: s.serverMaxHeaderListBytes,
        maxConcurrentStreams: s.serverMaxConcurrentStreams,
      },
      maxSessionMemory: s.maxSessionMemoryMb,
      maxSessionInvalidFrames: s.maxSessionInvalidFrames,
      maxSessionRejectedStreams: s.maxSessionRejectedStreams,
      maxOutstandingPings: s.maxOutstandingPings,
      maxSettings: s.maxSettings,
      maxHeaderListPairs: s.maxHeaderListPairs,
    });
    this.#creds = new CredentialCache((cert) => {
      this.#h2.setSecureContext(hboneSecureContextOptions(cert));
      return peerTrustOf(cert);
    });
    // Verify the client's SVID before Node creates the HTTP/2 session, so that a rejected peer
    // never receives a single HTTP/2 byte (not even our SETTINGS). Node's Http2SecureServer starts
    // sessions from a 'secureConnection' listener; we take those listeners over and call them only
    // for verified peers.
    const startSession = this.#h2.listeners('secureConnection') as ((
      this: unknown,
      socket: tls.TLSSocket,
    ) => void)[];
    if (startSession.length === 0)
      throw new Error('node:http2 no longer starts sessions on secureConnection');
    this.#h2.removeAllListeners('secureConnection');
    this.#h2.on('secureConnection', (socket: tls.TLSSocket) => {
      this.#onSecureConnection(socket, startSession);
    });
    this.#h2.on('session', (session) => this.#onSession(session));
    this.#h2.on('stream', (stream, headers) => {
      void this.#onStream(stream, headers);
    });
    this.#h2.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      this.emit('tlsError', err, socket.remoteAddress);
    });
    // Node forwards every session 'error' here (it also keeps one from crashing the process).
    this.#h2.on('sessionError', (err: Error, session: http2.ServerHttp2Session) => {
      if (this.#sessions.has(session)) this.emit('sessionError', err);
    });
  }

  get settings(): Readonly<HboneSettings> {
    return this.#settings;
  }

  stats(): HboneServerStats {
    return {
      sessionsActive: this.#sessions.size,
      streamsActive: this.#streams.size,
      tunnelsActive: this.#tunnels,
      secureContextsBuilt: this.#creds.builds,
    };
  }

  /** Listens on a new socket ({port, host} or {fd}) and serves every accepted connection. */
  async listen(opts: net.ListenOptions): Promise<net.AddressInfo> {
    if (this.#closing) throw new HboneError('HBONE_ERR_CLOSED', 'the HBONE server is closed');
    const srv = net.createServer({
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: this.#settings.tcpKeepAliveInitialDelayMs,
    });
    srv.on('connection', (socket: net.Socket) => this.handleSocket(socket));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(opts, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    srv.on('error', (err) => this.emit('listenerError', err));
    this.#listeners.add(srv);
    const addr = srv.address();
    if (addr === null || typeof addr === 'string') {
      return { address: typeof addr === 'string' ? addr : '', family: 'unix', port: 0 };
    }
    return addr;
  }

  /** Serves an already-accepted TCP socket (ztunnel accepts inside the pod netns). */
  handleSocket(socket: net.Socket): void {
    // Errors after the TLS layer took over surface there; this only keeps a raw error from crashing us.
    socket.on('error', () => undefined);
    if (this.#closing) {
      socket.destroy();
      return;
    }
    try {
      this.#prepareTls();
    } catch (err) {
      socket.destroy();
      this.emit(
        'tlsError',
        new HboneError(
          'HBONE_ERR_CERTIFICATE',
          `no workload certificate to serve HBONE with: ${(err as Error).message}`,
          {
            cause: err,
          },
        ),
        socket.remoteAddress,
      );
      return;
    }
    // HTTP/2 has no half-close: a FIN from the peer ends the connection. A socket factory's
    // sockets allow half-open (for the relay), and a TLSSocket inherits that from the socket it
    // wraps; left on, a peer that died (its kernel sent the FIN) leaves the session and every
    // tunnel on it open until the PING keepalive gives up.
    socket.allowHalfOpen = false;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, this.#settings.tcpKeepAliveInitialDelayMs);
    this.#sockets.add(socket);
    socket.once('close', () => {
      this.#sockets.delete(socket);
      // A socket that closes mid-handshake may be the last thing close() is waiting for.
      this.#checkIdle();
    });
    this.#h2.emit('connection', socket);
  }

  /**
   * Graceful drain: stop accepting (listeners closed, new sockets refused), GOAWAY on every
   * session, let open tunnels run until they end or `deadlineMs` passes (default
   * settings.drainDeadlineMs), then destroy what is left (tunnels reset). Resolves when every
   * session and tunnel is gone.
   */
  close(opts: { deadlineMs?: number } = {}): Promise<void> {
    this.#closed ??= this.#close(opts.deadlineMs ?? this.#settings.drainDeadlineMs);
    return this.#closed;
  }

  async #close(deadlineMs: number): Promise<void> {
    this.#closing = true;
    const listenersClosed = [...this.#listeners].map(
      (srv) => new Promise<void>((resolve) => srv.close(() => resolve())),
    );
    for (const session of this.#sessions.keys()) session.close();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#whenIdle(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, deadlineMs);
      }),
    ]);
    clearTimeout(timer);
    // Deadline: force-close what is left. Destroying a session destroys its streams; their relays
    // reset the upstream sockets and report to onTunnelClosed.
    for (const session of this.#sessions.keys()) session.destroy();
    for (const socket of this.#sockets) socket.destroy();
    for (const stream of this.#streams) if (!stream.destroyed) stream.destroy();
    await this.#whenIdle();
    await Promise.all(listenersClosed);
  }

  #isIdle(): boolean {
    return this.#sessions.size === 0 && this.#streams.size === 0 && this.#sockets.size === 0;
  }

  #whenIdle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #checkIdle(): void {
    if (!this.#closing || !this.#isIdle()) return;
    for (const w of this.#idleWaiters.splice(0)) w();
  }

  /**
   * Checks every live session's client against the current revocation lists again (the CRL
   * changed) and destroys the sessions of revoked clients at once, resetting their tunnels: a
   * revoked identity keeps nothing it already had (checklist B.31). Returns what was closed.
   */
  revalidate(): RevokedSession[] {
    const revocation = this.#opts.revocation?.();
    const closed: RevokedSession[] = [];
    if (revocation === undefined || this.#sessions.size === 0) return closed;
    const anchors = this.#prepareTls().bundle.anchors;
    for (const [session, info] of this.#sessions) {
      if (session.destroyed) continue;
      const revoked = revocationOf(info.peer, revocation, anchors);
      if (!revoked) continue;
      const remote = `${info.remoteAddress}:${info.remotePort}`;
      const streams = [...this.#streams].filter((st) => st.session === session).length;
      const error = new HboneError(
        'HBONE_ERR_PEER_REVOKED',
        `HBONE client ${remote} (${info.peer.id.uri}) is revoked: ${revoked.message}; closed its session and ${streams} tunnel(s)`,
        { cause: revoked },
      );
      session.destroy(error, NGHTTP2_CANCEL);
      closed.push({ peer: info.peer, remote, streams, error });
    }
    return closed;
  }

  /** Makes sure the TLS server presents the current certificate (rebuilt only when it changes). */
  #prepareTls(): PeerTrust {
    return this.#creds.get(this.#opts.certificate());
  }

  /** TLS is up (OpenSSL already checked the chain): check ALPN and the SVID, then start HTTP/2. */
  #onSecureConnection(
    socket: tls.TLSSocket,
    startSession: readonly ((this: unknown, socket: tls.TLSSocket) => void)[],
  ): void {
    const remoteAddress = socket.remoteAddress;
    socket.on('error', () => undefined);
    if (this.#closing) {
      socket.destroy();
      return;
    }
    if (socket.alpnProtocol !== HBONE_ALPN) {
      // Only reachable without ALPN (a different ALPN already failed the handshake): no HTTP/1.
      socket.destroy();
      this.emit(
        'tlsError',
        new HboneError(
          'HBONE_ERR_TLS',
          `TLS client from ${remoteAddress ?? 'unknown'} negotiated no ALPN; HBONE requires "${HBONE_ALPN}"`,
        ),
        remoteAddress,
      );
      return;
    }
    let peer: VerifiedSvid;
    try {
      const trust = this.#prepareTls();
      peer = verifySvidSync(peerChainDer(socket), trust.bundle, {
        trustDomain: this.#opts.trustDomain,
        usage: 'clientAuth',
        intermediates: trust.intermediatesDer,
        // Node hides the client's intermediates from a TLS server; OpenSSL verified the path to
        // our roots (rejectUnauthorized). It stands when the client's intermediate is not ours.
        pathVerifiedByTls: socket.authorized,
        revocation: this.#opts.revocation?.(),
      });
    } catch (err) {
      // Before any HTTP/2: the peer gets nothing but the close (ztunnel resets such connections).
      socket.destroy();
      this.emit(
        'peerRejected',
        peerCertificateError(
          err,
          `HBONE client ${remoteAddress ?? 'unknown'} rejected: ${(err as Error).message}`,
        ),
        remoteAddress,
      );
      return;
    }
    // Node emits 'session' synchronously from these listeners: hand the identity over.
    this.#verifiedPeer = peer;
    try {
      for (const start of startSession) start.call(this.#h2, socket);
    } finally {
      this.#verifiedPeer = undefined;
    }
  }

  #onSession(session: http2.ServerHttp2Session): void {
    const peer = this.#verifiedPeer;
    this.#verifiedPeer = undefined;
    if (!peer) {
      // Cannot happen (every session starts from #onSecureConnection); refuse rather than serve.
      session.destroy(
        new HboneError('HBONE_ERR_PEER_IDENTITY', 'HTTP/2 session without a verified peer identity'),
        NGHTTP2_INADEQUATE_SECURITY,
      );
      return;
    }
    // session.socket is Node's guarded proxy of the TLS socket: reading addresses is allowed.
    const socket = session.socket as tls.TLSSocket;
    const remoteAddress = socket.remoteAddress ?? '';
    this.#sessions.set(session, {
      peer,
      remoteAddress,
      remotePort: socket.remotePort ?? 0,
      localAddress: socket.localAddress ?? '',
      localPort: socket.localPort ?? 0,
      streams: 0,
      prematureResets: 0,
    });
    // The handshake deadline extends to the HTTP/2 preface: a client that completes TLS and then
    // says nothing must not hold the connection (checklist F.75, the next stall point).
    const prefaceTimer = setTimeout(() => {
      session.destroy(
        new HboneError(
          'HBONE_ERR_HANDSHAKE_TIMEOUT',
          `HBONE client ${remoteAddress} sent no HTTP/2 preface within ${this.#settings.handshakeTimeoutMs} ms`,
        ),
      );
    }, this.#settings.handshakeTimeoutMs);
    prefaceTimer.unref();
    session.once('remoteSettings', () => clearTimeout(prefaceTimer));
    session.once('close', () => {
      clearTimeout(prefaceTimer);
      this.#sessions.delete(session);
      this.#checkIdle();
    });
    setConnectionWindow(session, this.#settings.connectionWindowBytes);
    startKeepalive(session, this.#settings.pingIntervalMs, this.#settings.pingTimeoutMs);
    // A handshake that completed while we were draining: refuse everything on it.
    if (this.#closing) session.close();
    else this.emit('session', session, peer);
  }

  async #onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): Promise<void> {
    stream.on('error', () => undefined);
    // stream.session is detached once the stream is destroyed: keep our own reference.
    const session = stream.session as http2.ServerHttp2Session;
    const info = this.#sessions.get(session);
    if (!info) {
      // Not a verified session (cannot happen: unverified sessions are destroyed synchronously).
      stream.close(NGHTTP2_REFUSED_STREAM);
      return;
    }
    this.#streams.add(stream);
    info.streams++;
    stream.once('close', () => {
      if (!stream.headersSent) this.#onPrematureReset(session, info);
    });
    try {
      await this.#handleConnect(stream, headers, info);
    } finally {
      this.#streams.delete(stream);
      this.#checkIdle();
    }
  }

  /**
   * Rapid Reset defence (CVE-2023-44487, checklist A.11/A.12): a peer that keeps cancelling
   * streams before we answer them makes us start work for nothing. Like Envoy's premature-reset
   * check, the session is dropped (GOAWAY ENHANCE_YOUR_CALM) once at least maxPrematureResets
   * streams, and at least half of all its streams, were reset before their response.
   */
  #onPrematureReset(session: http2.ServerHttp2Session, info: SessionInfo): void {
    info.prematureResets++;
    const limit = this.#settings.maxPrematureResets;
    if (info.prematureResets < limit || info.prematureResets * 2 < info.streams || session.destroyed) return;
    const err = new HboneError(
      'HBONE_ERR_SESSION_CLOSED',
      `HBONE client ${info.remoteAddress} (${info.peer.id.uri}) reset ${info.prematureResets} of ${info.streams} CONNECT streams before their response; dropping the session (rapid reset protection)`,
    );
    this.emit('sessionError', err);
    session.destroy(err, NGHTTP2_ENHANCE_YOUR_CALM);
  }

  async #handleConnect(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    info: SessionInfo,
  ): Promise<void> {
    const authority = headers[':authority'];
    const refuse = (status: number, reason: string): void => {
      this.#refuse(stream, status, reason, info, authority);
    };
    const method = headers[':method'];
    if (method !== 'CONNECT') {
      refuse(400, `method ${JSON.stringify(method)} is not CONNECT`);
      return;
    }
    // RFC 9113 §8.5: a classic CONNECT has neither :scheme nor :path (no extended CONNECT here).
    if (headers[':path'] !== undefined || headers[':scheme'] !== undefined) {
      refuse(400, 'CONNECT must not carry :path or :scheme');
      return;
    }
    if (typeof authority !== 'string' || authority === '') {
      refuse(400, 'CONNECT without :authority');
      return;
    }
    const unsafe = unsafeHeader(headers);
    if (unsafe !== undefined) {
      refuse(400, `header ${unsafe} has a control character or a byte above 0x7e in its value`);
      return;
    }
    let target: Authority;
    try {
      target = parseAuthority(authority);
    } catch (err) {
      refuse(400, (err as Error).message);
      return;
    }

    // One event-loop turn before deciding: a HEADERS followed by RST_STREAM in the same read
    // (Rapid Reset) is then already closed, and no onConnect work (dial, policy) is started for it.
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (streamGone(stream)) return;

    const controller = new AbortController();
    const onStreamClose = (): void => {
      controller.abort(new HboneError('HBONE_ERR_STREAM_RESET', 'the CONNECT stream closed'));
    };
    stream.once('close', onStreamClose);
    const req: InboundConnect = {
      authority,
      target,
      headers,
      peer: info.peer,
      remoteAddress: info.remoteAddress,
      remotePort: info.remotePort,
      localAddress: info.localAddress,
      localPort: info.localPort,
      signal: controller.signal,
    };

    let decision: InboundDecision;
    try {
      decision = await this.#opts.onConnect(req);
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.emit('handlerError', error, req);
      refuse(503, `onConnect failed: ${error.message}`);
      return;
    }

    if (decision.status !== 200) {
      refuse(decision.status, decision.reason);
      return;
    }
    const upstream = decision.upstream;
    if (streamGone(stream)) {
      // The client went away while we were deciding: drop the upstream we were given.
      resetDuplex(upstream);
      this.#opts.onTunnelClosed?.(req, {
        bytesIn: 0,
        bytesOut: 0,
        error: new HboneError(
          'HBONE_ERR_STREAM_RESET',
          'the CONNECT stream closed before the tunnel was established',
        ),
      });
      return;
    }
    this.#tunnels++;
    try {
      stream.respond({ ...decision.responseHeaders, ':status': 200 });
      const result = await relay(stream, upstream);
      this.#opts.onTunnelClosed?.(req, {
        bytesIn: result.bytesAToB,
        bytesOut: result.bytesBToA,
        ...(result.error ? { error: result.error } : {}),
      });
    } catch (err) {
      resetDuplex(upstream);
      resetDuplex(stream);
      this.#opts.onTunnelClosed?.(req, { bytesIn: 0, bytesOut: 0, error: err as Error });
    } finally {
      this.#tunnels--;
    }
  }

  #refuse(
    stream: http2.ServerHttp2Stream,
    status: number,
    reason: string,
    info: SessionInfo,
    authority: string | undefined,
  ): void {
    if (!stream.closed && !stream.destroyed && !stream.headersSent) {
      try {
        stream.respond({ ':status': status }, { endStream: true });
        // RST_STREAM(NO_ERROR) once the response is out: the client must stop sending, and a
        // refused stream must not keep counting against the concurrency limit (RFC 9113 §8.1).
        stream.close(NGHTTP2_NO_ERROR);
      } catch {
        stream.destroy();
      }
    }
    this.emit('rejected', { status, reason, authority, peer: info.peer, remoteAddress: info.remoteAddress });
  }
}

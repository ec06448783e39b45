// SPDX-License-Identifier: Apache-2.0
// HBONE client: HTTP/2 CONNECT over mutual TLS with a session pool (ambient-protocols.md §1.2
// client side, §1.3 the CONNECT request, §1.4 settings and keepalive, §1.5 connection pooling;
// PERFORMANCE.md B.5 / part C: pooled sessions, large windows, cached SecureContext, no Nagle).
//
// Order of a new session, so that not a byte of HTTP/2 (let alone payload) reaches a peer with
// the wrong identity (checklist B.29): TCP connect (SocketFactory seam, TCP_NODELAY) → TLS 1.3
// handshake with our certificate, no SNI, ALPN h2, OpenSSL chain check against our roots →
// X.509-SVID check of the server chain from DER against the roots that came with our certificate
// and the expected identities → only then http2.connect() over that socket. Node's
// checkServerIdentity (hostname rules) is disabled: there is no hostname, identity is the SPIFFE
// URI SAN.
//
// Pool (§1.5): key = (source identity, sorted expected identities, peer host:port, source IP).
// A session carries at most min(poolMaxStreamsPerConnection, peer SETTINGS_MAX_CONCURRENT_STREAMS)
// streams; new-session creation is serialized per key; sessions that got GOAWAY, failed or closed
// are never handed out; idle sessions are released after poolIdleReleaseMs.
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import type { WorkloadCertificate } from '../identity/cert-manager.ts';
import type { ParsedCertificate } from '../identity/certificate.ts';
import { peerChainDer, verifySvid, type VerifiedSvid } from '../identity/svid.ts';
import { authorityToString, parseAuthority } from './authority.ts';
import { HboneError, statusError } from './errors.ts';
import { setConnectionWindow, startKeepalive } from './session.ts';
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

export type { RevocationSource, RevokedSession } from './tls.ts';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;

export interface HboneConnectRequest {
  /** The peer's HBONE listener, e.g. podIP:15008 or waypointIP:15008. */
  peer: { host: string; port: number };
  /** The CONNECT :authority: the target ip:port (or hostname:port for double-HBONE). */
  authority: string;
  /** Identities (SPIFFE URIs) the peer may present; at least one (§1.2). */
  expectedIdentities: readonly string[];
  /** Source address to dial from (part of the pool key; ztunnel keeps it because it may be spoofed). */
  sourceIp?: string;
  /** Extra request headers (baggage, forwarded, traceparent, ...); lower-case names, no pseudo-headers. */
  headers?: Readonly<Record<string, string>>;
  signal?: AbortSignal;
}

/** Opens the TCP connection to an HBONE peer (ztunnel: from inside the pod netns, with SO_MARK). */
export type HboneDialer = (peer: { host: string; port: number }, sourceIp: string | undefined) => net.Socket;

export interface HboneClientOptions {
  /** The source identity's current certificate; a new object (rotation) is used by new sessions. */
  certificate: () => WorkloadCertificate;
  settings?: Partial<HboneSettings>;
  /** SocketFactory seam; default net.connect with TCP_NODELAY and TCP keepalive. */
  dial?: HboneDialer;
  /** Certificate revocation lists: a revoked server is refused at the handshake (checklist B.31). */
  revocation?: RevocationSource;
}

/** How long close() lets an idle session's graceful close take before destroying it. */
const IDLE_CLOSE_GRACE_MS = 1000;

export interface HboneTunnel {
  /** The CONNECT stream: the raw byte pipe after the 200. A no-op 'error' listener is attached; add your own. */
  readonly stream: http2.ClientHttp2Stream;
  /** The verified identity of the peer that accepted the tunnel. */
  readonly peer: VerifiedSvid;
  readonly responseHeaders: http2.IncomingHttpHeaders;
}

export interface HboneClientStats {
  /** Sessions established (TLS verified and HTTP/2 started) since creation. */
  sessionsOpened: number;
  /** Sessions not yet closed (pooled or draining). */
  sessionsActive: number;
  /** CONNECT streams open (pending or established). */
  streamsActive: number;
  /** SecureContexts built (once per distinct certificate object). */
  secureContextsBuilt: number;
}

interface PooledSession {
  readonly key: string;
  readonly session: http2.ClientHttp2Session;
  readonly peer: VerifiedSvid;
  readonly certificate: WorkloadCertificate;
  /** The roots the peer was verified against (for revalidate()). */
  readonly anchors: readonly ParsedCertificate[];
  readonly peerLabel: string;
  /** The address dialled (retire() decides by it). */
  readonly peerHost: string;
  active: number;
  usable: boolean;
  /** GOAWAY received: its error code and last stream id (streams above it were not processed). */
  goawayCode: number | undefined;
  goawayLastStreamId: number | undefined;
  lastError: Error | undefined;
  idleTimer: NodeJS.Timeout | undefined;
}

interface KeyState {
  sessions: PooledSession[];
  creating: Promise<PooledSession> | undefined;
}

interface ClientCreds extends PeerTrust {
  readonly secureContext: tls.SecureContext;
}

function defaultDial(settings: Readonly<HboneSettings>): HboneDialer {
  return (peer, sourceIp) =>
    net.connect({
      host: peer.host,
      port: peer.port,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: settings.tcpKeepAliveInitialDelayMs,
      ...(sourceIp !== undefined ? { localAddress: sourceIp } : {}),
    });
}

function peerLabel(peer: { host: string; port: number }): string {
  return peer.host.includes(':') ? `[${peer.host}]:${peer.port}` : `${peer.host}:${peer.port}`;
}

function abortError(signal: AbortSignal, what: string): HboneError {
  return new HboneError('HBONE_ERR_ABORTED', `${what} aborted by the caller`, { cause: signal.reason });
}

/** `p`, or a rejection as soon as `signal` aborts (the underlying work carries on). */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(abortError(signal, what));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal, what));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

export class HboneClient {
  readonly #certificate: () => WorkloadCertificate;
  readonly #settings: Readonly<HboneSettings>;
  readonly #dial: HboneDialer;
  readonly #revocation: RevocationSource | undefined;
  readonly #creds: CredentialCache<ClientCreds>;
  readonly #keys = new Map<string, KeyState>();
  readonly #all = new Set<PooledSession>();
  #closed = false;
  #sessionsOpened = 0;
  #streamsActive = 0;

  constructor(opts: HboneClientOptions) {
    this.#certificate = opts.certificate;
    this.#settings = resolveHboneSettings(opts.settings);
    this.#dial = opts.dial ?? defaultDial(this.#settings);
    this.#revocation = opts.revocation;
    this.#creds = new CredentialCache((cert) => ({
      ...peerTrustOf(cert),
      secureContext: tls.createSecureContext(hboneSecureContextOptions(cert)),
    }));
  }

  get settings(): Readonly<HboneSettings> {
    return this.#settings;
  }

  stats(): HboneClientStats {
    return {
      sessionsOpened: this.#sessionsOpened,
      sessionsActive: this.#all.size,
      streamsActive: this.#streamsActive,
      secureContextsBuilt: this.#creds.builds,
    };
  }

  /**
   * Opens a CONNECT tunnel to `req.authority` through the HBONE peer `req.peer`, reusing a pooled
   * session when one matches. Resolves after the peer answered 200; rejects with a typed
   * HboneError otherwise (status-mapped codes carry `.status`).
   */
  async connect(req: HboneConnectRequest): Promise<HboneTunnel> {
    if (this.#closed)
      throw new HboneError('HBONE_ERR_CLOSED', 'the HBONE client is closed; no new tunnels are opened');
    if (req.signal?.aborted === true) throw abortError(req.signal, 'HBONE connect');
    const authority = authorityToString(parseAuthority(req.authority));
    if (req.expectedIdentities.length === 0) {
      throw new HboneError(
        'HBONE_ERR_CONFIG',
        `no expected identity for HBONE peer ${peerLabel(req.peer)}: a tunnel is never opened without knowing who the destination must be`,
      );
    }
    const headers: http2.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers ?? {})) {
      if (name.startsWith(':')) {
        throw new HboneError(
          'HBONE_ERR_CONFIG',
          `extra CONNECT header "${name}" is a pseudo-header; only regular headers may be added`,
        );
      }
      headers[name] = value;
    }
    headers[':method'] = 'CONNECT';
    headers[':authority'] = authority;

    let cert: WorkloadCertificate;
    try {
      cert = this.#certificate();
    } catch (err) {
      throw new HboneError(
        'HBONE_ERR_CERTIFICATE',
        `no workload certificate for the source identity: ${(err as Error).message}; check the CA connection`,
        { cause: err },
      );
    }
    const expected = [...new Set(req.expectedIdentities)].sort();
    const key = JSON.stringify([cert.id.uri, expected, peerLabel(req.peer), req.sourceIp ?? '']);

    // One retry when the peer refused the stream without processing it (REFUSED_STREAM, or a
    // stream above a GOAWAY's last stream id): safe, nothing was delivered (RFC 9113 §8.7).
    for (let attempt = 0; ; attempt++) {
      const ps = await this.#checkout(key, req, expected, cert);
      try {
        return await this.#openStream(ps, headers, authority, req.signal);
      } catch (err) {
        if (attempt === 0 && err instanceof RetryableError) continue;
        throw err instanceof RetryableError ? err.error : err;
      }
    }
  }

  /**
   * Stops handing out sessions and closes them: idle sessions get a graceful GOAWAY; sessions with
   * open streams are closed gracefully and destroyed after `deadlineMs` (default 0: at once,
   * resetting their streams). Resolves when every session has closed, or at the latest
   * 2 × IDLE_CLOSE_GRACE_MS after the deadline.
   */
  async close(opts: { deadlineMs?: number } = {}): Promise<void> {
    this.#closed = true;
    const deadlineMs = opts.deadlineMs ?? 0;
    const waits: Promise<void>[] = [];
    for (const ps of this.#all) {
      ps.usable = false;
      if (ps.idleTimer) clearTimeout(ps.idleTimer);
      if (ps.session.destroyed) continue;
      waits.push(new Promise((resolve) => ps.session.once('close', () => resolve())));
      if (ps.active > 0 && deadlineMs <= 0) {
        ps.session.destroy();
      } else {
        // GOAWAY first. An idle session normally closes at once, but Node waits for every stream
        // it still counts (one whose close has not completed, or whose peer died unnoticed), so
        // close() is bounded: destroyed after the deadline, or IDLE_CLOSE_GRACE_MS when idle.
        ps.session.close();
        setTimeout(() => ps.session.destroy(), Math.max(deadlineMs, IDLE_CLOSE_GRACE_MS)).unref();
      }
    }
    // Creations in flight see #closed when they finish and destroy their session.
    const creating = [...this.#keys.values()].flatMap((s) =>
      s.creating ? [s.creating.catch(() => undefined)] : [],
    );
    // Bounded as well: a session whose socket never reports its close (a half-open socket under
    // TLS did that after the peer died, see #handshake) must not hang the caller's shutdown.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...waits, ...creating]),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, Math.max(deadlineMs, IDLE_CLOSE_GRACE_MS) + IDLE_CLOSE_GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
    for (const ps of this.#all) if (!ps.session.destroyed) ps.session.destroy();
  }

  /**
   * Checks every live session's server against the current revocation lists again (the CRL
   * changed) and destroys the sessions of revoked servers at once, resetting their tunnels, so
   * that no byte more flows to a revoked identity (checklist B.31). Returns what was closed.
   */
  revalidate(): RevokedSession[] {
    const revocation = this.#revocation?.();
    const closed: RevokedSession[] = [];
    for (const ps of this.#all) {
      if (ps.session.destroyed) continue;
      const revoked = revocationOf(ps.peer, revocation, ps.anchors);
      if (!revoked) continue;
      const error = new HboneError(
        'HBONE_ERR_PEER_REVOKED',
        `HBONE peer ${ps.peerLabel} (${ps.peer.id.uri}) is revoked: ${revoked.message}; closed its session and ${ps.active} tunnel(s)`,
        { cause: revoked },
      );
      ps.usable = false;
      ps.lastError = error;
      if (ps.idleTimer) clearTimeout(ps.idleTimer);
      this.#forget(ps);
      closed.push({ peer: ps.peer, remote: ps.peerLabel, streams: ps.active, error });
      ps.session.destroy(error, NGHTTP2_CANCEL);
    }
    return closed;
  }

  /**
   * Stops handing out the pooled sessions whose peer address `keep` rejects (its workload left
   * the mesh state) and closes them gracefully: open tunnels finish, new ones get a new session.
   * A session to a deleted pod usually died with its netns without a FIN; without this, new
   * tunnels to its address (reused by another pod, or back after a restart) would be put on the
   * dead session and wait for the keepalive (up to 30 s). Returns how many were retired.
   */
  retire(keep: (peerHost: string) => boolean): number {
    let n = 0;
    for (const ps of this.#all) {
      if (!ps.usable || keep(ps.peerHost)) continue;
      ps.usable = false;
      if (ps.idleTimer) clearTimeout(ps.idleTimer);
      this.#forget(ps);
      if (!ps.session.closed) ps.session.close();
      n++;
    }
    return n;
  }

  // ---- pool ----

  #capacity(ps: PooledSession): number {
    const peerMax = ps.session.remoteSettings.maxConcurrentStreams;
    return Math.min(this.#settings.poolMaxStreamsPerConnection, peerMax ?? Number.MAX_SAFE_INTEGER);
  }

  #isUsable(ps: PooledSession, nowMs: number): boolean {
    if (!ps.usable || ps.session.closed || ps.session.destroyed) return false;
    // Never hand out a session whose verified identities have expired since the handshake.
    if (ps.peer.notAfter.getTime() <= nowMs || ps.certificate.notAfter.getTime() <= nowMs) {
      ps.usable = false;
      ps.session.close();
      return false;
    }
    return true;
  }

  #pick(state: KeyState): PooledSession | undefined {
    const now = Date.now();
    state.sessions = state.sessions.filter((ps) => this.#isUsable(ps, now));
    return state.sessions.find((ps) => ps.active < this.#capacity(ps));
  }

  async #checkout(
    key: string,
    req: HboneConnectRequest,
    expected: readonly string[],
    cert: WorkloadCertificate,
  ): Promise<PooledSession> {
    for (;;) {
      if (this.#closed)
        throw new HboneError('HBONE_ERR_CLOSED', 'the HBONE client is closed; no new tunnels are opened');
      let state = this.#keys.get(key);
      if (!state) {
        state = { sessions: [], creating: undefined };
        this.#keys.set(key, state);
      }
      const ps = this.#pick(state);
      if (ps) {
        // Checked out synchronously with the pick, so concurrent waiters woken together never
        // overshoot the stream cap.
        ps.active++;
        if (ps.idleTimer) {
          clearTimeout(ps.idleTimer);
          ps.idleTimer = undefined;
        }
        return ps;
      }
      if (!state.creating) {
        const st = state;
        const p = this.#createSession(key, req.peer, req.sourceIp, expected, cert).then(
          (created) => {
            st.creating = undefined;
            st.sessions.push(created);
            return created;
          },
          (err: unknown) => {
            st.creating = undefined;
            if (st.sessions.length === 0 && this.#keys.get(key) === st) this.#keys.delete(key);
            throw err;
          },
        );
        // Every waiter may have given up (aborted); the failure must not become an unhandled rejection.
        p.catch(() => undefined);
        st.creating = p;
      }
      await abortable(state.creating ?? Promise.resolve(undefined), req.signal, 'HBONE connect');
    }
  }

  #release(ps: PooledSession): void {
    ps.active--;
    if (ps.active > 0 || !ps.usable) {
      // A session that may not be handed out any more closes once its last stream is gone.
      if (ps.active === 0 && !ps.session.closed) ps.session.close();
      return;
    }
    ps.idleTimer = setTimeout(() => {
      ps.idleTimer = undefined;
      if (ps.active > 0) return;
      ps.usable = false;
      this.#forget(ps);
      ps.session.close();
    }, this.#settings.poolIdleReleaseMs);
    ps.idleTimer.unref();
  }

  #forget(ps: PooledSession): void {
    const state = this.#keys.get(ps.key);
    if (!state) return;
    state.sessions = state.sessions.filter((s) => s !== ps);
    if (state.sessions.length === 0 && !state.creating) this.#keys.delete(ps.key);
  }

  // ---- session establishment ----

  async #createSession(
    key: string,
    peer: { host: string; port: number },
    sourceIp: string | undefined,
    expected: readonly string[],
    cert: WorkloadCertificate,
  ): Promise<PooledSession> {
    const s = this.#settings;
    const label = peerLabel(peer);
    const creds = this.#creds.get(cert);
    const tlsSocket = await this.#handshake(peer, sourceIp, creds, label);

    let verified: VerifiedSvid;
    try {
      if (tlsSocket.alpnProtocol !== HBONE_ALPN) {
        throw new HboneError(
          'HBONE_ERR_TLS',
          `HBONE peer ${label} did not negotiate ALPN "${HBONE_ALPN}" (got ${JSON.stringify(tlsSocket.alpnProtocol)}); it is not an HBONE server`,
        );
      }
      verified = await verifySvid(peerChainDer(tlsSocket), creds.bundle, {
        expectedIdentities: expected,
        usage: 'serverAuth',
        intermediates: creds.intermediatesDer,
        revocation: this.#revocation?.(),
      });
    } catch (err) {
      // Flush our last handshake flight and a close_notify, then close: the peer sees a clean
      // TLS close with no application data (not a byte of HTTP/2 went to it).
      tlsSocket.on('error', () => undefined);
      tlsSocket.destroySoon();
      if (err instanceof HboneError) throw err;
      throw peerCertificateError(
        err,
        `HBONE peer ${label} presented an unacceptable certificate: ${(err as Error).message}`,
      );
    }
    if (this.#closed || tlsSocket.destroyed) {
      tlsSocket.destroy();
      throw new HboneError('HBONE_ERR_CLOSED', 'the HBONE client was closed while connecting');
    }

    // Identity verified: only now does HTTP/2 start on this socket.
    const session = http2.connect(`https://${label}`, {
      createConnection: () => tlsSocket,
      settings: {
        enablePush: false,
        initialWindowSize: s.streamWindowBytes,
        maxFrameSize: s.maxFrameSize,
        maxHeaderListSize: s.clientMaxHeaderListBytes,
      },
      peerMaxConcurrentStreams: s.poolMaxStreamsPerConnection,
      maxReservedRemoteStreams: 0,
      maxSessionMemory: s.maxSessionMemoryMb,
      // maxSessionInvalidFrames / maxSessionRejectedStreams are server-only options in Node.
      maxOutstandingPings: s.maxOutstandingPings,
      maxSettings: s.maxSettings,
      maxHeaderListPairs: s.maxHeaderListPairs,
    });
    const ps: PooledSession = {
      key,
      session,
      peer: verified,
      certificate: cert,
      anchors: creds.bundle.anchors,
      peerLabel: label,
      peerHost: peer.host,
      active: 0,
      usable: true,
      goawayCode: undefined,
      goawayLastStreamId: undefined,
      lastError: undefined,
      idleTimer: undefined,
    };
    session.on('error', (err: Error) => {
      ps.lastError = err;
      ps.usable = false;
    });
    session.on('goaway', (code: number, lastStreamId: number) => {
      ps.usable = false;
      ps.goawayCode = code;
      ps.goawayLastStreamId = lastStreamId;
    });
    session.once('close', () => {
      ps.usable = false;
      if (ps.idleTimer) clearTimeout(ps.idleTimer);
      this.#all.delete(ps);
      this.#forget(ps);
    });
    // A peer that completes TLS but never starts HTTP/2 must not hold the pool key's creation slot
    // (or our streams) forever: its SETTINGS are due within the handshake deadline.
    const settingsTimer = setTimeout(() => {
      const err = new HboneError(
        'HBONE_ERR_HANDSHAKE_TIMEOUT',
        `HBONE peer ${label} sent no HTTP/2 SETTINGS within ${s.handshakeTimeoutMs} ms after the TLS handshake`,
      );
      ps.lastError = err;
      ps.usable = false;
      session.destroy(err);
    }, s.handshakeTimeoutMs);
    settingsTimer.unref();
    session.once('remoteSettings', () => clearTimeout(settingsTimer));
    session.once('close', () => clearTimeout(settingsTimer));
    // The connection window is not a SETTINGS value: raise it with WINDOW_UPDATE (§1.4, B.5).
    setConnectionWindow(session, s.connectionWindowBytes);
    startKeepalive(session, s.pingIntervalMs, s.pingTimeoutMs, (err) => {
      ps.lastError = err;
      ps.usable = false;
    });
    this.#all.add(ps);
    this.#sessionsOpened++;
    return ps;
  }

  /** TCP connect (deadline connectTimeoutMs) then TLS handshake (deadline handshakeTimeoutMs). */
  #handshake(
    peer: { host: string; port: number },
    sourceIp: string | undefined,
    creds: ClientCreds,
    label: string,
  ): Promise<tls.TLSSocket> {
    const s = this.#settings;
    return new Promise((resolve, reject) => {
      let raw: net.Socket;
      try {
        raw = this.#dial(peer, sourceIp);
      } catch (err) {
        reject(
          new HboneError(
            'HBONE_ERR_CONNECT_FAILED',
            `cannot dial HBONE peer ${label}: ${(err as Error).message}`,
            { cause: err },
          ),
        );
        return;
      }
      raw.setNoDelay(true);
      // HTTP/2 has no half-close: a FIN from the peer ends the session. The TLSSocket inherits
      // allowHalfOpen from the socket it wraps, and a socket factory's sockets allow it (for the
      // relay); left on, a peer that died keeps its session in the pool, taking new streams that
      // are never answered, until the PING keepalive gives up.
      raw.allowHalfOpen = false;
      let settled = false;
      let tlsSocket: tls.TLSSocket | undefined;
      let timer: NodeJS.Timeout | undefined;
      const fail = (err: HboneError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        raw.on('error', () => undefined);
        tlsSocket?.on('error', () => undefined);
        tlsSocket?.destroy();
        raw.destroy();
        reject(err);
      };
      const onRawError = (err: Error): void => {
        fail(
          new HboneError(
            'HBONE_ERR_CONNECT_FAILED',
            `cannot connect to HBONE peer ${label}: ${err.message}; check that the destination runs an HBONE listener on that port`,
            { cause: err },
          ),
        );
      };

      const startTls = (): void => {
        if (settled) return;
        clearTimeout(timer);
        raw.off('error', onRawError);
        timer = setTimeout(() => {
          fail(
            new HboneError(
              'HBONE_ERR_HANDSHAKE_TIMEOUT',
              `TLS handshake with HBONE peer ${label} did not complete within ${s.handshakeTimeoutMs} ms`,
            ),
          );
        }, s.handshakeTimeoutMs);
        const sock = tls.connect({
          socket: raw,
          secureContext: creds.secureContext,
          ALPNProtocols: [HBONE_ALPN],
          rejectUnauthorized: true,
          // Identity is decided by verifySvid on the SPIFFE URI SAN, after the handshake; there is
          // no hostname to check and no SNI to send (§1.2).
          checkServerIdentity: () => undefined,
        });
        tlsSocket = sock;
        sock.once('secureConnect', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          sock.off('error', onTlsError);
          // Until the HTTP/2 session owns the socket (which then handles its errors), a late
          // error must not crash the process.
          sock.on('error', () => undefined);
          resolve(sock);
        });
        const onTlsError = (err: Error): void => {
          fail(
            new HboneError('HBONE_ERR_TLS', `TLS handshake with HBONE peer ${label} failed: ${err.message}`, {
              cause: err,
            }),
          );
        };
        sock.on('error', onTlsError);
        sock.once('close', () => {
          fail(
            new HboneError(
              'HBONE_ERR_TLS',
              `HBONE peer ${label} closed the connection during the TLS handshake`,
            ),
          );
        });
      };

      raw.on('error', onRawError);
      if (raw.destroyed) {
        fail(
          new HboneError(
            'HBONE_ERR_CONNECT_FAILED',
            `the socket to HBONE peer ${label} was closed before use`,
          ),
        );
      } else if (raw.pending) {
        timer = setTimeout(() => {
          fail(
            new HboneError(
              'HBONE_ERR_CONNECT_TIMEOUT',
              `connection timed out, maybe a NetworkPolicy is blocking HBONE port 15008 (peer ${label}, no TCP connection after ${s.connectTimeoutMs} ms)`,
            ),
          );
        }, s.connectTimeoutMs);
        raw.once('connect', startTls);
      } else {
        startTls();
      }
    });
  }

  // ---- streams ----

  #openStream(
    ps: PooledSession,
    headers: http2.OutgoingHttpHeaders,
    authority: string,
    signal: AbortSignal | undefined,
  ): Promise<HboneTunnel> {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = ps.session.request(headers, { endStream: false });
    } catch (err) {
      ps.usable = false;
      this.#release(ps);
      return Promise.reject(
        new RetryableError(
          new HboneError(
            'HBONE_ERR_SESSION_CLOSED',
            `HBONE session to ${ps.peerLabel} cannot open streams any more: ${(err as Error).message}`,
            {
              cause: err,
            },
          ),
        ),
      );
    }
    this.#streamsActive++;
    // A stream without an 'error' listener would crash the process on a reset; callers add their own.
    stream.on('error', () => undefined);
    stream.once('close', () => {
      this.#streamsActive--;
      this.#release(ps);
    });

    return new Promise<HboneTunnel>((resolve, reject) => {
      let done = false;
      const finish = (): void => {
        done = true;
        stream.off('response', onResponse);
        stream.off('close', onClose);
        signal?.removeEventListener('abort', onAbort);
      };
      const onResponse = (resHeaders: http2.IncomingHttpHeaders): void => {
        if (done) return;
        finish();
        const status = Number(resHeaders[':status']);
        if (status === 200) {
          resolve({ stream, peer: ps.peer, responseHeaders: resHeaders });
          return;
        }
        stream.close(NGHTTP2_CANCEL);
        reject(statusError(status, ps.peerLabel, authority));
      };
      const onClose = (): void => {
        if (done) return;
        finish();
        // Retry only what the peer provably did not process AND is likely to work elsewhere: a
        // REFUSED_STREAM, or a stream above the last id of a graceful (NO_ERROR) GOAWAY. An error
        // GOAWAY (e.g. INADEQUATE_SECURITY for our certificate) would fail again.
        const id = stream.id;
        const gracefulGoaway = ps.goawayCode === undefined || ps.goawayCode === NGHTTP2_NO_ERROR;
        const refused =
          gracefulGoaway &&
          (stream.rstCode === NGHTTP2_REFUSED_STREAM ||
            (ps.goawayLastStreamId !== undefined && id !== undefined && id > ps.goawayLastStreamId));
        const sessionGone = ps.session.destroyed || ps.session.closed;
        const err = sessionGone
          ? new HboneError(
              // Our own verdicts (ping or SETTINGS timeout) keep their code.
              ps.lastError instanceof HboneError ? ps.lastError.code : 'HBONE_ERR_SESSION_CLOSED',
              `HBONE session to ${ps.peerLabel} closed before CONNECT ${authority} was answered${ps.lastError ? `: ${ps.lastError.message}` : ''}`,
              { cause: ps.lastError },
            )
          : new HboneError(
              'HBONE_ERR_STREAM_RESET',
              `HBONE peer ${ps.peerLabel} reset CONNECT ${authority} (RST_STREAM code ${stream.rstCode})`,
            );
        reject(refused ? new RetryableError(err) : err);
      };
      const onAbort = (): void => {
        if (done || !signal) return;
        finish();
        stream.close(NGHTTP2_CANCEL);
        reject(abortError(signal, `HBONE CONNECT ${authority}`));
      };
      stream.once('response', onResponse);
      stream.once('close', onClose);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** Internal marker: the stream was refused unprocessed and may be retried on another session. */
class RetryableError extends Error {
  readonly error: HboneError;
  constructor(error: HboneError) {
    super(error.message, { cause: error });
    this.error = error;
  }
}

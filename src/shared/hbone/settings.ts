// SPDX-License-Identifier: Apache-2.0
// HBONE transport settings: HTTP/2 flow control and limits, keepalive, pool and timeouts
// (ambient-protocols.md §1.4 "HTTP/2 settings, flow control, keepalive", §1.5 "Connection
// pooling"; security-and-reliability.md §3.1 "Data-plane defaults", §3.5 "Node.js http2/tls
// knobs we must set ourselves"; PERFORMANCE.md B.5). Every value is overridable; the defaults
// are upstream ztunnel's unless a comment says why we differ.
import { HboneError } from './errors.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

export interface HboneSettings {
  /** SETTINGS_INITIAL_WINDOW_SIZE, both sides. ztunnel HTTP2_STREAM_WINDOW_SIZE = 4 MiB (§1.4). */
  streamWindowBytes: number;
  /**
   * Connection-level receive window, raised with session.setLocalWindowSize() on both sides.
   * ztunnel HTTP2_CONNECTION_WINDOW_SIZE = 16 MiB, 4x the stream window "to avoid cross-stream
   * deadlock" (§1.4). PERFORMANCE.md B.5: the windows are what matters most for throughput.
   */
  connectionWindowBytes: number;
  /** SETTINGS_MAX_FRAME_SIZE we accept. ztunnel HTTP2_FRAME_SIZE = 1 MiB (§1.4). */
  maxFrameSize: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE advertised by the client: 16 KiB (§1.4). */
  clientMaxHeaderListBytes: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE advertised by the server: 64 KiB (§1.4, §3.1). */
  serverMaxHeaderListBytes: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS advertised by the server: 200 (§1.4, §3.1). */
  serverMaxConcurrentStreams: number;
  /**
   * Streams per pooled client session before the pool opens another session; the effective cap is
   * min(this, the peer's SETTINGS_MAX_CONCURRENT_STREAMS). ztunnel POOL_MAX_STREAMS_PER_CONNECTION
   * = 100 (§1.5).
   */
  poolMaxStreamsPerConnection: number;
  /** HTTP/2 PING keepalive: first PING after 10 s, then every 10 s (§1.4). */
  pingIntervalMs: number;
  /** Session dropped when a PING gets no PONG within 20 s (§1.4; checklist F.76). */
  pingTimeoutMs: number;
  /**
   * Absolute deadline for the TLS handshake, both sides. ztunnel has none on its accept path
   * (§3.1, "our reading"); checklist F.75 (slowloris) asks for one of at most 10 s.
   */
  handshakeTimeoutMs: number;
  /** Pooled sessions with no streams are released after 5 min (ztunnel POOL_UNUSED_RELEASE_TIMEOUT, §1.5). */
  poolIdleReleaseMs: number;
  /** Client: TCP connect to the peer's HBONE port. ztunnel CONNECTION_TIMEOUT = 10 s (checklist G.87). */
  connectTimeoutMs: number;
  /** Server side: TCP connect to the application (for connectUpstream callers). ztunnel: 10 s (§1.3, §3.1). */
  upstreamConnectTimeoutMs: number;
  /**
   * Node's maxSessionMemory (MB; default 10). Must fit the windows: a busy session with a 16 MiB
   * connection window otherwise hits ENHANCE_YOUR_CALM (PERFORMANCE.md B.5; the prototype used 64).
   */
  maxSessionMemoryMb: number;
  /** Node default 1000; pinned lower (security §3.5): a peer that sends many invalid frames is hostile. */
  maxSessionInvalidFrames: number;
  /** Node default 100, pinned (security §3.5; Rapid Reset, checklist A.11). */
  maxSessionRejectedStreams: number;
  /** Node default 10, pinned (security §3.5; PING abuse, checklist A.17). */
  maxOutstandingPings: number;
  /**
   * Server: a session is dropped (GOAWAY ENHANCE_YOUR_CALM) once this many of its CONNECT streams,
   * and at least half of them, were reset by the client before their response (Rapid Reset,
   * CVE-2023-44487, checklist A.11). Envoy's equivalent defaults to 500 with the same 50 % ratio;
   * a pooled HBONE client rarely cancels a CONNECT, so we are stricter.
   */
  maxPrematureResets: number;
  /** Node default 32, pinned (security §3.5; SETTINGS abuse, checklist A.17). */
  maxSettings: number;
  /**
   * Header fields per header block (Node counts pseudo-headers; minimum 4). Node default 128;
   * a CONNECT carries at most ~8 fields (§1.3), so 64 is generous.
   */
  maxHeaderListPairs: number;
  /** How long a TLS connection that negotiated no ALPN may linger before it is destroyed (Node default 10 s). */
  unknownProtocolTimeoutMs: number;
  /** TCP keepalive idle time on HBONE sockets: 180 s (§1.4). Node cannot set the interval/probe count. */
  tcpKeepAliveInitialDelayMs: number;
  /**
   * Default drain deadline for HboneServer.close(): ztunnel's default drain period of 5 s when no
   * termination grace period is known (security §3.1).
   */
  drainDeadlineMs: number;
}

export const DEFAULT_HBONE_SETTINGS: Readonly<HboneSettings> = Object.freeze({
  streamWindowBytes: 4 * MiB,
  connectionWindowBytes: 16 * MiB,
  maxFrameSize: 1 * MiB,
  clientMaxHeaderListBytes: 16 * KiB,
  serverMaxHeaderListBytes: 64 * KiB,
  serverMaxConcurrentStreams: 200,
  poolMaxStreamsPerConnection: 100,
  pingIntervalMs: 10_000,
  pingTimeoutMs: 20_000,
  handshakeTimeoutMs: 10_000,
  poolIdleReleaseMs: 5 * 60_000,
  connectTimeoutMs: 10_000,
  upstreamConnectTimeoutMs: 10_000,
  maxSessionMemoryMb: 64,
  maxSessionInvalidFrames: 100,
  maxSessionRejectedStreams: 100,
  maxOutstandingPings: 10,
  maxPrematureResets: 100,
  maxSettings: 32,
  maxHeaderListPairs: 64,
  unknownProtocolTimeoutMs: 10_000,
  tcpKeepAliveInitialDelayMs: 180_000,
  drainDeadlineMs: 5_000,
});

/** RFC 9113 §6.5.2 bounds. */
const H2_MAX_WINDOW = 2 ** 31 - 1;
const H2_MIN_FRAME = 16 * KiB;
const H2_MAX_FRAME = 2 ** 24 - 1;
/** setTimeout's limit. */
const MAX_TIMER_MS = 2 ** 31 - 1;

type Rule = readonly [min: number, max: number];
const RULES: { readonly [K in keyof HboneSettings]: Rule } = {
  streamWindowBytes: [65_535, H2_MAX_WINDOW],
  connectionWindowBytes: [65_535, H2_MAX_WINDOW],
  maxFrameSize: [H2_MIN_FRAME, H2_MAX_FRAME],
  clientMaxHeaderListBytes: [1 * KiB, 2 ** 32 - 1],
  serverMaxHeaderListBytes: [1 * KiB, 2 ** 32 - 1],
  serverMaxConcurrentStreams: [1, 2 ** 31 - 1],
  poolMaxStreamsPerConnection: [1, 2 ** 31 - 1],
  pingIntervalMs: [1, MAX_TIMER_MS],
  pingTimeoutMs: [1, MAX_TIMER_MS],
  handshakeTimeoutMs: [1, MAX_TIMER_MS],
  poolIdleReleaseMs: [1, MAX_TIMER_MS],
  connectTimeoutMs: [1, MAX_TIMER_MS],
  upstreamConnectTimeoutMs: [1, MAX_TIMER_MS],
  maxSessionMemoryMb: [1, 4096],
  maxSessionInvalidFrames: [0, 2 ** 32 - 1],
  maxSessionRejectedStreams: [0, 2 ** 32 - 1],
  maxOutstandingPings: [1, 2 ** 32 - 1],
  maxPrematureResets: [1, 2 ** 32 - 1],
  maxSettings: [1, 2 ** 32 - 1],
  maxHeaderListPairs: [4, 2 ** 32 - 1],
  unknownProtocolTimeoutMs: [1, MAX_TIMER_MS],
  tcpKeepAliveInitialDelayMs: [1_000, MAX_TIMER_MS],
  drainDeadlineMs: [0, MAX_TIMER_MS],
};

/**
 * Merges overrides into the defaults and validates every value (integers within the RFC 9113
 * and Node bounds). Throws HBONE_ERR_CONFIG naming the setting, the value and the range.
 */
export function resolveHboneSettings(overrides: Partial<HboneSettings> = {}): Readonly<HboneSettings> {
  const out: HboneSettings = { ...DEFAULT_HBONE_SETTINGS };
  for (const [name, value] of Object.entries(overrides) as [keyof HboneSettings, unknown][]) {
    if (value === undefined) continue;
    if (!(name in RULES)) {
      throw new HboneError(
        'HBONE_ERR_CONFIG',
        `unknown HBONE setting "${name}"; known settings: ${Object.keys(RULES).join(', ')}`,
      );
    }
    out[name] = value as number;
  }
  for (const name of Object.keys(RULES) as (keyof HboneSettings)[]) {
    const [min, max] = RULES[name];
    const v = out[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new HboneError(
        'HBONE_ERR_CONFIG',
        `invalid HBONE setting ${name}=${String(v)}: expected an integer between ${min} and ${max}`,
      );
    }
  }
  if (out.connectionWindowBytes < out.streamWindowBytes) {
    throw new HboneError(
      'HBONE_ERR_CONFIG',
      `invalid HBONE settings: connectionWindowBytes (${out.connectionWindowBytes}) is smaller than streamWindowBytes (${out.streamWindowBytes}); ztunnel uses 4x the stream window to avoid cross-stream deadlock`,
    );
  }
  return Object.freeze(out);
}

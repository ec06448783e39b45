// SPDX-License-Identifier: Apache-2.0
// Byte-exact bidirectional relay between two Duplexes: an application TCP socket and an HBONE
// CONNECT stream (outbound), or a CONNECT stream and the upstream application socket (inbound).
// ambient-protocols.md §1.3 "Stream termination: half-close = END_STREAM, errors = RST_STREAM";
// security-and-reliability.md checklist G.84-G.86, G.90.
//
// Each direction is a pipe-like copy with backpressure: chunks are handed from 'data' to
// write() unchanged (no per-chunk transform or copy), the source is paused once the
// destination holds RELAY_BUFFER_BYTES and resumed on 'drain'. Writes to a plain TCP socket are
// coalesced per event-loop tick (cork, uncork on nextTick): the DATA frames of one TLS read leave
// in one writev and one larger segment instead of a syscall per 16 KiB frame.
//
// Termination, independently per direction:
// * FIN / END_STREAM on one side's readable ends the other side's writable (half-close): the
//   other direction keeps flowing until it ends too. TCP sockets get allowHalfOpen so that a FIN
//   received does not end our sending side.
// * An error, a reset or a close before both directions ended tears down both sides with reset
//   semantics: the HTTP/2 side gets RST_STREAM(CONNECT_ERROR, 0xa) as RFC 9113 §8.5 requires of a
//   CONNECT proxy, the TCP side gets a TCP RST (socket.resetAndDestroy()). We propagate resets on
//   purpose; upstream ztunnel turns an upstream RST into a FIN (istio/ztunnel#1483), which hides
//   aborted transfers from the application (security-and-reliability.md §0 item 9, G.85).
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { HboneError } from './errors.ts';

export interface RelayResult {
  /** Bytes read from `a` and written to `b`. */
  bytesAToB: number;
  /** Bytes read from `b` and written to `a`. */
  bytesBToA: number;
  /** Why the relay ended abnormally (first error seen); absent when both directions ended cleanly. */
  error?: Error;
}

const { NGHTTP2_CONNECT_ERROR, NGHTTP2_NO_ERROR } = http2.constants;

/**
 * Bytes a relay direction may queue in its destination before it pauses the source (upstream
 * ztunnel's largest copy buffer is 256 KiB, PERFORMANCE.md A.2). Streams' own 16 KiB high-water
 * mark would pause after every DATA frame and defeat the coalescing below.
 */
export const RELAY_BUFFER_BYTES = 256 * 1024;

/** True for an HTTP/2 stream (client or server side); http2 does not export the class. */
export function isHttp2Stream(d: Duplex): d is http2.Http2Stream {
  return 'rstCode' in d && 'session' in d && typeof (d as Partial<http2.Http2Stream>).close === 'function';
}

/**
 * Tears a side down with reset semantics: RST_STREAM(CONNECT_ERROR) for an HTTP/2 stream, a TCP
 * RST for a TCP socket, plain destroy for anything else (e.g. a TLS socket).
 */
export function resetDuplex(d: Duplex, cause?: Error): void {
  if (isHttp2Stream(d)) {
    if (!d.closed && !d.destroyed) {
      suppressEndStream(d);
      d.close(NGHTTP2_CONNECT_ERROR);
    }
    return;
  }
  if (d.destroyed) return;
  // After our FIN (end()) libuv refuses the RST close (uv_tcp_close_reset → EINVAL, and Node then
  // never emits 'close'), so a half-closed socket is simply destroyed: any further data from the
  // peer is answered with a RST by the kernel anyway.
  if (d instanceof net.Socket && !d.writableEnded && !d.connecting) {
    try {
      // Throws for non-TCP handles (TLS, pipes); a no-op without a handle.
      d.resetAndDestroy();
    } catch {
      // fall through to destroy
    }
    if (isDestroyed(d)) return;
  }
  d.destroy(cause);
}

/**
 * Node's Http2Stream.close(code) first end()s a stream whose writable side is still open, which
 * queues an empty DATA frame with END_STREAM ahead of the RST_STREAM: the peer sees a clean
 * half-close and only then the reset, and a relay on the other side may already have turned that
 * END_STREAM into a TCP FIN (a reset observed as EOF; checklist G.85). Marking the writable side
 * as ending makes close() skip that end(), so only RST_STREAM goes out. This touches Node's
 * Writable state (`_writableState.ending`, stable across Node 12–24); the relay and netns tests
 * fail if a Node upgrade changes it.
 */
function suppressEndStream(s: http2.Http2Stream): void {
  const ws = (s as unknown as { _writableState?: { ending?: unknown } })._writableState;
  if (ws !== undefined && typeof ws.ending === 'boolean') ws.ending = true;
}

function isDestroyed(d: Duplex): boolean {
  return d.destroyed;
}

function describeStreamClose(s: http2.Http2Stream): string {
  return s.rstCode === NGHTTP2_NO_ERROR
    ? 'the HTTP/2 stream closed before both directions ended'
    : `the HTTP/2 stream was reset (RST_STREAM code ${s.rstCode})`;
}

/**
 * Copies bytes both ways between `a` and `b` until both directions have ended or either side
 * fails. Resolves (never rejects) once both sides have closed, with byte counts and the error
 * that ended the relay, if any.
 */
export function relay(a: Duplex, b: Duplex): Promise<RelayResult> {
  return new Promise((resolve) => {
    const result: RelayResult = { bytesAToB: 0, bytesBToA: 0 };
    let failed = false;
    let closed = 0;

    const fail = (err: Error): void => {
      result.error ??= err;
      if (failed) return;
      failed = true;
      resetDuplex(a, err);
      resetDuplex(b, err);
    };

    const onClose = (d: Duplex): void => {
      const clean =
        d.readableEnded &&
        d.writableFinished &&
        !d.errored &&
        (!isHttp2Stream(d) || d.rstCode === NGHTTP2_NO_ERROR);
      if (!clean && !failed) {
        const err =
          d.errored ??
          (isHttp2Stream(d)
            ? new HboneError('HBONE_ERR_STREAM_RESET', describeStreamClose(d))
            : Object.assign(new Error('the socket closed before both directions ended'), {
                code: 'ECONNRESET',
              }));
        fail(err);
      }
      if (++closed === 2) resolve(result);
    };

    const wire = (src: Duplex, dst: Duplex, count: (n: number) => void): void => {
      // Coalescing: an HTTP/2 stream delivers one chunk per DATA frame (at most 16 KiB), several
      // per TLS read. Writing each to a TCP socket costs one syscall and one small segment; the
      // destination is corked for the rest of the tick so they leave in one writev.
      const coalesce = dst instanceof net.Socket && !(dst instanceof tls.TLSSocket);
      let corked = false;
      const uncork = (): void => {
        corked = false;
        dst.uncork();
      };
      src.on('data', (chunk: Buffer) => {
        count(chunk.length);
        if (coalesce && !corked) {
          corked = true;
          dst.cork();
          process.nextTick(uncork);
        }
        // Paused only when write() also said "full": then 'drain' is sure to follow, whatever the
        // destination's own high-water mark (below RELAY_BUFFER_BYTES, it has said so since).
        if (!dst.write(chunk) && dst.writableLength >= RELAY_BUFFER_BYTES) src.pause();
      });
      dst.on('drain', () => src.resume());
      const propagateEnd = (): void => {
        if (!failed && !dst.writableEnded && !dst.destroyed) dst.end();
      };
      if (isHttp2Stream(src)) {
        // Node's Http2Stream.close(code) sends END_STREAM *then* RST_STREAM when its writable side
        // is open (closeStream() calls end() first), so a reset from a Node peer arrives as
        // "end, then reset". Both frames come in the same read: waiting one event-loop turn lets
        // the RST land first, and the TCP side then gets a RST instead of a FIN.
        src.on('end', () => setImmediate(propagateEnd));
      } else {
        src.on('end', propagateEnd);
      }
      // A source paused explicitly (pause(), or a socket accepted with pauseOnConnect) does not
      // start flowing when a 'data' listener is added.
      src.resume();
    };

    for (const d of [a, b]) {
      // A FIN received must not end our sending side: half-close is per direction.
      (d as Duplex & { allowHalfOpen: boolean }).allowHalfOpen = true;
      d.on('error', fail);
    }
    wire(a, b, (n) => (result.bytesAToB += n));
    wire(b, a, (n) => (result.bytesBToA += n));

    for (const d of [a, b]) {
      if (d.closed || d.destroyed) {
        // Already gone before the relay started: treat like a close now.
        queueMicrotask(() => onClose(d));
      } else {
        d.once('close', () => onClose(d));
        if (d.readableEnded) {
          const other = d === a ? b : a;
          if (!other.writableEnded) other.end();
        }
      }
    }
  });
}

// SPDX-License-Identifier: Apache-2.0
// Large responses written to the call's HTTP/2 stream in slices, each one once the previous one
// has left for the socket, instead of by grpc-js in one piece.
//
// Why. grpc-js writes a message to its HTTP/2 stream in one piece; Node's HTTP/2 session then
// hands everything the peer's flow-control window allows to the TLS socket in one write — 2 MiB
// for a ztunnel (hyper's default stream window) — and the TLS socket keeps a ciphertext buffer
// the size of its largest write for as long as the connection lives: TLSWrap::DoWrite sizes
// the next buffer of its output BIO from the write, and NodeBIO (node's
// src/crypto/crypto_bio.cc) frees an emptied buffer only when it is neither the write head nor
// the one after it, which a buffer that held a whole write always is. One full state to each
// of 100 ztunnels thus left ~1.9 MB per connection, ~190 MB in all, allocated for good
// (heaptrack: NodeBIO::TryAllocateForWrite under Http2Session::SendPendingData), on top of
// grpc-js's framed copy and the serializer's copy of every response, garbage until a late GC.
// Written in SLICE_BYTES slices, every flush — so every connection's TLS buffer — stays near
// one slice, and since the slices are views of the shared body (shared-bodies.ts), no
// per-client copy of a response is made at all.
//
// How. grpc-js has no API for it, so the HTTP/2 stream is taken from where grpc-js (1.14, as
// pinned) keeps it under a server call — the base server call's `stream` — and used only if it
// is one; otherwise `http2StreamOf` answers undefined and the server lets grpc-js write
// (correct, without the bound; the server logs it once). The caller sends the response headers
// through grpc-js first (`sendMetadata`) and serialises the stream's writes (stream-writer.ts),
// so grpc-js's writes and these never interleave on one stream; grpc-js sends the status after
// them. The message gets gRPC's framing: a zero compression flag and a 4-byte big-endian
// length. grpc-js's channelz does not count these messages as sent.
import type { ServerHttp2Stream } from 'node:http2';

/** Bytes per write: a few TLS records; the most a connection's TLS buffer grows to. */
export const SLICE_BYTES = 64 * 1024;

const GRPC_PREFIX_BYTES = 5;

function isHttp2Stream(v: unknown): v is ServerHttp2Stream {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Partial<ServerHttp2Stream>;
  return typeof s.respond === 'function' && typeof s.write === 'function' && 'session' in s;
}

/**
 * The HTTP/2 stream under a grpc-js server call (`ServerDuplexStreamImpl.call.stream` in
 * grpc-js 1.x, when no server interceptor wraps the call), or undefined.
 */
export function http2StreamOf(call: object): ServerHttp2Stream | undefined {
  const base: unknown = (call as { call?: unknown }).call;
  if (typeof base !== 'object' || base === null) return undefined;
  const stream: unknown = (base as { stream?: unknown }).stream;
  return isHttp2Stream(stream) ? stream : undefined;
}

/**
 * Writes one gRPC message made of `parts` (concatenated) to `stream`, SLICE_BYTES at a time,
 * each slice once the previous one has been flushed. `done` runs once: after the last slice,
 * at the first failed write, or when the write finds the stream ended or is aborted (no more
 * slices are written then). Returns the abort function.
 */
export function writePaced(
  stream: ServerHttp2Stream,
  parts: readonly Uint8Array[],
  done: (err?: Error) => void,
): () => void {
  let length = 0;
  for (const p of parts) length += p.byteLength;
  const prefix = Buffer.alloc(GRPC_PREFIX_BYTES);
  prefix.writeUInt32BE(length, 1);
  const slices: Uint8Array[] = [prefix];
  for (const p of parts) {
    for (let at = 0; at < p.byteLength; at += SLICE_BYTES) slices.push(p.subarray(at, at + SLICE_BYTES));
  }
  let next = 0;
  let finished = false;
  const finish = (err?: Error): void => {
    if (finished) return;
    finished = true;
    done(err);
  };
  const writeNext = (err?: Error | null): void => {
    if (finished) return;
    if (err) finish(err);
    // Never write after the end: grpc-js ends the stream with the status, and a write after
    // it would be an 'error' event on the HTTP/2 stream.
    else if (stream.destroyed || stream.writableEnded) {
      finish(new Error('the HTTP/2 stream ended before the response was written'));
    } else {
      const slice = slices[next++];
      if (slice === undefined) finish();
      else stream.write(slice, writeNext);
    }
  };
  writeNext();
  return () => finish(new Error('aborted'));
}

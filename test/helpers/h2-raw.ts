// SPDX-License-Identifier: Apache-2.0
// A raw HTTP/2 client over TLS for attack tests against the HBONE server (port 15008).
//
// It writes arbitrary frames, including malformed ones, and decodes what the server sends back:
// - RFC 9113 §3.4 (connection preface), §4.1 (frame layout: 24-bit length, 8-bit type, 8-bit flags,
//   31-bit stream id), §6 (DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE,
//   CONTINUATION), §7 (error codes);
// - RFC 7541 HPACK: a full decoder (static table Appendix A, dynamic table §2.3/§4, prefix integers
//   §5.1, string literals and the Huffman code of Appendix B §5.2, all representations of §6) and an
//   encoder that emits exactly the representations a test asks for (indexed, literal without /
//   with incremental / never indexing, table size update), so malformed and amplifying blocks can
//   be built on purpose.
// Nothing here is protocol-correct by default beyond what the caller requests: that is the point.
import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';

// ---------------------------------------------------------------------------------------------
// RFC 9113 constants
// ---------------------------------------------------------------------------------------------

/** RFC 9113 §3.4: the client connection preface. */
export const CLIENT_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** RFC 9113 §6 frame types. */
export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

/** RFC 9113 §6 frame flags. */
export const Flag = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

/** RFC 9113 §7 error codes. */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

/** Name of an RFC 9113 error code, for messages ("ENHANCE_YOUR_CALM", or "0x2a" if unknown). */
export function errorCodeName(code: number): string {
  for (const [name, value] of Object.entries(ErrorCode)) if (value === code) return name;
  return `0x${code.toString(16)}`;
}

/** RFC 9113 §6.5.2 setting identifiers. */
export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

// ---------------------------------------------------------------------------------------------
// Frame encoding (RFC 9113 §4.1, §6)
// ---------------------------------------------------------------------------------------------

/**
 * One frame with a 9-octet header. `length` overrides the length field (to lie about it); the
 * stream id is written as given, so the reserved bit can be set by passing a value ≥ 2^31.
 */
export function frame(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array = Buffer.alloc(0),
  length: number = payload.length,
): Buffer {
  const out = Buffer.allocUnsafe(9 + payload.length);
  out.writeUIntBE(length & 0xffffff, 0, 3);
  out.writeUInt8(type & 0xff, 3);
  out.writeUInt8(flags & 0xff, 4);
  out.writeUInt32BE(streamId >>> 0, 5);
  out.set(payload, 9);
  return out;
}

/** SETTINGS (§6.5). Any number of entries, including unknown ids and out-of-range values. */
export function settingsFrame(entries: readonly (readonly [number, number])[] = [], ack = false): Buffer {
  const p = Buffer.allocUnsafe(entries.length * 6);
  entries.forEach(([id, value], i) => {
    p.writeUInt16BE(id & 0xffff, i * 6);
    p.writeUInt32BE(value >>> 0, i * 6 + 2);
  });
  return frame(FrameType.SETTINGS, ack ? Flag.ACK : 0, 0, p);
}

/** HEADERS (§6.2) carrying `block`; END_HEADERS unless `endHeaders: false`. */
export function headersFrame(
  streamId: number,
  block: Uint8Array,
  opts: { endStream?: boolean; endHeaders?: boolean } = {},
): Buffer {
  const flags =
    (opts.endStream === true ? Flag.END_STREAM : 0) | (opts.endHeaders === false ? 0 : Flag.END_HEADERS);
  return frame(FrameType.HEADERS, flags, streamId, block);
}

/**
 * A header block as HEADERS + CONTINUATION frames of at most `maxFrameSize` payload octets each
 * (RFC 9113 §4.3, §6.10), END_HEADERS on the last one.
 */
export function headerBlockFrames(
  streamId: number,
  block: Uint8Array,
  opts: { endStream?: boolean; maxFrameSize?: number } = {},
): Buffer[] {
  const max = opts.maxFrameSize ?? 16384;
  const out: Buffer[] = [];
  for (let off = 0; off === 0 || off < block.length; off += max) {
    const chunk = block.subarray(off, off + max);
    const last = off + max >= block.length;
    out.push(
      off === 0
        ? headersFrame(streamId, chunk, { endStream: opts.endStream === true, endHeaders: last })
        : continuationFrame(streamId, chunk, last),
    );
  }
  return out;
}

/** CONTINUATION (§6.10). */
export function continuationFrame(streamId: number, block: Uint8Array, endHeaders = false): Buffer {
  return frame(FrameType.CONTINUATION, endHeaders ? Flag.END_HEADERS : 0, streamId, block);
}

/** DATA (§6.1). */
export function dataFrame(streamId: number, data: Uint8Array, endStream = false): Buffer {
  return frame(FrameType.DATA, endStream ? Flag.END_STREAM : 0, streamId, data);
}

/** RST_STREAM (§6.4). */
export function rstStreamFrame(streamId: number, errorCode: number = ErrorCode.CANCEL): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(errorCode >>> 0, 0);
  return frame(FrameType.RST_STREAM, 0, streamId, p);
}

/** WINDOW_UPDATE (§6.9). The increment is written as given (0 and values ≥ 2^31 are allowed). */
export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(increment >>> 0, 0);
  return frame(FrameType.WINDOW_UPDATE, 0, streamId, p);
}

/** PING (§6.7) with an 8-octet opaque payload. */
export function pingFrame(data: Uint8Array = Buffer.alloc(8), ack = false): Buffer {
  return frame(FrameType.PING, ack ? Flag.ACK : 0, 0, data);
}

/** GOAWAY (§6.8). */
export function goawayFrame(lastStreamId: number, errorCode: number, debug = ''): Buffer {
  const d = Buffer.from(debug, 'utf8');
  const p = Buffer.allocUnsafe(8 + d.length);
  p.writeUInt32BE(lastStreamId >>> 0, 0);
  p.writeUInt32BE(errorCode >>> 0, 4);
  d.copy(p, 8);
  return frame(FrameType.GOAWAY, 0, 0, p);
}

// ---------------------------------------------------------------------------------------------
// HPACK (RFC 7541)
// ---------------------------------------------------------------------------------------------

/** RFC 7541 Appendix A: the static table, 1-based (index 0 is unused). */
export const HPACK_STATIC_TABLE: readonly (readonly [string, string])[] = [
  ['', ''],
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];

/**
 * RFC 7541 Appendix B: Huffman code lengths for symbols 0..255 and EOS (256). The code is
 * canonical (codes of one length are consecutive, ordered by symbol), so the codes themselves are
 * derived from the lengths below; the unit test checks a sample of them against Appendix B.
 */
const HUFFMAN_LENGTHS: readonly number[] = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28,
  28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7,
  8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19,
  13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13,
  28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21,
  22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23,
  22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25,
  25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const HUFFMAN_EOS = 256;

/** Canonical Huffman codes derived from HUFFMAN_LENGTHS (RFC 7541 Appendix B). */
export const HUFFMAN_CODES: readonly number[] = (() => {
  const order = HUFFMAN_LENGTHS.map((len, sym) => [len, sym] as const).sort(
    (a, b) => a[0] - b[0] || a[1] - b[1],
  );
  const codes = new Array<number>(HUFFMAN_LENGTHS.length).fill(0);
  let code = -1;
  let prevLen = 0;
  for (const [len, sym] of order) {
    code = code < 0 ? 0 : (code + 1) * 2 ** (len - prevLen);
    prevLen = len;
    codes[sym] = code;
  }
  return codes;
})();

interface HuffNode {
  sym: number; // -1 for an inner node
  zero: HuffNode | undefined;
  one: HuffNode | undefined;
}

const HUFFMAN_TREE: HuffNode = (() => {
  const root: HuffNode = { sym: -1, zero: undefined, one: undefined };
  HUFFMAN_LENGTHS.forEach((len, sym) => {
    const code = HUFFMAN_CODES[sym] ?? 0;
    let node = root;
    for (let bit = len - 1; bit >= 0; bit--) {
      const one = Math.floor(code / 2 ** bit) % 2 === 1;
      const next = one ? node.one : node.zero;
      if (next) {
        node = next;
      } else {
        const created: HuffNode = { sym: bit === 0 ? sym : -1, zero: undefined, one: undefined };
        if (one) node.one = created;
        else node.zero = created;
        node = created;
      }
    }
  });
  return root;
})();

/** RFC 7541 §5.2: Huffman-encode octets, padding with the EOS prefix (all ones). */
export function huffmanEncode(input: Uint8Array): Buffer {
  const out: number[] = [];
  let acc = 0; // pending bits, fewer than 8 after each flush
  let nbits = 0;
  for (const byte of input) {
    const len = HUFFMAN_LENGTHS[byte] ?? 0;
    const code = HUFFMAN_CODES[byte] ?? 0;
    for (let bit = len - 1; bit >= 0; bit--) {
      acc = (acc << 1) | (Math.floor(code / 2 ** bit) % 2);
      nbits++;
      if (nbits === 8) {
        out.push(acc);
        acc = 0;
        nbits = 0;
      }
    }
  }
  if (nbits > 0) out.push(((acc << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) & 0xff);
  return Buffer.from(out);
}

/** RFC 7541 §5.2: decode a Huffman string; throws on EOS, bad padding or an incomplete code. */
export function huffmanDecode(input: Uint8Array): Buffer {
  const out: number[] = [];
  let node = HUFFMAN_TREE;
  let depth = 0; // bits consumed in the current (unfinished) code
  let allOnes = true;
  for (const byte of input) {
    for (let bit = 7; bit >= 0; bit--) {
      const one = ((byte >> bit) & 1) === 1;
      const next = one ? node.one : node.zero;
      if (!next) throw new Error('hpack: invalid Huffman code');
      depth++;
      allOnes &&= one;
      if (next.sym >= 0) {
        if (next.sym === HUFFMAN_EOS) throw new Error('hpack: EOS in Huffman string');
        out.push(next.sym);
        node = HUFFMAN_TREE;
        depth = 0;
        allOnes = true;
      } else {
        node = next;
      }
    }
  }
  if (depth > 7 || !allOnes) throw new Error('hpack: invalid Huffman padding');
  return Buffer.from(out);
}

/** RFC 7541 §5.1: a prefix integer; `high` holds the representation bits above the prefix. */
export function hpackInteger(value: number, prefixBits: number, high = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([high | value]);
  const out = [high | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

/** RFC 7541 §5.2: a string literal, Huffman-coded when `huffman` is true. */
export function hpackString(value: string | Uint8Array, huffman = false): Buffer {
  const raw = typeof value === 'string' ? Buffer.from(value, 'latin1') : Buffer.from(value);
  const body = huffman ? huffmanEncode(raw) : raw;
  return Buffer.concat([hpackInteger(body.length, 7, huffman ? 0x80 : 0), body]);
}

/** One HPACK representation (RFC 7541 §6), or a plain [name, value] pair (literal, not indexed). */
export type HpackField =
  | readonly [string, string]
  | { readonly kind: 'indexed'; readonly index: number }
  | {
      readonly kind: 'literal';
      /** A string for a new name, or a table index for an indexed name. */
      readonly name: string | number;
      readonly value: string | Uint8Array;
      /** §6.2.1 incremental (0x40), §6.2.2 none (0x00, default), §6.2.3 never (0x10). */
      readonly indexing?: 'incremental' | 'none' | 'never';
      readonly huffman?: boolean;
    }
  | { readonly kind: 'sizeUpdate'; readonly size: number };

/** Encode a header block exactly as described: no implicit indexing, no reordering, no checks. */
export function hpackEncode(fields: readonly HpackField[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of fields) {
    if (Array.isArray(f)) {
      const [name, value] = f as readonly [string, string];
      parts.push(Buffer.from([0x00]), hpackString(name), hpackString(value));
      continue;
    }
    const rep = f as Exclude<HpackField, readonly [string, string]>;
    switch (rep.kind) {
      case 'indexed':
        parts.push(hpackInteger(rep.index, 7, 0x80));
        break;
      case 'sizeUpdate':
        parts.push(hpackInteger(rep.size, 5, 0x20));
        break;
      case 'literal': {
        const indexing = rep.indexing ?? 'none';
        const [prefix, high] =
          indexing === 'incremental' ? [6, 0x40] : indexing === 'never' ? [4, 0x10] : [4, 0x00];
        if (typeof rep.name === 'number') {
          parts.push(hpackInteger(rep.name, prefix, high));
        } else {
          parts.push(hpackInteger(0, prefix, high), hpackString(rep.name, rep.huffman));
        }
        parts.push(hpackString(rep.value, rep.huffman));
        break;
      }
    }
  }
  return Buffer.concat(parts);
}

/** The header block of an HBONE CONNECT request (`:method CONNECT`, `:authority`), plus extras. */
export function connectBlock(authority: string, extra: readonly HpackField[] = []): Buffer {
  return hpackEncode([[':method', 'CONNECT'], [':authority', authority], ...extra]);
}

/** RFC 7541 decoder: static + dynamic table, all representations, Huffman strings. */
export class HpackDecoder {
  /** Newest entry first (§2.3.3: dynamic indices start at 62 with the newest). */
  #table: [string, string][] = [];
  #size = 0;
  #maxSize: number;
  readonly #protocolMax: number;

  constructor(maxTableSize = 4096) {
    this.#maxSize = maxTableSize;
    this.#protocolMax = maxTableSize;
  }

  get dynamicTableSize(): number {
    return this.#size;
  }

  decode(block: Uint8Array): [string, string][] {
    const buf = Buffer.from(block.buffer, block.byteOffset, block.byteLength);
    const out: [string, string][] = [];
    let pos = 0;
    const int = (prefixBits: number): number => {
      const first = buf[pos++];
      if (first === undefined) throw new Error('hpack: truncated integer');
      const max = (1 << prefixBits) - 1;
      let value = first & max;
      if (value < max) return value;
      let shift = 0;
      for (;;) {
        const b = buf[pos++];
        if (b === undefined) throw new Error('hpack: truncated integer');
        value += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if (value > 0xffffffff) throw new Error('hpack: integer overflow');
        if ((b & 0x80) === 0) return value;
      }
    };
    const str = (): string => {
      const huffman = ((buf[pos] ?? 0) & 0x80) !== 0;
      const len = int(7);
      if (pos + len > buf.length) throw new Error('hpack: truncated string');
      const raw = buf.subarray(pos, pos + len);
      pos += len;
      return (huffman ? huffmanDecode(raw) : raw).toString('latin1');
    };
    const lookup = (index: number): readonly [string, string] => {
      if (index === 0) throw new Error('hpack: index 0');
      const entry =
        index < HPACK_STATIC_TABLE.length
          ? HPACK_STATIC_TABLE[index]
          : this.#table[index - HPACK_STATIC_TABLE.length];
      if (!entry) throw new Error(`hpack: index ${index} out of range`);
      return entry;
    };
    while (pos < buf.length) {
      const b = buf[pos] ?? 0;
      if (b & 0x80) {
        const [name, value] = lookup(int(7));
        out.push([name, value]);
      } else if (b & 0x40) {
        const idx = int(6);
        const name = idx === 0 ? str() : lookup(idx)[0];
        const value = str();
        out.push([name, value]);
        this.#insert(name, value);
      } else if (b & 0x20) {
        const size = int(5);
        if (size > this.#protocolMax) throw new Error('hpack: table size update above the limit');
        this.#maxSize = size;
        this.#evict();
      } else {
        const idx = int(4); // 0x00 (without indexing) and 0x10 (never indexed) share the layout
        const name = idx === 0 ? str() : lookup(idx)[0];
        out.push([name, str()]);
      }
    }
    return out;
  }

  #insert(name: string, value: string): void {
    const size = name.length + value.length + 32; // §4.1 (latin1: one char per octet)
    this.#table.unshift([name, value]);
    this.#size += size;
    this.#evict();
  }

  #evict(): void {
    while (this.#size > this.#maxSize) {
      const last = this.#table.pop();
      if (!last) break;
      this.#size -= last[0].length + last[1].length + 32;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Incoming frames
// ---------------------------------------------------------------------------------------------

/** A frame received from the server, decoded. HEADERS is reported once its block is complete. */
export type InFrame =
  | { type: 'DATA'; streamId: number; length: number; endStream: boolean; data: Buffer }
  | { type: 'HEADERS'; streamId: number; endStream: boolean; headers: [string, string][] }
  | { type: 'RST_STREAM'; streamId: number; errorCode: number }
  | { type: 'SETTINGS'; ack: boolean; settings: [number, number][] }
  | { type: 'PING'; ack: boolean; data: Buffer }
  | { type: 'GOAWAY'; lastStreamId: number; errorCode: number; debug: string }
  | { type: 'WINDOW_UPDATE'; streamId: number; increment: number }
  | { type: 'OTHER'; frameType: number; streamId: number; flags: number; length: number }
  | { type: 'UNDECODABLE'; reason: string };

/** Stream-level outcome of a request, as the client observed it. */
export type StreamOutcome =
  | { kind: 'status'; status: number; headers: [string, string][] }
  | { kind: 'rst'; errorCode: number }
  | { kind: 'goaway'; errorCode: number; lastStreamId: number }
  | { kind: 'closed' }
  | { kind: 'timeout' };

export interface RawH2ConnectOptions {
  port: number;
  host?: string;
  /** PEM private key of the client certificate (omit to present no certificate). */
  key?: string;
  /** PEM client certificate chain (leaf first). */
  cert?: string | readonly string[];
  /** PEM roots that verify the server; without it the server certificate is not verified. */
  ca?: string | readonly string[];
  /** ALPN protocols to offer; `null` sends no ALPN extension. Default `['h2']`. */
  alpn?: string[] | null;
  servername?: string;
  /** Send the client preface + SETTINGS right after the handshake. Default true. */
  preface?: boolean;
  /** SETTINGS entries sent with the preface. Default: ENABLE_PUSH=0. */
  settings?: readonly (readonly [number, number])[];
  /** ACK the server's SETTINGS and answer its PINGs, like a normal client. Default true. */
  autoAck?: boolean;
  /** Deadline for TCP + TLS, in ms. Default 5000. */
  timeoutMs?: number;
}

/** What a TLS handshake attempt led to (for ALPN and client-certificate tests). */
export interface TlsProbeResult {
  /** The client's handshake finished (in TLS 1.3 the server may still reject the certificate after this). */
  secureConnect: boolean;
  alpn: string | false | null;
  /** The socket stayed open and usable for `observeMs` after the handshake. */
  stillOpen: boolean;
  /** Error code seen on the socket, e.g. ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED, ECONNRESET. */
  errorCode: string | undefined;
  /** Bytes received from the server after the handshake. */
  bytesReceived: number;
  /** The first 4 KiB received after the handshake. */
  received: Buffer;
  /** Milliseconds from start to close (undefined if still open). */
  closedAfterMs: number | undefined;
}

function errCode(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return err instanceof Error ? err.message : String(err);
}

function tlsOptions(opts: RawH2ConnectOptions, socket: net.Socket): tls.ConnectionOptions {
  const o: tls.ConnectionOptions = {
    socket,
    checkServerIdentity: () => undefined,
    rejectUnauthorized: opts.ca !== undefined,
  };
  if (opts.ca !== undefined) o.ca = typeof opts.ca === 'string' ? opts.ca : [...opts.ca];
  if (opts.key !== undefined) o.key = opts.key;
  if (opts.cert !== undefined) o.cert = typeof opts.cert === 'string' ? opts.cert : opts.cert.join('\n');
  if (opts.alpn !== null) o.ALPNProtocols = opts.alpn ?? ['h2'];
  if (opts.servername !== undefined) o.servername = opts.servername;
  return o;
}

/**
 * Try a TLS handshake and watch the connection for `observeMs` afterwards (TLS 1.3 servers reject
 * a client certificate after the client has finished). With `sendPreface`, the h2 preface is
 * written once secure so a server that accepts the connection answers with SETTINGS.
 */
export async function probeTls(
  opts: RawH2ConnectOptions & { observeMs?: number; sendPreface?: boolean; send?: Uint8Array },
): Promise<TlsProbeResult> {
  const started = performance.now();
  const tcp = net.connect({ host: opts.host ?? '127.0.0.1', port: opts.port });
  tcp.on('error', () => undefined);
  const sock = tls.connect(tlsOptions(opts, tcp));
  const res: TlsProbeResult = {
    secureConnect: false,
    alpn: null,
    stillOpen: false,
    errorCode: undefined,
    bytesReceived: 0,
    received: Buffer.alloc(0),
    closedAfterMs: undefined,
  };
  return new Promise<TlsProbeResult>((resolve) => {
    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(hard);
      if (res.closedAfterMs === undefined && res.secureConnect) res.stillOpen = true;
      sock.destroy();
      tcp.destroy();
      resolve(res);
    };
    const hard = setTimeout(finish, (opts.timeoutMs ?? 5000) + (opts.observeMs ?? 500));
    sock.on('error', (err) => {
      res.errorCode ??= errCode(err);
    });
    sock.on('data', (d: Buffer) => {
      res.bytesReceived += d.length;
      if (res.received.length < 4096) res.received = Buffer.concat([res.received, d]).subarray(0, 4096);
    });
    sock.on('close', () => {
      res.closedAfterMs = performance.now() - started;
      finish();
    });
    sock.on('secureConnect', () => {
      res.secureConnect = true;
      res.alpn = sock.alpnProtocol;
      if (opts.sendPreface === true) sock.write(Buffer.concat([CLIENT_PREFACE, settingsFrame()]));
      if (opts.send) sock.write(opts.send);
      setTimeout(finish, opts.observeMs ?? 500);
    });
  });
}

/** What a plaintext TCP connection to the TLS port led to (B.20, the h2c preface of A.18). */
export interface TcpProbeResult {
  /** The server closed (or reset) the connection within `observeMs`. */
  closed: boolean;
  closedAfterMs: number | undefined;
  errorCode: string | undefined;
  /** The first 4 KiB the server sent. */
  received: Buffer;
}

/** Connect over plain TCP, write `send`, and watch for up to `observeMs`. */
export async function probeTcp(opts: {
  port: number;
  host?: string;
  send: Uint8Array;
  observeMs: number;
}): Promise<TcpProbeResult> {
  const started = performance.now();
  const sock = net.connect({ host: opts.host ?? '127.0.0.1', port: opts.port });
  const res: TcpProbeResult = {
    closed: false,
    closedAfterMs: undefined,
    errorCode: undefined,
    received: Buffer.alloc(0),
  };
  return new Promise<TcpProbeResult>((resolve) => {
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(res);
    }, opts.observeMs);
    sock.on('connect', () => sock.write(opts.send));
    sock.on('error', (err) => {
      res.errorCode ??= errCode(err);
    });
    sock.on('data', (d: Buffer) => {
      if (res.received.length < 4096) res.received = Buffer.concat([res.received, d]).subarray(0, 4096);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      res.closed = true;
      res.closedAfterMs = performance.now() - started;
      resolve(res);
    });
  });
}

/** A raw HTTP/2 client connection over TLS. */
export class RawH2Client {
  readonly socket: tls.TLSSocket;
  /** The underlying TCP socket (for an abrupt RST with `resetTcp`). */
  readonly tcp: net.Socket;
  /** Every frame received so far, in order. */
  readonly frames: InFrame[] = [];
  readonly decoder = new HpackDecoder();
  closed = false;
  /** performance.now() when the socket closed. */
  closedAt: number | undefined;
  /** The first error seen on the socket. */
  error: string | undefined;
  bytesSent = 0;
  bytesReceived = 0;
  readonly #autoAck: boolean;
  #inbuf: Buffer = Buffer.alloc(0);
  #pendingHeaders: { streamId: number; endStream: boolean; chunks: Buffer[] } | undefined;
  #waiters = new Set<() => void>();
  #reset = false;

  private constructor(socket: tls.TLSSocket, tcp: net.Socket, autoAck: boolean) {
    this.socket = socket;
    this.tcp = tcp;
    this.#autoAck = autoAck;
    socket.on('data', (chunk: Buffer) => {
      this.bytesReceived += chunk.length;
      this.#onData(chunk);
    });
    socket.on('error', (err) => {
      this.error ??= errCode(err);
    });
    socket.on('close', () => {
      this.closed = true;
      this.closedAt = performance.now();
      this.#notify();
    });
  }

  /** Connect over TLS; rejects if TCP or TLS fails or takes longer than `timeoutMs`. */
  static async connect(opts: RawH2ConnectOptions): Promise<RawH2Client> {
    const tcp = net.connect({ host: opts.host ?? '127.0.0.1', port: opts.port });
    tcp.on('error', () => undefined);
    const sock = tls.connect(tlsOptions(opts, tcp));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        sock.destroy();
        tcp.destroy();
        reject(new Error('h2-raw: TLS handshake timed out'));
      }, opts.timeoutMs ?? 5000);
      const fail = (err: unknown): void => {
        clearTimeout(timer);
        sock.destroy();
        tcp.destroy();
        reject(err instanceof Error ? err : new Error(String(err)));
      };
      sock.once('error', fail);
      sock.once('close', () => fail(new Error('h2-raw: closed during the TLS handshake')));
      sock.once('secureConnect', () => {
        clearTimeout(timer);
        sock.removeListener('error', fail);
        sock.removeAllListeners('close');
        resolve();
      });
    });
    const client = new RawH2Client(sock, tcp, opts.autoAck ?? true);
    if (opts.preface ?? true) {
      client.send(CLIENT_PREFACE, settingsFrame(opts.settings ?? [[Setting.ENABLE_PUSH, 0]]));
    }
    return client;
  }

  get alpn(): string | false | null {
    return this.socket.alpnProtocol;
  }

  /** Write frames (or raw bytes). Returns false once the socket is closed or buffer is full. */
  send(...chunks: Uint8Array[]): boolean {
    if (this.closed || this.#reset || this.socket.destroyed || !this.socket.writable) return false;
    const buf = chunks.length === 1 && chunks[0] ? chunks[0] : Buffer.concat(chunks);
    this.bytesSent += buf.length;
    return this.socket.write(buf);
  }

  /** Resolves when the write buffer drained or the socket closed. */
  async drained(): Promise<void> {
    if (this.closed || this.socket.writableLength === 0) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.socket.removeListener('drain', done);
        this.#waiters.delete(done);
        resolve();
      };
      this.socket.once('drain', done);
      this.#waiters.add(() => {
        if (this.closed) done();
      });
    });
  }

  /** Write with backpressure: waits for drain when the kernel buffer is full. False once closed. */
  async sendPaced(...chunks: Uint8Array[]): Promise<boolean> {
    if (!this.send(...chunks)) {
      if (this.closed) return false;
      await this.drained();
    }
    return !this.closed;
  }

  /**
   * The first frame (at index ≥ `from`) matching `pred`, waiting up to `timeoutMs`. Undefined on
   * timeout, or when the socket closed without such a frame.
   */
  async waitFor<F extends InFrame>(
    pred: (f: InFrame) => f is F,
    timeoutMs: number,
    from = 0,
  ): Promise<F | undefined> {
    const scan = (): F | undefined => {
      for (let i = from; i < this.frames.length; i++) {
        const f = this.frames[i];
        if (f && pred(f)) return f;
      }
      return undefined;
    };
    const now = scan();
    if (now || this.closed) return now;
    return new Promise<F | undefined>((resolve) => {
      const check = (): void => {
        const f = scan();
        if (f || this.closed) {
          clearTimeout(timer);
          this.#waiters.delete(check);
          resolve(f);
        }
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        resolve(undefined);
      }, timeoutMs);
      this.#waiters.add(check);
    });
  }

  /** True if the socket closed within `timeoutMs`. */
  async waitForClose(timeoutMs: number): Promise<boolean> {
    if (this.closed) return true;
    return new Promise<boolean>((resolve) => {
      const check = (): void => {
        if (this.closed) {
          clearTimeout(timer);
          this.#waiters.delete(check);
          resolve(true);
        }
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        resolve(false);
      }, timeoutMs);
      this.#waiters.add(check);
    });
  }

  /** The first GOAWAY received, if any. */
  goaway(): Extract<InFrame, { type: 'GOAWAY' }> | undefined {
    return this.frames.find((f): f is Extract<InFrame, { type: 'GOAWAY' }> => f.type === 'GOAWAY');
  }

  /** RST_STREAM frames received, by stream. */
  resets(): Extract<InFrame, { type: 'RST_STREAM' }>[] {
    return this.frames.filter((f): f is Extract<InFrame, { type: 'RST_STREAM' }> => f.type === 'RST_STREAM');
  }

  /** Response HEADERS with a :status, by stream. */
  responses(): Extract<InFrame, { type: 'HEADERS' }>[] {
    return this.frames.filter(
      (f): f is Extract<InFrame, { type: 'HEADERS' }> =>
        f.type === 'HEADERS' && f.headers.some(([n]) => n === ':status'),
    );
  }

  /** How stream `streamId` ended: a :status, its RST_STREAM, a GOAWAY, a close, or a timeout. */
  async outcome(streamId: number, timeoutMs: number): Promise<StreamOutcome> {
    const f = await this.waitFor(
      (x): x is Extract<InFrame, { type: 'HEADERS' | 'RST_STREAM' | 'GOAWAY' }> =>
        ((x.type === 'HEADERS' || x.type === 'RST_STREAM') && x.streamId === streamId) || x.type === 'GOAWAY',
      timeoutMs,
    );
    if (!f) return this.closed ? { kind: 'closed' } : { kind: 'timeout' };
    switch (f.type) {
      case 'HEADERS': {
        const status = f.headers.find(([n]) => n === ':status')?.[1];
        return { kind: 'status', status: Number(status ?? NaN), headers: f.headers };
      }
      case 'RST_STREAM':
        return { kind: 'rst', errorCode: f.errorCode };
      case 'GOAWAY':
        return { kind: 'goaway', errorCode: f.errorCode, lastStreamId: f.lastStreamId };
    }
  }

  /** Close politely (FIN after pending writes). */
  end(): void {
    this.socket.end();
  }

  /** Close at once. */
  destroy(): void {
    if (this.#reset) return; // see resetTcp
    this.socket.destroy();
    this.tcp.destroy();
  }

  /**
   * Abort the TCP connection with an RST (SO_LINGER 0), mid-whatever. The TLS socket then closes by
   * itself; it must not be destroyed as well: on Node 24.21, `resetAndDestroy()` on the socket under
   * a `tls.connect({ socket })` followed by `TLSSocket.destroy()` crashes the process with SIGSEGV.
   */
  resetTcp(): void {
    if (this.#reset || this.closed) return;
    this.#reset = true;
    this.tcp.resetAndDestroy();
  }

  #notify(): void {
    for (const w of [...this.#waiters]) w();
  }

  #onData(chunk: Buffer): void {
    this.#inbuf = this.#inbuf.length === 0 ? chunk : Buffer.concat([this.#inbuf, chunk]);
    let added = false;
    while (this.#inbuf.length >= 9) {
      const len = this.#inbuf.readUIntBE(0, 3);
      if (this.#inbuf.length < 9 + len) break;
      const type = this.#inbuf.readUInt8(3);
      const flags = this.#inbuf.readUInt8(4);
      const streamId = this.#inbuf.readUInt32BE(5) & 0x7fffffff;
      const payload = this.#inbuf.subarray(9, 9 + len);
      this.#inbuf = this.#inbuf.subarray(9 + len);
      try {
        const f = this.#decodeFrame(type, flags, streamId, payload);
        if (f) {
          this.frames.push(f);
          added = true;
        }
      } catch (err) {
        this.frames.push({ type: 'UNDECODABLE', reason: err instanceof Error ? err.message : String(err) });
        added = true;
      }
    }
    if (added) this.#notify();
  }

  #decodeFrame(type: number, flags: number, streamId: number, p: Buffer): InFrame | undefined {
    switch (type) {
      case FrameType.DATA: {
        const padded = (flags & Flag.PADDED) !== 0;
        const data = Buffer.from(p.subarray(padded ? 1 : 0, p.length - (padded ? (p[0] ?? 0) : 0)));
        return {
          type: 'DATA',
          streamId,
          length: data.length,
          endStream: (flags & Flag.END_STREAM) !== 0,
          data,
        };
      }
      case FrameType.HEADERS: {
        let start = 0;
        let end = p.length;
        if (flags & Flag.PADDED) {
          end -= p[0] ?? 0;
          start = 1;
        }
        if (flags & Flag.PRIORITY) start += 5;
        this.#pendingHeaders = {
          streamId,
          endStream: (flags & Flag.END_STREAM) !== 0,
          chunks: [Buffer.from(p.subarray(start, end))],
        };
        return flags & Flag.END_HEADERS ? this.#finishHeaders() : undefined;
      }
      case FrameType.CONTINUATION: {
        if (this.#pendingHeaders?.streamId !== streamId) throw new Error('unexpected CONTINUATION');
        this.#pendingHeaders.chunks.push(Buffer.from(p));
        return flags & Flag.END_HEADERS ? this.#finishHeaders() : undefined;
      }
      case FrameType.RST_STREAM:
        return { type: 'RST_STREAM', streamId, errorCode: p.readUInt32BE(0) };
      case FrameType.SETTINGS: {
        const ack = (flags & Flag.ACK) !== 0;
        const settings: [number, number][] = [];
        for (let i = 0; i + 6 <= p.length; i += 6) settings.push([p.readUInt16BE(i), p.readUInt32BE(i + 2)]);
        if (!ack && this.#autoAck) this.send(settingsFrame([], true));
        return { type: 'SETTINGS', ack, settings };
      }
      case FrameType.PING: {
        const ack = (flags & Flag.ACK) !== 0;
        const data = Buffer.from(p);
        if (!ack && this.#autoAck) this.send(pingFrame(data, true));
        return { type: 'PING', ack, data };
      }
      case FrameType.GOAWAY:
        return {
          type: 'GOAWAY',
          lastStreamId: p.readUInt32BE(0) & 0x7fffffff,
          errorCode: p.readUInt32BE(4),
          debug: p.subarray(8).toString('utf8'),
        };
      case FrameType.WINDOW_UPDATE:
        return { type: 'WINDOW_UPDATE', streamId, increment: p.readUInt32BE(0) & 0x7fffffff };
      default:
        return { type: 'OTHER', frameType: type, streamId, flags, length: p.length };
    }
  }

  #finishHeaders(): InFrame {
    const h = this.#pendingHeaders;
    this.#pendingHeaders = undefined;
    if (!h) throw new Error('no header block in progress');
    return {
      type: 'HEADERS',
      streamId: h.streamId,
      endStream: h.endStream,
      headers: this.decoder.decode(Buffer.concat(h.chunks)),
    };
  }
}

// SPDX-License-Identifier: Apache-2.0
// A small, strict DER reader (ITU-T X.690 §8 and §10 (DER restrictions)): just enough to walk
// X.509 certificates (RFC 5280 §4.1) and the extensions the SVID verifier needs. We read the
// bytes ourselves rather than trusting any string rendering of a certificate, because Node's
// `subjectaltname` string was injectable (CVE-2021-44532, security-and-reliability.md §1.5).
//
// Strictness: definite lengths only, minimal length encodings, no high tag numbers, no trailing
// bytes where a structure must end. Anything else is an error, never a best-effort guess.

export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DerError';
  }
}

/** Universal and context tag bytes used by X.509. */
export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Context-specific tag byte: [n] primitive (0x80|n) or constructed (0xa0|n). */
export function contextTag(n: number, constructed: boolean): number {
  return (constructed ? 0xa0 : 0x80) | n;
}

export interface Tlv {
  /** The identifier octet (class, constructed bit, tag number < 31). */
  readonly tag: number;
  /** Contents octets. */
  readonly value: Uint8Array;
  /** The whole encoding: identifier, length and contents. */
  readonly raw: Uint8Array;
}

/** Reads one TLV at `offset` of `buf`; returns it and the offset just after it. */
export function readTlv(buf: Uint8Array, offset: number): { tlv: Tlv; next: number } {
  if (offset >= buf.length) throw new DerError('unexpected end of data (expected a tag)');
  const tag = buf[offset] ?? 0;
  if ((tag & 0x1f) === 0x1f) throw new DerError('high tag numbers are not used in X.509');
  let p = offset + 1;
  if (p >= buf.length) throw new DerError('unexpected end of data (expected a length)');
  const first = buf[p++] ?? 0;
  let len: number;
  if (first < 0x80) {
    len = first;
  } else if (first === 0x80) {
    throw new DerError('indefinite length is not allowed in DER');
  } else {
    const n = first & 0x7f;
    if (n > 4) throw new DerError('length field too large');
    if (p + n > buf.length) throw new DerError('unexpected end of data in a length field');
    if (buf[p] === 0) throw new DerError('non-minimal length encoding');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[p + i] ?? 0);
    p += n;
    if (len < 0x80) throw new DerError('non-minimal length encoding');
  }
  const end = p + len;
  if (end > buf.length) throw new DerError('length runs past the end of the data');
  return {
    tlv: { tag, value: buf.subarray(p, end), raw: buf.subarray(offset, end) },
    next: end,
  };
}

/** Reads exactly one TLV that must span all of `buf`, with the given tag. */
export function readOnly(buf: Uint8Array, tag: number, what: string): Tlv {
  const { tlv, next } = readTlv(buf, 0);
  if (next !== buf.length) throw new DerError(`trailing bytes after ${what}`);
  expectTag(tlv, tag, what);
  return tlv;
}

/** Splits the contents of a constructed value into its child TLVs. */
export function children(value: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  let p = 0;
  while (p < value.length) {
    const { tlv, next } = readTlv(value, p);
    out.push(tlv);
    p = next;
  }
  return out;
}

export function expectTag(tlv: Tlv | undefined, tag: number, what: string): Tlv {
  if (!tlv) throw new DerError(`missing ${what}`);
  if (tlv.tag !== tag) {
    throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${tlv.tag.toString(16)}`);
  }
  return tlv;
}

export function decodeOid(value: Uint8Array): string {
  if (value.length === 0) throw new DerError('empty OBJECT IDENTIFIER');
  const arcs: number[] = [];
  let acc = 0;
  let started = false;
  for (let i = 0; i < value.length; i++) {
    const b = value[i] ?? 0;
    if (!started && b === 0x80) throw new DerError('non-minimal OBJECT IDENTIFIER arc');
    started = true;
    acc = acc * 128 + (b & 0x7f);
    if (acc > Number.MAX_SAFE_INTEGER / 128) throw new DerError('OBJECT IDENTIFIER arc too large');
    if ((b & 0x80) === 0) {
      arcs.push(acc);
      acc = 0;
      started = false;
    } else if (i === value.length - 1) {
      throw new DerError('truncated OBJECT IDENTIFIER');
    }
  }
  const firstArc = arcs[0] ?? 0;
  const head = firstArc < 40 ? [0, firstArc] : firstArc < 80 ? [1, firstArc - 40] : [2, firstArc - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

export function decodeBoolean(tlv: Tlv): boolean {
  expectTag(tlv, TAG.BOOLEAN, 'BOOLEAN');
  if (tlv.value.length !== 1) throw new DerError('BOOLEAN must be one byte');
  const b = tlv.value[0];
  if (b === 0x00) return false;
  if (b === 0xff) return true;
  throw new DerError('BOOLEAN must be 0x00 or 0xFF in DER');
}

/** Decodes a non-negative INTEGER that fits a JS number (path lengths and the like). */
export function decodeSmallUint(tlv: Tlv, what: string): number {
  expectTag(tlv, TAG.INTEGER, what);
  const v = tlv.value;
  if (v.length === 0) throw new DerError(`${what}: empty INTEGER`);
  if ((v[0] ?? 0) & 0x80) throw new DerError(`${what}: negative`);
  if (v.length > 1 && v[0] === 0 && ((v[1] ?? 0) & 0x80) === 0) {
    throw new DerError(`${what}: non-minimal INTEGER`);
  }
  if (v.length > 6) throw new DerError(`${what}: too large`);
  let n = 0;
  for (const b of v) n = n * 256 + b;
  return n;
}

/** Returns the bits of a BIT STRING as bytes plus the number of unused trailing bits. */
export function decodeBitString(tlv: Tlv, what: string): { bytes: Uint8Array; unusedBits: number } {
  expectTag(tlv, TAG.BIT_STRING, what);
  if (tlv.value.length === 0) throw new DerError(`${what}: empty BIT STRING`);
  const unusedBits = tlv.value[0] ?? 0;
  if (unusedBits > 7 || (tlv.value.length === 1 && unusedBits !== 0)) {
    throw new DerError(`${what}: bad unused-bits count`);
  }
  return { bytes: tlv.value.subarray(1), unusedBits };
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

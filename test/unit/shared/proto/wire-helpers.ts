// SPDX-License-Identifier: Apache-2.0
// Wire-level helpers for the generated-protobuf tests: hex dumps, the field numbers present at the
// top level of an encoded message, and appending fields an older schema does not know.
// Independent of the generated code: built on @bufbuild/protobuf's wire reader/writer only.
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export function fromHex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}

/** Field numbers at the top level of an encoded message, in wire order (repeats included). */
export function topLevelFields(bytes: Uint8Array): number[] {
  const reader = new BinaryReader(bytes);
  const out: number[] = [];
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    out.push(fieldNo);
    reader.skip(wireType, fieldNo);
  }
  return out;
}

/** The distinct top-level field numbers, sorted. */
export function fieldSet(bytes: Uint8Array): number[] {
  return [...new Set(topLevelFields(bytes))].sort((a, b) => a - b);
}

/** Integers from..to inclusive, minus the excluded ones. */
export function range(from: number, to: number, exclude: readonly number[] = []): number[] {
  const out: number[] = [];
  for (let i = from; i <= to; i++) if (!exclude.includes(i)) out.push(i);
  return out;
}

/**
 * The message bytes followed by one unknown field of each wire type a proto3 peer can send
 * (varint, 64-bit, length-delimited holding a nested message, 32-bit), on field numbers no
 * message of ours uses. A newer peer's extra fields look exactly like this.
 */
export function withUnknownFields(bytes: Uint8Array): Uint8Array {
  const w = new BinaryWriter();
  w.raw(bytes);
  w.tag(1000, WireType.Varint).uint64(123456789012n);
  w.tag(1001, WireType.Bit64).fixed64(42n);
  w.tag(1002, WireType.LengthDelimited).bytes(new BinaryWriter().tag(1, WireType.Varint).int32(7).finish());
  w.tag(1003, WireType.Bit32).fixed32(0xdeadbeef);
  return w.finish();
}

// SPDX-License-Identifier: Apache-2.0
// IP addresses and CIDRs from Kubernetes and policy text to the raw bytes WDS carries
// (`bytes` fields: 4 bytes for IPv4, 16 for IPv6; spec ambient-protocols §3.5, §3.6).
//
// The grammar is strict, matching ztunnel's (ztunnel/src/state/ip.ts): no IPv6 zone ids, no
// leading-zero IPv4 octets (which some parsers read as octal), no brackets or whitespace. Text
// that is not an address is refused rather than guessed at; callers decide what refusal means
// (for a policy, failing closed).

export interface Cidr {
  /** 4 or 16 bytes, network order, host bits as written. */
  readonly address: Uint8Array;
  /** Prefix length: 0–32 or 0–128; a bare address has the full length. */
  readonly length: number;
}

const IPV4_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

function ipv4(s: string): number[] | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!IPV4_OCTET.test(p) || Number(p) > 255) return undefined;
    out.push(Number(p));
  }
  return out;
}

/** 16-bit groups of one side of an IPv6 address; the last may be an embedded IPv4 address. */
function ipv6Groups(text: string, allowV4Tail: boolean): number[] | undefined {
  if (text === '') return [];
  const parts = text.split(':');
  const out: number[] = [];
  for (const [i, p] of parts.entries()) {
    if (allowV4Tail && i === parts.length - 1 && p.includes('.')) {
      const v4 = ipv4(p);
      if (v4 === undefined) return undefined;
      const [a = 0, b = 0, c = 0, d = 0] = v4;
      out.push((a << 8) | b, (c << 8) | d);
    } else if (IPV6_GROUP.test(p)) {
      out.push(parseInt(p, 16));
    } else {
      return undefined;
    }
  }
  return out;
}

function ipv6(s: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  const halves = s.split('::');
  let groups: number[];
  if (halves.length === 2) {
    const head = ipv6Groups(halves[0] ?? '', false);
    const tail = ipv6Groups(halves[1] ?? '', true);
    // "::" stands for at least one zero group.
    if (head === undefined || tail === undefined || head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else if (halves.length === 1) {
    const all = ipv6Groups(s, true);
    if (all?.length !== 8) return undefined;
    groups = all;
  } else {
    return undefined;
  }
  const bytes = new Uint8Array(16);
  for (const [i, g] of groups.entries()) {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  }
  return bytes;
}

/** The raw bytes of an IPv4 or IPv6 address, or undefined when `s` is not one. */
export function parseIpBytes(s: string): Uint8Array | undefined {
  if (s.length === 0 || s.length > 45) return undefined;
  if (s.includes(':')) return ipv6(s);
  const v4 = ipv4(s);
  return v4 === undefined ? undefined : Uint8Array.from(v4);
}

/** `addr` or `addr/len` (istiod's ipBlocks form); undefined when malformed or the length is out of range. */
export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  const address = parseIpBytes(slash < 0 ? s : s.slice(0, slash));
  if (address === undefined) return undefined;
  const max = address.length * 8;
  if (slash < 0) return { address, length: max };
  const lenText = s.slice(slash + 1);
  if (!/^(?:0|[1-9][0-9]{0,2})$/.test(lenText) || Number(lenText) > max) return undefined;
  return { address, length: Number(lenText) };
}

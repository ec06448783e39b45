// SPDX-License-Identifier: Apache-2.0
// IP address parsing and canonical text form, shared by ztunnel (state indexes, routing, RBAC)
// and the controller (Kubernetes and policy text to the raw bytes WDS carries).
// Spec: ambient-protocols §3.5 (WDS carries addresses as raw 4/16-byte values; we keep canonical
// strings), security-and-reliability A.6 (refuse loopback/link-local/multicast targets).
//
// Why our own parser instead of `net.isIP`: we need the bytes (CIDR matching), one canonical
// string per address so map keys never disagree ("::FFFF:0a00:1" vs "::ffff:10.0.0.1"), and a
// strict grammar: no IPv6 zone ids (CVE-2026-26310 class), no leading-zero IPv4 octets (which
// some libraries read as octal).
//
// IPv4-mapped IPv6 (`::ffff:a.b.c.d`): Node's dual-stack sockets report IPv4 peers in this form.
// `canonicalIp` unmaps them to plain IPv4, like upstream's `to_canonical()`, so a peer is looked
// up and matched the same way whichever socket family accepted it.

export type IpFamily = 4 | 6;

export interface IpAddr {
  readonly family: IpFamily;
  /** 4 bytes for IPv4, 16 for IPv6, network order. */
  readonly bytes: Uint8Array;
}

const IPV4_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseIpv4Bytes(s: string): number[] | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!IPV4_OCTET.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

function parseIpv6Groups(parts: string[], allowTrailingV4: boolean): number[] | undefined {
  const out: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i] ?? '';
    if (allowTrailingV4 && i === parts.length - 1 && p.includes('.')) {
      const v4 = parseIpv4Bytes(p);
      if (v4 === undefined) return undefined;
      out.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
      continue;
    }
    if (!IPV6_GROUP.test(p)) return undefined;
    out.push(parseInt(p, 16));
  }
  return out;
}

function parseIpv6Bytes(s: string): Uint8Array | undefined {
  // Only hex digits, colons and (for an embedded IPv4 tail) dots: this rejects zone ids
  // ("fe80::1%eth0"), brackets and whitespace.
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const [headText = '', tailText = ''] = halves;
    const head = headText === '' ? [] : parseIpv6Groups(headText.split(':'), false);
    const tail = tailText === '' ? [] : parseIpv6Groups(tailText.split(':'), true);
    if (head === undefined || tail === undefined) return undefined;
    // "::" stands for at least one zero group.
    if (head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseIpv6Groups(s.split(':'), true);
    if (all?.length !== 8) return undefined;
    groups = all;
  }
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  return bytes;
}

/** Parses an IPv4 or IPv6 address in strict textual form; undefined when it is not one. */
export function parseIp(s: string): IpAddr | undefined {
  if (s.length === 0 || s.length > 45) return undefined;
  if (s.includes(':')) {
    const bytes = parseIpv6Bytes(s);
    return bytes === undefined ? undefined : { family: 6, bytes };
  }
  const v4 = parseIpv4Bytes(s);
  return v4 === undefined ? undefined : { family: 4, bytes: Uint8Array.from(v4) };
}

/** True for `::ffff:0:0/96`, the IPv4-mapped IPv6 range. */
export function isIpv4Mapped(a: IpAddr): boolean {
  if (a.family !== 6) return false;
  for (let i = 0; i < 10; i++) if (a.bytes[i] !== 0) return false;
  return a.bytes[10] === 0xff && a.bytes[11] === 0xff;
}

/** IPv4-mapped IPv6 → IPv4; anything else unchanged. */
export function unmapIp(a: IpAddr): IpAddr {
  return isIpv4Mapped(a) ? { family: 4, bytes: a.bytes.slice(12, 16) } : a;
}

/** RFC 5952 text: lowercase, no leading zeros, the longest (leftmost) run of ≥2 zero groups as "::". */
export function formatIp(a: IpAddr): string {
  if (a.family === 4) return Array.from(a.bytes).join('.');
  if (isIpv4Mapped(a)) return `::ffff:${Array.from(a.bytes.slice(12, 16)).join('.')}`;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(((a.bytes[i * 2] ?? 0) << 8) | (a.bytes[i * 2 + 1] ?? 0));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}

/**
 * The one canonical string for an address (IPv4-mapped IPv6 unmapped to IPv4, RFC 5952 for
 * IPv6), or undefined when `s` is not an IP address. Every index key and comparison uses this.
 */
export function canonicalIp(s: string): string | undefined {
  const a = parseIp(s);
  return a === undefined ? undefined : formatIp(unmapIp(a));
}

/** `ip:port`, with IPv6 in brackets, as used in HBONE `:authority` (spec §1.3). */
export function formatHostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** 127.0.0.0/8 and ::1. */
export function isLoopback(a: IpAddr): boolean {
  const b = unmapIp(a);
  if (b.family === 4) return b.bytes[0] === 127;
  return b.bytes.every((x, i) => (i === 15 ? x === 1 : x === 0));
}

/** 0.0.0.0/8 ("this network", never a valid destination) and ::. */
export function isUnspecified(a: IpAddr): boolean {
  const b = unmapIp(a);
  if (b.family === 4) return b.bytes[0] === 0;
  return b.bytes.every((x) => x === 0);
}

/** 169.254.0.0/16 (includes the cloud metadata address 169.254.169.254) and fe80::/10. */
export function isLinkLocal(a: IpAddr): boolean {
  const b = unmapIp(a);
  if (b.family === 4) return b.bytes[0] === 169 && b.bytes[1] === 254;
  return b.bytes[0] === 0xfe && ((b.bytes[1] ?? 0) & 0xc0) === 0x80;
}

/** 224.0.0.0/4, the limited broadcast 255.255.255.255, and ff00::/8. */
export function isMulticastOrBroadcast(a: IpAddr): boolean {
  const b = unmapIp(a);
  if (b.family === 4) {
    const first = b.bytes[0] ?? 0;
    return (first & 0xf0) === 0xe0 || b.bytes.every((x) => x === 255);
  }
  return b.bytes[0] === 0xff;
}

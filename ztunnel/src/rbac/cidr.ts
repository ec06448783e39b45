// SPDX-License-Identifier: Apache-2.0
// CIDR matching for L4 RBAC `sourceIps` / `destinationIps` (spec ambient-protocols §3.6 Address,
// §3.8).
//
// Decisions:
// * IPv4 and IPv6 never match each other: 0.0.0.0/0 does not contain any IPv6 address and ::/0
//   does not contain any IPv4 address.
// * IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is treated as the IPv4 address it carries, on both
//   sides: a connection IP is unmapped before matching (Node's dual-stack sockets report IPv4
//   peers that way), and a CIDR written inside ::ffff:0:0/96 with a prefix length ≥ 96 is read as
//   the IPv4 CIDR it denotes (::ffff:10.0.0.0/104 ≡ 10.0.0.0/8). So one address always matches
//   the same way, whichever notation the socket or the policy used. A mapped CIDR shorter than
//   /96 stays IPv6 and therefore matches no IPv4 address.
// * Host bits set in the CIDR address are ignored (10.1.2.3/8 ≡ 10.0.0.0/8), as upstream's
//   `IpNet::contains` does. A prefix length above the family's width never matches (the static
//   config loader rejects it earlier).
import type { IpAddr } from '../../../src/shared/net/ip.ts';
import { formatIp, isIpv4Mapped, parseIp, unmapIp } from '../../../src/shared/net/ip.ts';
import type { CidrAddress } from '../state/types.ts';

interface ParsedCidr {
  readonly addr: IpAddr;
  readonly length: number;
}

// Policies live in the store for a long time and are evaluated per connection; parse each CIDR
// once. Keyed by object identity, so a replaced policy gets fresh entries.
const parsedCache = new WeakMap<CidrAddress, ParsedCidr | null>();

export function parseCidrAddress(c: CidrAddress): ParsedCidr | undefined {
  const cached = parsedCache.get(c);
  if (cached !== undefined) return cached ?? undefined;
  let result: ParsedCidr | null = null;
  const a = parseIp(c.address);
  if (a !== undefined && Number.isInteger(c.length) && c.length >= 0) {
    if (isIpv4Mapped(a) && c.length >= 96) {
      result = { addr: unmapIp(a), length: c.length - 96 };
    } else if (c.length <= a.bytes.length * 8) {
      result = { addr: a, length: c.length };
    }
  }
  parsedCache.set(c, result);
  return result ?? undefined;
}

/** True when the first `length` bits of `a` and `b` (same family) are equal. */
function prefixEqual(a: Uint8Array, b: Uint8Array, length: number): boolean {
  const whole = length >> 3;
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false;
  const rest = length & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((a[whole] ?? 0) & mask) === ((b[whole] ?? 0) & mask);
}

/** Whether `ip` (already parsed) lies in `cidr`. See the file comment for the family rules. */
export function cidrContains(cidr: CidrAddress, ip: IpAddr): boolean {
  const c = parseCidrAddress(cidr);
  if (c === undefined) return false;
  const addr = unmapIp(ip);
  if (addr.family !== c.addr.family) return false;
  return prefixEqual(c.addr.bytes, addr.bytes, c.length);
}

/**
 * Parses "198.18.0.0/16", or a bare address as a host route (/32 or /128); the address comes
 * back in canonical text form (host bits kept, see the file comment).
 */
export function parseCidrText(text: string): CidrAddress | undefined {
  const slash = text.indexOf('/');
  const ipText = slash < 0 ? text : text.slice(0, slash);
  const a = parseIp(ipText);
  if (a === undefined) return undefined;
  const bits = a.bytes.length * 8;
  if (slash < 0) return { address: formatIp(a), length: bits };
  const lenText = text.slice(slash + 1);
  if (!/^(?:0|[1-9][0-9]{0,2})$/.test(lenText)) return undefined;
  const length = Number(lenText);
  if (length > bits) return undefined;
  return { address: formatIp(a), length };
}

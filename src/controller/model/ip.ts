// SPDX-License-Identifier: Apache-2.0
// IP addresses and CIDRs from Kubernetes and policy text to the raw bytes WDS carries
// (`bytes` fields: 4 bytes for IPv4, 16 for IPv6; spec ambient-protocols §3.5, §3.6), on the
// parser ztunnel uses (src/shared/net/ip.ts): no IPv6 zone ids, no leading-zero IPv4 octets
// (which some parsers read as octal), no brackets or whitespace. Text that is not an address is
// refused rather than guessed at; callers decide what refusal means (for a policy, failing
// closed).
import { parseIp } from '../../shared/net/ip.ts';

export interface Cidr {
  /** 4 or 16 bytes, network order, host bits as written. */
  readonly address: Uint8Array;
  /** Prefix length: 0–32 or 0–128; a bare address has the full length. */
  readonly length: number;
}

/** The raw bytes of an IPv4 or IPv6 address, or undefined when `s` is not one. */
export function parseIpBytes(s: string): Uint8Array | undefined {
  return parseIp(s)?.bytes;
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

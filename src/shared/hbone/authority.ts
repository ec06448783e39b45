// SPDX-License-Identifier: Apache-2.0
// Strict parsing of the HBONE CONNECT `:authority` (ambient-protocols.md §1.3: `ip:port`,
// `[v6]:port`, or `hostname:port` for double-HBONE; security-and-reliability.md checklist A.3).
//
// One canonical spelling is accepted for each target so that policy, logging and the upstream
// dial always agree on what was asked for: decimal port 1-65535 without sign or leading zeros,
// dotted-quad IPv4 without leading zeros, bracketed IPv6 without a zone id, DNS hostnames of
// letters/digits/hyphens without a trailing dot. Everything else (userinfo, zone ids, unbracketed
// IPv6, over-long hosts, trailing junk) is a deterministic HBONE_ERR_BAD_REQUEST (HTTP 400).
import net from 'node:net';
import { HboneError } from './errors.ts';

export type Authority =
  | { kind: 'ip'; ip: string; family: 4 | 6; port: number }
  | { kind: 'hostname'; hostname: string; port: number };

/** RFC 1035 §2.3.4 / RFC 1123: a DNS name is at most 253 characters in text form. */
export const MAX_HOST_LENGTH = 253;
/** "[" + host + "]" + ":" + 5 port digits: anything longer cannot be valid, so it is refused before any scan. */
const MAX_AUTHORITY_LENGTH = MAX_HOST_LENGTH + 2 + 1 + 5;
const PORT_RE = /^[1-9][0-9]{0,4}$/;
const LABEL_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const NUMERIC_RE = /^[0-9]+$/;

function bad(input: string, rule: string): HboneError {
  // The input comes from the network: show a bounded, escaped form only (log-injection safe).
  const shown = JSON.stringify(input.length > 64 ? `${input.slice(0, 64)}...` : input);
  return new HboneError(
    'HBONE_ERR_BAD_REQUEST',
    `invalid CONNECT authority ${shown}: ${rule} (expected ip:port, [ipv6]:port or hostname:port)`,
    { status: 400 },
  );
}

function parsePort(input: string, text: string): number {
  if (text === '') throw bad(input, 'no port');
  if (!PORT_RE.test(text))
    throw bad(input, 'the port must be a decimal number 1-65535 without sign or leading zeros');
  const port = Number(text);
  if (port > 65535)
    throw bad(input, 'the port must be a decimal number 1-65535 without sign or leading zeros');
  return port;
}

/** RFC 5952 form of an IPv6 address (lower case, longest zero run compressed). */
function canonicalIpv6(ip: string): string {
  return new net.SocketAddress({ address: ip, family: 'ipv6' }).address;
}

/**
 * Parses a CONNECT authority. Throws HboneError HBONE_ERR_BAD_REQUEST (status 400) when it is
 * not exactly one of the accepted forms. IPv6 addresses and hostnames come back canonical
 * (lower case; IPv6 compressed per RFC 5952).
 */
export function parseAuthority(s: string): Authority {
  if (s === '') throw bad(s, 'empty');
  if (s.length > MAX_AUTHORITY_LENGTH) throw bad(s, `longer than ${MAX_AUTHORITY_LENGTH} characters`);

  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0) throw bad(s, 'unterminated "[" (IPv6 addresses are written [addr]:port)');
    const host = s.slice(1, close);
    const rest = s.slice(close + 1);
    if (host === '') throw bad(s, 'empty host');
    if (host.includes('%')) throw bad(s, 'IPv6 zone ids are not accepted');
    if (!net.isIPv6(host)) throw bad(s, 'the bracketed host is not an IPv6 address');
    if (!rest.startsWith(':')) throw bad(s, rest === '' ? 'no port' : 'unexpected characters after "]"');
    return { kind: 'ip', ip: canonicalIpv6(host), family: 6, port: parsePort(s, rest.slice(1)) };
  }

  const colon = s.lastIndexOf(':');
  if (colon < 0) throw bad(s, 'no port');
  const host = s.slice(0, colon);
  const port = parsePort(s, s.slice(colon + 1));
  if (host === '') throw bad(s, 'empty host');
  if (host.includes(':')) throw bad(s, 'IPv6 addresses must be in brackets ([addr]:port)');
  if (host.includes('@')) throw bad(s, 'userinfo is not accepted');
  if (host.length > MAX_HOST_LENGTH) throw bad(s, `host longer than ${MAX_HOST_LENGTH} characters`);
  if (net.isIPv4(host)) return { kind: 'ip', ip: host, family: 4, port };

  const hostname = host.toLowerCase();
  if (hostname.endsWith('.')) throw bad(s, 'trailing dot in hostname');
  const labels = hostname.split('.');
  for (const label of labels) {
    if (!LABEL_RE.test(label)) {
      throw bad(
        s,
        'the host is neither an IPv4 address nor a DNS hostname (labels of a-z, 0-9 and "-", 1-63 characters)',
      );
    }
  }
  // An all-numeric top label means an IPv4 spelling that isn't canonical dotted quad
  // ("01.2.3.4", "1.2.3", "1.2.3.256"); RFC 3696 §2 rules such names out as hostnames.
  if (NUMERIC_RE.test(labels[labels.length - 1] ?? '')) {
    throw bad(s, 'not a canonical dotted-quad IPv4 address (no leading zeros, four octets 0-255)');
  }
  return { kind: 'hostname', hostname, port };
}

/** Formats an ip:port authority (`[v6]:port` for IPv6). Throws HBONE_ERR_BAD_REQUEST on a bad IP or port. */
export function formatAuthority(ip: string, port: number): string {
  const text = net.isIPv6(ip) ? `[${ip}]:${port}` : `${ip}:${port}`;
  const parsed = parseAuthority(text);
  if (parsed.kind !== 'ip') throw bad(text, 'not an IP address');
  return parsed.family === 6 ? `[${parsed.ip}]:${parsed.port}` : `${parsed.ip}:${parsed.port}`;
}

/** The canonical text of a parsed authority. */
export function authorityToString(a: Authority): string {
  if (a.kind === 'hostname') return `${a.hostname}:${a.port}`;
  return a.family === 6 ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`;
}

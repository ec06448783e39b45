// SPDX-License-Identifier: Apache-2.0
// Strict SPIFFE ID parser and formatter (spiffe/spiffe standards/SPIFFE-ID.md, as tightened by
// spiffe/spiffe PRs #183/#215 and mirrored by the reference parsers; security-and-reliability.md
// §3.3 items 4-5, red-team checklist B.27), plus the Istio identity shape
// spiffe://<trust_domain>/ns/<namespace>/sa/<service_account> (ambient-protocols.md §1.2).
//
// The parser works on the string exactly as found in the certificate's DER (see ./svid.ts), so
// every rule is a plain character check: there is no URL library, no percent-decoding and no
// normalisation, hence nothing that could turn two different byte strings into one identity.
import { IdentityError } from './errors.ts';

export interface SpiffeId {
  readonly trustDomain: string;
  /** The path, starting with '/', never empty, never ending with '/'. */
  readonly path: string;
  /** The canonical URI, identical to the parsed input. */
  readonly uri: string;
}

export interface IstioIdentity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

const SCHEME = 'spiffe://';
/** SPIFFE-ID.md §2.3: a SPIFFE ID is at most 2048 bytes. */
export const SPIFFE_ID_MAX_BYTES = 2048;
/** SPIFFE-ID.md §2.1: the trust domain is at most 255 bytes. */
export const TRUST_DOMAIN_MAX_BYTES = 255;

const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const PATH_SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;

function invalid(input: string, rule: string): IdentityError {
  return new IdentityError(
    'ID_ERR_SPIFFE_INVALID',
    `invalid SPIFFE ID ${quote(input)}: ${rule} (SPIFFE-ID spec; expected spiffe://<trust-domain>/<path>, e.g. spiffe://cluster.local/ns/default/sa/default)`,
  );
}

/** Renders untrusted input for a message: JSON escapes control characters, and it is cut short. */
function quote(s: string): string {
  const shown = s.length > 120 ? `${s.slice(0, 120)}…` : s;
  return JSON.stringify(shown);
}

/** Names the first character of `s` outside the allowed set, for the error message. */
function describeBadChar(s: string, allowed: RegExp, where: string): string {
  for (const ch of s) {
    if (allowed.test(ch)) continue;
    const cp = ch.codePointAt(0) ?? 0;
    const shown =
      cp < 0x20 || cp === 0x7f
        ? `control character U+${cp.toString(16).padStart(4, '0').toUpperCase()}`
        : `character ${JSON.stringify(ch)}`;
    switch (ch) {
      case '%':
        return `percent-encoding is not allowed in the ${where}`;
      case '?':
        return 'a query is not allowed';
      case '#':
        return 'a fragment is not allowed';
      default:
        return `${shown} is not allowed in the ${where}`;
    }
  }
  return `the ${where} has characters outside the allowed set`;
}

const TD_CHAR = /^[a-z0-9._-]$/;
const PATH_CHAR = /^[a-zA-Z0-9._-]$/;

/** Checks a trust domain name; returns the broken rule or undefined. */
function trustDomainProblem(td: string): string | undefined {
  if (td.length === 0) return 'the trust domain is empty';
  if (Buffer.byteLength(td, 'utf8') > TRUST_DOMAIN_MAX_BYTES) {
    return `the trust domain is longer than ${TRUST_DOMAIN_MAX_BYTES} bytes`;
  }
  if (TRUST_DOMAIN_CHARS.test(td)) return undefined;
  if (td.includes('@')) return 'userinfo is not allowed in the authority';
  if (td.includes(':')) return 'a port is not allowed in the authority';
  if (/[A-Z]/.test(td)) return 'the trust domain must be lowercase ([a-z0-9._-] only)';
  return `${describeBadChar(td, TD_CHAR, 'trust domain')} (trust domain characters are [a-z0-9._-])`;
}

/** Checks one path segment; returns the broken rule or undefined. */
function segmentProblem(seg: string): string | undefined {
  if (seg.length === 0) return "the path has an empty segment ('//' or a trailing '/')";
  if (seg === '.' || seg === '..')
    return `the path has a '${seg}' segment (relative segments are not allowed)`;
  if (PATH_SEGMENT_CHARS.test(seg)) return undefined;
  return `${describeBadChar(seg, PATH_CHAR, 'path')} (path segment characters are [a-zA-Z0-9._-])`;
}

/**
 * Parses a SPIFFE ID strictly. Throws IdentityError ID_ERR_SPIFFE_INVALID naming the rule broken.
 * Workload identities must have a non-empty path, so a bare trust-domain ID is rejected too.
 */
export function parseSpiffeId(uri: string): SpiffeId {
  // Callers may pass values from untyped sources (JSON, protobuf).
  if (typeof uri !== 'string') throw invalid(String(uri), 'not a string');
  if (Buffer.byteLength(uri, 'utf8') > SPIFFE_ID_MAX_BYTES) {
    throw invalid(uri, `longer than ${SPIFFE_ID_MAX_BYTES} bytes`);
  }
  if (!uri.startsWith(SCHEME)) {
    throw invalid(uri, "the scheme must be 'spiffe' (lowercase) followed by '://'");
  }
  const rest = uri.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem !== undefined) throw invalid(uri, tdProblem);
  if (slash < 0) {
    throw invalid(uri, 'the path is empty; a workload SPIFFE ID needs a path such as /ns/<ns>/sa/<sa>');
  }
  const path = rest.slice(slash);
  if (path === '/') throw invalid(uri, "the path is only '/' (no trailing '/' and no empty path allowed)");
  const segments = path.slice(1).split('/');
  for (const seg of segments) {
    const problem = segmentProblem(seg);
    if (problem !== undefined) throw invalid(uri, problem);
  }
  return { trustDomain, path, uri };
}

/** Checks that a string is a valid trust domain name; throws ID_ERR_SPIFFE_INVALID otherwise. */
export function parseTrustDomain(trustDomain: string): string {
  const problem = trustDomainProblem(trustDomain);
  if (problem !== undefined) {
    throw new IdentityError(
      'ID_ERR_SPIFFE_INVALID',
      `invalid trust domain ${quote(trustDomain)}: ${problem} (e.g. cluster.local)`,
    );
  }
  return trustDomain;
}

/**
 * Builds spiffe://<trustDomain><path> and validates it with parseSpiffeId. A path without a
 * leading '/' gets one.
 */
export function formatSpiffeId(trustDomain: string, path: string): string {
  const p = path.startsWith('/') ? path : `/${path}`;
  return parseSpiffeId(`${SCHEME}${trustDomain}${p}`).uri;
}

/** Parses spiffe://<td>/ns/<ns>/sa/<sa> exactly (four path segments, literal 'ns' and 'sa'). */
export function parseIstioIdentity(uri: string): IstioIdentity {
  const id = parseSpiffeId(uri);
  const seg = id.path.slice(1).split('/');
  if (seg.length !== 4 || seg[0] !== 'ns' || seg[2] !== 'sa') {
    throw new IdentityError(
      'ID_ERR_ISTIO_IDENTITY',
      `SPIFFE ID ${quote(uri)} is not an Istio workload identity: expected exactly spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`,
    );
  }
  // Four segments, each already checked non-empty by parseSpiffeId.
  return { trustDomain: id.trustDomain, namespace: seg[1] ?? '', serviceAccount: seg[3] ?? '' };
}

/** Formats an Istio identity; throws if any part would not round-trip (e.g. contains '/'). */
export function istioIdentityUri(id: IstioIdentity): string {
  const uri = formatSpiffeId(id.trustDomain, `/ns/${id.namespace}/sa/${id.serviceAccount}`);
  const back = parseIstioIdentity(uri);
  if (back.namespace !== id.namespace || back.serviceAccount !== id.serviceAccount) {
    throw new IdentityError(
      'ID_ERR_ISTIO_IDENTITY',
      `namespace ${quote(id.namespace)} / service account ${quote(id.serviceAccount)} do not form a single-segment Istio identity`,
    );
  }
  return uri;
}

// SPDX-License-Identifier: Apache-2.0
// X.509-SVID verification (spiffe/spiffe standards/X509-SVID.md; security-and-reliability.md §3.3,
// red-team checklist B.20–B.30) on top of RFC 5280 path validation (§6.1): signatures, validity
// windows, basic constraints, path length, key usage and name constraints.
//
// Identities come only from the DER (./certificate.ts), never from Node's `subjectaltname`
// string (CVE-2021-44531/44532, security-and-reliability.md §1.5). We are stricter than ztunnel
// on purpose (§3.3 "How ztunnel compares"): exactly one URI SAN, leaf cA=false, no
// keyCertSign/cRLSign on the leaf, strict SPIFFE ID syntax.
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import { bytesEqual } from './der.ts';
import { IdentityError } from './errors.ts';
import {
  describeName,
  GeneralNameTag,
  isSelfIssued,
  KeyUsage,
  OID,
  parseCertificate,
  signedBy,
  type GeneralName,
  type ParsedCertificate,
} from './certificate.ts';
import { revokedError, type RevocationList } from './crl.ts';
import { parseSpiffeId, type SpiffeId } from './spiffe.ts';
import type { TrustBundle } from './trust-bundle.ts';

export interface VerifiedSvid {
  readonly id: SpiffeId;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Leaf serial number, lowercase hex as encoded. */
  readonly serial: string;
  /**
   * The path that was verified: [leaf, intermediates…, anchor], or [leaf] alone when the TLS
   * layer's path check stood in for ours (`pathFromTls`). Kept so that a live session can be
   * checked again when the revocation list changes (checkRevocation).
   */
  readonly path: readonly ParsedCertificate[];
  readonly pathFromTls: boolean;
}

export interface VerifySvidOptions {
  /** Require the identity to be in this trust domain (server side: our own trust domain). */
  trustDomain?: string;
  /** Require the identity to be one of these URIs (client side: the identities xDS lists for the destination). */
  expectedIdentities?: readonly string[];
  /** Verification time; defaults to the current time. No skew tolerance is applied here: the CA backdates notBefore by 60 s instead. */
  now?: Date;
  /**
   * The role the leaf plays in this handshake. When given and the leaf has an extKeyUsage, it
   * must list this purpose (or anyExtendedKeyUsage), per RFC 5280 §4.2.1.12 (checklist B.30).
   */
  usage?: 'serverAuth' | 'clientAuth';
  /**
   * Extra, untrusted intermediates that may complete the path when the peer's own intermediates
   * are not available: Node's TLS server does not expose the client's intermediates
   * (getPeerCertificate(true) returns only the leaf; nodejs/node#65579), so a server should
   * pass the intermediates of its own chain here (one mesh CA issues both). They never act as
   * trust anchors.
   */
  intermediates?: readonly Uint8Array[];
  /**
   * The TLS layer has already verified a path from this leaf to one of `bundle`'s anchors
   * (OpenSSL, with the bundle as its only CAs, and the socket `authorized`). Then, and only when
   * no path can be built here because an issuer is missing (the peer's intermediates are hidden
   * and `intermediates` holds other ones: a CA that renewed its intermediate, or a root rotation),
   * the TLS layer's path check stands; the leaf rules, the leaf's validity and the identity checks
   * still apply. A path that is found but fails a check here is refused as always.
   */
  pathVerifiedByTls?: boolean;
  /**
   * Certificate revocation lists (checklist B.31): a path with a certificate its issuer revoked is
   * refused (ID_ERR_REVOKED); another path without it, if one exists, may still be accepted.
   */
  revocation?: RevocationList | undefined;
}

/** A peer may send a handful of intermediates; more is abuse (each costs a signature check). */
export const MAX_CHAIN_CERTS = 10;
/** Longest path (leaf + intermediates + root) we try to build. */
const MAX_PATH_LENGTH = 8;

function chainError(message: string): IdentityError {
  return new IdentityError('ID_ERR_CHAIN', message);
}

/**
 * Verifies an X.509-SVID chain and returns the peer's SPIFFE identity.
 * `chainDer`: leaf first, then the intermediates as presented by the peer (any order; the root
 * may be included; unneeded certificates are ignored).
 */
export function verifySvid(
  chainDer: readonly Uint8Array[],
  bundle: TrustBundle,
  opts: VerifySvidOptions = {},
): Promise<VerifiedSvid> {
  // The work is synchronous; a throw inside the executor becomes the rejection.
  return new Promise((resolve) => {
    resolve(verifySvidSync(chainDer, bundle, opts));
  });
}

/** Synchronous form of verifySvid, for callbacks that cannot wait (e.g. tls checkServerIdentity). */
export function verifySvidSync(
  chainDer: readonly Uint8Array[],
  bundle: TrustBundle,
  opts: VerifySvidOptions = {},
): VerifiedSvid {
  if (chainDer.length === 0)
    throw chainError('the peer presented no certificate; a mesh workload certificate is required');
  if (chainDer.length > MAX_CHAIN_CERTS) {
    throw chainError(
      `the peer presented ${chainDer.length} certificates; at most ${MAX_CHAIN_CERTS} are accepted`,
    );
  }
  const [leaf, ...rest] = chainDer.map((d) => parseCertificate(d)) as [
    ParsedCertificate,
    ...ParsedCertificate[],
  ];
  const id = checkLeaf(leaf, opts.usage);
  const now = opts.now ?? new Date();

  const extra = (opts.intermediates ?? []).slice(0, MAX_CHAIN_CERTS).map((d) => parseCertificate(d));
  const built = buildAndValidatePath(leaf, [...rest, ...extra], bundle.anchors, now, opts.revocation);
  let path: readonly ParsedCertificate[];
  if (built instanceof IdentityError) {
    if (opts.pathVerifiedByTls !== true) throw built;
    const leafProblem = validatePath([leaf], now);
    if (leafProblem) throw leafProblem;
    path = [leaf];
    checkRevocation({ path, pathFromTls: true }, opts.revocation, bundle.anchors);
  } else {
    path = built;
  }

  if (opts.trustDomain !== undefined && id.trustDomain !== opts.trustDomain) {
    throw new IdentityError(
      'ID_ERR_TRUST_DOMAIN',
      `peer identity ${id.uri} is in trust domain "${id.trustDomain}", expected "${opts.trustDomain}"; cross-trust-domain peers are not accepted`,
    );
  }
  if (opts.expectedIdentities !== undefined && !opts.expectedIdentities.includes(id.uri)) {
    const shown = opts.expectedIdentities.slice(0, 5).join(', ');
    throw new IdentityError(
      'ID_ERR_IDENTITY_MISMATCH',
      `peer identity ${id.uri} is not one of the identities expected for this destination (${shown || 'none'}); the destination IP may belong to another workload, or the service's subject alt names are out of date`,
    );
  }
  return {
    id,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    serial: leaf.serial,
    path,
    pathFromTls: path.length === 1,
  };
}

/**
 * Throws IdentityError ID_ERR_REVOKED if `revocation` revokes a certificate of an already
 * verified path: for live sessions when the CRL changes (their handshake is long past).
 */
export function checkRevocation(
  verified: Pick<VerifiedSvid, 'path' | 'pathFromTls'>,
  revocation: RevocationList | undefined,
  anchors: readonly ParsedCertificate[],
): void {
  if (!revocation) return;
  const r = revocation.check(verified.path, !verified.pathFromTls);
  if (r) throw revokedError(r, verified.path.length);
  // A path OpenSSL built but we could not (the client's intermediate is hidden from a TLS
  // server) may run through an intermediate a root revoked: no CRL names the leaf then, and we
  // cannot see which intermediate it was. While any root revokes an intermediate, such a path
  // is refused (fail closed); paths through intermediates we hold are checked as usual.
  const revokedByRoots = verified.pathFromTls ? revocation.anchorRevocations(anchors) : 0;
  if (revokedByRoots > 0) {
    const leaf = verified.path[0];
    throw new IdentityError(
      'ID_ERR_REVOKED',
      `the peer leaf certificate (serial ${leaf?.serial ?? '?'}) was issued by an intermediate this side does not hold ("${leaf ? describeName(leaf.issuerDer) : '?'}"), and a root's CRL revokes ${revokedByRoots} intermediate certificate(s): it cannot be shown not to be one of them, so it is refused`,
    );
  }
}

/** Leaf-only rules: X509-SVID §4.1 (basic constraints), §4.3 (key usage), §2 (one URI SAN). */
function checkLeaf(leaf: ParsedCertificate, usage: VerifySvidOptions['usage']): SpiffeId {
  if (leaf.basicConstraints?.ca === true) {
    throw new IdentityError(
      'ID_ERR_LEAF_IS_CA',
      'the peer leaf certificate is a CA certificate (basicConstraints cA=true); a CA or intermediate certificate can never be a workload identity',
    );
  }
  if (leaf.keyUsage !== undefined) {
    if ((leaf.keyUsage & (KeyUsage.keyCertSign | KeyUsage.cRLSign)) !== 0) {
      throw new IdentityError(
        'ID_ERR_KEY_USAGE',
        'the peer leaf certificate has keyCertSign or cRLSign in keyUsage; X509-SVID leaves must not be able to sign certificates or CRLs',
      );
    }
    if ((leaf.keyUsage & KeyUsage.digitalSignature) === 0) {
      throw new IdentityError(
        'ID_ERR_KEY_USAGE',
        'the peer leaf certificate keyUsage lacks digitalSignature, which TLS 1.3 authentication needs (X509-SVID §4.3)',
      );
    }
  }
  if (usage !== undefined && leaf.extKeyUsage !== undefined) {
    const want = usage === 'serverAuth' ? OID.serverAuth : OID.clientAuth;
    if (!leaf.extKeyUsage.includes(want) && !leaf.extKeyUsage.includes(OID.anyExtendedKeyUsage)) {
      throw new IdentityError(
        'ID_ERR_KEY_USAGE',
        `the peer leaf certificate extKeyUsage does not allow ${usage}; mesh certificates carry both serverAuth and clientAuth`,
      );
    }
  }
  if (leaf.unknownCritical.length > 0) {
    throw chainError(
      `the peer leaf certificate has unrecognized critical extension(s) ${leaf.unknownCritical.join(', ')} (RFC 5280 §4.2)`,
    );
  }
  const uris = leaf.subjectAltNames.filter((n) => n.type === GeneralNameTag.uniformResourceIdentifier);
  if (uris.length !== 1) {
    throw new IdentityError(
      'ID_ERR_SAN',
      uris.length === 0
        ? 'the peer leaf certificate has no URI subjectAltName, so it carries no SPIFFE identity'
        : `the peer leaf certificate has ${uris.length} URI subjectAltNames; an X.509-SVID must have exactly one (SPIFFE X509-SVID §2)`,
    );
  }
  // IA5String bytes, decoded one byte per character so that nothing is lost or merged; the
  // SPIFFE parser then rejects every byte outside its allowed sets (NUL, controls, non-ASCII).
  const text = Buffer.from((uris[0] as GeneralName).value).toString('latin1');
  try {
    return parseSpiffeId(text);
  } catch (err) {
    throw new IdentityError(
      'ID_ERR_SPIFFE_INVALID',
      `the peer leaf certificate's URI SAN is not a valid SPIFFE ID: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/**
 * Finds a path leaf → … → trust anchor whose every link verifies, which passes RFC 5280 checks and
 * in which no certificate is revoked, and returns it. Throws when a path was found but fails a
 * check; returns the error (not thrown) when no path could be built at all, because no
 * certificate at hand issued some link.
 */
function buildAndValidatePath(
  leaf: ParsedCertificate,
  presented: readonly ParsedCertificate[],
  anchors: readonly ParsedCertificate[],
  now: Date,
  revocation: RevocationList | undefined,
): ParsedCertificate[] | IdentityError {
  // Presented copies of anchors and of the leaf itself are not intermediates.
  const pool = presented.filter(
    (c) => !bytesEqual(c.der, leaf.der) && !anchors.some((a) => bytesEqual(a.der, c.der)),
  );
  let firstPathError: IdentityError | undefined;
  let signatureChecks = 0;

  const mayHaveIssued = (child: ParsedCertificate, issuer: ParsedCertificate): boolean => {
    if (!bytesEqual(child.issuerDer, issuer.subjectDer)) return false;
    // Key identifiers only prune candidates (as OpenSSL does); the signature is the real check.
    if (
      child.authorityKeyId !== undefined &&
      issuer.subjectKeyId !== undefined &&
      child.authorityKeyId !== issuer.subjectKeyId
    ) {
      return false;
    }
    // Bound the work an attacker can cause with many same-named certificates.
    if (++signatureChecks > 4 * MAX_CHAIN_CERTS) return false;
    return signedBy(child, issuer);
  };

  const search = (
    path: ParsedCertificate[],
    used: ReadonlySet<ParsedCertificate>,
  ): ParsedCertificate[] | undefined => {
    const cur = path[path.length - 1] as ParsedCertificate;
    for (const anchor of anchors) {
      if (!mayHaveIssued(cur, anchor)) continue;
      const full = [...path, anchor];
      let problem = validatePath(full, now);
      if (problem === undefined) {
        const revoked = revocation?.check(full, true);
        if (revoked === undefined) return full;
        problem = revokedError(revoked, full.length);
      }
      firstPathError ??= problem;
    }
    if (path.length + 1 >= MAX_PATH_LENGTH) return undefined;
    for (const cand of pool) {
      if (used.has(cand) || !mayHaveIssued(cur, cand)) continue;
      const found = search([...path, cand], new Set([...used, cand]));
      if (found) return found;
    }
    return undefined;
  };

  const found = search([leaf], new Set());
  if (found) return found;
  if (firstPathError) throw firstPathError;
  const issuerName = describeName(leaf.issuerDer);
  return chainError(
    `the peer certificate does not chain to a root of the trust bundle (leaf issuer "${issuerName}"; ${presented.length} other certificate(s) presented): ` +
      'either an intermediate is missing from the peer chain, or the certificate was issued by another CA (check both sides use the same mesh root)',
  );
}

/** RFC 5280 §6.1 checks on a complete path [leaf, intermediates…, anchor]; returns the first problem. */
function validatePath(path: readonly ParsedCertificate[], now: Date): IdentityError | undefined {
  const t = now.getTime();
  for (const [i, cert] of path.entries()) {
    const role =
      i === 0
        ? 'peer leaf certificate'
        : i === path.length - 1
          ? 'root certificate'
          : `intermediate certificate #${i}`;
    // Validity is inclusive at both ends (RFC 5280 §4.1.2.5).
    if (t < cert.notBefore.getTime()) {
      return new IdentityError(
        'ID_ERR_NOT_YET_VALID',
        `the ${role} (serial ${cert.serial}) is not valid before ${cert.notBefore.toISOString()} (now ${now.toISOString()}); check the clocks of the CA and this node`,
      );
    }
    if (t > cert.notAfter.getTime()) {
      return new IdentityError(
        'ID_ERR_EXPIRED',
        `the ${role} (serial ${cert.serial}) expired at ${cert.notAfter.toISOString()} (now ${now.toISOString()}); the peer is not rotating its certificate, or this node's clock is wrong`,
      );
    }
    if (i === 0) continue;
    const isAnchor = i === path.length - 1;
    if (!isAnchor) {
      if (cert.basicConstraints?.ca !== true) {
        return chainError(
          `the ${role} (serial ${cert.serial}) is not a CA (basicConstraints cA=true is required to issue certificates)`,
        );
      }
      if (cert.keyUsage === undefined || (cert.keyUsage & KeyUsage.keyCertSign) === 0) {
        return chainError(
          `the ${role} (serial ${cert.serial}) lacks keyUsage keyCertSign, so it may not issue certificates (RFC 5280 §4.2.1.3)`,
        );
      }
      if (cert.unknownCritical.length > 0) {
        return chainError(
          `the ${role} has unrecognized critical extension(s) ${cert.unknownCritical.join(', ')} (RFC 5280 §4.2)`,
        );
      }
    }
    // pathLenConstraint: the number of non-self-issued intermediates below this CA (§4.2.1.9).
    const pathLen = cert.basicConstraints?.pathLen;
    if (pathLen !== undefined) {
      const below = path.slice(1, i).filter((c) => !isSelfIssued(c)).length;
      if (below > pathLen) {
        return chainError(
          `the ${role} allows at most ${pathLen} intermediate(s) below it (pathLenConstraint) but the path has ${below}`,
        );
      }
    }
    if (cert.nameConstraints) {
      const problem = checkNameConstraints(cert, path.slice(0, i), role);
      if (problem) return problem;
    }
  }
  return undefined;
}

/** Host of a URI (authority without userinfo and port), lowercased; undefined if it has none. */
function uriHost(uri: string): string | undefined {
  const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)/.exec(uri);
  if (!m) return undefined;
  const authority = m[1] ?? '';
  const host = authority.slice(authority.lastIndexOf('@') + 1).replace(/:\d*$/, '');
  return host.toLowerCase();
}

function dnsMatches(name: string, constraint: string): boolean {
  const n = name.toLowerCase();
  const c = constraint.toLowerCase();
  if (c === '') return true;
  if (c.startsWith('.')) return n.endsWith(c);
  return n === c || n.endsWith(`.${c}`);
}

function uriHostMatches(host: string, constraint: string): boolean {
  const c = constraint.toLowerCase();
  // RFC 5280 §4.2.1.10: a leading period means "any host in this domain", otherwise the exact host.
  return c.startsWith('.') ? host.endsWith(c) : host === c;
}

/**
 * Name constraints (RFC 5280 §4.2.1.10) for URI and DNS names. For other name forms we fail
 * closed: if a constraint of that form exists and a certificate below carries such a name, the
 * path is rejected, because we cannot prove the name is permitted.
 */
function checkNameConstraints(
  ca: ParsedCertificate,
  below: readonly ParsedCertificate[],
  role: string,
): IdentityError | undefined {
  const nc = ca.nameConstraints;
  if (!nc) return undefined;
  const all = [...nc.permitted, ...nc.excluded].map((s) => s.base.type);
  const unsupported = new Set(
    all.filter((t) => t !== GeneralNameTag.uniformResourceIdentifier && t !== GeneralNameTag.dNSName),
  );
  for (const [j, cert] of below.entries()) {
    // Self-issued intermediates are exempt (§6.1.3 (b)); the leaf never is.
    if (j > 0 && isSelfIssued(cert)) continue;
    for (const name of cert.subjectAltNames) {
      if (unsupported.has(name.type)) {
        return chainError(
          `the ${role} has name constraints of a form this verifier does not evaluate (GeneralName [${name.type}]); refusing`,
        );
      }
    }
    if (unsupported.has(GeneralNameTag.directoryName) && !cert.subjectEmpty) {
      return chainError(
        `the ${role} has directoryName constraints, which this verifier does not evaluate; refusing`,
      );
    }
    for (const form of [GeneralNameTag.uniformResourceIdentifier, GeneralNameTag.dNSName]) {
      const names = cert.subjectAltNames
        .filter((n) => n.type === form)
        .map((n) => Buffer.from(n.value).toString('latin1'));
      if (names.length === 0) continue;
      const permitted = nc.permitted
        .filter((s) => s.base.type === form)
        .map((s) => Buffer.from(s.base.value).toString('latin1'));
      const excluded = nc.excluded
        .filter((s) => s.base.type === form)
        .map((s) => Buffer.from(s.base.value).toString('latin1'));
      for (const name of names) {
        const subject = form === GeneralNameTag.dNSName ? name : uriHost(name);
        const match = (c: string): boolean =>
          subject !== undefined &&
          (form === GeneralNameTag.dNSName ? dnsMatches(subject, c) : uriHostMatches(subject, c));
        if (excluded.some(match) || (permitted.length > 0 && !permitted.some(match))) {
          return chainError(
            `the name ${JSON.stringify(name)} is outside the name constraints of the ${role}`,
          );
        }
      }
    }
  }
  return undefined;
}

/**
 * The peer's certificate chain as DER, leaf first, from a connected TLS socket. Only the `raw`
 * DER of each certificate is used (never the parsed string fields). Node links the chain via
 * `issuerCertificate` of getPeerCertificate(true). On the SERVER side of Node 24 this yields
 * only the client's leaf (nodejs/node#65579): pass your own intermediates to verifySvid via
 * `opts.intermediates`. Empty if the peer sent no certificate.
 */
export function peerChainDer(socket: TLSSocket): Uint8Array[] {
  const out: Uint8Array[] = [];
  const seen = new Set<object>();
  // Partial: an empty object means no certificate, and the last link may lack issuerCertificate
  // whatever the typings say; a self-signed root is its own issuer.
  const loose = (c: DetailedPeerCertificate): Partial<DetailedPeerCertificate> | undefined => c;
  for (let cert = loose(socket.getPeerCertificate(true)); cert !== undefined; cert = cert.issuerCertificate) {
    if (!Buffer.isBuffer(cert.raw) || seen.has(cert) || out.length >= MAX_CHAIN_CERTS) break;
    seen.add(cert);
    out.push(new Uint8Array(cert.raw));
  }
  return out;
}

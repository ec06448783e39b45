// SPDX-License-Identifier: Apache-2.0
// Certificate revocation lists (RFC 5280 §5) for peer verification: ztunnel's CRL_PATH
// (ambient-protocols.md §4 "CRL"; security-and-reliability.md checklist B.31).
//
// A RevocationList is the parsed content of one CRL file: one or more PEM "X509 CRL" blocks, for
// example one from the root (revoking intermediates) and one from the intermediate (revoking
// workload certificates). verifySvid asks it about every certificate of the path it built, each
// with the issuer that path found for it:
//
// * A CRL speaks for a certificate only when its issuer Name equals the certificate's issuer Name
//   and its signature verifies with that issuer's key (which must allow cRLSign when it carries a
//   keyUsage). A CRL that fails this is someone else's list and is ignored for that certificate.
// * Node's TLS server does not show a client's intermediates (svid.ts, pathVerifiedByTls). When
//   the leaf's issuer is not at hand, a CRL naming that issuer (and its key identifier, when both
//   carry one) still revokes the leaf without a signature check: a listing can only deny, and the
//   CRL file is the operator's, as trusted as the trust bundle mounted next to it.
// * nextUpdate is not enforced. A stale CRL still lists what it revoked, and refusing every peer
//   because a CRL was not refreshed in time would turn a publishing delay into an outage.
// * What this verifier does not evaluate is refused when the file loads, never silently skipped:
//   indirect CRLs (certificateIssuer), delta CRLs, issuing distribution points and any other
//   critical extension. The caller keeps the previous list in force.
import { verify as cryptoVerify } from 'node:crypto';
import {
  children,
  contextTag,
  decodeOid,
  DerError,
  expectTag,
  readOnly,
  TAG,
  toHex,
  type Tlv,
} from './der.ts';
import { bytesEqual } from './der.ts';
import { IdentityError } from './errors.ts';
import {
  decodeTime,
  describeName,
  KeyUsage,
  parseAuthorityKeyId,
  parseExtensions,
  publicKeyOf,
  type ParsedCertificate,
} from './certificate.ts';
import { pemBlocks } from './pem.ts';

/** CRL and CRL entry extensions (RFC 5280 §5.2, §5.3). */
export const CRL_OID = {
  authorityKeyIdentifier: '2.5.29.35',
  cRLNumber: '2.5.29.20',
  deltaCRLIndicator: '2.5.29.27',
  issuingDistributionPoint: '2.5.29.28',
  freshestCRL: '2.5.29.46',
  reasonCode: '2.5.29.21',
  invalidityDate: '2.5.29.24',
  certificateIssuer: '2.5.29.29',
} as const;

/** Signature algorithms a CRL may be signed with, and the digest node:crypto needs for each. */
const SIGNATURE_DIGESTS: ReadonlyMap<string, string | null> = new Map([
  ['1.2.840.10045.4.3.2', 'sha256'], // ecdsa-with-SHA256
  ['1.2.840.10045.4.3.3', 'sha384'],
  ['1.2.840.10045.4.3.4', 'sha512'],
  ['1.2.840.113549.1.1.11', 'sha256'], // sha256WithRSAEncryption
  ['1.2.840.113549.1.1.12', 'sha384'],
  ['1.2.840.113549.1.1.13', 'sha512'],
  ['1.3.101.112', null], // Ed25519
]);

/** A CRL file is small; more blocks than this is a mistake or abuse. */
export const MAX_CRLS_PER_FILE = 64;

export interface ParsedCrl {
  readonly der: Uint8Array;
  /** The signed part (TBSCertList), as encoded. */
  readonly tbsDer: Uint8Array;
  readonly signatureAlgorithm: string;
  readonly signature: Uint8Array;
  readonly issuerDer: Uint8Array;
  readonly authorityKeyId: string | undefined;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date | undefined;
  /** cRLNumber as lowercase hex, when present. */
  readonly crlNumber: string | undefined;
  /** Revoked serial numbers (lowercase hex without leading zero octets, see normalizeSerial) → revocationDate. */
  readonly revoked: ReadonlyMap<string, Date>;
}

function crlError(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ID_ERR_CRL', message, { cause });
}

/**
 * A serial number as lowercase hex without leading zero octets, so that a CRL and a certificate
 * that encode the same number differently (a stray 00 octet) still compare equal.
 */
export function normalizeSerial(hex: string): string {
  let h = hex.toLowerCase();
  while (h.length > 2 && h.startsWith('00')) h = h.slice(2);
  return h;
}

function isTime(tlv: Tlv | undefined): boolean {
  return tlv?.tag === TAG.UTC_TIME || tlv?.tag === TAG.GENERALIZED_TIME;
}

/** Parses a DER CRL. Throws IdentityError ID_ERR_CRL on anything malformed or not evaluated here. */
export function parseCrl(der: Uint8Array): ParsedCrl {
  try {
    return parseCrlUnchecked(der);
  } catch (err) {
    if (err instanceof IdentityError) throw err;
    throw crlError(`malformed CRL: ${(err as Error).message} (RFC 5280 §5)`, err);
  }
}

function parseCrlUnchecked(der: Uint8Array): ParsedCrl {
  const list = readOnly(der, TAG.SEQUENCE, 'CertificateList');
  const [tbs, sigAlg, sigValue, ...extra] = children(list.value);
  if (extra.length > 0) throw new DerError('CertificateList has extra elements');
  expectTag(tbs, TAG.SEQUENCE, 'TBSCertList');
  expectTag(sigAlg, TAG.SEQUENCE, 'signatureAlgorithm');
  const sigBits = expectTag(sigValue, TAG.BIT_STRING, 'signatureValue');
  if (sigBits.value.length < 2 || sigBits.value[0] !== 0) {
    throw new DerError('signatureValue must be a whole number of octets');
  }

  const fields = children((tbs as Tlv).value);
  let i = 0;
  let v2 = false;
  if (fields[i]?.tag === TAG.INTEGER) {
    const version = (fields[i++] as Tlv).value;
    if (version.length !== 1 || version[0] !== 1)
      throw new DerError('only v2 CRLs carry a version, and it is 1');
    v2 = true;
  }
  const innerSigAlg = expectTag(fields[i++], TAG.SEQUENCE, 'signature');
  if (!bytesEqual(innerSigAlg.raw, (sigAlg as Tlv).raw)) {
    throw new DerError(
      'TBSCertList.signature differs from CertificateList.signatureAlgorithm (RFC 5280 §5.1.1.2)',
    );
  }
  const algOid = decodeOid(expectTag(children(innerSigAlg.value)[0], TAG.OID, 'algorithm').value);
  if (!SIGNATURE_DIGESTS.has(algOid)) {
    throw crlError(
      `the CRL is signed with algorithm ${algOid}, which is not supported (ECDSA with SHA-2, RSA PKCS#1 v1.5 with SHA-2 or Ed25519 are)`,
    );
  }
  const issuer = expectTag(fields[i++], TAG.SEQUENCE, 'issuer');
  if (issuer.value.length === 0) throw new DerError('the CRL issuer Name is empty');
  const thisUpdate = decodeTime(fields[i++], 'thisUpdate');
  let nextUpdate: Date | undefined;
  if (isTime(fields[i])) nextUpdate = decodeTime(fields[i++], 'nextUpdate');

  const revoked = new Map<string, Date>();
  if (fields[i]?.tag === TAG.SEQUENCE) {
    for (const entry of children((fields[i++] as Tlv).value)) {
      const parts = children(expectTag(entry, TAG.SEQUENCE, 'revokedCertificates entry').value);
      const serial = expectTag(parts[0], TAG.INTEGER, 'userCertificate');
      // 20 octets (RFC 5280 §4.1.2.2), plus the sign octet some issuers add to a 20-octet number.
      if (serial.value.length === 0 || serial.value.length > 21) {
        throw new DerError('a revoked serial number must be 1 to 20 octets (RFC 5280 §4.1.2.2)');
      }
      const revocationDate = decodeTime(parts[1], 'revocationDate');
      if (parts.length > 3) throw new DerError('a revokedCertificates entry has extra elements');
      if (parts[2] !== undefined) {
        if (!v2) throw new DerError('CRL entry extensions need a v2 CRL');
        for (const [oid, ext] of parseExtensions(
          parts[2],
          'crlEntryExtensions',
          // RFC 5280 wants one or more when present, but @peculiar/x509 (our CA's generator)
          // writes an empty SEQUENCE for entries without extensions; it says nothing either way.
          true,
        )) {
          if (oid === CRL_OID.certificateIssuer) {
            throw crlError(
              'the CRL is an indirect CRL (an entry carries certificateIssuer); indirect CRLs are not supported: publish one CRL per issuing CA',
            );
          }
          if (ext.critical && oid !== CRL_OID.reasonCode && oid !== CRL_OID.invalidityDate) {
            throw crlError(
              `a CRL entry carries the critical extension ${oid}, which this verifier does not evaluate`,
            );
          }
        }
      }
      revoked.set(normalizeSerial(toHex(serial.value)), revocationDate);
    }
  }

  let authorityKeyId: string | undefined;
  let crlNumber: string | undefined;
  if (fields[i]?.tag === contextTag(0, true)) {
    if (!v2) throw new DerError('CRL extensions need a v2 CRL');
    const exts = parseExtensions(
      readOnly((fields[i++] as Tlv).value, TAG.SEQUENCE, 'crlExtensions'),
      'crlExtensions',
    );
    for (const [oid, ext] of exts) {
      if (oid === CRL_OID.deltaCRLIndicator) {
        throw crlError('the CRL is a delta CRL; delta CRLs are not supported: publish the complete CRL');
      }
      if (oid === CRL_OID.issuingDistributionPoint && ext.critical) {
        throw crlError(
          'the CRL has an issuingDistributionPoint (a partitioned CRL), which this verifier does not evaluate: publish one complete CRL per issuing CA',
        );
      }
      if (
        ext.critical &&
        oid !== CRL_OID.authorityKeyIdentifier &&
        oid !== CRL_OID.cRLNumber &&
        oid !== CRL_OID.freshestCRL
      ) {
        throw crlError(
          `the CRL carries the critical extension ${oid}, which this verifier does not evaluate`,
        );
      }
    }
    const aki = exts.get(CRL_OID.authorityKeyIdentifier);
    if (aki) authorityKeyId = parseAuthorityKeyId(aki.value);
    const num = exts.get(CRL_OID.cRLNumber);
    if (num) crlNumber = normalizeSerial(toHex(readOnly(num.value, TAG.INTEGER, 'CRLNumber').value));
  }
  if (i !== fields.length) throw new DerError('TBSCertList has unexpected trailing fields');

  return {
    der,
    tbsDer: (tbs as Tlv).raw,
    signatureAlgorithm: algOid,
    signature: sigBits.value.subarray(1),
    issuerDer: issuer.raw,
    authorityKeyId,
    thisUpdate,
    nextUpdate,
    crlNumber,
    revoked,
  };
}

// Signature results per CRL and issuer; both objects are immutable, so the cache cannot go stale.
const signatureChecks = new WeakMap<ParsedCrl, WeakMap<ParsedCertificate, boolean>>();

/** True if `crl` is signed by `issuer`'s key (signature and cRLSign only; names are checked by the caller). */
export function crlSignedBy(crl: ParsedCrl, issuer: ParsedCertificate): boolean {
  if (issuer.keyUsage !== undefined && (issuer.keyUsage & KeyUsage.cRLSign) === 0) return false;
  let byIssuer = signatureChecks.get(crl);
  if (!byIssuer) {
    byIssuer = new WeakMap();
    signatureChecks.set(crl, byIssuer);
  }
  let ok = byIssuer.get(issuer);
  if (ok === undefined) {
    try {
      const digest = SIGNATURE_DIGESTS.get(crl.signatureAlgorithm) ?? null;
      ok = cryptoVerify(digest, crl.tbsDer, publicKeyOf(issuer), crl.signature);
    } catch {
      // A key that does not fit the algorithm (an RSA CRL against an EC issuer): not signed by it.
      ok = false;
    }
    byIssuer.set(issuer, ok);
  }
  return ok;
}

/** Where a path failed revocation: which certificate, and the CRL that lists it. */
export interface Revocation {
  /** Index in the path (0 = the leaf). */
  readonly index: number;
  readonly certificate: ParsedCertificate;
  readonly crl: ParsedCrl;
  /** Whether the CRL's signature was checked against the certificate's issuer (see the file header). */
  readonly signatureChecked: boolean;
}

export class RevocationList {
  readonly crls: readonly ParsedCrl[];

  private constructor(crls: readonly ParsedCrl[]) {
    this.crls = Object.freeze([...crls]);
  }

  /**
   * Parses a CRL file: one or more PEM `X509 CRL` blocks. Throws IdentityError ID_ERR_CRL saying
   * what to fix when the file holds no CRL, another kind of block, or a CRL that does not parse or
   * uses what this verifier does not evaluate.
   */
  static fromPem(text: string, source = 'CRL file'): RevocationList {
    let blocks;
    try {
      blocks = pemBlocks(text);
    } catch (err) {
      throw crlError(`${source}: ${(err as Error).message}`, err);
    }
    if (blocks.length === 0) {
      throw crlError(
        `${source} holds no PEM CRL (-----BEGIN X509 CRL-----); to revoke nothing, publish a CRL without entries rather than an empty file`,
      );
    }
    if (blocks.length > MAX_CRLS_PER_FILE) {
      throw crlError(`${source} holds ${blocks.length} CRLs; at most ${MAX_CRLS_PER_FILE} are accepted`);
    }
    const crls = blocks.map((b, n) => {
      if (b.label !== 'X509 CRL') {
        throw crlError(`${source}: block #${n + 1} is "${b.label}"; only X509 CRL blocks are allowed`);
      }
      try {
        return parseCrl(b.der);
      } catch (err) {
        throw crlError(`${source}: CRL #${n + 1}: ${(err as Error).message}`, err);
      }
    });
    return new RevocationList(crls);
  }

  static fromDer(ders: readonly Uint8Array[]): RevocationList {
    return new RevocationList(ders.map((d) => parseCrl(d)));
  }

  /** How many serial numbers the list revokes, over all its CRLs. */
  get revokedCount(): number {
    return this.crls.reduce((n, c) => n + c.revoked.size, 0);
  }

  /**
   * The CRL that revokes `cert`, if any. `issuer` is the certificate that issued it on the
   * verified path, or undefined when the path's issuer is not at hand (see the file header).
   */
  revokes(cert: ParsedCertificate, issuer: ParsedCertificate | undefined): ParsedCrl | undefined {
    const serial = normalizeSerial(cert.serial);
    for (const crl of this.crls) {
      if (!crl.revoked.has(serial) || !bytesEqual(crl.issuerDer, cert.issuerDer)) continue;
      if (issuer === undefined) {
        if (
          crl.authorityKeyId !== undefined &&
          cert.authorityKeyId !== undefined &&
          crl.authorityKeyId !== cert.authorityKeyId
        ) {
          continue;
        }
        return crl;
      }
      if (
        crl.authorityKeyId !== undefined &&
        issuer.subjectKeyId !== undefined &&
        crl.authorityKeyId !== issuer.subjectKeyId
      ) {
        continue;
      }
      if (crlSignedBy(crl, issuer)) return crl;
    }
    return undefined;
  }

  /**
   * The intermediates revoked by the trust anchors themselves: entries of CRLs that one of
   * `anchors` issued and signed. When a path cannot be built here (the TLS server does not see
   * the client's intermediate), a leaf could chain through one of these without any CRL naming
   * the leaf; verifySvid then refuses rather than take OpenSSL's word for the path.
   */
  anchorRevocations(anchors: readonly ParsedCertificate[]): number {
    let n = 0;
    for (const crl of this.crls) {
      if (crl.revoked.size === 0) continue;
      const byAnchor = anchors.some((a) => bytesEqual(crl.issuerDer, a.subjectDer) && crlSignedBy(crl, a));
      if (byAnchor) n += crl.revoked.size;
    }
    return n;
  }

  /**
   * Checks every certificate of a verified path below its anchor: `path` is [leaf, intermediates…,
   * anchor] when `complete`, or [leaf] alone when the issuer was not at hand.
   */
  check(path: readonly ParsedCertificate[], complete: boolean): Revocation | undefined {
    const last = complete ? path.length - 1 : path.length;
    for (let index = 0; index < last; index++) {
      const certificate = path[index] as ParsedCertificate;
      const issuer = complete ? path[index + 1] : undefined;
      const crl = this.revokes(certificate, issuer);
      if (crl) return { index, certificate, crl, signatureChecked: issuer !== undefined };
    }
    return undefined;
  }
}

/** The error verifySvid raises for a revoked path (also used when live sessions are re-checked). */
export function revokedError(r: Revocation, pathLength: number): IdentityError {
  const role =
    r.index === 0
      ? 'peer leaf certificate'
      : r.index === pathLength - 1
        ? 'root certificate'
        : `intermediate certificate #${r.index}`;
  const number = r.crl.crlNumber !== undefined ? `, CRL number ${r.crl.crlNumber}` : '';
  return new IdentityError(
    'ID_ERR_REVOKED',
    `the ${role} (serial ${r.certificate.serial}) is revoked by the CRL of "${describeName(r.crl.issuerDer)}" (thisUpdate ${r.crl.thisUpdate.toISOString()}${number})`,
  );
}

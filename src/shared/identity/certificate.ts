// SPDX-License-Identifier: Apache-2.0
// Parses an X.509 certificate from DER into the fields the SVID verifier and the CA need
// (RFC 5280 §4.1 structure, §4.2.1 standard extensions). Parsing is ours (./der.ts), strict,
// and never goes through a string rendering of the certificate; signature checks use Node's
// OpenSSL-backed crypto.X509Certificate#verify, which checks the signature only.
import { createPublicKey, X509Certificate as NodeX509Certificate, type KeyObject } from 'node:crypto';
import {
  children,
  contextTag,
  decodeBitString,
  decodeBoolean,
  decodeOid,
  decodeSmallUint,
  DerError,
  expectTag,
  readOnly,
  TAG,
  toHex,
  type Tlv,
} from './der.ts';
import { IdentityError } from './errors.ts';

/** Extension OIDs (RFC 5280 §4.2.1). */
export const OID = {
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  nameConstraints: '2.5.29.30',
  certificatePolicies: '2.5.29.32',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  anyExtendedKeyUsage: '2.5.29.37.0',
} as const;

/** keyUsage bits (RFC 5280 §4.2.1.3), as flags: bit n of the BIT STRING is 1 << n. */
export const KeyUsage = {
  digitalSignature: 1 << 0,
  nonRepudiation: 1 << 1,
  keyEncipherment: 1 << 2,
  dataEncipherment: 1 << 3,
  keyAgreement: 1 << 4,
  keyCertSign: 1 << 5,
  cRLSign: 1 << 6,
  encipherOnly: 1 << 7,
  decipherOnly: 1 << 8,
} as const;

/** GeneralName CHOICE tag numbers (RFC 5280 §4.2.1.6). */
export const GeneralNameTag = {
  otherName: 0,
  rfc822Name: 1,
  dNSName: 2,
  x400Address: 3,
  directoryName: 4,
  ediPartyName: 5,
  uniformResourceIdentifier: 6,
  iPAddress: 7,
  registeredID: 8,
} as const;

export interface GeneralName {
  /** Tag number of the CHOICE (see GeneralNameTag). */
  readonly type: number;
  /** Contents octets (for URI/DNS/email: the IA5String bytes exactly as encoded). */
  readonly value: Uint8Array;
}

export interface NameSubtree {
  readonly base: GeneralName;
}

export interface NameConstraints {
  readonly permitted: readonly NameSubtree[];
  readonly excluded: readonly NameSubtree[];
}

export interface CertExtension {
  readonly critical: boolean;
  readonly value: Uint8Array;
}

/** Extensions this module understands, so they may be critical (RFC 5280 §4.2: unknown critical → reject). */
export const RECOGNIZED_EXTENSIONS: ReadonlySet<string> = new Set([
  OID.subjectKeyIdentifier,
  OID.keyUsage,
  OID.subjectAltName,
  OID.basicConstraints,
  OID.nameConstraints,
  OID.authorityKeyIdentifier,
  OID.extKeyUsage,
]);

export interface ParsedCertificate {
  readonly der: Uint8Array;
  /** Serial number as lowercase hex, as encoded (two's complement, minimal). */
  readonly serial: string;
  readonly issuerDer: Uint8Array;
  readonly subjectDer: Uint8Array;
  /** True when the subject Name is an empty SEQUENCE. */
  readonly subjectEmpty: boolean;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spkiDer: Uint8Array;
  readonly extensions: ReadonlyMap<string, CertExtension>;
  /** Absent extension → undefined (which RFC 5280 treats as cA=false). */
  readonly basicConstraints: { readonly ca: boolean; readonly pathLen?: number } | undefined;
  /** keyUsage flags (see KeyUsage), undefined when the extension is absent. */
  readonly keyUsage: number | undefined;
  /** extKeyUsage OIDs, undefined when the extension is absent. */
  readonly extKeyUsage: readonly string[] | undefined;
  /** Every SAN, in order; empty when the extension is absent. */
  readonly subjectAltNames: readonly GeneralName[];
  readonly subjectKeyId: string | undefined;
  readonly authorityKeyId: string | undefined;
  readonly nameConstraints: NameConstraints | undefined;
  /** Critical extensions this module does not understand. */
  readonly unknownCritical: readonly string[];
}

function parseError(message: string, cause?: unknown): IdentityError {
  return new IdentityError(
    'ID_ERR_CERT_PARSE',
    `malformed X.509 certificate: ${message}; check that the peer or CA sends DER/PEM certificates that follow RFC 5280`,
    { cause },
  );
}

/** RFC 5280 §4.1.2.5: UTCTime YYMMDDHHMMSSZ (YY ≥ 50 → 19YY) or GeneralizedTime YYYYMMDDHHMMSSZ. */
export function decodeTime(tlv: Tlv | undefined, what: string): Date {
  if (!tlv) throw new DerError(`missing ${what}`);
  const s = Buffer.from(tlv.value).toString('latin1');
  let m: RegExpExecArray | null;
  let year: number;
  if (tlv.tag === TAG.UTC_TIME) {
    m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s);
    if (!m) throw new DerError(`${what}: UTCTime must be YYMMDDHHMMSSZ`);
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (tlv.tag === TAG.GENERALIZED_TIME) {
    m = /^(\d\d\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s);
    if (!m) throw new DerError(`${what}: GeneralizedTime must be YYYYMMDDHHMMSSZ`);
    year = Number(m[1]);
  } else {
    throw new DerError(`${what}: not a UTCTime or GeneralizedTime`);
  }
  const [mo, d, h, mi, se] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as [
    number,
    number,
    number,
    number,
    number,
  ];
  const ms = Date.UTC(year, mo - 1, d, h, mi, se);
  const back = new Date(ms);
  if (
    back.getUTCMonth() !== mo - 1 ||
    back.getUTCDate() !== d ||
    back.getUTCHours() !== h ||
    back.getUTCMinutes() !== mi ||
    back.getUTCSeconds() !== se
  ) {
    throw new DerError(`${what}: not a real date`);
  }
  // Date.UTC maps years 0-99 to 1900-1999; GeneralizedTime years < 100 are not meaningful here.
  if (year < 1950) throw new DerError(`${what}: year before 1950`);
  return back;
}

/** Parses a GeneralNames SEQUENCE (SAN extension value, RFC 5280 §4.2.1.6). */
export function parseGeneralNames(value: Uint8Array): GeneralName[] {
  const seq = readOnly(value, TAG.SEQUENCE, 'GeneralNames');
  const names = children(seq.value).map(parseGeneralName);
  if (names.length === 0) throw new DerError('GeneralNames must not be empty');
  return names;
}

function parseGeneralName(tlv: Tlv): GeneralName {
  if ((tlv.tag & 0xc0) !== 0x80) throw new DerError('GeneralName must be context-tagged');
  const type = tlv.tag & 0x1f;
  const constructed = (tlv.tag & 0x20) !== 0;
  if (type > 8) throw new DerError(`unknown GeneralName tag [${type}]`);
  // otherName, x400Address, directoryName (EXPLICIT Name) and ediPartyName are constructed;
  // the string and address forms are primitive. A mismatch is not DER.
  const mustBeConstructed = type === 0 || type === 3 || type === 4 || type === 5;
  if (constructed !== mustBeConstructed) throw new DerError(`GeneralName [${type}] has the wrong form`);
  return { type, value: tlv.value };
}

function parseNameConstraints(value: Uint8Array): NameConstraints {
  const seq = readOnly(value, TAG.SEQUENCE, 'NameConstraints');
  const permitted: NameSubtree[] = [];
  const excluded: NameSubtree[] = [];
  for (const part of children(seq.value)) {
    let target: NameSubtree[];
    if (part.tag === contextTag(0, true)) target = permitted;
    else if (part.tag === contextTag(1, true)) target = excluded;
    else throw new DerError('NameConstraints: unexpected element');
    for (const sub of children(part.value)) {
      expectTag(sub, TAG.SEQUENCE, 'GeneralSubtree');
      const [base, ...rest] = children(sub.value);
      if (!base) throw new DerError('GeneralSubtree without a base');
      // RFC 5280 §4.2.1.10: minimum MUST be zero and maximum MUST be absent.
      if (rest.length > 0) throw new DerError('GeneralSubtree minimum/maximum are not allowed');
      target.push({ base: parseGeneralName(base) });
    }
  }
  if (permitted.length === 0 && excluded.length === 0) {
    throw new DerError('NameConstraints must have permitted or excluded subtrees');
  }
  return { permitted, excluded };
}

function parseBasicConstraints(value: Uint8Array): { ca: boolean; pathLen?: number } {
  const seq = readOnly(value, TAG.SEQUENCE, 'BasicConstraints');
  const items = children(seq.value);
  let i = 0;
  let ca = false;
  if (items[i]?.tag === TAG.BOOLEAN) {
    // An explicit FALSE is not DER (DEFAULT values are omitted) but is common and harmless.
    ca = decodeBoolean(items[i++] as Tlv);
  }
  let pathLen: number | undefined;
  const next = items[i];
  if (next) {
    pathLen = decodeSmallUint(next, 'pathLenConstraint');
    i++;
  }
  if (i !== items.length) throw new DerError('BasicConstraints: unexpected element');
  // RFC 5280 §4.2.1.9: pathLenConstraint only makes sense when cA is TRUE.
  if (pathLen !== undefined && !ca) throw new DerError('BasicConstraints: pathLenConstraint without cA');
  return pathLen === undefined ? { ca } : { ca, pathLen };
}

function parseKeyUsage(value: Uint8Array): number {
  const { bytes, unusedBits } = decodeBitString(readOnly(value, TAG.BIT_STRING, 'KeyUsage'), 'KeyUsage');
  const totalBits = bytes.length * 8 - unusedBits;
  let flags = 0;
  for (let bit = 0; bit < Math.min(totalBits, 9); bit++) {
    if (((bytes[bit >> 3] ?? 0) & (0x80 >> (bit & 7))) !== 0) flags |= 1 << bit;
  }
  // RFC 5280 §4.2.1.3: when present, at least one bit MUST be set.
  if (flags === 0) throw new DerError('KeyUsage has no bits set');
  return flags;
}

function parseExtKeyUsage(value: Uint8Array): string[] {
  const seq = readOnly(value, TAG.SEQUENCE, 'ExtKeyUsage');
  const oids = children(seq.value).map((t) => decodeOid(expectTag(t, TAG.OID, 'KeyPurposeId').value));
  if (oids.length === 0) throw new DerError('ExtKeyUsage must not be empty');
  return oids;
}

function parseSubjectKeyId(value: Uint8Array): string {
  return toHex(readOnly(value, TAG.OCTET_STRING, 'SubjectKeyIdentifier').value);
}

export function parseAuthorityKeyId(value: Uint8Array): string | undefined {
  const seq = readOnly(value, TAG.SEQUENCE, 'AuthorityKeyIdentifier');
  for (const item of children(seq.value)) {
    if (item.tag === contextTag(0, false)) return toHex(item.value);
  }
  return undefined;
}

/**
 * An Extensions SEQUENCE (RFC 5280 §4.1, §5.1) by OID: certificates' and CRLs'. Each OID at most
 * once (§4.2: without this, a second SAN extension could smuggle in a second identity); an
 * explicit critical FALSE is tolerated. Throws DerError; `what` names the field in messages.
 */
export function parseExtensions(seq: Tlv, what: string, allowEmpty = false): Map<string, CertExtension> {
  const out = new Map<string, CertExtension>();
  const exts = children(expectTag(seq, TAG.SEQUENCE, what).value);
  if (exts.length === 0 && !allowEmpty) throw new DerError(`${what} must not be empty`);
  for (const ext of exts) {
    const parts = children(expectTag(ext, TAG.SEQUENCE, 'Extension').value);
    const oid = decodeOid(expectTag(parts[0], TAG.OID, 'extnID').value);
    let j = 1;
    let critical = false;
    if (parts[j]?.tag === TAG.BOOLEAN) critical = decodeBoolean(parts[j++] as Tlv);
    const value = expectTag(parts[j++], TAG.OCTET_STRING, 'extnValue').value;
    if (j !== parts.length) throw new DerError(`extension ${oid} has extra elements`);
    if (out.has(oid)) throw new DerError(`extension ${oid} appears more than once in ${what}`);
    out.set(oid, { critical, value });
  }
  return out;
}

/** Parses a DER certificate. Throws IdentityError ID_ERR_CERT_PARSE on any structural problem. */
export function parseCertificate(der: Uint8Array): ParsedCertificate {
  try {
    return parseCertificateUnchecked(der);
  } catch (err) {
    if (err instanceof IdentityError) throw err;
    if (err instanceof DerError) throw parseError(err.message, err);
    throw parseError('unexpected parser failure', err);
  }
}

function parseCertificateUnchecked(der: Uint8Array): ParsedCertificate {
  const cert = readOnly(der, TAG.SEQUENCE, 'Certificate');
  const [tbs, sigAlg, sigValue, ...extra] = children(cert.value);
  if (extra.length > 0) throw new DerError('Certificate has extra elements');
  expectTag(tbs, TAG.SEQUENCE, 'TBSCertificate');
  expectTag(sigAlg, TAG.SEQUENCE, 'signatureAlgorithm');
  expectTag(sigValue, TAG.BIT_STRING, 'signatureValue');

  const fields = children((tbs as Tlv).value);
  let i = 0;
  let version = 0;
  if (fields[i]?.tag === contextTag(0, true)) {
    version = decodeSmallUint(readOnly((fields[i] as Tlv).value, TAG.INTEGER, 'version'), 'version');
    i++;
    if (version > 2) throw new DerError(`unknown certificate version ${version + 1}`);
  }
  const serialTlv = expectTag(fields[i++], TAG.INTEGER, 'serialNumber');
  if (serialTlv.value.length === 0 || serialTlv.value.length > 20) {
    // RFC 5280 §4.1.2.2: serial numbers are at most 20 octets.
    throw new DerError('serialNumber must be 1 to 20 octets');
  }
  const innerSigAlg = expectTag(fields[i++], TAG.SEQUENCE, 'signature');
  // RFC 5280 §4.1.1.2: the inner and outer signature algorithms MUST be identical.
  if (Buffer.compare(innerSigAlg.raw, (sigAlg as Tlv).raw) !== 0) {
    throw new DerError('TBSCertificate.signature differs from Certificate.signatureAlgorithm');
  }
  const issuer = expectTag(fields[i++], TAG.SEQUENCE, 'issuer');
  const validity = expectTag(fields[i++], TAG.SEQUENCE, 'validity');
  const subject = expectTag(fields[i++], TAG.SEQUENCE, 'subject');
  const spki = expectTag(fields[i++], TAG.SEQUENCE, 'subjectPublicKeyInfo');
  const [nb, na, ...vExtra] = children(validity.value);
  if (vExtra.length > 0) throw new DerError('Validity has extra elements');
  const notBefore = decodeTime(nb, 'notBefore');
  const notAfter = decodeTime(na, 'notAfter');

  if (fields[i]?.tag === contextTag(1, false)) i++; // issuerUniqueID
  if (fields[i]?.tag === contextTag(2, false)) i++; // subjectUniqueID
  const extensions = new Map<string, CertExtension>();
  if (fields[i]?.tag === contextTag(3, true)) {
    if (version !== 2) throw new DerError('extensions are only allowed in v3 certificates');
    for (const [oid, ext] of parseExtensions(
      readOnly((fields[i] as Tlv).value, TAG.SEQUENCE, 'Extensions'),
      'Extensions',
    )) {
      extensions.set(oid, ext);
    }
    i++;
  }
  if (i !== fields.length) throw new DerError('TBSCertificate has unexpected trailing fields');

  const get = (oid: string): Uint8Array | undefined => extensions.get(oid)?.value;
  const bc = get(OID.basicConstraints);
  const ku = get(OID.keyUsage);
  const eku = get(OID.extKeyUsage);
  const san = get(OID.subjectAltName);
  const ski = get(OID.subjectKeyIdentifier);
  const aki = get(OID.authorityKeyIdentifier);
  const nc = get(OID.nameConstraints);
  const unknownCritical = [...extensions]
    .filter(([oid, e]) => e.critical && !RECOGNIZED_EXTENSIONS.has(oid))
    .map(([oid]) => oid);

  return {
    der,
    serial: toHex(serialTlv.value),
    issuerDer: issuer.raw,
    subjectDer: subject.raw,
    subjectEmpty: subject.value.length === 0,
    notBefore,
    notAfter,
    spkiDer: spki.raw,
    extensions,
    basicConstraints: bc ? parseBasicConstraints(bc) : undefined,
    keyUsage: ku ? parseKeyUsage(ku) : undefined,
    extKeyUsage: eku ? parseExtKeyUsage(eku) : undefined,
    subjectAltNames: san ? parseGeneralNames(san) : [],
    subjectKeyId: ski ? parseSubjectKeyId(ski) : undefined,
    authorityKeyId: aki ? parseAuthorityKeyId(aki) : undefined,
    nameConstraints: nc ? parseNameConstraints(nc) : undefined,
    unknownCritical,
  };
}

// Signature checks and public keys are cached per parsed certificate object; the objects are
// immutable, so the cache can never go stale.
const nodeCerts = new WeakMap<ParsedCertificate, NodeX509Certificate>();
const publicKeys = new WeakMap<ParsedCertificate, KeyObject>();

export function publicKeyOf(cert: ParsedCertificate): KeyObject {
  let key = publicKeys.get(cert);
  if (!key) {
    key = createPublicKey({ key: Buffer.from(cert.spkiDer), format: 'der', type: 'spki' });
    publicKeys.set(cert, key);
  }
  return key;
}

/** True if `cert`'s signature verifies with `issuer`'s public key (signature only, nothing else). */
export function signedBy(cert: ParsedCertificate, issuer: ParsedCertificate): boolean {
  try {
    let node = nodeCerts.get(cert);
    if (!node) {
      node = new NodeX509Certificate(Buffer.from(cert.der));
      nodeCerts.set(cert, node);
    }
    return node.verify(publicKeyOf(issuer));
  } catch {
    // Unsupported key or signature algorithm: not a valid signature for our purposes.
    return false;
  }
}

/** True if the certificate's issuer and subject names are byte-identical (RFC 5280 "self-issued"). */
export function isSelfIssued(cert: ParsedCertificate): boolean {
  return Buffer.compare(cert.issuerDer, cert.subjectDer) === 0;
}

const NAME_ATTRS: Readonly<Record<string, string>> = {
  '2.5.4.3': 'CN',
  '2.5.4.5': 'serialNumber',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
};

/** Renders a DER Name for messages ("O=cluster.local, CN=Intermediate CA"); never used for decisions. */
export function describeName(nameDer: Uint8Array): string {
  try {
    const rdns = children(readOnly(nameDer, TAG.SEQUENCE, 'Name').value);
    if (rdns.length === 0) return '(empty)';
    const parts: string[] = [];
    for (const rdn of rdns) {
      for (const atv of children(expectTag(rdn, TAG.SET, 'RDN').value)) {
        const [type, value] = children(expectTag(atv, TAG.SEQUENCE, 'AttributeTypeAndValue').value);
        const oid = decodeOid(expectTag(type, TAG.OID, 'AttributeType').value);
        const text = value ? JSON.stringify(Buffer.from(value.value).toString('utf8')).slice(1, -1) : '';
        parts.push(`${NAME_ATTRS[oid] ?? oid}=${text}`);
      }
    }
    return parts.join(', ');
  } catch {
    return '(unparsable name)';
  }
}

// SPDX-License-Identifier: Apache-2.0
// Test-only PKI helpers: a CA in one call, workload certificates in one call, and mintCert() for
// crafting deliberately bad certificates (several URI SANs, cA=true leaves, expired, arbitrary
// URI bytes, ...) for the red-team cases of security-and-reliability.md checklist B.
//
//   const ca = await newTestCa();                                   // trust domain cluster.local
//   const cert = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/a/sa/b');
//   tls.createServer({ key: cert.privateKeyPem, cert: cert.certChainPem.join(''), ca: cert.rootsPem.join('') })
//   const bad = await mintCert({ issuer: ca, uris: ['spiffe://cluster.local/ns/a/sa/b', 'spiffe://cluster.local/ns/x/sa/y'] });
import { createPrivateKey, webcrypto } from 'node:crypto';
import { CertificateAuthority, randomSerialHex, type CaOptions } from '../../src/shared/identity/ca.ts';
import { parseCertificate, type ParsedCertificate } from '../../src/shared/identity/certificate.ts';
import {
  workloadCertificateFromChain,
  type WorkloadCertificate,
} from '../../src/shared/identity/cert-manager.ts';
import {
  EC_P256_SHA256,
  generateKeyAndCsr,
  generateP256KeyPair,
  privateKeyToPem,
} from '../../src/shared/identity/csr.ts';
import { derToPem, pemCertificatesToDer } from '../../src/shared/identity/pem.ts';
import { TrustBundle } from '../../src/shared/identity/trust-bundle.ts';
import { x509 } from '../../src/shared/identity/x509.ts';

import { IdentityError } from '../../src/shared/identity/errors.ts';

export { x509 };

/** A CertificateAuthority for tests; trust domain defaults to cluster.local. */
export function newTestCa(opts: Partial<CaOptions> = {}): Promise<CertificateAuthority> {
  return CertificateAuthority.create({ trustDomain: 'cluster.local', ...opts });
}

/** Key + CSR + CA signature + response checks: a ready-to-use workload certificate. */
export async function issueWorkloadCert(
  ca: CertificateAuthority,
  identityUri: string,
  opts: { ttlSeconds?: number; now?: Date } = {},
): Promise<WorkloadCertificate> {
  const { privateKeyPem, csrPem } = await generateKeyAndCsr(identityUri);
  const { certChainPem } = await ca.sign({
    csrPem,
    identity: identityUri,
    ...(opts.ttlSeconds !== undefined ? { ttlSeconds: opts.ttlSeconds } : {}),
  });
  return workloadCertificateFromChain(privateKeyPem, certChainPem, {
    expectedIdentity: identityUri,
    ...(opts.now ? { now: opts.now } : {}),
  });
}

/** node:tls options presenting `cert` and trusting its roots (mTLS both ways). */
export function tlsOptions(cert: WorkloadCertificate): { key: string; cert: string; ca: string } {
  return { key: cert.privateKeyPem, cert: cert.certChainPem.join(''), ca: cert.rootsPem.join('') };
}

/** DER of the certificates a peer presenting `cert` sends: leaf then intermediates. */
export function presentedChainDer(cert: WorkloadCertificate): Uint8Array[] {
  return cert.certChainPem.flatMap((p) => pemCertificatesToDer(p));
}

/** DER of every certificate in the given PEM strings, in order. */
export function pemToDerList(...pems: (string | readonly string[])[]): Uint8Array[] {
  return pems.flat().flatMap((p) => pemCertificatesToDer(p));
}

/** The trust bundle of a CA or of a workload certificate. */
export function bundleOf(src: CertificateAuthority | WorkloadCertificate): TrustBundle {
  return src instanceof CertificateAuthority ? src.trustBundle : TrustBundle.fromPem(src.rootsPem);
}

/** A certificate and its key as minted by mintCert. */
export interface MintedCert {
  readonly certPem: string;
  readonly der: Uint8Array;
  readonly privateKeyPem: string;
  readonly keys: webcrypto.CryptoKeyPair;
}

export interface MintCertOptions {
  /** Who signs: a test CA (its current signing certificate: intermediate if any, else root), a minted CA cert, or 'self' (default). */
  issuer?: CertificateAuthority | MintedCert | 'self';
  /** Subject DN, e.g. 'O=cluster.local'. Default: empty. */
  subject?: string;
  /** URI SANs, encoded byte-for-byte from the string (one byte per UTF-16 unit, so '\0' stays NUL). */
  uris?: readonly string[];
  /** URI SANs with arbitrary bytes. */
  rawUris?: readonly Uint8Array[];
  dnsNames?: readonly string[];
  /** SAN extension criticality; default true when the subject is empty. */
  sanCritical?: boolean;
  /** Emit the SAN extension twice (RFC 5280 forbids duplicates). */
  duplicateSanExtension?: boolean;
  /** basicConstraints cA; `null` omits the extension. Default false (leaf). */
  ca?: boolean | null;
  pathLen?: number;
  /** keyUsage flags (x509.KeyUsageFlags); `null` omits. Default: leaf digitalSignature|keyEncipherment, CA keyCertSign|cRLSign. */
  keyUsage?: number | null;
  /** extKeyUsage OIDs; `null` omits. Default: leaf serverAuth+clientAuth, CA none. */
  extKeyUsage?: readonly string[] | null;
  /** Name constraints: permitted/excluded URI subtrees (e.g. 'cluster.local' or '.example.com'). */
  permittedUris?: readonly string[];
  excludedUris?: readonly string[];
  /** Default: now - 60 s. */
  notBefore?: Date;
  /** Default: now + 1 h. */
  notAfter?: Date;
  serial?: string;
  /** Reuse a key pair (e.g. to make a cert with the same key as another). */
  keys?: webcrypto.CryptoKeyPair;
  /** Extra raw extensions. */
  extensions?: readonly x509.Extension[];
}

// Minimal DER writer for the hand-made SAN and name-constraint extensions.
function derLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}
function tlv(tag: number, ...content: Uint8Array[]): Uint8Array {
  const body = Buffer.concat(content);
  return new Uint8Array(Buffer.concat([Uint8Array.of(tag), derLength(body.length), body]));
}
function latin1(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'latin1'));
}

function sanValue(opts: MintCertOptions): Uint8Array | undefined {
  const names = [
    ...(opts.uris ?? []).map((u) => tlv(0x86, latin1(u))),
    ...(opts.rawUris ?? []).map((b) => tlv(0x86, b)),
    ...(opts.dnsNames ?? []).map((d) => tlv(0x82, latin1(d))),
  ];
  return names.length > 0 ? tlv(0x30, ...names) : undefined;
}

function nameConstraintsValue(opts: MintCertOptions): Uint8Array | undefined {
  const subtrees = (list: readonly string[] | undefined, tag: number): Uint8Array[] =>
    list && list.length > 0 ? [tlv(tag, ...list.map((u) => tlv(0x30, tlv(0x86, latin1(u)))))] : [];
  const parts = [...subtrees(opts.permittedUris, 0xa0), ...subtrees(opts.excludedUris, 0xa1)];
  return parts.length > 0 ? tlv(0x30, ...parts) : undefined;
}

async function issuerKeyAndCert(
  issuer: CertificateAuthority | MintedCert,
): Promise<{ key: webcrypto.CryptoKey; cert: ParsedCertificate }> {
  if (!(issuer instanceof CertificateAuthority))
    return { key: issuer.keys.privateKey, cert: parseCertificate(issuer.der) };
  const m = issuer.exportKeyMaterial();
  const certPem = m.intermediateCertPem ?? m.rootCertPem;
  const keyPem = m.intermediateKeyPem ?? m.rootKeyPem;
  const pkcs8 = createPrivateKey(keyPem).export({ type: 'pkcs8', format: 'der' });
  const key = await webcrypto.subtle.importKey(
    'pkcs8',
    pkcs8,
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['sign'],
  );
  const der = pemCertificatesToDer(certPem)[0];
  if (!der) throw new Error('CA has no signing certificate');
  return { key, cert: parseCertificate(der) };
}

/** Mints one certificate with full control over its contents (for negative tests). */
export async function mintCert(opts: MintCertOptions = {}): Promise<MintedCert> {
  const keys = opts.keys ?? (await generateP256KeyPair());
  const isCa = opts.ca === true;
  const now = Date.now();
  const extensions: x509.Extension[] = [];
  if (opts.ca !== null)
    extensions.push(new x509.BasicConstraintsExtension(isCa, isCa ? opts.pathLen : undefined, true));
  const ku =
    opts.keyUsage === undefined
      ? isCa
        ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign
        : x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment
      : opts.keyUsage;
  // Combined flags are plain numbers, which the enum-typed parameter accepts at runtime.
  // eslint-disable-next-line @typescript-eslint/no-unsafe-enum-assignment
  if (ku !== null) extensions.push(new x509.KeyUsagesExtension(ku, true));
  const eku =
    opts.extKeyUsage === undefined
      ? isCa
        ? null
        : [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]
      : opts.extKeyUsage;
  if (eku !== null) extensions.push(new x509.ExtendedKeyUsageExtension([...eku], false));
  const subject = opts.subject ?? '';
  const san = sanValue(opts);
  if (san) {
    const critical = opts.sanCritical ?? subject === '';
    extensions.push(new x509.Extension('2.5.29.17', critical, san));
    if (opts.duplicateSanExtension === true) extensions.push(new x509.Extension('2.5.29.17', critical, san));
  }
  const nc = nameConstraintsValue(opts);
  if (nc) extensions.push(new x509.Extension('2.5.29.30', true, nc));
  if (isCa) extensions.push(await x509.SubjectKeyIdentifierExtension.create(keys.publicKey));
  extensions.push(...(opts.extensions ?? []));

  const base = {
    serialNumber: opts.serial ?? randomSerialHex(),
    notBefore: opts.notBefore ?? new Date(now - 60_000),
    notAfter: opts.notAfter ?? new Date(now + 3_600_000),
    signingAlgorithm: EC_P256_SHA256,
  };
  let cert: x509.X509Certificate;
  const issuer = opts.issuer ?? 'self';
  if (issuer === 'self') {
    cert = await x509.X509CertificateGenerator.createSelfSigned({ ...base, name: subject, keys, extensions });
  } else {
    const signer = await issuerKeyAndCert(issuer);
    if (signer.cert.subjectKeyId !== undefined) {
      extensions.push(new x509.AuthorityKeyIdentifierExtension(signer.cert.subjectKeyId));
    }
    cert = await x509.X509CertificateGenerator.create({
      ...base,
      subject,
      issuer: new x509.Name(signer.cert.subjectDer),
      publicKey: keys.publicKey,
      signingKey: signer.key,
      extensions,
    });
  }
  const der = new Uint8Array(cert.rawData);
  return {
    certPem: derToPem(der),
    der,
    privateKeyPem: await privateKeyToPem(keys.privateKey),
    keys,
  };
}

/** A CRL as minted by mintCrl. */
export interface MintedCrl {
  readonly der: Uint8Array;
  /** One PEM "X509 CRL" block with a trailing newline. */
  readonly pem: string;
}

/** One revoked serial (hex) for mintCrl, with what its entry carries. */
export interface MintCrlEntry {
  readonly serial: string;
  /** Default: thisUpdate. */
  readonly revocationDate?: Date;
  /** Adds a non-critical reasonCode (2.5.29.21) entry extension. */
  readonly reason?: x509.X509CrlReason;
  /** Raw entry extensions, e.g. certificateIssuer (2.5.29.29). */
  readonly extensions?: readonly x509.Extension[];
}

export interface MintCrlOptions {
  /**
   * Whose CRL this is: its subject becomes the CRL issuer, its key signs (unless `signingKey`) and
   * its subjectKeyId becomes the authorityKeyIdentifier (unless `authorityKeyId`). For a test CA:
   * the signing certificate (intermediate if any, else root), or the root with `caCert: 'root'`.
   */
  issuer: CertificateAuthority | MintedCert;
  caCert?: 'signing' | 'root';
  /** Sign with this key instead of the issuer's (a forged CRL, or another CA with the same name). */
  signingKey?: webcrypto.CryptoKey;
  /** Default EC_P256_SHA256; the key's own algorithm (name, hash) takes precedence, as in @peculiar/x509. */
  signingAlgorithm?: webcrypto.Algorithm | webcrypto.RsaHashedImportParams | webcrypto.EcdsaParams;
  /** Issuer Name instead of the issuer's subject (a DN string, or DER). */
  issuerName?: string | Uint8Array;
  /** Revoked serials: hex strings, or entries with a date and extensions. */
  serials?: readonly (string | MintCrlEntry)[];
  /** Default: now - 60 s. */
  thisUpdate?: Date;
  /** Default: thisUpdate + 1 day; `null` omits it. */
  nextUpdate?: Date | null;
  /** cRLNumber (non-critical); default 1, `null` omits the extension. */
  crlNumber?: number | bigint | null;
  /** authorityKeyIdentifier keyIdentifier (hex); default the issuer's subjectKeyId, `null` omits. */
  authorityKeyId?: string | null;
  /** Extra raw CRL extensions (OID, critical, DER value), e.g. deltaCRLIndicator (2.5.29.27). */
  extensions?: readonly x509.Extension[];
}

/** DER INTEGER of a non-negative number (a cRLNumber value). */
function derUnsigned(n: bigint): Uint8Array {
  let hex = n.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  const body = Buffer.from(hex, 'hex');
  return tlv(0x02, (body[0] ?? 0) >= 0x80 ? Buffer.concat([Uint8Array.of(0), body]) : body);
}

async function crlSigner(
  issuer: CertificateAuthority | MintedCert,
  which: 'signing' | 'root',
): Promise<{ key: webcrypto.CryptoKey; cert: ParsedCertificate }> {
  if (!(issuer instanceof CertificateAuthority) || which === 'signing') return issuerKeyAndCert(issuer);
  const m = issuer.exportKeyMaterial();
  const pkcs8 = createPrivateKey(m.rootKeyPem).export({ type: 'pkcs8', format: 'der' });
  const key = await webcrypto.subtle.importKey(
    'pkcs8',
    pkcs8,
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['sign'],
  );
  const der = pemCertificatesToDer(m.rootCertPem)[0];
  if (!der) throw new Error('CA has no root certificate');
  return { key, cert: parseCertificate(der) };
}

/**
 * Mints one v2 CRL with full control over its contents (for negative tests). Shapes the generator
 * cannot produce (v1 with extensions, mismatched signature algorithms, bad DER) are made by
 * editing the returned DER.
 */
export async function mintCrl(opts: MintCrlOptions): Promise<MintedCrl> {
  const signer = await crlSigner(opts.issuer, opts.caCert ?? 'signing');
  const thisUpdate = opts.thisUpdate ?? new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
  const nextUpdate =
    opts.nextUpdate === undefined ? new Date(thisUpdate.getTime() + 86_400_000) : opts.nextUpdate;
  const extensions: x509.Extension[] = [];
  const aki = opts.authorityKeyId === undefined ? signer.cert.subjectKeyId : opts.authorityKeyId;
  if (aki !== null && aki !== undefined) extensions.push(new x509.AuthorityKeyIdentifierExtension(aki));
  const crlNumber = opts.crlNumber === undefined ? 1n : opts.crlNumber;
  if (crlNumber !== null)
    extensions.push(new x509.Extension('2.5.29.20', false, derUnsigned(BigInt(crlNumber))));
  extensions.push(...(opts.extensions ?? []));
  const entries = (opts.serials ?? []).map((s) => {
    const e: MintCrlEntry = typeof s === 'string' ? { serial: s } : s;
    return {
      serialNumber: e.serial,
      revocationDate: e.revocationDate ?? thisUpdate,
      ...(e.reason !== undefined ? { reason: e.reason } : {}),
      ...(e.extensions !== undefined ? { extensions: [...e.extensions] } : {}),
    };
  });
  const crl = await x509.X509CrlGenerator.create({
    issuer:
      opts.issuerName === undefined
        ? new x509.Name(signer.cert.subjectDer)
        : typeof opts.issuerName === 'string'
          ? opts.issuerName
          : new x509.Name(opts.issuerName),
    thisUpdate,
    ...(nextUpdate !== null ? { nextUpdate } : {}),
    entries,
    extensions,
    signingKey: opts.signingKey ?? signer.key,
    signingAlgorithm: opts.signingAlgorithm ?? EC_P256_SHA256,
  });
  const der = new Uint8Array(crl.rawData);
  return { der, pem: derToPem(der, 'X509 CRL') };
}

/** The IdentityError `fn` throws; fails the test when it throws something else or nothing. */
export function thrownIdentityError(fn: () => unknown): IdentityError {
  try {
    fn();
  } catch (err) {
    if (err instanceof IdentityError) return err;
    throw err;
  }
  throw new Error('expected an IdentityError, nothing was thrown');
}

// SPDX-License-Identifier: Apache-2.0
// The certificate authority core (ambient-protocols.md §4; istio/istio:security/pkg/pki/ca/ca.go
// and security/pkg/server/ca/server.go). It signs workload CSRs for exactly the identity the
// caller was authorized for, and nothing else: authentication and node authorization (§4, "Node
// impersonation") happen in front of it, in the controller's CA service or in ztunnel's static
// mode. Used in-process by both.
//
// Key material: a self-signed ECDSA P-256 root (and optionally an intermediate signed by it),
// kept in memory or loaded from / persisted to a directory.
//
// Root rotation takes three steps, because a peer learns the trust bundle only with its next
// certificate (the last element of the CA response), up to a refresh period later:
//   1. addNextRoot(): a new root joins the trust bundle; signing stays with the current root. Every
//      certificate issued from now on carries both roots.
//   2. activateNextRoot(), once every holder has refreshed since step 1: signing moves to the new
//      root; the old one stays trusted. Peers still on step-1 certificates trust the new root.
//   3. dropOldRoot(), once every holder has refreshed since step 2: the old root leaves the bundle.
// At no point does a certificate in use chain to a root its peers do not trust (checklist I.102).
// Holders of long-lived certificates from this CA (the controller's serving certificate) renew on
// onRootsChange().
import { randomBytes, createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesEqual } from './der.ts';
import { IdentityError } from './errors.ts';
import {
  GeneralNameTag,
  KeyUsage,
  parseCertificate,
  parseGeneralNames,
  signedBy,
  type ParsedCertificate,
} from './certificate.ts';
import { crlSignedBy, normalizeSerial, RevocationList, type ParsedCrl } from './crl.ts';
import { EC_P256_SHA256, generateP256KeyPair, privateKeyToPem } from './csr.ts';
import { derToPem, pemBlocks, pemCertificatesToDer } from './pem.ts';
import { parseSpiffeId, parseTrustDomain } from './spiffe.ts';
import { TrustBundle } from './trust-bundle.ts';
import { x509 } from './x509.ts';

/** istiod DEFAULT_WORKLOAD_CERT_TTL: 24 h (ambient-protocols.md §4, "Lifetime"). */
export const DEFAULT_TTL_SECONDS = 24 * 60 * 60;
/** istiod MAX_WORKLOAD_CERT_TTL: 90 days; longer requests are refused, not clamped. */
export const DEFAULT_MAX_TTL_SECONDS = 90 * 24 * 60 * 60;
/** Self-signed root lifetime: 10 years, istiod's default self-signed CA cert TTL. */
export const ROOT_TTL_SECONDS = 10 * 365 * 24 * 60 * 60;
/** Intermediate lifetime: 1 year; renewed automatically when it cannot cover a requested TTL. */
export const INTERMEDIATE_TTL_SECONDS = 365 * 24 * 60 * 60;
/** notBefore is backdated by this much to absorb clock skew between the CA and peers. */
export const BACKDATE_SECONDS = 60;
/** Refuse CSRs larger than this: a P-256 CSR is ~300 bytes; this is a cheap DoS guard. */
const MAX_CSR_BYTES = 64 * 1024;

/** File names in CaOptions.dir (the Istio `cacerts` names where they exist). */
export const CA_FILES = {
  rootCert: 'root-cert.pem',
  rootKey: 'root-key.pem',
  intermediateCert: 'ca-cert.pem',
  intermediateKey: 'ca-key.pem',
  /** Roots still trusted after a rotation, until dropOldRoot(). */
  previousRoots: 'previous-roots.pem',
  /** Rotation step 1: the root (and intermediate) that activateNextRoot() will sign with. */
  nextRootCert: 'next-root-cert.pem',
  nextRootKey: 'next-root-key.pem',
  nextIntermediateCert: 'next-ca-cert.pem',
  nextIntermediateKey: 'next-ca-key.pem',
  /** Every root peers must trust (current, next, previous), e.g. for the control plane's clients. */
  trustBundle: 'trust-bundle.pem',
  /** The CRLs of this CA (`ca-revoke`), for ztunnel's CRL_PATH (Istio's chart mounts ca-crl.pem). */
  crl: 'ca-crl.pem',
} as const;

/** How long an issued CRL says it is current (nextUpdate). ztunnel does not enforce nextUpdate (crl.ts). */
export const CRL_VALIDITY_SECONDS = 365 * 24 * 60 * 60;

/** Key material handed to the CA directly (instead of `dir`), e.g. by tests or plugged-in certs. */
export interface CaKeyMaterial {
  rootCertPem: string;
  rootKeyPem: string;
  intermediateCertPem?: string;
  intermediateKeyPem?: string;
}

export interface CaOptions {
  trustDomain: string;
  /** If given: load root (and optional intermediate) from dir, or create and persist them there (files mode 0600 for keys). */
  dir?: string;
  /** Default 86400 (24 h). */
  defaultTtlSeconds?: number;
  /** Default 90 days; requests above are REFUSED (not clamped), like istiod. */
  maxTtlSeconds?: number;
  /**
   * Issue workload certs from an intermediate signed by the root. An intermediate already present
   * in `dir` or `keyMaterial` is used even when this is false.
   */
  useIntermediate?: boolean;
  /** Injectable clock for tests. */
  now?: () => Date;
  /** Use this key material instead of creating or loading it (ignored when `dir` holds a root). */
  keyMaterial?: CaKeyMaterial;
}

interface SigningCert {
  readonly cert: ParsedCertificate;
  readonly certPem: string;
  readonly keyPem: string;
  readonly key: webcrypto.CryptoKey;
}

/** A root and, when the CA issues from one, its intermediate. */
interface SigningSet {
  readonly root: SigningCert;
  readonly intermediate: SigningCert | undefined;
}

/** Where a root rotation stands (see the file comment). */
export type RootRotationStep = 'none' | 'next-root-added' | 'old-root-trusted';

function storeError(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ID_ERR_CA_STORE', message, { cause });
}

function csrError(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ID_ERR_CSR', `certificate signing request refused: ${message}`, { cause });
}

/** A random positive serial of 128 bits, minimally encoded as hex (RFC 5280 §4.1.2.2: ≤ 20 octets, positive). */
export function randomSerialHex(): string {
  let bytes = randomBytes(16);
  while (bytes.length > 0 && bytes[0] === 0) bytes = bytes.subarray(1);
  if (bytes.length === 0) return '01';
  return ((bytes[0] ?? 0) & 0x80 ? '00' : '') + bytes.toString('hex');
}

/** DER of a non-negative INTEGER (the cRLNumber extension's value). */
function derInteger(n: bigint): ArrayBuffer {
  let hex = n.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  if (Number.parseInt(hex.slice(0, 2), 16) >= 0x80) hex = `00${hex}`;
  const body = Buffer.from(hex, 'hex');
  const der = Buffer.concat([Buffer.from([0x02, body.length]), body]);
  return der.buffer.slice(der.byteOffset, der.byteOffset + der.byteLength);
}

/** Seconds-resolution date (X.509 times have one-second resolution). */
function floorSeconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

async function importSigningKey(
  keyPem: string,
  certSpki: Uint8Array,
  what: string,
): Promise<webcrypto.CryptoKey> {
  let ko;
  try {
    ko = createPrivateKey(keyPem);
  } catch (err) {
    throw storeError(
      `${what}: the private key does not parse as PEM; check the file is a PKCS#8 or SEC1 EC key`,
      err,
    );
  }
  if (ko.asymmetricKeyType !== 'ec' || ko.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw storeError(
      `${what}: only ECDSA P-256 CA keys are supported (found ${ko.asymmetricKeyType ?? 'unknown'})`,
    );
  }
  const spki = new Uint8Array(createPublicKey(ko).export({ type: 'spki', format: 'der' }));
  if (!bytesEqual(spki, certSpki)) {
    throw new IdentityError(
      'ID_ERR_KEY_MISMATCH',
      `${what}: the private key does not belong to the certificate; the key and certificate files are from different CAs`,
    );
  }
  const pkcs8 = ko.export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', pkcs8, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
}

async function loadSigningCert(certPem: string, keyPem: string, what: string): Promise<SigningCert> {
  let ders: Uint8Array[];
  try {
    ders = pemCertificatesToDer(certPem, what);
  } catch (err) {
    throw storeError(`${what}: ${(err as Error).message}`, err);
  }
  const [der, ...more] = ders;
  if (!der || more.length > 0) throw storeError(`${what}: expected exactly one certificate in the file`);
  const cert = parseCertificate(der);
  if (cert.basicConstraints?.ca !== true) {
    throw storeError(`${what}: certificate is not a CA certificate (basicConstraints cA must be true)`);
  }
  const key = await importSigningKey(keyPem, cert.spkiDer, what);
  return { cert, certPem: derToPem(der), keyPem, key };
}

function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode, flag: 'w' });
  chmodSync(tmp, mode); // the umask may have cleared bits; make the mode exact
  renameSync(tmp, path);
}

export class CertificateAuthority {
  readonly trustDomain: string;
  readonly #defaultTtl: number;
  readonly #maxTtl: number;
  readonly #useIntermediate: boolean;
  readonly #now: () => Date;
  readonly #dir: string | undefined;
  #root: SigningCert;
  #intermediate: SigningCert | undefined;
  /** Rotation step 1 done: trusted already, signs after activateNextRoot(). */
  #next: SigningSet | undefined;
  #bundle: TrustBundle;
  #renewing: Promise<void> | undefined;
  readonly #rootsListeners = new Set<() => void>();

  private constructor(
    opts: CaOptions,
    root: SigningCert,
    intermediate: SigningCert | undefined,
    next: SigningSet | undefined,
    bundle: TrustBundle,
  ) {
    this.trustDomain = opts.trustDomain;
    this.#defaultTtl = opts.defaultTtlSeconds ?? DEFAULT_TTL_SECONDS;
    this.#maxTtl = opts.maxTtlSeconds ?? DEFAULT_MAX_TTL_SECONDS;
    this.#useIntermediate = opts.useIntermediate ?? false;
    this.#now = opts.now ?? (() => new Date());
    this.#dir = opts.dir;
    this.#root = root;
    this.#intermediate = intermediate;
    this.#next = next;
    this.#bundle = bundle;
  }

  static async create(opts: CaOptions): Promise<CertificateAuthority> {
    parseTrustDomain(opts.trustDomain);
    const defaultTtl = opts.defaultTtlSeconds ?? DEFAULT_TTL_SECONDS;
    const maxTtl = opts.maxTtlSeconds ?? DEFAULT_MAX_TTL_SECONDS;
    if (!Number.isFinite(defaultTtl) || defaultTtl <= 0 || !Number.isFinite(maxTtl) || maxTtl <= 0) {
      throw new IdentityError(
        'ID_ERR_TTL',
        'CA defaultTtlSeconds and maxTtlSeconds must be positive numbers',
      );
    }
    if (defaultTtl > maxTtl) {
      throw new IdentityError(
        'ID_ERR_TTL',
        `CA defaultTtlSeconds (${defaultTtl}) is above maxTtlSeconds (${maxTtl}); every default request would be refused`,
      );
    }
    const now = opts.now ?? (() => new Date());
    const td = opts.trustDomain;

    let material = opts.keyMaterial;
    let previousRootsPem: string | undefined;
    let nextMaterial: CaKeyMaterial | undefined;
    const dir = opts.dir;
    let createdRoot = false;
    if (dir !== undefined) {
      const loaded = readStore(dir);
      if (loaded) {
        material = loaded.material;
        previousRootsPem = loaded.previousRootsPem;
        nextMaterial = loaded.next;
      }
    }

    let root: SigningCert;
    if (material) {
      root = await loadSigningCert(material.rootCertPem, material.rootKeyPem, 'CA root');
      if (!signedBy(root.cert, root.cert)) {
        throw storeError(
          'CA root: the root certificate is not self-signed; put the root in root-cert.pem and an intermediate in ca-cert.pem',
        );
      }
    } else {
      root = await newRoot(td, now());
      createdRoot = true;
    }
    if (root.cert.notAfter.getTime() <= now().getTime()) {
      throw storeError(
        `CA root expired at ${root.cert.notAfter.toISOString()}; rotate the root (or remove the CA files to create a new one)`,
      );
    }

    let intermediate: SigningCert | undefined;
    let createdIntermediate = false;
    if (material?.intermediateCertPem !== undefined || material?.intermediateKeyPem !== undefined) {
      intermediate = await loadIntermediate(
        material,
        root,
        CA_FILES.intermediateCert,
        CA_FILES.intermediateKey,
      );
    } else if (opts.useIntermediate === true) {
      intermediate = await newIntermediate(td, root, now());
      createdIntermediate = true;
    }

    let next: SigningSet | undefined;
    if (nextMaterial !== undefined) {
      const nextRoot = await loadSigningCert(
        nextMaterial.rootCertPem,
        nextMaterial.rootKeyPem,
        'CA next root',
      );
      if (!signedBy(nextRoot.cert, nextRoot.cert)) {
        throw storeError(`CA next root: ${CA_FILES.nextRootCert} is not self-signed`);
      }
      // The same root as the current one: a crash between the steps of activateNextRoot's write.
      if (!bytesEqual(nextRoot.cert.der, root.cert.der)) {
        next = {
          root: nextRoot,
          intermediate:
            nextMaterial.intermediateCertPem !== undefined || nextMaterial.intermediateKeyPem !== undefined
              ? await loadIntermediate(
                  nextMaterial,
                  nextRoot,
                  CA_FILES.nextIntermediateCert,
                  CA_FILES.nextIntermediateKey,
                )
              : undefined,
        };
      }
    }

    let bundle = TrustBundle.fromDer(next ? [next.root.cert.der, root.cert.der] : [root.cert.der]);
    if (previousRootsPem !== undefined) bundle = bundle.merge(TrustBundle.fromPem(previousRootsPem));

    const ca = new CertificateAuthority(opts, root, intermediate, next, bundle);
    if (
      dir !== undefined &&
      (createdRoot ||
        createdIntermediate ||
        (nextMaterial !== undefined && next === undefined) ||
        !existsSync(join(dir, CA_FILES.rootCert)) ||
        !existsSync(join(dir, CA_FILES.trustBundle)))
    ) {
      ca.#persist();
    }
    return ca;
  }

  /** The roots peers must trust: the current root plus, during a rotation, the next or previous one. */
  get trustBundle(): TrustBundle {
    return this.#bundle;
  }

  /** Where a root rotation stands: 'none', after addNextRoot(), or after activateNextRoot(). */
  get rootRotationStep(): RootRotationStep {
    if (this.#next) return 'next-root-added';
    return this.#bundle.size > 1 ? 'old-root-trusted' : 'none';
  }

  /** PEM of the certificate that signs workload certificates (the intermediate, else the root). */
  get signingCertificatePem(): string {
    return (this.#intermediate ?? this.#root).certPem;
  }

  /**
   * The CA's current key material (PEM), e.g. to back it up or to hand it to another process.
   * Contains private keys: never log it.
   */
  exportKeyMaterial(): CaKeyMaterial {
    const m: CaKeyMaterial = { rootCertPem: this.#root.certPem, rootKeyPem: this.#root.keyPem };
    if (this.#intermediate) {
      m.intermediateCertPem = this.#intermediate.certPem;
      m.intermediateKeyPem = this.#intermediate.keyPem;
    }
    return m;
  }

  /**
   * Signs a CSR for exactly `identity` (the identity the caller has been authorized for).
   * Returns the chain leaf first, then the intermediate (if any), then every trusted root
   * concatenated as ONE last element (ambient-protocols.md §4, IstioCertificateResponse).
   */
  async sign(req: {
    csrPem: string;
    identity: string;
    ttlSeconds?: number;
  }): Promise<{ certChainPem: string[] }> {
    const ttl = this.#checkTtl(req.ttlSeconds);
    const id = parseSpiffeId(req.identity);
    if (id.trustDomain !== this.trustDomain) {
      throw new IdentityError(
        'ID_ERR_TRUST_DOMAIN',
        `refusing to sign for ${id.uri}: its trust domain "${id.trustDomain}" is not this CA's trust domain "${this.trustDomain}"`,
      );
    }
    const csr = await parseAndCheckCsr(req.csrPem, id.uri);

    const nowMs = this.#now().getTime();
    const notBefore = floorSeconds(nowMs - BACKDATE_SECONDS * 1000);
    const notAfter = floorSeconds(nowMs + ttl * 1000);
    // Renew the intermediate when it cannot cover this TTL but a new one (capped by the root) could.
    if (
      this.#intermediate &&
      this.#intermediate.cert.notAfter < notAfter &&
      this.#root.cert.notAfter >= notAfter
    ) {
      await this.#renewIntermediate();
    }
    const signer = this.#intermediate ?? this.#root;
    if (signer.cert.notAfter < notAfter) {
      throw new IdentityError(
        'ID_ERR_TTL',
        `refusing a ${ttl}s certificate: it would outlive the CA certificate (expires ${signer.cert.notAfter.toISOString()}); rotate the CA root`,
      );
    }
    const rootsElement = this.#bundle.toPem();
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerialHex(),
      subject: new x509.Name([]),
      issuer: new x509.Name(signer.cert.subjectDer),
      notBefore,
      notAfter,
      publicKey: csr.publicKey,
      signingKey: signer.key,
      signingAlgorithm: EC_P256_SHA256,
      extensions: leafExtensions(id.uri, signer.cert),
    });
    const chain = [derToPem(new Uint8Array(leaf.rawData))];
    if (signer !== this.#root) chain.push(signer.certPem);
    chain.push(rootsElement);
    return { certChainPem: chain };
  }

  /**
   * A serving certificate for the control plane itself (the controller's gRPC port): a new P-256
   * key and a leaf carrying DNS names and IP addresses, plus the SPIFFE ID of the control plane's
   * service account, so clients can check it by host name (as ztunnel checks istiod) or by
   * identity. The chain is leaf first, roots last, like sign().
   */
  async issueServingCertificate(req: {
    identity: string;
    dnsNames: readonly string[];
    ipAddresses?: readonly string[];
    ttlSeconds?: number;
  }): Promise<{ keyPem: string; certChainPem: string[] }> {
    const ttl = this.#checkTtl(req.ttlSeconds);
    const id = parseSpiffeId(req.identity);
    if (id.trustDomain !== this.trustDomain) {
      throw new IdentityError(
        'ID_ERR_TRUST_DOMAIN',
        `refusing a serving certificate for ${id.uri}: not in this CA's trust domain "${this.trustDomain}"`,
      );
    }
    const keys = await generateP256KeyPair();
    const nowMs = this.#now().getTime();
    const signer = this.#intermediate ?? this.#root;
    const exts = leafExtensions(id.uri, signer.cert).map((e) =>
      e instanceof x509.SubjectAlternativeNameExtension
        ? new x509.SubjectAlternativeNameExtension(
            [
              { type: 'url', value: id.uri },
              ...req.dnsNames.map((value) => ({ type: 'dns' as const, value })),
              ...(req.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
            ],
            true,
          )
        : e,
    );
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerialHex(),
      subject: new x509.Name([]),
      issuer: new x509.Name(signer.cert.subjectDer),
      notBefore: floorSeconds(nowMs - BACKDATE_SECONDS * 1000),
      notAfter: floorSeconds(Math.min(nowMs + ttl * 1000, signer.cert.notAfter.getTime())),
      publicKey: keys.publicKey,
      signingKey: signer.key,
      signingAlgorithm: EC_P256_SHA256,
      extensions: exts,
    });
    const chain = [derToPem(new Uint8Array(leaf.rawData))];
    if (signer !== this.#root) chain.push(signer.certPem);
    chain.push(this.#bundle.toPem());
    return { keyPem: await privateKeyToPem(keys.privateKey), certChainPem: chain };
  }

  /**
   * Root rotation, step 1 of 3: creates the next root (and intermediate when used) and adds it to
   * the trust bundle. Signing stays with the current root, so no peer meets a certificate it
   * cannot verify; every certificate issued from now on carries both roots. Take step 2 once every
   * holder has refreshed its certificate (half the workload lifetime, 12 h by default).
   */
  async addNextRoot(): Promise<void> {
    if (this.#next) {
      throw rotationError(
        'a next root is already in the trust bundle; activate it (activateNextRoot) before adding another',
      );
    }
    if (this.#bundle.size > 1) {
      throw rotationError(
        'the previous root is still trusted; finish the last rotation (dropOldRoot) before starting another',
      );
    }
    const now = this.#now();
    const root = await newRoot(this.trustDomain, now);
    const useIntermediate = this.#useIntermediate || this.#intermediate !== undefined;
    const intermediate = useIntermediate ? await newIntermediate(this.trustDomain, root, now) : undefined;
    this.#next = { root, intermediate };
    this.#bundle = TrustBundle.fromDer([root.cert.der]).merge(this.#bundle);
    this.#persist();
    this.#rootsChanged();
  }

  /**
   * Root rotation, step 2 of 3: new certificates are signed under the next root; the old root
   * stays trusted for the certificates still in use. Take step 3 once every holder has refreshed
   * again.
   */
  activateNextRoot(): void {
    const next = this.#next;
    if (!next) throw rotationError('no next root to activate; add one first (addNextRoot)');
    this.#root = next.root;
    this.#intermediate = next.intermediate;
    this.#next = undefined;
    this.#persist();
    this.#rootsChanged();
  }

  /**
   * Root rotation, step 3 of 3: the trust bundle keeps only the current root. Certificates still
   * chaining to an old root stop verifying.
   */
  dropOldRoot(): void {
    if (this.#next) {
      throw rotationError(
        'the next root is not active yet: the current root still signs every certificate, so there is no old root to drop. Call activateNextRoot first',
      );
    }
    this.#bundle = TrustBundle.fromDer([this.#root.cert.der]);
    this.#persist();
    this.#rootsChanged();
  }

  /**
   * A CRL file (PEM) that revokes `revoke` (serial numbers in hex, as `openssl x509 -serial`
   * prints them; colons allowed) on top of everything `previousPem` (the last file this returned)
   * revoked. One CRL per signing CA: the root's revokes the intermediate when its serial is named,
   * the intermediate's (or the root's, without one) revokes every other serial. CRLs of other
   * issuers in `previousPem` (an old root's, a renewed intermediate's) are kept unchanged, so no
   * revocation is ever lost. Each CRL's number is one above the last. Returns the PEM, the
   * serials each CRL now lists, and `uncovered` when some still-trusted certificates cannot be
   * revoked here: those of the previous root during a rotation, whose key this CA does not keep.
   * (Leaves of an intermediate this CA renewed are not covered either; they expire within their
   * lifetime.)
   */
  async issueCrl(req: {
    revoke: readonly string[];
    previousPem?: string;
  }): Promise<{ pem: string; crls: { issuer: string; serials: string[] }[]; uncovered?: string }> {
    const wanted = req.revoke.map((raw) => {
      const hex = raw.trim().toLowerCase().replace(/^0x/, '').replaceAll(':', '');
      if (!/^[0-9a-f]{1,42}$/.test(hex)) {
        throw new IdentityError(
          'ID_ERR_CRL',
          `"${raw}" is not a certificate serial number: give it in hex, as openssl x509 -noout -serial prints it`,
        );
      }
      return normalizeSerial(hex.length % 2 === 1 ? `0${hex}` : hex);
    });
    const previous =
      req.previousPem === undefined
        ? undefined
        : RevocationList.fromPem(req.previousPem, 'the previous CRL file');
    const issuers: SigningCert[] = this.#intermediate ? [this.#root, this.#intermediate] : [this.#root];
    const ownedBy = (crl: ParsedCrl, issuer: SigningCert): boolean =>
      bytesEqual(crl.issuerDer, issuer.cert.subjectDer) && crlSignedBy(crl, issuer.cert);
    const leafIssuer = this.#intermediate ?? this.#root;
    const rootSerial = normalizeSerial(this.#root.cert.serial);
    const intermediateSerial = this.#intermediate && normalizeSerial(this.#intermediate.cert.serial);
    for (const serial of wanted) {
      if (serial === rootSerial) {
        throw new IdentityError(
          'ID_ERR_CRL',
          `serial ${serial} is the CA's own root: a root cannot be revoked by a CRL; rotate it out instead (ca-rotate)`,
        );
      }
    }
    const now = this.#now();
    const thisUpdate = floorSeconds(now.getTime());
    const nextUpdate = floorSeconds(now.getTime() + CRL_VALIDITY_SECONDS * 1000);
    const out: string[] = [];
    const summary: { issuer: string; serials: string[] }[] = [];
    for (const issuer of issuers) {
      const entries = new Map<string, Date>();
      let lastNumber = 0n;
      for (const crl of previous?.crls ?? []) {
        if (!ownedBy(crl, issuer)) continue;
        for (const [serial, date] of crl.revoked) entries.set(serial, date);
        if (crl.crlNumber !== undefined && BigInt(`0x${crl.crlNumber}`) > lastNumber) {
          lastNumber = BigInt(`0x${crl.crlNumber}`);
        }
      }
      for (const serial of wanted) {
        const target = serial === intermediateSerial ? this.#root : leafIssuer;
        if (target === issuer && !entries.has(serial)) entries.set(serial, thisUpdate);
      }
      // RFC 5280 §6.3.3 (f): a CRL counts only if its issuer may sign CRLs. A plugged-in CA
      // certificate without cRLSign would get CRLs every verifier ignores: say so instead.
      const ku = issuer.cert.keyUsage;
      if (ku !== undefined && (ku & KeyUsage.cRLSign) === 0) {
        const role = issuer === this.#root ? 'root' : 'intermediate';
        if (entries.size > 0) {
          throw new IdentityError(
            'ID_ERR_CRL',
            `the CA's ${role} certificate (serial ${issuer.cert.serial}) has a keyUsage without cRLSign, so every verifier (ztunnel, OpenSSL) ignores the CRLs it signs: reissue it with cRLSign to revoke what it issued`,
          );
        }
        continue; // nothing to revoke there, and nothing it could say
      }
      const extensions: x509.Extension[] = [
        new x509.Extension('2.5.29.20', false, derInteger(lastNumber + 1n)),
      ];
      if (issuer.cert.subjectKeyId !== undefined) {
        extensions.push(new x509.AuthorityKeyIdentifierExtension(issuer.cert.subjectKeyId));
      }
      const crl = await x509.X509CrlGenerator.create({
        issuer: new x509.Name(issuer.cert.subjectDer),
        thisUpdate,
        nextUpdate,
        entries: [...entries].map(([serialNumber, revocationDate]) => ({ serialNumber, revocationDate })),
        extensions,
        signingKey: issuer.key,
        signingAlgorithm: EC_P256_SHA256,
      });
      out.push(derToPem(new Uint8Array(crl.rawData), 'X509 CRL'));
      summary.push({ issuer: issuer === this.#root ? 'root' : 'intermediate', serials: [...entries.keys()] });
    }
    // Other issuers' CRLs stay as they were: their revocations still apply to what they issued.
    for (const crl of previous?.crls ?? []) {
      if (!issuers.some((i) => ownedBy(crl, i))) out.push(derToPem(crl.der, 'X509 CRL'));
    }
    // The keys of a previous root and its intermediate are not kept after activateNextRoot(), so
    // their CRLs cannot be issued; say so rather than let the caller believe they were.
    const uncovered =
      this.rootRotationStep === 'old-root-trusted'
        ? 'certificates issued before the last root activation (by the previous root or its intermediate) are not covered: ' +
          'this CA no longer holds the previous signing keys. They stop being trusted at drop-old-root, and expire within their lifetime (24 h by default)'
        : undefined;
    return { pem: out.join(''), crls: summary, ...(uncovered !== undefined && { uncovered }) };
  }

  /**
   * Calls `listener` after each change of the roots: each step of a root rotation (addNextRoot,
   * activateNextRoot, dropOldRoot). Listeners run synchronously, in subscription order, and must
   * not throw. Returns the function that unsubscribes.
   */
  onRootsChange(listener: () => void): () => void {
    const own = (): void => listener(); // a distinct entry even if the same listener subscribes twice
    this.#rootsListeners.add(own);
    return () => {
      this.#rootsListeners.delete(own);
    };
  }

  #rootsChanged(): void {
    for (const listener of [...this.#rootsListeners]) listener();
  }

  #checkTtl(requested: number | undefined): number {
    if (requested === undefined) return this.#defaultTtl;
    if (!Number.isFinite(requested)) {
      throw new IdentityError(
        'ID_ERR_TTL',
        `requested certificate TTL ${requested} is not a finite number of seconds`,
      );
    }
    if (requested <= 0) return this.#defaultTtl; // istiod: ≤0 means "use the default"
    if (requested > this.#maxTtl) {
      throw new IdentityError(
        'ID_ERR_TTL',
        `requested certificate TTL ${requested}s is above the CA maximum of ${this.#maxTtl}s (MAX_WORKLOAD_CERT_TTL); request a shorter lifetime`,
      );
    }
    return Math.floor(requested);
  }

  async #renewIntermediate(): Promise<void> {
    // One renewal at a time; concurrent signers wait for it.
    this.#renewing ??= (async () => {
      try {
        this.#intermediate = await newIntermediate(this.trustDomain, this.#root, this.#now());
        this.#persist();
      } finally {
        this.#renewing = undefined;
      }
    })();
    await this.#renewing;
  }

  #persist(): void {
    const dir = this.#dir;
    if (dir === undefined) return;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const next = this.#next;
      const previous = this.#bundle.anchors.filter(
        (a) => !bytesEqual(a.der, this.#root.cert.der) && !(next && bytesEqual(a.der, next.root.cert.der)),
      );
      // Widest trust first, narrowest last: a crash between two writes never removes from the
      // files a root that certificates in use chain to. (A root key and certificate caught between
      // their two writes are refused on load as a mismatch; a next root equal to the current one,
      // left by an interrupted activation, is ignored and cleaned up.)
      writeAtomic(join(dir, CA_FILES.trustBundle), this.#bundle.toPem(), 0o644);
      if (next) {
        writeAtomic(join(dir, CA_FILES.nextRootKey), next.root.keyPem, 0o600);
        writeAtomic(join(dir, CA_FILES.nextRootCert), next.root.certPem, 0o644);
        writePair(dir, CA_FILES.nextIntermediateCert, CA_FILES.nextIntermediateKey, next.intermediate);
      }
      if (previous.length > 0) {
        writeAtomic(join(dir, CA_FILES.previousRoots), previous.map((a) => derToPem(a.der)).join(''), 0o644);
      }
      writeAtomic(join(dir, CA_FILES.rootKey), this.#root.keyPem, 0o600);
      writeAtomic(join(dir, CA_FILES.rootCert), this.#root.certPem, 0o644);
      writePair(dir, CA_FILES.intermediateCert, CA_FILES.intermediateKey, this.#intermediate);
      if (!next) {
        writePair(dir, CA_FILES.nextIntermediateCert, CA_FILES.nextIntermediateKey, undefined);
        rmSync(join(dir, CA_FILES.nextRootCert), { force: true });
        rmSync(join(dir, CA_FILES.nextRootKey), { force: true });
      }
      if (previous.length === 0) rmSync(join(dir, CA_FILES.previousRoots), { force: true });
    } catch (err) {
      throw storeError(
        `cannot persist CA key material in ${dir}: ${(err as Error).message}; check the directory is writable`,
        err,
      );
    }
  }
}

/** Writes a certificate and its key, or removes both when `sc` is undefined. */
function writePair(dir: string, certFile: string, keyFile: string, sc: SigningCert | undefined): void {
  if (sc) {
    writeAtomic(join(dir, keyFile), sc.keyPem, 0o600);
    writeAtomic(join(dir, certFile), sc.certPem, 0o644);
  } else {
    rmSync(join(dir, keyFile), { force: true });
    rmSync(join(dir, certFile), { force: true });
  }
}

function rotationError(message: string): IdentityError {
  return new IdentityError('ID_ERR_ROTATION', `root rotation: ${message}`);
}

async function loadIntermediate(
  material: CaKeyMaterial,
  root: SigningCert,
  certFile: string,
  keyFile: string,
): Promise<SigningCert> {
  if (material.intermediateCertPem === undefined || material.intermediateKeyPem === undefined) {
    throw storeError(`CA intermediate: both ${certFile} and ${keyFile} are needed`);
  }
  const intermediate = await loadSigningCert(
    material.intermediateCertPem,
    material.intermediateKeyPem,
    `CA intermediate ${certFile}`,
  );
  if (!signedBy(intermediate.cert, root.cert)) {
    throw storeError(
      `CA intermediate: ${certFile} is not signed by its root; check the files come from the same CA`,
    );
  }
  return intermediate;
}

/** Reads the CA files from `dir`; undefined when there is no root there yet. */
function readStore(
  dir: string,
): { material: CaKeyMaterial; previousRootsPem?: string; next?: CaKeyMaterial } | undefined {
  const read = (name: string): string | undefined => {
    const p = join(dir, name);
    try {
      return readFileSync(p, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw storeError(`cannot read ${p}: ${(err as Error).message}`, err);
    }
  };
  const rootCertPem = read(CA_FILES.rootCert);
  const rootKeyPem = read(CA_FILES.rootKey);
  if (rootCertPem === undefined && rootKeyPem === undefined) return undefined;
  if (rootCertPem === undefined || rootKeyPem === undefined) {
    // Never silently create a new root next to a half-present one: that would break trust.
    throw storeError(
      `${dir} holds only one of ${CA_FILES.rootCert} and ${CA_FILES.rootKey}; restore the missing file or remove both to create a new CA`,
    );
  }
  const material: CaKeyMaterial = { rootCertPem, rootKeyPem };
  const intermediateCertPem = read(CA_FILES.intermediateCert);
  const intermediateKeyPem = read(CA_FILES.intermediateKey);
  if (intermediateCertPem !== undefined) material.intermediateCertPem = intermediateCertPem;
  if (intermediateKeyPem !== undefined) material.intermediateKeyPem = intermediateKeyPem;
  const previousRootsPem = read(CA_FILES.previousRoots);
  const out: { material: CaKeyMaterial; previousRootsPem?: string; next?: CaKeyMaterial } = { material };
  if (previousRootsPem !== undefined) out.previousRootsPem = previousRootsPem;
  const nextRootCertPem = read(CA_FILES.nextRootCert);
  const nextRootKeyPem = read(CA_FILES.nextRootKey);
  if (nextRootCertPem !== undefined || nextRootKeyPem !== undefined) {
    if (nextRootCertPem === undefined || nextRootKeyPem === undefined) {
      throw storeError(
        `${dir} holds only one of ${CA_FILES.nextRootCert} and ${CA_FILES.nextRootKey}; restore the missing file (peers may already trust that root)`,
      );
    }
    const next: CaKeyMaterial = { rootCertPem: nextRootCertPem, rootKeyPem: nextRootKeyPem };
    const nextIntCert = read(CA_FILES.nextIntermediateCert);
    const nextIntKey = read(CA_FILES.nextIntermediateKey);
    if (nextIntCert !== undefined) next.intermediateCertPem = nextIntCert;
    if (nextIntKey !== undefined) next.intermediateKeyPem = nextIntKey;
    out.next = next;
  }
  return out;
}

async function newSigningCert(
  subject: string,
  issuer: SigningCert | undefined,
  now: Date,
  ttlSeconds: number,
  pathLen: number | undefined,
): Promise<SigningCert> {
  const keys = await generateP256KeyPair();
  const notBefore = floorSeconds(now.getTime() - BACKDATE_SECONDS * 1000);
  let notAfter = floorSeconds(now.getTime() + ttlSeconds * 1000);
  if (issuer && issuer.cert.notAfter < notAfter) notAfter = issuer.cert.notAfter;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, pathLen, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (issuer?.cert.subjectKeyId !== undefined) {
    extensions.push(new x509.AuthorityKeyIdentifierExtension(issuer.cert.subjectKeyId));
  }
  const cert = issuer
    ? await x509.X509CertificateGenerator.create({
        serialNumber: randomSerialHex(),
        subject,
        issuer: new x509.Name(issuer.cert.subjectDer),
        notBefore,
        notAfter,
        publicKey: keys.publicKey,
        signingKey: issuer.key,
        signingAlgorithm: EC_P256_SHA256,
        extensions,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: randomSerialHex(),
        name: subject,
        notBefore,
        notAfter,
        keys,
        signingAlgorithm: EC_P256_SHA256,
        extensions,
      });
  const der = new Uint8Array(cert.rawData);
  return {
    cert: parseCertificate(der),
    certPem: derToPem(der),
    keyPem: await privateKeyToPem(keys.privateKey),
    key: keys.privateKey,
  };
}

/** A self-signed root, subject O=<trust domain> like istiod's self-signed root. */
function newRoot(trustDomain: string, now: Date): Promise<SigningCert> {
  return newSigningCert(`O=${trustDomain}`, undefined, now, ROOT_TTL_SECONDS, undefined);
}

/** An intermediate under `root` that may only sign leaves (pathLen 0). */
function newIntermediate(trustDomain: string, root: SigningCert, now: Date): Promise<SigningCert> {
  return newSigningCert(`O=${trustDomain}, CN=Intermediate CA`, root, now, INTERMEDIATE_TTL_SECONDS, 0);
}

/** Workload leaf extensions (ambient-protocols.md §4; X509-SVID §4). */
function leafExtensions(uri: string, issuer: ParsedCertificate): x509.Extension[] {
  const exts: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(
      x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
      true,
    ),
    new x509.ExtendedKeyUsageExtension(
      [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
      false,
    ),
    // Critical because the subject is empty (RFC 5280 §4.2.1.6).
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }], true),
  ];
  if (issuer.subjectKeyId !== undefined)
    exts.push(new x509.AuthorityKeyIdentifierExtension(issuer.subjectKeyId));
  return exts;
}

const EXTENSION_REQUEST_OID = '1.2.840.113549.1.9.14';

/** Parses a PEM CSR, checks its signature, its SANs (exactly [identity]) and its key algorithm. */
async function parseAndCheckCsr(csrPem: string, identity: string): Promise<x509.Pkcs10CertificateRequest> {
  if (typeof csrPem !== 'string' || csrPem.length > MAX_CSR_BYTES) {
    throw csrError(`the CSR must be a PEM string of at most ${MAX_CSR_BYTES} bytes`);
  }
  let blocks;
  try {
    blocks = pemBlocks(csrPem);
  } catch (err) {
    throw csrError(`the CSR is not valid PEM: ${(err as Error).message}`, err);
  }
  const [block, ...more] = blocks;
  if (
    !block ||
    more.length > 0 ||
    (block.label !== 'CERTIFICATE REQUEST' && block.label !== 'NEW CERTIFICATE REQUEST')
  ) {
    throw csrError('expected exactly one PEM block "-----BEGIN CERTIFICATE REQUEST-----"');
  }
  let csr: x509.Pkcs10CertificateRequest;
  let sans: ReturnType<typeof parseGeneralNames>[] = [];
  try {
    csr = new x509.Pkcs10CertificateRequest(block.der);
    const reqAttrs = csr.getAttributes(EXTENSION_REQUEST_OID);
    if (reqAttrs.length > 1 || (reqAttrs[0] && reqAttrs[0].values.length !== 1)) {
      throw csrError('the CSR carries more than one extensionRequest; only one is allowed');
    }
    sans = csr.extensions
      .filter((e) => e.type === '2.5.29.17')
      .map((e) => parseGeneralNames(new Uint8Array(e.value)));
  } catch (err) {
    if (err instanceof IdentityError) throw err;
    throw csrError(`the CSR does not parse as PKCS#10: ${(err as Error).message}`, err);
  }
  let signatureOk = false;
  try {
    signatureOk = await csr.verify();
  } catch (err) {
    throw csrError(
      `the CSR signature cannot be checked (${(err as Error).message}); use ECDSA P-256 with SHA-256`,
      err,
    );
  }
  if (!signatureOk) {
    throw csrError(
      'the CSR signature is invalid (altered CSR, or signed with another key than the one it carries)',
    );
  }
  if (sans.length !== 1) {
    throw csrError(
      sans.length === 0
        ? `the CSR has no subjectAltName; it must carry exactly one URI SAN "${identity}"`
        : 'the CSR has more than one subjectAltName extension',
    );
  }
  const names = sans[0] ?? [];
  const uris = names.filter((n) => n.type === GeneralNameTag.uniformResourceIdentifier);
  if (names.length !== 1 || uris.length !== 1) {
    throw csrError(
      `the CSR must carry exactly one subjectAltName, the URI "${identity}"; it has ${names.length} SAN(s), ${uris.length} of them URIs`,
    );
  }
  const requested = Buffer.from(uris[0]?.value ?? new Uint8Array()).toString('latin1');
  if (requested !== identity) {
    throw csrError(
      `the CSR asks for ${JSON.stringify(requested.slice(0, 300))} but the caller is authorized only for "${identity}"`,
    );
  }
  const alg = csr.publicKey.algorithm as { name: string; namedCurve?: string };
  if (alg.name !== 'ECDSA' || (alg.namedCurve !== 'P-256' && alg.namedCurve !== 'P-384')) {
    throw csrError(
      `the CSR key is ${alg.name}${alg.namedCurve ? ` ${alg.namedCurve}` : ''}; the mesh issues ECDSA P-256 (or P-384) keys only`,
    );
  }
  return csr;
}

// SPDX-License-Identifier: Apache-2.0
// TLS parameters of HBONE (ambient-protocols.md §1.2) and the per-certificate credential cache
// shared by the HBONE client and server.
//
// * TLS 1.3 only (ztunnel's default; Envoy pins min=max=TLSv1_3).
// * AES-GCM suites only, AES-128 first: with AES-NI it beats ChaCha20 by 15 % in throughput and
//   35 % in requests/s on our machine class, and AES-256 is within noise (PERFORMANCE.md B.5).
// * ALPN exactly "h2"; no SNI (ztunnel sends none, peers must not require it).
// * No session resumption either way (ztunnel disables it; resuming would skip the identity
//   check of a rotated or revoked peer, checklist B.32 / CVE-2022-21654).
// * One SecureContext per certificate object: building one costs ~25-50 % of a handshake under
//   OpenSSL 3 (PERFORMANCE.md B.4, B.5), so it is rebuilt only when the certificate changes.
import { constants as cryptoConstants } from 'node:crypto';
import tls from 'node:tls';
import type { WorkloadCertificate } from '../identity/cert-manager.ts';
import type { ParsedCertificate } from '../identity/certificate.ts';
import type { RevocationList } from '../identity/crl.ts';
import { IdentityError } from '../identity/errors.ts';
import { pemCertificatesToDer } from '../identity/pem.ts';
import { checkRevocation, type VerifiedSvid } from '../identity/svid.ts';
import { TrustBundle } from '../identity/trust-bundle.ts';
import { HboneError } from './errors.ts';

export const HBONE_ALPN = 'h2';
/** TLS 1.3 suite names as OpenSSL spells them; AES-128-GCM preferred. */
export const HBONE_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384';
export const HBONE_TLS_VERSION = 'TLSv1.3';

/** Options for tls.createSecureContext / tls.Server#setSecureContext presenting `cert`. */
export function hboneSecureContextOptions(cert: WorkloadCertificate): tls.SecureContextOptions {
  return {
    key: cert.privateKeyPem,
    cert: cert.certChainPem.join('\n'),
    ca: cert.rootsPem.join('\n'),
    minVersion: HBONE_TLS_VERSION,
    maxVersion: HBONE_TLS_VERSION,
    ciphers: HBONE_CIPHERS,
    honorCipherOrder: true,
    // No tickets: with TLS 1.3 OpenSSL then falls back to stateful session IDs, which Node only
    // resumes through a 'resumeSession' listener; we install none, so nothing is ever resumed.
    secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
  };
}

/** What verifySvid needs from our own certificate to check a peer. */
export interface PeerTrust {
  /** Trust anchors: the roots that came with our own certificate (§1.2). */
  readonly bundle: TrustBundle;
  /**
   * Our own intermediates (DER), offered to verifySvid to complete a peer's path: one mesh CA
   * issues both, and Node's TLS server does not expose the client's intermediates.
   */
  readonly intermediatesDer: readonly Uint8Array[];
}

export function peerTrustOf(cert: WorkloadCertificate): PeerTrust {
  return {
    bundle: TrustBundle.fromPem(cert.rootsPem),
    intermediatesDer: cert.certChainPem.slice(1).flatMap((p) => pemCertificatesToDer(p, 'certificate chain')),
  };
}

/**
 * Caches what is derived from a workload certificate, per certificate object: a new object from
 * the certificate source (rotation) builds anew, the same object reuses the cached value.
 */
export class CredentialCache<T> {
  readonly #build: (cert: WorkloadCertificate) => T;
  #cert: WorkloadCertificate | undefined;
  #value: T | undefined;
  #builds = 0;

  constructor(build: (cert: WorkloadCertificate) => T) {
    this.#build = build;
  }

  /** How many times the value was built (once per distinct certificate object seen in a row). */
  get builds(): number {
    return this.#builds;
  }

  get(cert: WorkloadCertificate): T {
    if (this.#cert === cert && this.#value !== undefined) return this.#value;
    const value = this.#build(cert);
    this.#builds++;
    this.#cert = cert;
    this.#value = value;
    return value;
  }
}

/** The current certificate revocation lists, read at every handshake and by revalidate(). */
export type RevocationSource = () => RevocationList | undefined;

/** A live session closed by revalidate(): whose, and why. */
export interface RevokedSession {
  readonly peer: VerifiedSvid;
  /** host:port of the peer's end of the session. */
  readonly remote: string;
  /** CONNECT streams (tunnels) that were open on it and were reset. */
  readonly streams: number;
  readonly error: HboneError;
}

/** The HboneError for a peer whose certificate failed verification: revoked, or otherwise unacceptable. */
export function peerCertificateError(err: unknown, message: string): HboneError {
  const revoked = err instanceof IdentityError && err.code === 'ID_ERR_REVOKED';
  return new HboneError(revoked ? 'HBONE_ERR_PEER_REVOKED' : 'HBONE_ERR_PEER_IDENTITY', message, {
    cause: err,
  });
}

/** The revocation error for an already verified peer, or undefined if `revocation` does not revoke it. */
export function revocationOf(
  peer: VerifiedSvid,
  revocation: RevocationList | undefined,
  anchors: readonly ParsedCertificate[],
): IdentityError | undefined {
  try {
    checkRevocation(peer, revocation, anchors);
    return undefined;
  } catch (err) {
    if (err instanceof IdentityError) return err;
    throw err;
  }
}

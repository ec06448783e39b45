// SPDX-License-Identifier: Apache-2.0
// A trust bundle: the set of root (trust anchor) certificates for the mesh's trust domain
// (ambient-protocols.md §4: the last element of the CA response may hold several roots during
// root rotation). Immutable; every operation returns a new bundle.
import { bytesEqual } from './der.ts';
import { IdentityError } from './errors.ts';
import { KeyUsage, parseCertificate, type ParsedCertificate } from './certificate.ts';
import { derToPem, pemCertificatesToDer } from './pem.ts';

function bundleError(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ID_ERR_BUNDLE', message, { cause });
}

function checkAnchor(cert: ParsedCertificate, index: number): void {
  if (cert.basicConstraints?.ca !== true) {
    throw bundleError(
      `trust bundle certificate #${index + 1} (serial ${cert.serial}) is not a CA certificate (basicConstraints cA is not true); a workload or leaf certificate must never be used as a trust anchor — check the root file`,
    );
  }
  if (cert.keyUsage !== undefined && (cert.keyUsage & KeyUsage.keyCertSign) === 0) {
    throw bundleError(
      `trust bundle certificate #${index + 1} (serial ${cert.serial}) has a keyUsage without keyCertSign, so it cannot sign certificates (RFC 5280 §4.2.1.3)`,
    );
  }
}

export class TrustBundle {
  /** One canonical PEM string per root, without duplicates. */
  readonly rootsPem: readonly string[];
  /** The parsed roots, same order as rootsPem (for the verifier). */
  readonly anchors: readonly ParsedCertificate[];

  private constructor(anchors: readonly ParsedCertificate[]) {
    this.anchors = Object.freeze([...anchors]);
    this.rootsPem = Object.freeze(anchors.map((a) => derToPem(a.der)));
  }

  /** Builds a bundle from PEM text (one or several concatenated certificates per string). */
  static fromPem(pem: string | readonly string[]): TrustBundle {
    const texts = typeof pem === 'string' ? [pem] : pem;
    const ders: Uint8Array[] = [];
    for (const text of texts) {
      try {
        ders.push(...pemCertificatesToDer(text, 'trust bundle'));
      } catch (err) {
        throw bundleError(`cannot read the trust bundle: ${(err as Error).message}`, err);
      }
    }
    return TrustBundle.fromDer(ders);
  }

  /** Builds a bundle from DER certificates. */
  static fromDer(ders: readonly Uint8Array[]): TrustBundle {
    if (ders.length === 0)
      throw bundleError('trust bundle is empty: at least one root certificate is required');
    const anchors: ParsedCertificate[] = [];
    ders.forEach((der, i) => {
      let cert: ParsedCertificate;
      try {
        cert = parseCertificate(der);
      } catch (err) {
        throw bundleError(
          `trust bundle certificate #${i + 1} does not parse: ${(err as Error).message}`,
          err,
        );
      }
      checkAnchor(cert, i);
      if (!anchors.some((a) => bytesEqual(a.der, cert.der))) anchors.push(cert);
    });
    return new TrustBundle(anchors);
  }

  /** The union of both bundles (this bundle's roots first). */
  merge(other: TrustBundle): TrustBundle {
    const out = [...this.anchors];
    for (const a of other.anchors) if (!out.some((b) => bytesEqual(a.der, b.der))) out.push(a);
    return new TrustBundle(out);
  }

  /** This bundle without the given root(s). Throws if that would leave the bundle empty. */
  without(rootPem: string): TrustBundle {
    const drop = pemCertificatesToDer(rootPem, 'root to remove');
    const out = this.anchors.filter((a) => !drop.some((d) => bytesEqual(a.der, d)));
    if (out.length === 0) {
      throw bundleError(
        'removing this root would leave the trust bundle empty; add the new root before dropping the old one',
      );
    }
    return new TrustBundle(out);
  }

  /** True if the bundle holds exactly this certificate (DER comparison). */
  has(rootPem: string): boolean {
    const ders = pemCertificatesToDer(rootPem, 'root');
    return ders.every((d) => this.anchors.some((a) => bytesEqual(a.der, d)));
  }

  get size(): number {
    return this.anchors.length;
  }

  /** Concatenated PEM, suitable for node:tls `ca`. */
  toPem(): string {
    return this.rootsPem.join('');
  }
}

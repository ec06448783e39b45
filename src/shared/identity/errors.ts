// SPDX-License-Identifier: Apache-2.0
// Error catalogue of the identity and PKI module (SPIFFE IDs, X.509-SVID verification, trust
// bundles, CSRs, the CA core and the workload certificate manager). Codes are stable; messages
// are for the operator and say what to check.
import { MeshError } from '../errors.ts';

export type IdentityErrorCode =
  /** A string is not a valid SPIFFE ID (spiffe/spiffe standards/SPIFFE-ID.md). */
  | 'ID_ERR_SPIFFE_INVALID'
  /** A SPIFFE ID is valid but not of the Istio shape spiffe://<td>/ns/<ns>/sa/<sa>. */
  | 'ID_ERR_ISTIO_IDENTITY'
  /** DER/PEM that does not parse as a certificate, or a certificate that breaks RFC 5280 structure rules. */
  | 'ID_ERR_CERT_PARSE'
  /** No certification path from the leaf to a root of the trust bundle (missing intermediate, bad signature, CA rules). */
  | 'ID_ERR_CHAIN'
  /** A certificate of the path is past its notAfter. */
  | 'ID_ERR_EXPIRED'
  /** A certificate of the path is before its notBefore. */
  | 'ID_ERR_NOT_YET_VALID'
  /** Subject Alternative Names of the leaf break the X.509-SVID rules (not exactly one URI SAN, ...). */
  | 'ID_ERR_SAN'
  /** The leaf is a CA certificate (basicConstraints cA=true). */
  | 'ID_ERR_LEAF_IS_CA'
  /** keyUsage / extendedKeyUsage not allowed for the certificate's role. */
  | 'ID_ERR_KEY_USAGE'
  /** The identity is in another trust domain than required. */
  | 'ID_ERR_TRUST_DOMAIN'
  /** The identity is valid but not one of the identities expected for this hop. */
  | 'ID_ERR_IDENTITY_MISMATCH'
  /** A certificate signing request was malformed, badly signed or asked for the wrong names. */
  | 'ID_ERR_CSR'
  /** A requested certificate lifetime is invalid or above the CA's maximum. */
  | 'ID_ERR_TTL'
  /** A trust bundle is empty or holds something other than CA certificates. */
  | 'ID_ERR_BUNDLE'
  /** The CA could not load, create or persist its key material. */
  | 'ID_ERR_CA_STORE'
  /** A root rotation step was asked for out of order. */
  | 'ID_ERR_ROTATION'
  /** A private key does not belong to the certificate it is paired with. */
  | 'ID_ERR_KEY_MISMATCH'
  /** A certificate chain returned by the CA is unusable (shape, identity, verification). */
  | 'ID_ERR_CA_RESPONSE'
  /** No valid workload certificate is available (CA failing, manager closed, ...). */
  | 'ID_ERR_CERT_UNAVAILABLE'
  /** A CRL (or a CRL file) is malformed, uses what this verifier does not evaluate, or cannot be issued. */
  | 'ID_ERR_CRL'
  /** A certificate of the peer's path is listed in a CRL of its issuer (checklist B.31). */
  | 'ID_ERR_REVOKED';

export class IdentityError extends MeshError {
  declare readonly code: IdentityErrorCode;

  // Not useless: it narrows `code` to this module's catalogue.
  // eslint-disable-next-line @typescript-eslint/no-useless-constructor
  constructor(code: IdentityErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

// SPDX-License-Identifier: Apache-2.0
// Test-only CSRs the real ztunnel never sends: several URI SANs, no SAN, DNS SANs. Well signed
// (P-256, SHA-256), so that only the SAN content can be what a CA refuses.
import { EC_P256_SHA256, generateP256KeyPair } from '../../../../src/shared/identity/csr.ts';
import { x509 } from '../../../../src/shared/identity/x509.ts';

export async function csrWithSans(sans: {
  uris?: readonly string[];
  dns?: readonly string[];
}): Promise<string> {
  const keys = await generateP256KeyPair();
  const names: x509.JsonGeneralName[] = [
    ...(sans.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(sans.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
  ];
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: EC_P256_SHA256,
    extensions: names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names, true)] : [],
  });
  return csr.toString('pem') + '\n';
}

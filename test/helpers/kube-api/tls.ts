// SPDX-License-Identifier: Apache-2.0
// A serving certificate for the HTTPS mode of the API stand-in: a throw-away CA and a leaf for
// 127.0.0.1 and localhost, so the client verifies the server against `certificate-authority-data`
// as it would against a cluster, rather than skipping verification.
import { mintCert, x509 } from '../pki.ts';

export interface ServingCertificate {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

export async function mintServingCertificate(): Promise<ServingCertificate> {
  const ca = await mintCert({ ca: true, subject: 'CN=kube-api stand-in CA' });
  const leaf = await mintCert({
    issuer: ca,
    subject: 'CN=kube-apiserver',
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: 'ip', value: '127.0.0.1' },
        { type: 'dns', value: 'localhost' },
      ]),
    ],
  });
  return { caPem: ca.certPem, certPem: leaf.certPem, keyPem: leaf.privateKeyPem };
}

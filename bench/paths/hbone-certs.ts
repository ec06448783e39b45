// SPDX-License-Identifier: Apache-2.0
// How the bench hands a workload certificate to an HBONE proxy child: the parent issues it
// from the test CA (test/helpers/pki.ts) and writes key, chain and roots as JSON into the run's
// temp dir; the child rebuilds a WorkloadCertificate with the identity library's own checks.
import { readFileSync, writeFileSync } from 'node:fs';
import { asObject, str, strList } from '../child.ts';
import {
  workloadCertificateFromChain,
  type WorkloadCertificate,
} from '../../src/shared/identity/cert-manager.ts';

export function writeCertFile(path: string, cert: WorkloadCertificate): void {
  const data = {
    privateKeyPem: cert.privateKeyPem,
    certChainPem: cert.certChainPem,
    rootsPem: cert.rootsPem,
  };
  writeFileSync(path, JSON.stringify(data), { mode: 0o600 });
}

export function readCertFile(path: string): Promise<WorkloadCertificate> {
  const c = asObject(JSON.parse(readFileSync(path, 'utf8')), path);
  // cert_chain as a CA returns it: leaf (+ intermediates) first, the roots last.
  return workloadCertificateFromChain(str(c, 'privateKeyPem'), [
    ...strList(c, 'certChainPem'),
    strList(c, 'rootsPem').join(''),
  ]);
}

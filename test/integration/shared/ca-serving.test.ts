// SPDX-License-Identifier: Apache-2.0
// The control plane's serving certificate: a TLS client that trusts the mesh roots accepts it
// under its DNS name and its IP address, and refuses it under any other name.
import t from 'tap';
import tls from 'node:tls';
import { once } from 'node:events';
import { CertificateAuthority } from '../../../src/shared/identity/ca.ts';

t.test('serving certificate verifies by host name and IP, not by any other name', async (t) => {
  const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local' });
  const { keyPem, certChainPem } = await ca.issueServingCertificate({
    identity: 'spiffe://cluster.local/ns/istio-system/sa/istiod',
    dnsNames: ['istiod.istio-system.svc'],
    ipAddresses: ['127.0.0.1'],
  });
  const roots = certChainPem[certChainPem.length - 1] ?? '';
  const server = tls.createServer({ key: keyPem, cert: certChainPem.slice(0, -1).join('') }, (s) =>
    s.end('ok'),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const connect = (servername: string | undefined): Promise<string> =>
    new Promise((resolve, reject) => {
      const s = tls.connect({
        host: '127.0.0.1',
        port,
        ca: roots,
        ...(servername !== undefined && { servername }),
      });
      let out = '';
      s.on('data', (d: Buffer) => (out += d.toString()));
      s.on('end', () => resolve(out));
      s.on('error', reject);
    });
  t.equal(await connect('istiod.istio-system.svc'), 'ok', 'DNS name');
  t.equal(await connect(undefined), 'ok', 'IP address (no SNI: checked against the IP SAN)');
  await t.rejects(connect('evil.example'), /does not match|Hostname\/IP/, 'another name is refused');
  await t.rejects(
    ca.issueServingCertificate({ identity: 'spiffe://other.td/ns/x/sa/y', dnsNames: ['x'] }),
    /trust domain/,
  );
});

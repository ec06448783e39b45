// SPDX-License-Identifier: Apache-2.0
// TrustBundle: PEM parsing (concatenated, arrays, comments), CA-only admission, de-duplication,
// merge / without for root rotation, and toPem for node:tls.
import t from 'tap';
import { IdentityError } from '../../../../src/shared/identity/errors.ts';
import { TrustBundle } from '../../../../src/shared/identity/trust-bundle.ts';
import { mintCert, x509 } from '../../../helpers/pki.ts';

const rootA = await mintCert({ ca: true, subject: 'O=a' });
const rootB = await mintCert({ ca: true, subject: 'O=b' });
const rootC = await mintCert({ ca: true, subject: 'O=c' });

function code(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    return err instanceof IdentityError ? err.code : `other: ${String(err)}`;
  }
}

t.test('fromPem accepts one, concatenated, arrays and commented PEM', async (t) => {
  t.same(TrustBundle.fromPem(rootA.certPem).rootsPem, [rootA.certPem]);
  const both = TrustBundle.fromPem(rootA.certPem + rootB.certPem);
  t.equal(both.size, 2);
  t.same(both.rootsPem, [rootA.certPem, rootB.certPem], 'order kept');
  t.same(TrustBundle.fromPem([rootA.certPem, rootB.certPem + rootC.certPem]).size, 3);
  const commented = `# mesh roots\n${rootA.certPem}\nsome text\n${rootB.certPem.replace(/\n/g, '\r\n')}`;
  t.same(
    TrustBundle.fromPem(commented).rootsPem,
    [rootA.certPem, rootB.certPem],
    'comments and CRLF tolerated, canonical PEM out',
  );
  t.equal(TrustBundle.fromPem(rootA.certPem + rootA.certPem).size, 1, 'duplicates removed');
  t.equal(both.toPem(), rootA.certPem + rootB.certPem, 'toPem is the concatenation');
  t.equal(TrustBundle.fromPem(both.toPem()).size, 2, 'toPem round-trips');
  t.ok(Object.isFrozen(both.rootsPem));
});

t.test('fromPem rejects non-CA certificates, empty input and other PEM blocks', async (t) => {
  const leaf = await mintCert({ uris: ['spiffe://td/ns/a/sa/b'] });
  t.equal(
    code(() => TrustBundle.fromPem(leaf.certPem)),
    'ID_ERR_BUNDLE',
    'leaf',
  );
  t.equal(
    code(() => TrustBundle.fromPem(rootA.certPem + leaf.certPem)),
    'ID_ERR_BUNDLE',
    'one bad cert spoils the bundle',
  );
  const noBc = await mintCert({ ca: null, subject: 'O=nobc', keyUsage: x509.KeyUsageFlags.keyCertSign });
  t.equal(
    code(() => TrustBundle.fromPem(noBc.certPem)),
    'ID_ERR_BUNDLE',
    'no basicConstraints',
  );
  const noCertSign = await mintCert({ ca: true, subject: 'O=x', keyUsage: x509.KeyUsageFlags.cRLSign });
  t.equal(
    code(() => TrustBundle.fromPem(noCertSign.certPem)),
    'ID_ERR_BUNDLE',
    'keyUsage without keyCertSign',
  );
  t.equal(
    code(() => TrustBundle.fromPem('')),
    'ID_ERR_BUNDLE',
    'empty',
  );
  t.equal(
    code(() => TrustBundle.fromPem([])),
    'ID_ERR_BUNDLE',
    'empty array',
  );
  t.equal(
    code(() => TrustBundle.fromPem(rootA.privateKeyPem)),
    'ID_ERR_BUNDLE',
    'a private key',
  );
  t.equal(
    code(() => TrustBundle.fromPem(rootA.certPem + rootA.privateKeyPem)),
    'ID_ERR_BUNDLE',
    'a key mixed in',
  );
  t.equal(
    code(() => TrustBundle.fromPem('-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n')),
    'ID_ERR_BUNDLE',
    'bad base64',
  );
  t.equal(
    code(() => TrustBundle.fromPem('-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n')),
    'ID_ERR_BUNDLE',
    'not a certificate',
  );
  t.equal(
    code(() => TrustBundle.fromDer([])),
    'ID_ERR_BUNDLE',
  );
});

t.test('merge and without (root rotation)', async (t) => {
  const a = TrustBundle.fromPem(rootA.certPem);
  const ab = a.merge(TrustBundle.fromPem([rootB.certPem, rootA.certPem]));
  t.same(ab.rootsPem, [rootA.certPem, rootB.certPem], 'union without duplicates, this bundle first');
  t.equal(a.size, 1, 'merge does not mutate');
  const b = ab.without(rootA.certPem);
  t.same(b.rootsPem, [rootB.certPem]);
  t.equal(ab.size, 2, 'without does not mutate');
  t.same(ab.without(rootC.certPem).rootsPem, ab.rootsPem, 'removing an absent root is a no-op');
  t.equal(
    code(() => b.without(rootB.certPem)),
    'ID_ERR_BUNDLE',
    'cannot empty the bundle',
  );
  t.ok(ab.has(rootB.certPem));
  t.notOk(b.has(rootA.certPem));
});

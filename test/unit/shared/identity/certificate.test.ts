// SPDX-License-Identifier: Apache-2.0
// The strict DER reader and certificate parser (X.690 DER rules, RFC 5280 §4.1/§4.2) and the
// PEM helpers.
import t from 'tap';
import {
  describeName,
  KeyUsage,
  OID,
  parseCertificate,
  parseGeneralNames,
} from '../../../../src/shared/identity/certificate.ts';
import {
  children,
  decodeBoolean,
  decodeOid,
  decodeSmallUint,
  DerError,
  readTlv,
} from '../../../../src/shared/identity/der.ts';
import { derToPem, pemBlocks, splitPemCertificates } from '../../../../src/shared/identity/pem.ts';
import { mintCert } from '../../../helpers/pki.ts';

const b = (...bytes: number[]): Uint8Array => Uint8Array.from(bytes);

t.test('DER reader rejects non-DER encodings', async (t) => {
  t.same(readTlv(b(0x04, 0x02, 0xaa, 0xbb), 0).tlv.value, b(0xaa, 0xbb));
  const long = new Uint8Array(3 + 200).fill(0x41);
  long.set([0x04, 0x81, 200]);
  t.equal(readTlv(long, 0).tlv.value.length, 200, 'long form when needed');
  t.throws(() => readTlv(b(0x30, 0x80, 0x00, 0x00), 0), DerError, 'indefinite length');
  t.throws(() => readTlv(b(0x04, 0x81, 0x05, 1, 2, 3, 4, 5), 0), DerError, 'long form for a short length');
  t.throws(() => readTlv(b(0x04, 0x82, 0x00, 0x05, 1, 2, 3, 4, 5), 0), DerError, 'leading zero in length');
  t.throws(() => readTlv(b(0x1f, 0x81, 0x01, 0x00), 0), DerError, 'high tag number');
  t.throws(() => readTlv(b(0x04, 0x05, 1, 2), 0), DerError, 'length past the end');
  t.throws(() => readTlv(b(0x04), 0), DerError, 'truncated');
  t.throws(() => readTlv(b(0x04, 0x85, 1, 1, 1, 1, 1), 0), DerError, 'absurd length field');
  t.same(
    children(b(0x02, 0x01, 0x05, 0x05, 0x00)).map((c) => c.tag),
    [0x02, 0x05],
  );

  t.equal(decodeOid(b(0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e)), '1.2.840.113549.1.9.14');
  t.equal(decodeOid(b(0x55, 0x1d, 0x11)), '2.5.29.17');
  t.throws(() => decodeOid(b(0x55, 0x80, 0x11)), DerError, 'non-minimal arc');
  t.throws(() => decodeOid(b(0x55, 0x9d)), DerError, 'truncated arc');
  t.throws(() => decodeOid(b()), DerError, 'empty');

  const tlv = (bytes: Uint8Array) => readTlv(bytes, 0).tlv;
  t.equal(decodeBoolean(tlv(b(0x01, 0x01, 0xff))), true);
  t.equal(decodeBoolean(tlv(b(0x01, 0x01, 0x00))), false);
  t.throws(() => decodeBoolean(tlv(b(0x01, 0x01, 0x01))), DerError, 'BOOLEAN 0x01 is BER, not DER');
  t.equal(decodeSmallUint(tlv(b(0x02, 0x02, 0x00, 0x80)), 'n'), 128);
  t.throws(() => decodeSmallUint(tlv(b(0x02, 0x02, 0x00, 0x05)), 'n'), DerError, 'non-minimal INTEGER');
  t.throws(() => decodeSmallUint(tlv(b(0x02, 0x01, 0xff)), 'n'), DerError, 'negative');
});

t.test('GeneralNames: forms, order, and malformed input', async (t) => {
  const names = parseGeneralNames(b(0x30, 0x08, 0x86, 0x01, 0x41, 0x82, 0x01, 0x42, 0x87, 0x00));
  t.same(
    names.map((n) => n.type),
    [6, 2, 7],
  );
  t.throws(() => parseGeneralNames(b(0x30, 0x00)), DerError, 'empty SAN');
  t.throws(() => parseGeneralNames(b(0x30, 0x03, 0xa6, 0x01, 0x41)), DerError, 'constructed URI');
  t.throws(() => parseGeneralNames(b(0x30, 0x03, 0x16, 0x01, 0x41)), DerError, 'universal tag');
  t.throws(() => parseGeneralNames(b(0x30, 0x03, 0x89, 0x01, 0x41)), DerError, 'unknown choice [9]');
  t.throws(() => parseGeneralNames(b(0x30, 0x03, 0x86, 0x01, 0x41, 0x00)), DerError, 'trailing byte');
});

t.test('certificate fields come from the DER', async (t) => {
  const issuer = await mintCert({ ca: true, subject: 'O=cluster.local, CN=Test CA', pathLen: 1 });
  const notAfter = new Date('2051-03-04T05:06:07Z'); // ≥ 2050: GeneralizedTime
  const notBefore = new Date('2049-12-31T23:59:59Z'); // < 2050: UTCTime
  const leaf = await mintCert({
    issuer,
    uris: ['spiffe://td/ns/a/sa/b'],
    dnsNames: ['x.test'],
    notBefore,
    notAfter,
    serial: '00ff01',
  });
  const c = parseCertificate(leaf.der);
  t.equal(c.serial, '00ff01');
  t.same(c.notBefore, notBefore);
  t.same(c.notAfter, notAfter);
  t.equal(c.subjectAltNames.length, 2);
  t.equal(c.keyUsage, KeyUsage.digitalSignature | KeyUsage.keyEncipherment);
  t.same(c.extKeyUsage, [OID.serverAuth, OID.clientAuth]);
  t.ok(c.subjectEmpty);
  t.equal(describeName(c.issuerDer), 'O=cluster.local, CN=Test CA');
  t.equal(describeName(c.subjectDer), '(empty)');
  const ic = parseCertificate(issuer.der);
  t.same(ic.basicConstraints, { ca: true, pathLen: 1 });
  t.equal(c.authorityKeyId, ic.subjectKeyId);
  t.same(ic.unknownCritical, []);
  t.throws(
    () => parseCertificate(leaf.der.subarray(0, leaf.der.length - 1)),
    { code: 'ID_ERR_CERT_PARSE' },
    'truncated',
  );
});

t.test('PEM helpers', async (t) => {
  const a = await mintCert({ ca: true, subject: 'O=a' });
  const pem = derToPem(a.der);
  t.match(
    pem,
    /^-----BEGIN CERTIFICATE-----\n(?:[A-Za-z0-9+/=]{64}\n)*[A-Za-z0-9+/=]{1,64}\n-----END CERTIFICATE-----\n$/,
  );
  t.same(pemBlocks(pem)[0]!.der, a.der);
  t.same(splitPemCertificates(`junk\n${pem}${pem}`), [pem, pem]);
  t.throws(() => splitPemCertificates('nothing here'), { code: 'ID_ERR_CERT_PARSE' });
  t.throws(() => splitPemCertificates(a.privateKeyPem), { code: 'ID_ERR_CERT_PARSE' });
});

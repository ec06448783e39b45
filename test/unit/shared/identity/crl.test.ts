// SPDX-License-Identifier: Apache-2.0
// Certificate revocation lists (crl.ts; checklist B.31): the DER parser and everything it refuses
// (indirect, delta and partitioned CRLs, unknown critical extensions, unsupported or mismatched
// signature algorithms, bad DER), the PEM file loader, and RevocationList's decision of which CRL
// speaks for which certificate (issuer name, authority key id, signature, cRLSign) on complete and
// leaf-only paths. Shapes the generator cannot make are built by editing the DER and re-signing.
import t from 'tap';
import { sign, webcrypto } from 'node:crypto';
import {
  CRL_OID,
  crlSignedBy,
  MAX_CRLS_PER_FILE,
  normalizeSerial,
  parseCrl,
  revokedError,
  RevocationList,
  type ParsedCrl,
} from '../../../../src/shared/identity/crl.ts';
import { parseCertificate, type ParsedCertificate } from '../../../../src/shared/identity/certificate.ts';
import { children, readOnly, TAG, type Tlv } from '../../../../src/shared/identity/der.ts';
import { IdentityError } from '../../../../src/shared/identity/errors.ts';
import { derToPem } from '../../../../src/shared/identity/pem.ts';
import { generateP256KeyPair } from '../../../../src/shared/identity/csr.ts';
import { mintCert, mintCrl, thrownIdentityError, x509, type MintedCert } from '../../../helpers/pki.ts';

const TD = 'cluster.local';
const ID = `spiffe://${TD}/ns/a/sa/b`;

// root → int → leaf, plus a second leaf under the same intermediate.
const root = await mintCert({ ca: true, subject: `O=${TD}` });
const int = await mintCert({ ca: true, subject: `O=${TD}, CN=Intermediate CA`, issuer: root, pathLen: 0 });
const leaf = await mintCert({ issuer: int, uris: [ID], serial: '1234abcd' });
const other = await mintCert({ issuer: int, uris: [ID], serial: '5678' });
const P = {
  root: parseCertificate(root.der),
  int: parseCertificate(int.der),
  leaf: parseCertificate(leaf.der),
  other: parseCertificate(other.der),
};

// ---- DER editing ----------------------------------------------------------------------------

function derLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}
function tlv(tag: number, ...content: Uint8Array[]): Uint8Array {
  const body = Buffer.concat(content);
  return new Uint8Array(Buffer.concat([Uint8Array.of(tag), derLength(body.length), body]));
}

/** The parts of a CertificateList: TBSCertList fields, signatureAlgorithm and signatureValue, as TLVs. */
function split(der: Uint8Array): { fields: Tlv[]; sigAlg: Tlv; sig: Tlv } {
  const [tbs, sigAlg, sig] = children(readOnly(der, TAG.SEQUENCE, 'CertificateList').value) as [
    Tlv,
    Tlv,
    Tlv,
  ];
  return { fields: children(tbs.value), sigAlg, sig };
}

/** A CertificateList from TBSCertList fields, signed (ECDSA SHA-256) by `signer`. */
function assemble(fields: readonly Uint8Array[], sigAlg: Uint8Array, signer: MintedCert): Uint8Array {
  const tbs = tlv(TAG.SEQUENCE, ...fields);
  const signature = new Uint8Array(sign('sha256', tbs, signer.privateKeyPem));
  return tlv(TAG.SEQUENCE, tbs, sigAlg, tlv(TAG.BIT_STRING, Uint8Array.of(0), signature));
}

/** Rewrites every revokedCertificates entry (children TLVs) of a TBSCertList field list. */
function mapEntries(fields: readonly Tlv[], f: (parts: Tlv[]) => Uint8Array[]): Uint8Array[] {
  // revokedCertificates is the only SEQUENCE after the times (index 5 with version and nextUpdate).
  return fields.map((field, i) =>
    i >= 4 && field.tag === TAG.SEQUENCE
      ? tlv(TAG.SEQUENCE, ...children(field.value).map((e) => tlv(TAG.SEQUENCE, ...f(children(e.value)))))
      : field.raw,
  );
}

function replaceAll(der: Uint8Array, from: Uint8Array, to: Uint8Array, max = Infinity): Uint8Array {
  const out = Buffer.from(der);
  let done = 0;
  for (let i = out.indexOf(from); i !== -1 && done < max; i = out.indexOf(from, i + 1), done++) {
    out.set(to, i);
  }
  return new Uint8Array(out);
}

const thrown = thrownIdentityError;

/** A signing key pair of any WebCrypto algorithm (RSA, Ed25519) for issuers and forgeries. */
async function keyPair(
  alg: webcrypto.AlgorithmIdentifier | webcrypto.RsaHashedKeyGenParams,
): Promise<webcrypto.CryptoKeyPair> {
  const k = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  if (!('privateKey' in k)) throw new Error('not a key pair');
  return k;
}

const derInt = (n: number): Uint8Array => tlv(TAG.INTEGER, Uint8Array.of(n));
const revoked = (list: RevocationList, cert: ParsedCertificate, issuer: ParsedCertificate | undefined) =>
  list.revokes(cert, issuer) !== undefined;

// ---- parser ---------------------------------------------------------------------------------

t.test('a good CRL parses: issuer, times, number, AKI, revoked serials with their dates', async (t) => {
  const thisUpdate = new Date('2030-01-02T03:04:05Z');
  const nextUpdate = new Date('2030-02-02T03:04:05Z');
  const d1 = new Date('2029-12-31T23:59:59Z');
  const d2 = new Date('2055-06-01T00:00:00Z'); // GeneralizedTime (2050 and later)
  const crl = await mintCrl({
    issuer: int,
    thisUpdate,
    nextUpdate,
    crlNumber: 200,
    serials: [
      { serial: P.leaf.serial, revocationDate: d1, reason: x509.X509CrlReason.keyCompromise },
      { serial: 'ff'.repeat(20), revocationDate: d2 },
      '05',
    ],
  });
  const p = parseCrl(crl.der);
  t.same(Buffer.from(p.issuerDer), Buffer.from(P.int.subjectDer), 'issuer = the intermediate subject');
  t.equal(p.thisUpdate.toISOString(), thisUpdate.toISOString());
  t.equal(p.nextUpdate?.toISOString(), nextUpdate.toISOString());
  t.equal(p.crlNumber, 'c8', 'cRLNumber 200 in hex without the sign octet');
  t.equal(p.authorityKeyId, P.int.subjectKeyId, 'AKI = the intermediate SKI');
  t.equal(p.signatureAlgorithm, '1.2.840.10045.4.3.2');
  t.same([...p.revoked.keys()], ['1234abcd', 'ff'.repeat(20), '05']);
  t.equal(p.revoked.get('1234abcd')?.toISOString(), d1.toISOString());
  t.equal(
    p.revoked.get('ff'.repeat(20))?.toISOString(),
    d2.toISOString(),
    '21-octet encoding (sign octet) accepted',
  );
  t.equal(p.revoked.get('05')?.toISOString(), thisUpdate.toISOString());
  t.same(Buffer.from(p.der), Buffer.from(crl.der));

  const bare = parseCrl(
    (await mintCrl({ issuer: int, nextUpdate: null, crlNumber: null, authorityKeyId: null })).der,
  );
  t.equal(bare.nextUpdate, undefined, 'nextUpdate is optional');
  t.equal(bare.crlNumber, undefined);
  t.equal(bare.authorityKeyId, undefined);
  t.equal(bare.revoked.size, 0, 'a CRL without entries revokes nothing');

  const big = parseCrl((await mintCrl({ issuer: int, crlNumber: 2n ** 100n + 1n })).der);
  t.equal(big.crlNumber, '10000000000000000000000001');

  const stale = parseCrl((await mintCrl({ issuer: int, nextUpdate: new Date('2001-01-01T00:00:00Z') })).der);
  t.equal(stale.nextUpdate?.getUTCFullYear(), 2001, 'an expired nextUpdate still parses (not enforced)');

  // Non-critical extensions this verifier does not evaluate are fine, and so are allowed critical ones.
  const tolerated = await mintCrl({
    issuer: int,
    extensions: [
      new x509.Extension('1.2.3.4', false, tlv(TAG.NULL)),
      new x509.Extension(CRL_OID.issuingDistributionPoint, false, tlv(TAG.SEQUENCE)),
      new x509.Extension(CRL_OID.freshestCRL, true, tlv(TAG.SEQUENCE)),
    ],
    serials: [
      {
        serial: '07',
        extensions: [
          new x509.Extension('1.2.3.5', false, tlv(TAG.NULL)),
          new x509.Extension(CRL_OID.reasonCode, true, tlv(0x0a, Uint8Array.of(1))),
        ],
      },
    ],
  });
  t.equal(parseCrl(tolerated.der).revoked.size, 1, 'non-critical unknown and critical reasonCode accepted');
});

t.test('v1 CRLs: accepted without extensions, refused with any', async (t) => {
  const crl = await mintCrl({ issuer: int, serials: [P.leaf.serial], crlNumber: null, authorityKeyId: null });
  const { fields, sigAlg } = split(crl.der);
  t.equal(fields[0]?.tag, TAG.INTEGER, 'the generator writes a version');
  // Drop the version, and the (empty) entry extensions @peculiar/x509 writes on every entry.
  const v1Fields = mapEntries(fields, (parts) => parts.slice(0, 2).map((p) => p.raw)).slice(1);
  const v1 = assemble(v1Fields, sigAlg.raw, int);
  const p = parseCrl(v1);
  t.equal(p.crlNumber, undefined);
  t.ok(p.revoked.has(P.leaf.serial));
  t.ok(revoked(RevocationList.fromDer([v1]), P.leaf, P.int), 'a signed v1 CRL revokes');

  const withEntryExts = assemble(
    fields.slice(1).map((f) => f.raw),
    sigAlg.raw,
    int,
  );
  const e1 = thrown(() => parseCrl(withEntryExts));
  t.equal(e1.code, 'ID_ERR_CRL');
  t.match(e1.message, /CRL entry extensions need a v2 CRL/);

  const withCrlExts = (await mintCrl({ issuer: int })).der; // AKI + cRLNumber, no entries
  const s = split(withCrlExts);
  const e2 = thrown(() =>
    parseCrl(
      assemble(
        s.fields.slice(1).map((f) => f.raw),
        s.sigAlg.raw,
        int,
      ),
    ),
  );
  t.equal(e2.code, 'ID_ERR_CRL');
  t.match(e2.message, /CRL extensions need a v2 CRL/);

  const v3 = assemble([derInt(2), ...s.fields.slice(1).map((f) => f.raw)], s.sigAlg.raw, int);
  t.match(thrown(() => parseCrl(v3)).message, /only v2 CRLs carry a version/, 'version 3 refused');
});

t.test('serial numbers: normalized so that a stray leading 00 octet still matches', async (t) => {
  t.equal(normalizeSerial('00AB'), 'ab');
  t.equal(normalizeSerial('0000001234'), '1234');
  t.equal(normalizeSerial('00'), '00', 'zero stays one octet');
  t.equal(normalizeSerial('0000'), '00');
  t.equal(normalizeSerial('7f'), '7f');

  // The certificate encodes 12 34 ab cd; the CRL entry 00 12 34 ab cd (not minimal, but seen).
  t.equal(P.leaf.serial, '1234abcd');
  const crl = await mintCrl({ issuer: int, serials: [P.leaf.serial] });
  const { fields, sigAlg } = split(crl.der);
  const padded = assemble(
    mapEntries(fields, ([serial, ...rest]) => [
      tlv(TAG.INTEGER, Uint8Array.of(0), (serial as Tlv).value),
      ...rest.map((r) => r.raw),
    ]),
    sigAlg.raw,
    int,
  );
  t.ok(
    Buffer.from(padded).includes(Buffer.from('0205001234abcd', 'hex')),
    'the entry carries 00 12 34 ab cd',
  );
  const list = RevocationList.fromDer([padded]);
  t.same([...(list.crls[0]?.revoked.keys() ?? [])], ['1234abcd']);
  t.ok(revoked(list, P.leaf, P.int), 'the padded entry revokes the certificate (signature checked)');
  t.notOk(revoked(list, P.other, P.int), 'and nothing else');

  // A serial with the high bit set: the certificate carries the 00 sign octet, the CRL too.
  const high = await mintCert({ issuer: int, uris: [ID], serial: '00f00d' });
  const ph = parseCertificate(high.der);
  t.equal(ph.serial, '00f00d');
  for (const spelling of ['f00d', '00f00d', 'F00D']) {
    const l = RevocationList.fromDer([(await mintCrl({ issuer: int, serials: [spelling] })).der]);
    t.ok(revoked(l, ph, P.int), `listed as ${spelling}`);
  }

  const tooLong = await mintCrl({ issuer: int, serials: ['01'.repeat(22)] });
  const e = thrown(() => parseCrl(tooLong.der));
  t.equal(e.code, 'ID_ERR_CRL');
  t.match(e.message, /serial number must be 1 to 20 octets/);
});

t.test('refused: indirect, delta and partitioned CRLs, unknown critical extensions', async (t) => {
  const cases: [string, Promise<{ der: Uint8Array }>, RegExp][] = [
    [
      'indirect CRL (certificateIssuer, critical as RFC 5280 wants)',
      mintCrl({
        issuer: int,
        serials: [
          {
            serial: '01',
            extensions: [
              new x509.Extension(
                CRL_OID.certificateIssuer,
                true,
                tlv(TAG.SEQUENCE, tlv(0x86, Buffer.from('x'))),
              ),
            ],
          },
        ],
      }),
      /indirect CRL \(an entry carries certificateIssuer\)/,
    ],
    [
      'indirect CRL (certificateIssuer, non-critical)',
      mintCrl({
        issuer: int,
        serials: [
          {
            serial: '01',
            extensions: [
              new x509.Extension(
                CRL_OID.certificateIssuer,
                false,
                tlv(TAG.SEQUENCE, tlv(0x86, Buffer.from('x'))),
              ),
            ],
          },
        ],
      }),
      /indirect CRL/,
    ],
    [
      'delta CRL',
      mintCrl({ issuer: int, extensions: [new x509.Extension(CRL_OID.deltaCRLIndicator, true, derInt(1))] }),
      /delta CRL/,
    ],
    [
      'delta CRL marked non-critical',
      mintCrl({ issuer: int, extensions: [new x509.Extension(CRL_OID.deltaCRLIndicator, false, derInt(1))] }),
      /delta CRL/,
    ],
    [
      'critical issuingDistributionPoint',
      mintCrl({
        issuer: int,
        extensions: [new x509.Extension(CRL_OID.issuingDistributionPoint, true, tlv(TAG.SEQUENCE))],
      }),
      /issuingDistributionPoint \(a partitioned CRL\)/,
    ],
    [
      'unknown critical CRL extension',
      mintCrl({ issuer: int, extensions: [new x509.Extension('1.2.3.4.5', true, tlv(TAG.NULL))] }),
      /the CRL carries the critical extension 1\.2\.3\.4\.5/,
    ],
    [
      'unknown critical CRL entry extension',
      mintCrl({
        issuer: int,
        serials: [{ serial: '01', extensions: [new x509.Extension('1.2.3.4.6', true, tlv(TAG.NULL))] }],
      }),
      /a CRL entry carries the critical extension 1\.2\.3\.4\.6/,
    ],
    [
      'duplicate cRLNumber',
      mintCrl({ issuer: int, extensions: [new x509.Extension(CRL_OID.cRLNumber, false, derInt(2))] }),
      /extension 2\.5\.29\.20 appears more than once/,
    ],
    ['empty issuer Name', mintCrl({ issuer: int, issuerName: '' }), /issuer Name is empty/],
  ];
  for (const [name, made, message] of cases) {
    const { der } = await made;
    const err = thrown(() => parseCrl(der));
    t.equal(err.code, 'ID_ERR_CRL', name);
    t.match(err.message, message, name);
    // The loader says the same, naming the file and the block.
    const viaPem = thrown(() => RevocationList.fromPem(derToPem(der, 'X509 CRL'), '/etc/crl/ca-crl.pem'));
    t.equal(viaPem.code, 'ID_ERR_CRL', `${name} (fromPem)`);
    t.match(viaPem.message, /^\/etc\/crl\/ca-crl\.pem: CRL #1: /, `${name} (fromPem names the file)`);
    t.match(viaPem.message, message, `${name} (fromPem)`);
  }
});

t.test('refused: unsupported or mismatched signature algorithms', async (t) => {
  const { der } = await mintCrl({ issuer: int, serials: ['01'] });
  const sha256 = Buffer.from('06082a8648ce3d040302', 'hex'); // OID ecdsa-with-SHA256
  const first = Buffer.from(der).indexOf(sha256);
  t.ok(first !== -1 && Buffer.from(der).lastIndexOf(sha256) > first, 'inner and outer copies present');
  const sha224 = Buffer.from('06082a8648ce3d040301', 'hex'); // ecdsa-with-SHA224: not supported
  const unsupported = thrown(() => parseCrl(replaceAll(der, sha256, sha224)));
  t.equal(unsupported.code, 'ID_ERR_CRL');
  t.match(unsupported.message, /signed with algorithm 1\.2\.840\.10045\.4\.3\.1, which is not supported/);

  // The outer signatureAlgorithm follows the TBSCertList; change only that one.
  const sha384 = Buffer.from('06082a8648ce3d040303', 'hex');
  const at = Buffer.from(der).lastIndexOf(sha256);
  const mismatched = Buffer.from(der);
  mismatched.set(sha384, at);
  const e = thrown(() => parseCrl(new Uint8Array(mismatched)));
  t.equal(e.code, 'ID_ERR_CRL');
  t.match(e.message, /TBSCertList\.signature differs from CertificateList\.signatureAlgorithm/);
  t.match(e.message, /^malformed CRL: /);

  // RSA PKCS#1 v1.5 with SHA-1: the generator signs it, the parser refuses it.
  const rsa = await keyPair({
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength: 1024,
    publicExponent: Uint8Array.of(1, 0, 1),
    hash: 'SHA-1',
  });
  const sha1 = await mintCrl({ issuer: int, signingKey: rsa.privateKey });
  const e3 = thrown(() => parseCrl(sha1.der));
  t.match(e3.message, /algorithm 1\.2\.840\.113549\.1\.1\.5, which is not supported/);
});

t.test('refused: bad DER', async (t) => {
  const { der } = await mintCrl({ issuer: int, serials: ['01', '02'] });
  const cases: [string, Uint8Array, RegExp][] = [
    ['truncated', der.subarray(0, der.length - 5), /past the end/],
    ['only the first bytes', der.subarray(0, 3), /malformed CRL/],
    [
      'trailing garbage',
      new Uint8Array(Buffer.concat([der, Uint8Array.of(0, 0)])),
      /trailing bytes after CertificateList/,
    ],
    ['empty', new Uint8Array(0), /unexpected end of data/],
    ['a certificate', root.der, /malformed CRL/],
    [
      'a fourth element in CertificateList',
      (() => {
        const s = split(der);
        return tlv(
          TAG.SEQUENCE,
          tlv(TAG.SEQUENCE, ...s.fields.map((f) => f.raw)),
          s.sigAlg.raw,
          s.sig.raw,
          derInt(0),
        );
      })(),
      /CertificateList has extra elements/,
    ],
    [
      'signature with unused bits',
      (() => {
        const s = split(der);
        const bits = Uint8Array.from(s.sig.value);
        bits[0] = 1;
        return tlv(
          TAG.SEQUENCE,
          tlv(TAG.SEQUENCE, ...s.fields.map((f) => f.raw)),
          s.sigAlg.raw,
          tlv(TAG.BIT_STRING, bits),
        );
      })(),
      /whole number of octets/,
    ],
    [
      'empty crlExtensions',
      (() => {
        const s = split(der);
        const fields = s.fields.map((f) => (f.tag === 0xa0 ? tlv(0xa0, tlv(TAG.SEQUENCE)) : f.raw));
        return assemble(fields, s.sigAlg.raw, int);
      })(),
      /crlExtensions must not be empty/,
    ],
  ];
  for (const [name, bytes, message] of cases) {
    const err = thrown(() => parseCrl(bytes));
    t.equal(err.code, 'ID_ERR_CRL', name);
    t.match(err.message, message, name);
    t.equal(thrown(() => RevocationList.fromDer([bytes])).code, 'ID_ERR_CRL', `${name} (fromDer)`);
  }
});

// ---- the file loader -----------------------------------------------------------------------

t.test('fromPem: what a CRL file may and may not hold', async (t) => {
  const a = await mintCrl({ issuer: int, serials: [P.leaf.serial, P.other.serial] });
  const b = await mintCrl({ issuer: root, serials: [P.int.serial] });

  const list = RevocationList.fromPem(`# root and intermediate CRLs\n${b.pem}\n\n${a.pem}`);
  t.equal(list.crls.length, 2);
  t.equal(list.revokedCount, 3);
  t.ok(revoked(list, P.leaf, P.int));
  t.ok(revoked(list, P.int, P.root));
  t.ok(Object.isFrozen(list.crls), 'the list cannot be changed behind the verifier');

  const empty = RevocationList.fromPem(b.pem.replace(/\n/g, '\r\n'));
  t.equal(empty.crls.length, 1, 'CRLF line ends');

  for (const [name, text] of [
    ['empty file', ''],
    ['whitespace', '  \n\n'],
    ['text only', 'no CRL here\n'],
  ] as const) {
    const err = thrown(() => RevocationList.fromPem(text, 'ca-crl.pem'));
    t.equal(err.code, 'ID_ERR_CRL', name);
    t.match(err.message, /^ca-crl\.pem holds no PEM CRL \(-----BEGIN X509 CRL-----\)/, name);
    t.match(err.message, /publish a CRL without entries rather than an empty file/, name);
  }

  const unterminated = thrown(() => RevocationList.fromPem('-----BEGIN X509 CRL-----\nMIIB\n', 'ca-crl.pem'));
  t.equal(unterminated.code, 'ID_ERR_CRL', 'unterminated block');
  t.match(unterminated.message, /^ca-crl\.pem: a PEM block has a BEGIN line without its matching END line/);

  const mixed = thrown(() => RevocationList.fromPem(a.pem + root.certPem));
  t.equal(mixed.code, 'ID_ERR_CRL');
  t.match(mixed.message, /block #2 is "CERTIFICATE"; only X509 CRL blocks are allowed/);
  const certOnly = thrown(() => RevocationList.fromPem(root.certPem));
  t.match(certOnly.message, /block #1 is "CERTIFICATE"/, 'a certificate file is not a CRL file');
  const key = thrown(() => RevocationList.fromPem(a.pem + root.privateKeyPem));
  t.match(key.message, /block #2 is "PRIVATE KEY"/);

  const max = RevocationList.fromPem(a.pem.repeat(MAX_CRLS_PER_FILE));
  t.equal(max.crls.length, MAX_CRLS_PER_FILE, `${MAX_CRLS_PER_FILE} blocks are accepted`);
  const tooMany = thrown(() => RevocationList.fromPem(a.pem.repeat(MAX_CRLS_PER_FILE + 1), 'f'));
  t.equal(tooMany.code, 'ID_ERR_CRL');
  t.match(
    tooMany.message,
    new RegExp(`^f holds ${MAX_CRLS_PER_FILE + 1} CRLs; at most ${MAX_CRLS_PER_FILE}`),
  );

  const badB64 = a.pem.replace(/\n([A-Za-z0-9+/]{10})/, '\n!!!!!!!!!!');
  const e = thrown(() => RevocationList.fromPem(badB64, 'ca-crl.pem'));
  t.equal(e.code, 'ID_ERR_CRL', 'invalid base64 is a CRL error, not a certificate one');
  t.match(e.message, /^ca-crl\.pem: PEM block "X509 CRL" is not valid base64/);
  t.type(e.cause, IdentityError);

  const second = thrown(() => RevocationList.fromPem(a.pem + derToPem(a.der.subarray(0, 40), 'X509 CRL')));
  t.match(second.message, /^CRL file: CRL #2: malformed CRL/, 'a bad block is named by its position');
});

t.test('fromPem: a truncated block after a good one is refused, not skipped', async (t) => {
  const rootCrl = await mintCrl({ issuer: root, serials: [P.int.serial] });
  const intCrl = await mintCrl({ issuer: int, serials: [P.leaf.serial] });
  // A file cut short while being written: the root's CRL whole, the intermediate's half.
  const cut = rootCrl.pem + intCrl.pem.slice(0, Math.floor(intCrl.pem.length / 2));
  let loaded: RevocationList | IdentityError;
  try {
    loaded = RevocationList.fromPem(cut, 'ca-crl.pem');
  } catch (err) {
    loaded = err as IdentityError;
  }
  t.type(loaded, IdentityError, 'the file is refused (the caller keeps the previous list)');
  t.equal((loaded as IdentityError).code, 'ID_ERR_CRL');
});

// ---- which CRL speaks for which certificate -------------------------------------------------

t.test('revokes(): a CRL counts only when its issuer signed it', async (t) => {
  const good = RevocationList.fromDer([(await mintCrl({ issuer: int, serials: [P.leaf.serial] })).der]);
  const hit = good.revokes(P.leaf, P.int);
  t.equal(hit, good.crls[0], 'the right issuer revokes, and the CRL is returned');
  t.equal(good.revokes(P.other, P.int), undefined, 'an unlisted serial is not revoked');
  t.equal(
    good.revokes(P.leaf, P.root),
    undefined,
    'checked against a certificate that did not sign it: ignored',
  );

  // Forged: the intermediate's name and key id, signed by an attacker's key.
  const attacker = await generateP256KeyPair();
  const forged = RevocationList.fromDer([
    (await mintCrl({ issuer: int, signingKey: attacker.privateKey, serials: [P.leaf.serial] })).der,
  ]);
  t.equal(forged.crls[0]?.authorityKeyId, P.int.subjectKeyId, 'the forgery claims the right key id');
  t.notOk(revoked(forged, P.leaf, P.int), 'forged CRL: no effect when the issuer is known');
  t.notOk(crlSignedBy(forged.crls[0] as ParsedCrl, P.int));
  t.ok(crlSignedBy(good.crls[0] as ParsedCrl, P.int));

  // A rotated intermediate (same name, new key): its CRL is not the old intermediate's.
  const rotated = await mintCert({
    ca: true,
    subject: `O=${TD}, CN=Intermediate CA`,
    issuer: root,
    pathLen: 0,
  });
  const rotatedCrl = (await mintCrl({ issuer: rotated, serials: [P.leaf.serial] })).der;
  t.same(Buffer.from(parseCrl(rotatedCrl).issuerDer), Buffer.from(P.int.subjectDer), 'same issuer name');
  const rl = RevocationList.fromDer([rotatedCrl]);
  t.notOk(revoked(rl, P.leaf, P.int), 'same name, other key (AKI differs): no effect');
  const rlNoAki = RevocationList.fromDer([
    (await mintCrl({ issuer: rotated, serials: [P.leaf.serial], authorityKeyId: null })).der,
  ]);
  t.notOk(revoked(rlNoAki, P.leaf, P.int), 'same name, other key, no AKI: the signature decides');
  const rlClaimed = RevocationList.fromDer([
    (await mintCrl({ issuer: rotated, serials: [P.leaf.serial], authorityKeyId: P.int.subjectKeyId ?? '' }))
      .der,
  ]);
  t.notOk(
    revoked(rlClaimed, P.leaf, P.int),
    'same name, other key, AKI of the real issuer: the signature decides',
  );

  // Right key, but the AKI names another key: skipped before the signature is looked at.
  const wrongAki = RevocationList.fromDer([
    (await mintCrl({ issuer: int, serials: [P.leaf.serial], authorityKeyId: 'deadbeef' })).der,
  ]);
  t.notOk(revoked(wrongAki, P.leaf, P.int), 'AKI mismatch skips');
  const noAki = RevocationList.fromDer([
    (await mintCrl({ issuer: int, serials: [P.leaf.serial], authorityKeyId: null })).der,
  ]);
  t.ok(revoked(noAki, P.leaf, P.int), 'no AKI in the CRL: name and signature suffice');

  // Another CA listing the same serial.
  const stranger = await mintCert({ ca: true, subject: 'O=elsewhere' });
  const foreign = RevocationList.fromDer([
    (await mintCrl({ issuer: stranger, serials: [P.leaf.serial] })).der,
  ]);
  t.notOk(revoked(foreign, P.leaf, P.int), "another issuer's CRL");
  t.notOk(revoked(foreign, P.leaf, undefined), "another issuer's CRL, even by name only");

  // An RSA key signing as the (EC) intermediate: not a match, no exception.
  const rsa = await keyPair({
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength: 1024,
    publicExponent: Uint8Array.of(1, 0, 1),
    hash: 'SHA-256',
  });
  const rsaCrl = RevocationList.fromDer([
    (
      await mintCrl({
        issuer: int,
        signingKey: rsa.privateKey,
        signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
        serials: [P.leaf.serial],
      })
    ).der,
  ]);
  t.equal(rsaCrl.crls[0]?.signatureAlgorithm, '1.2.840.113549.1.1.11');
  t.notOk(revoked(rsaCrl, P.leaf, P.int), 'an RSA signature against an EC issuer does not verify');

  // The first CRL that speaks for the certificate wins; ignored ones do not hide it.
  const both = RevocationList.fromDer([
    forged.crls[0]?.der ?? new Uint8Array(),
    good.crls[0]?.der ?? new Uint8Array(),
  ]);
  t.equal(both.revokes(P.leaf, P.int), both.crls[1], 'a forged CRL before the real one does not mask it');
});

t.test('revokes(): RSA and Ed25519 issuers', async (t) => {
  const rsa = await keyPair({
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength: 1024,
    publicExponent: Uint8Array.of(1, 0, 1),
    hash: 'SHA-384',
  });
  const ed = await keyPair({ name: 'Ed25519' });
  for (const [name, keys, oid] of [
    ['RSA SHA-384', rsa, '1.2.840.113549.1.1.12'],
    ['Ed25519', ed, '1.3.101.112'],
  ] as const) {
    const ca = await mintCert({ ca: true, subject: `O=${name}`, keys });
    const l = await mintCert({ issuer: ca, uris: [ID] });
    const crl = parseCrl((await mintCrl({ issuer: ca, serials: [parseCertificate(l.der).serial] })).der);
    t.equal(crl.signatureAlgorithm, oid, name);
    t.ok(crlSignedBy(crl, parseCertificate(ca.der)), `${name}: signature verifies`);
    t.notOk(crlSignedBy(crl, P.int), `${name}: not by another key`);
  }
});

t.test('revokes(): the issuer must be allowed to sign CRLs (cRLSign)', async (t) => {
  const noCrlSign = await mintCert({
    ca: true,
    subject: 'O=nocrlsign',
    keyUsage: x509.KeyUsageFlags.keyCertSign,
  });
  const noKu = await mintCert({ ca: true, subject: 'O=noku', keyUsage: null });
  for (const [issuer, counts, name] of [
    [noCrlSign, false, 'keyUsage without cRLSign'],
    [noKu, true, 'no keyUsage extension at all'],
  ] as const) {
    const l = parseCertificate((await mintCert({ issuer, uris: [ID] })).der);
    const ip = parseCertificate(issuer.der);
    const list = RevocationList.fromDer([(await mintCrl({ issuer, serials: [l.serial] })).der]);
    t.equal(crlSignedBy(list.crls[0] as ParsedCrl, ip), counts, `${name}: crlSignedBy`);
    t.equal(revoked(list, l, ip), counts, `${name}: revokes`);
    // Without the issuer at hand there is no keyUsage to look at: name and AKI decide.
    t.ok(revoked(list, l, undefined), `${name}: leaf-only fallback revokes by name`);
  }
});

t.test('revokes() without the issuer (TLS-server fallback): name and AKI, no signature', async (t) => {
  const attacker = await generateP256KeyPair();
  const forged = RevocationList.fromDer([
    (await mintCrl({ issuer: int, signingKey: attacker.privateKey, serials: [P.leaf.serial] })).der,
  ]);
  t.ok(
    revoked(forged, P.leaf, undefined),
    'name + AKI match revokes (the CRL file is trusted, a listing only denies)',
  );
  t.notOk(revoked(forged, P.other, undefined), 'only what it lists');

  const noAki = RevocationList.fromDer([
    (await mintCrl({ issuer: int, serials: [P.leaf.serial], authorityKeyId: null })).der,
  ]);
  t.ok(revoked(noAki, P.leaf, undefined), 'no AKI in the CRL: the name decides');

  const wrongAki = RevocationList.fromDer([
    (await mintCrl({ issuer: int, serials: [P.leaf.serial], authorityKeyId: 'deadbeef' })).der,
  ]);
  t.notOk(revoked(wrongAki, P.leaf, undefined), "AKI differs from the certificate's: skipped");

  const rotated = await mintCert({ ca: true, subject: `O=${TD}, CN=Intermediate CA`, issuer: root });
  const rl = RevocationList.fromDer([(await mintCrl({ issuer: rotated, serials: [P.leaf.serial] })).der]);
  t.notOk(revoked(rl, P.leaf, undefined), 'a same-named CA with another key id does not speak for the leaf');

  // A leaf without an AKI (its issuer has no subjectKeyId): the name alone.
  const noSki = await mintCert({ subject: 'O=no-ski', keyUsage: null, extKeyUsage: null });
  t.equal(parseCertificate(noSki.der).subjectKeyId, undefined);
  const noAkiLeaf = parseCertificate((await mintCert({ issuer: noSki, uris: [ID] })).der);
  t.equal(noAkiLeaf.authorityKeyId, undefined, 'issued by a certificate without SKI: no AKI');
  const byNoSki = await mintCrl({ issuer: noSki, serials: [noAkiLeaf.serial], authorityKeyId: 'deadbeef' });
  const byLeaf = RevocationList.fromDer([byNoSki.der]);
  t.ok(revoked(byLeaf, noAkiLeaf, undefined), 'the CRL AKI cannot be compared: the name decides');
});

t.test('check(): complete paths and leaf-only paths', async (t) => {
  const leafCrl = (await mintCrl({ issuer: int, serials: [P.leaf.serial], crlNumber: 42 })).der;
  const intCrl = (await mintCrl({ issuer: root, serials: [P.int.serial], crlNumber: 7 })).der;
  const path = [P.leaf, P.int, P.root];

  t.equal(RevocationList.fromDer([]).check(path, true), undefined, 'an empty list revokes nothing');
  t.equal(RevocationList.fromDer([leafCrl]).check([P.other], false), undefined, 'an unlisted leaf');

  const r0 = RevocationList.fromDer([leafCrl]).check(path, true);
  t.equal(r0?.index, 0);
  t.equal(r0?.certificate, P.leaf);
  t.equal(r0?.signatureChecked, true);
  t.equal(RevocationList.fromDer([leafCrl]).check([P.other, P.int, P.root], true), undefined);

  const r1 = RevocationList.fromDer([intCrl]).check([P.other, P.int, P.root], true);
  t.equal(r1?.index, 1, 'the intermediate revoked by the root');
  t.equal(r1?.certificate, P.int);
  t.equal(r1?.crl.crlNumber, '07');

  const rBoth = RevocationList.fromDer([intCrl, leafCrl]).check(path, true);
  t.equal(rBoth?.index, 0, 'the leaf is reported first');

  // The anchor itself is never checked, even if its own CRL lists it.
  const selfListed = (await mintCrl({ issuer: root, serials: [P.root.serial] })).der;
  t.equal(
    RevocationList.fromDer([selfListed]).check(path, true),
    undefined,
    'trust anchors are not revocable',
  );

  // Leaf-only (the issuer is not at hand): the leaf is checked by name + AKI.
  const r2 = RevocationList.fromDer([leafCrl]).check([P.leaf], false);
  t.equal(r2?.index, 0);
  t.equal(r2?.signatureChecked, false, 'no signature check without the issuer');
  t.equal(
    RevocationList.fromDer([intCrl]).check([P.leaf], false),
    undefined,
    "the intermediate's status is unknown",
  );
  // The same path marked complete would treat the leaf as the anchor: nothing to check.
  t.equal(RevocationList.fromDer([leafCrl]).check([P.leaf], true), undefined);

  // A forged CRL counts on the leaf-only path but not on the complete one.
  const attacker = await generateP256KeyPair();
  const forged = RevocationList.fromDer([
    (await mintCrl({ issuer: int, signingKey: attacker.privateKey, serials: [P.leaf.serial] })).der,
  ]);
  t.equal(forged.check(path, true), undefined);
  t.equal(forged.check([P.leaf], false)?.index, 0);
});

t.test('revokedError names the certificate, its role, the CRL issuer and number', async (t) => {
  const list = RevocationList.fromDer([
    (
      await mintCrl({
        issuer: int,
        serials: [P.leaf.serial],
        crlNumber: 42,
        thisUpdate: new Date('2030-01-01T00:00:00Z'),
      })
    ).der,
    (await mintCrl({ issuer: root, serials: [P.int.serial], crlNumber: null })).der,
  ]);
  const r0 = list.check([P.leaf, P.int, P.root], true);
  const e0 = revokedError(r0 as NonNullable<typeof r0>, 3);
  t.equal(e0.code, 'ID_ERR_REVOKED');
  t.equal(
    e0.message,
    `the peer leaf certificate (serial 1234abcd) is revoked by the CRL of "O=${TD}, CN=Intermediate CA" (thisUpdate 2030-01-01T00:00:00.000Z, CRL number 2a)`,
  );
  const r1 = list.check([P.other, P.int, P.root], true);
  const e1 = revokedError(r1 as NonNullable<typeof r1>, 3);
  t.match(
    e1.message,
    new RegExp(
      `^the intermediate certificate #1 \\(serial ${P.int.serial}\\) is revoked by the CRL of "O=${TD}"`,
    ),
  );
  t.notMatch(e1.message, /CRL number/, 'no number when the CRL has none');
});

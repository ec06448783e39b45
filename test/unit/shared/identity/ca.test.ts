// SPDX-License-Identifier: Apache-2.0
// The CA core (ambient-protocols.md §4; checklist B.34 at this layer): every refusal, defaults,
// leaf and chain shape, load-or-create persistence, intermediate renewal and root rotation.
import t from 'tap';
import { statSync, existsSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { webcrypto } from 'node:crypto';
import {
  BACKDATE_SECONDS,
  CA_FILES,
  CertificateAuthority,
  DEFAULT_MAX_TTL_SECONDS,
  DEFAULT_TTL_SECONDS,
} from '../../../../src/shared/identity/ca.ts';
import {
  KeyUsage,
  OID,
  parseCertificate,
  type ParsedCertificate,
} from '../../../../src/shared/identity/certificate.ts';
import {
  EC_P256_SHA256,
  generateKeyAndCsr,
  generateP256KeyPair,
} from '../../../../src/shared/identity/csr.ts';
import type { WorkloadCertificate } from '../../../../src/shared/identity/cert-manager.ts';
import { IdentityError } from '../../../../src/shared/identity/errors.ts';
import { derToPem, pemBlocks, pemCertificatesToDer } from '../../../../src/shared/identity/pem.ts';
import { verifySvid } from '../../../../src/shared/identity/svid.ts';
import { TrustBundle } from '../../../../src/shared/identity/trust-bundle.ts';
import { issueWorkloadCert, newTestCa, presentedChainDer, x509 } from '../../../helpers/pki.ts';

const TD = 'cluster.local';
const ID = `spiffe://${TD}/ns/a/sa/b`;

async function csrWith(names: x509.JsonGeneralNames | null, keys?: webcrypto.CryptoKeyPair): Promise<string> {
  const k = keys ?? (await generateP256KeyPair());
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: k,
    signingAlgorithm: EC_P256_SHA256,
    extensions: names ? [new x509.SubjectAlternativeNameExtension(names, true)] : [],
  });
  return csr.toString('pem');
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'signed';
  } catch (err) {
    if (err instanceof IdentityError) return err.code;
    throw err;
  }
}

function parseChain(chain: readonly string[]): ParsedCertificate[] {
  return chain.flatMap((p) => pemCertificatesToDer(p)).map((d) => parseCertificate(d));
}

t.test('defaults and leaf shape', async (t) => {
  const fixed = new Date('2030-01-02T03:04:05.678Z');
  const ca = await CertificateAuthority.create({ trustDomain: TD, now: () => fixed });
  t.equal(ca.trustDomain, TD);
  const { privateKeyPem, csrPem } = await generateKeyAndCsr(ID);
  const { certChainPem } = await ca.sign({ csrPem, identity: ID });
  t.equal(certChainPem.length, 2, 'leaf, roots');
  for (const el of certChainPem) t.ok(el.endsWith('\n'), 'each element ends with a newline');
  t.equal(certChainPem[1], ca.trustBundle.toPem(), 'last element is the trust bundle');
  const [leaf, rootCert] = parseChain(certChainPem) as [ParsedCertificate, ParsedCertificate];

  const nowS = Math.floor(fixed.getTime() / 1000) * 1000;
  t.equal(leaf.notBefore.getTime(), nowS - BACKDATE_SECONDS * 1000, 'notBefore backdated 60 s');
  t.equal(leaf.notAfter.getTime(), nowS + DEFAULT_TTL_SECONDS * 1000, 'default TTL 24 h');
  t.equal(DEFAULT_TTL_SECONDS, 86400);

  t.same(leaf.basicConstraints, { ca: false });
  t.equal(leaf.extensions.get(OID.basicConstraints)?.critical, true);
  t.equal(leaf.keyUsage, KeyUsage.digitalSignature | KeyUsage.keyEncipherment);
  t.equal(leaf.extensions.get(OID.keyUsage)?.critical, true, 'keyUsage critical');
  t.same(leaf.extKeyUsage, [OID.serverAuth, OID.clientAuth]);
  t.equal(leaf.subjectAltNames.length, 1);
  t.equal(Buffer.from(leaf.subjectAltNames[0]!.value).toString('latin1'), ID);
  t.equal(leaf.extensions.get(OID.subjectAltName)?.critical, true, 'URI SAN critical');
  t.ok(leaf.subjectEmpty, 'empty subject');
  t.equal(leaf.authorityKeyId, rootCert.subjectKeyId, 'AKI = issuer SKI');
  t.ok(
    Buffer.compare(leaf.issuerDer, rootCert.subjectDer) === 0,
    'issuer name = root subject, byte for byte',
  );
  // 128 random bits: 16 octets, or 17 with a 0x00 sign octet.
  t.ok(
    leaf.serial.length === 32 || (leaf.serial.length === 34 && leaf.serial.startsWith('00')),
    `serial ${leaf.serial}`,
  );
  t.ok(Buffer.from(leaf.der).includes(Buffer.from('06082a8648ce3d040302', 'hex')), 'ecdsa-with-SHA256');
  // The leaf carries the CSR's key, which matches our private key.
  const wc = await issueWorkloadCert(ca, ID, { now: fixed });
  t.equal(wc.id.uri, ID);
  t.ok(privateKeyPem.startsWith('-----BEGIN PRIVATE KEY-----'));

  // Root shape.
  t.same(rootCert.basicConstraints, { ca: true });
  t.equal(rootCert.keyUsage, KeyUsage.keyCertSign | KeyUsage.cRLSign);
  t.equal(
    rootCert.notAfter.getTime() - rootCert.notBefore.getTime() - BACKDATE_SECONDS * 1000,
    10 * 365 * 86400 * 1000,
  );

  const serials = new Set<string>();
  await Promise.all(
    Array.from({ length: 20 }, async () => {
      const r = await ca.sign({ csrPem, identity: ID });
      serials.add(parseChain(r.certChainPem)[0]!.serial);
      await verifySvid(pemCertificatesToDer(r.certChainPem[0]!), ca.trustBundle, { now: fixed });
    }),
  );
  t.equal(serials.size, 20, 'serials are unique');
});

t.test('TTL handling: ≤0 means default, above max is refused (not clamped)', async (t) => {
  const fixed = new Date('2030-01-01T00:00:00Z');
  const ca = await CertificateAuthority.create({
    trustDomain: TD,
    now: () => fixed,
    defaultTtlSeconds: 7200,
    maxTtlSeconds: 86400,
  });
  const { csrPem } = await generateKeyAndCsr(ID);
  const lifetime = async (ttlSeconds?: number): Promise<number> => {
    const r = await ca.sign({ csrPem, identity: ID, ...(ttlSeconds !== undefined ? { ttlSeconds } : {}) });
    return (parseChain(r.certChainPem)[0]!.notAfter.getTime() - fixed.getTime()) / 1000;
  };
  t.equal(await lifetime(), 7200, 'default');
  t.equal(await lifetime(0), 7200, '0 → default');
  t.equal(await lifetime(-5), 7200, 'negative → default');
  t.equal(await lifetime(3600), 3600);
  t.equal(await lifetime(86400), 86400, 'exactly the max is allowed');
  t.equal(
    await refusal(ca.sign({ csrPem, identity: ID, ttlSeconds: 86401 })),
    'ID_ERR_TTL',
    'max + 1 refused',
  );
  t.equal(
    await refusal(ca.sign({ csrPem, identity: ID, ttlSeconds: 10 * 365 * 86400 })),
    'ID_ERR_TTL',
    '10 years refused',
  );
  t.equal(await refusal(ca.sign({ csrPem, identity: ID, ttlSeconds: Number.NaN })), 'ID_ERR_TTL');
  t.equal(await refusal(ca.sign({ csrPem, identity: ID, ttlSeconds: Infinity })), 'ID_ERR_TTL');
  const def = await CertificateAuthority.create({ trustDomain: TD });
  const ok = await refusal(def.sign({ csrPem, identity: ID, ttlSeconds: DEFAULT_MAX_TTL_SECONDS }));
  t.equal(ok, 'signed', '90 days by default');
  t.equal(
    await refusal(def.sign({ csrPem, identity: ID, ttlSeconds: DEFAULT_MAX_TTL_SECONDS + 1 })),
    'ID_ERR_TTL',
  );
  t.equal(
    await refusal(CertificateAuthority.create({ trustDomain: TD, defaultTtlSeconds: 10, maxTtlSeconds: 5 })),
    'ID_ERR_TTL',
  );
  t.equal(await refusal(CertificateAuthority.create({ trustDomain: 'Bad_TD' })), 'ID_ERR_SPIFFE_INVALID');
});

t.test('B.34: every CSR refusal', async (t) => {
  const ca = await newTestCa();
  const { csrPem } = await generateKeyAndCsr(ID);
  const sign = (csr: string, identity = ID): Promise<string> => refusal(ca.sign({ csrPem: csr, identity }));

  t.equal(await sign(csrPem), 'signed', 'baseline');
  t.equal(
    await sign(csrPem, `spiffe://${TD}/ns/a/sa/other`),
    'ID_ERR_CSR',
    'CSR for another identity than authorized',
  );
  t.equal(
    await sign(
      await csrWith([
        { type: 'url', value: ID },
        { type: 'url', value: `spiffe://${TD}/ns/x/sa/y` },
      ]),
    ),
    'ID_ERR_CSR',
    'extra URI SAN',
  );
  t.equal(
    await sign(
      await csrWith([
        { type: 'url', value: ID },
        { type: 'dns', value: 'a.example.com' },
      ]),
    ),
    'ID_ERR_CSR',
    'extra DNS SAN',
  );
  t.equal(await sign(await csrWith([{ type: 'dns', value: 'a.example.com' }])), 'ID_ERR_CSR', 'DNS only');
  t.equal(await sign(await csrWith(null)), 'ID_ERR_CSR', 'no SAN');
  t.equal(await sign(await csrWith([{ type: 'url', value: `${ID}/` }])), 'ID_ERR_CSR', 'near-identical URI');

  const evil = await generateKeyAndCsr('spiffe://evil.local/ns/a/sa/b');
  t.equal(
    await sign(evil.csrPem, 'spiffe://evil.local/ns/a/sa/b'),
    'ID_ERR_TRUST_DOMAIN',
    'identity in another trust domain',
  );
  t.equal(await sign(evil.csrPem), 'ID_ERR_CSR', 'CSR in another trust domain');
  t.equal(
    await sign(csrPem, 'spiffe://cluster.local/ns/a/sa/b/'),
    'ID_ERR_SPIFFE_INVALID',
    'invalid identity',
  );

  // Signature: tampered bytes, and a CSR whose key did not sign it.
  const der = pemBlocks(csrPem)[0]!.der;
  const tampered = new Uint8Array(der);
  tampered[tampered.length - 3]! ^= 0x40;
  t.equal(await sign(derToPem(tampered, 'CERTIFICATE REQUEST')), 'ID_ERR_CSR', 'tampered signature');
  const k1 = await generateP256KeyPair();
  const k2 = await generateP256KeyPair();
  t.equal(
    await sign(
      await csrWith([{ type: 'url', value: ID }], { publicKey: k1.publicKey, privateKey: k2.privateKey }),
    ),
    'ID_ERR_CSR',
    'signed by another key',
  );
  // Changing the requested identity inside the CSR breaks its signature.
  const swapped = Buffer.from(der);
  const at = swapped.indexOf(Buffer.from('/ns/a/'));
  swapped[at + 4] = 'x'.charCodeAt(0);
  t.equal(
    await sign(derToPem(swapped, 'CERTIFICATE REQUEST'), `spiffe://${TD}/ns/x/sa/b`),
    'ID_ERR_CSR',
    'edited SAN',
  );

  t.equal(await sign('not a csr'), 'ID_ERR_CSR', 'garbage');
  t.equal(await sign(csrPem + csrPem), 'ID_ERR_CSR', 'two CSRs');
  t.equal(
    await sign(derToPem(new Uint8Array([0x30, 0x00]), 'CERTIFICATE REQUEST')),
    'ID_ERR_CSR',
    'empty structure',
  );
  t.equal(await sign('x'.repeat(70_000)), 'ID_ERR_CSR', 'oversized');
  const rsa = await webcrypto.subtle.generateKey(
    {
      name: 'RSASSA-PKCS1-v1_5',
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: 'SHA-256',
    },
    true,
    ['sign', 'verify'],
  );
  const rsaCsr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: rsa,
    signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: ID }], true)],
  });
  t.equal(await sign(rsaCsr.toString('pem')), 'ID_ERR_CSR', 'non-EC key');

  const err = await ca.sign({ csrPem, identity: `spiffe://${TD}/ns/a/sa/other` }).catch((e: unknown) => e);
  t.match(
    (err as Error).message,
    /authorized only for "spiffe:\/\/cluster.local\/ns\/a\/sa\/other"/,
    'message names the identities',
  );
});

t.test('intermediate: chain shape, and renewal when it cannot cover a TTL', async (t) => {
  let now = new Date('2030-01-01T00:00:00Z');
  const ca = await CertificateAuthority.create({ trustDomain: TD, useIntermediate: true, now: () => now });
  const { csrPem } = await generateKeyAndCsr(ID);
  const r = await ca.sign({ csrPem, identity: ID });
  t.equal(r.certChainPem.length, 3, 'leaf, intermediate, roots');
  const [leaf, int, rootCert] = parseChain(r.certChainPem) as [
    ParsedCertificate,
    ParsedCertificate,
    ParsedCertificate,
  ];
  t.same(int.basicConstraints, { ca: true, pathLen: 0 });
  t.ok(Buffer.compare(leaf.issuerDer, int.subjectDer) === 0);
  t.ok(Buffer.compare(int.issuerDer, rootCert.subjectDer) === 0);
  t.equal(r.certChainPem[1], ca.signingCertificatePem);
  await verifySvid(presentedChainDer(await issueWorkloadCert(ca, ID, { now })), ca.trustBundle, { now });

  const before = ca.signingCertificatePem;
  now = new Date(int.notAfter.getTime() - 3600_000); // 1 h before the intermediate expires
  const r2 = await ca.sign({ csrPem, identity: ID });
  t.not(ca.signingCertificatePem, before, 'intermediate renewed');
  t.equal(r2.certChainPem[1], ca.signingCertificatePem);
  const [leaf2] = parseChain(r2.certChainPem);
  t.equal(leaf2!.notAfter.getTime() - now.getTime(), DEFAULT_TTL_SECONDS * 1000);
  await verifySvid(
    r2.certChainPem.slice(0, 2).flatMap((p) => pemCertificatesToDer(p)),
    ca.trustBundle,
    { now },
  );
});

t.test('a certificate never outlives the root: refused near root expiry', async (t) => {
  let now = new Date('2030-01-01T00:00:00Z');
  const ca = await CertificateAuthority.create({ trustDomain: TD, now: () => now });
  const rootCert = ca.trustBundle.anchors[0]!;
  now = new Date(rootCert.notAfter.getTime() - 3600_000);
  const { csrPem } = await generateKeyAndCsr(ID);
  t.equal(await refusal(ca.sign({ csrPem, identity: ID })), 'ID_ERR_TTL');
  t.equal(
    await refusal(ca.sign({ csrPem, identity: ID, ttlSeconds: 1800 })),
    'signed',
    'a short TTL still fits',
  );

  // With an intermediate: no pointless renewal when even a new intermediate could not cover it.
  let now2 = new Date('2030-01-01T00:00:00Z');
  const withInt = await CertificateAuthority.create({
    trustDomain: TD,
    useIntermediate: true,
    now: () => now2,
  });
  const intPem = withInt.signingCertificatePem;
  now2 = new Date(withInt.trustBundle.anchors[0]!.notAfter.getTime() - 3600_000);
  t.equal(await refusal(withInt.sign({ csrPem, identity: ID })), 'ID_ERR_TTL');
  t.equal(withInt.signingCertificatePem, intPem, 'intermediate not renewed in vain');
});

t.test('persistence: create in a directory, then load the same CA', async (t) => {
  const base = t.testdir(); // one call per test: each call re-creates the directory
  const dir = join(base, 'ca');
  const ca1 = await CertificateAuthority.create({ trustDomain: TD, dir, useIntermediate: true });
  for (const f of [
    CA_FILES.rootCert,
    CA_FILES.rootKey,
    CA_FILES.intermediateCert,
    CA_FILES.intermediateKey,
  ]) {
    t.ok(existsSync(join(dir, f)), `${f} written`);
  }
  t.equal(statSync(join(dir, CA_FILES.rootKey)).mode & 0o777, 0o600, 'root key mode 0600');
  t.equal(statSync(join(dir, CA_FILES.intermediateKey)).mode & 0o777, 0o600, 'intermediate key mode 0600');
  t.equal(statSync(dir).mode & 0o077, 0, 'directory not group/world accessible');
  const wc = await issueWorkloadCert(ca1, ID);

  const ca2 = await CertificateAuthority.create({ trustDomain: TD, dir, useIntermediate: true });
  t.same(ca2.trustBundle.rootsPem, ca1.trustBundle.rootsPem, 'same root after reload');
  t.equal(ca2.signingCertificatePem, ca1.signingCertificatePem, 'same intermediate after reload');
  await verifySvid(presentedChainDer(wc), ca2.trustBundle);
  const wc2 = await issueWorkloadCert(ca2, ID);
  await verifySvid(presentedChainDer(wc2), ca1.trustBundle);
  t.same(ca2.exportKeyMaterial(), ca1.exportKeyMaterial());

  // keyMaterial round trip without a directory.
  const ca3 = await CertificateAuthority.create({ trustDomain: TD, keyMaterial: ca1.exportKeyMaterial() });
  t.same(ca3.trustBundle.rootsPem, ca1.trustBundle.rootsPem);

  // Broken stores are refused, never silently replaced.
  const half = join(base, 'half');
  await CertificateAuthority.create({ trustDomain: TD, dir: half });
  rmSync(join(half, CA_FILES.rootKey));
  t.equal(
    await refusal(CertificateAuthority.create({ trustDomain: TD, dir: half })),
    'ID_ERR_CA_STORE',
    'key missing',
  );

  const mixed = join(base, 'mixed');
  await CertificateAuthority.create({ trustDomain: TD, dir: mixed });
  writeFileSync(join(mixed, CA_FILES.rootKey), readFileSync(join(dir, CA_FILES.rootKey)));
  t.equal(
    await refusal(CertificateAuthority.create({ trustDomain: TD, dir: mixed })),
    'ID_ERR_KEY_MISMATCH',
    'key of another CA',
  );

  const corrupt = join(base, 'corrupt');
  await CertificateAuthority.create({ trustDomain: TD, dir: corrupt });
  writeFileSync(join(corrupt, CA_FILES.rootCert), 'garbage');
  t.equal(
    await refusal(CertificateAuthority.create({ trustDomain: TD, dir: corrupt })),
    'ID_ERR_CA_STORE',
    'corrupt cert',
  );

  const m = ca1.exportKeyMaterial();
  t.equal(
    await refusal(
      CertificateAuthority.create({
        trustDomain: TD,
        keyMaterial: { rootCertPem: m.intermediateCertPem!, rootKeyPem: m.intermediateKeyPem! },
      }),
    ),
    'ID_ERR_CA_STORE',
    'an intermediate is not a root',
  );
  const foreign = await newTestCa({ useIntermediate: true });
  const fm = foreign.exportKeyMaterial();
  t.equal(
    await refusal(
      CertificateAuthority.create({
        trustDomain: TD,
        keyMaterial: {
          ...m,
          intermediateCertPem: fm.intermediateCertPem!,
          intermediateKeyPem: fm.intermediateKeyPem!,
        },
      }),
    ),
    'ID_ERR_CA_STORE',
    'intermediate of another root',
  );
});

t.test('root rotation in three steps: every certificate in use verifies at every step', async (t) => {
  const base = t.testdir();
  for (const useIntermediate of [false, true]) {
    const dir = join(base, `rot-${useIntermediate}`);
    const reload = (): Promise<CertificateAuthority> =>
      CertificateAuthority.create({ trustDomain: TD, dir, useIntermediate });
    const ca = await CertificateAuthority.create({ trustDomain: TD, dir, useIntermediate });
    const oldRootPem = ca.trustBundle.rootsPem[0]!;
    const bundleFile = (): readonly string[] =>
      TrustBundle.fromPem(readFileSync(join(dir, CA_FILES.trustBundle), 'utf8')).rootsPem;
    t.same(bundleFile(), [oldRootPem], 'trust-bundle.pem holds the root');
    t.equal(ca.rootRotationStep, 'none');
    const verifies = async (cert: WorkloadCertificate, roots: readonly string[]): Promise<boolean> =>
      verifySvid(presentedChainDer(cert), TrustBundle.fromPem(roots)).then(
        () => true,
        () => false,
      );
    const c0 = await issueWorkloadCert(ca, ID);

    // Step 1: the next root is trusted, the current one still signs.
    await ca.addNextRoot();
    t.equal(ca.rootRotationStep, 'next-root-added');
    t.equal(ca.trustBundle.size, 2, 'bundle holds next + current');
    t.equal(bundleFile().length, 2, 'trust-bundle.pem too');
    const c1 = await issueWorkloadCert(ca, ID);
    t.equal(c1.rootsPem.length, 2, 'the CA response carries both roots in the last element');
    t.ok(
      await verifies(c1, c0.rootsPem),
      'a step-1 certificate verifies at a peer that knows only the old root',
    );
    t.ok(await verifies(c0, c1.rootsPem), 'and the other way');
    const nextRootPem = c1.rootsPem.find((r) => r !== oldRootPem)!;
    t.equal((await reload()).rootRotationStep, 'next-root-added', 'step 1 survives a restart');
    t.equal(
      (await reload()).signingCertificatePem,
      ca.signingCertificatePem,
      'and still signs with the current key',
    );
    await t.rejects(ca.addNextRoot(), { code: 'ID_ERR_ROTATION' }, 'no second next root');
    t.throws(() => ca.dropOldRoot(), { code: 'ID_ERR_ROTATION' }, 'no drop before the activation');
    t.equal(ca.trustBundle.size, 2, 'refusals change nothing');

    // Step 2: the next root signs; the old one stays trusted.
    ca.activateNextRoot();
    t.equal(ca.rootRotationStep, 'old-root-trusted');
    t.not(ca.trustBundle.rootsPem.indexOf(oldRootPem), -1, 'the old root is still trusted');
    const c2 = await issueWorkloadCert(ca, ID);
    t.same([...c2.rootsPem].sort(), [...c1.rootsPem].sort(), 'the same two roots');
    t.notOk(await verifies(c2, [oldRootPem]), 'step-2 certificates chain to the new root only');
    t.ok(await verifies(c2, c1.rootsPem), 'a step-1 peer verifies a step-2 certificate');
    t.ok(await verifies(c1, c2.rootsPem), 'and the other way');
    t.notOk(
      await verifies(c2, c0.rootsPem),
      'a step-0 peer would not (why step 2 waits until every holder refreshed)',
    );
    const r2 = await reload();
    t.equal(r2.rootRotationStep, 'old-root-trusted', 'step 2 survives a restart');
    t.equal(r2.signingCertificatePem, ca.signingCertificatePem, 'signs with the new key after reload');
    t.notOk(existsSync(join(dir, CA_FILES.nextRootCert)), 'next-root files removed');
    t.notOk(existsSync(join(dir, CA_FILES.nextRootKey)));
    t.throws(() => ca.activateNextRoot(), { code: 'ID_ERR_ROTATION' }, 'nothing left to activate');
    await t.rejects(ca.addNextRoot(), { code: 'ID_ERR_ROTATION' }, 'no new rotation before the drop');

    // Step 3: only the new root.
    ca.dropOldRoot();
    t.equal(ca.rootRotationStep, 'none');
    t.same(ca.trustBundle.rootsPem, [nextRootPem]);
    t.same(bundleFile(), [nextRootPem], 'trust-bundle.pem follows');
    const c3 = await issueWorkloadCert(ca, ID);
    t.ok(await verifies(c3, c2.rootsPem), 'a step-2 peer verifies a step-3 certificate');
    t.ok(await verifies(c2, c3.rootsPem), 'and the other way');
    t.notOk(await verifies(c1, c3.rootsPem), 'a step-1 certificate no longer verifies');
    t.notOk(existsSync(join(dir, CA_FILES.previousRoots)), 'previous roots file removed');
    const after = await reload();
    t.equal(after.trustBundle.size, 1, 'drop persisted');
    t.equal(after.rootRotationStep, 'none');
  }
});

t.test('root rotation: files left by an interrupted activation load safely', async (t) => {
  const dir = t.testdir();
  const ca = await CertificateAuthority.create({ trustDomain: TD, dir });
  await ca.addNextRoot();
  const nextCert = readFileSync(join(dir, CA_FILES.nextRootCert), 'utf8');
  const nextKey = readFileSync(join(dir, CA_FILES.nextRootKey), 'utf8');
  ca.activateNextRoot();
  // The crash came after the new root was written, before the next-root files were removed.
  writeFileSync(join(dir, CA_FILES.nextRootCert), nextCert);
  writeFileSync(join(dir, CA_FILES.nextRootKey), nextKey);
  const reloaded = await CertificateAuthority.create({ trustDomain: TD, dir });
  t.equal(reloaded.rootRotationStep, 'old-root-trusted', 'a next root equal to the current one is ignored');
  t.equal(reloaded.trustBundle.size, 2);
  t.notOk(existsSync(join(dir, CA_FILES.nextRootCert)), 'and cleaned up');

  // Half a next root is refused: peers may already trust the missing part's root.
  reloaded.dropOldRoot();
  await reloaded.addNextRoot();
  rmSync(join(dir, CA_FILES.nextRootKey));
  await t.rejects(CertificateAuthority.create({ trustDomain: TD, dir }), {
    code: 'ID_ERR_CA_STORE',
    message: /next-root-cert\.pem and next-root-key\.pem/,
  });
});

t.test(
  'onRootsChange: called after each rotation step, with the new state, until unsubscribed',
  async (t) => {
    const ca = await CertificateAuthority.create({ trustDomain: TD });
    const seen: string[] = [];
    const unsubscribe = ca.onRootsChange(() => seen.push(`${ca.rootRotationStep}:${ca.trustBundle.size}`));
    const twice = ca.onRootsChange(() => seen.push('-'));
    await issueWorkloadCert(ca, ID);
    t.same(seen, [], 'signing is not a root change');
    await ca.addNextRoot();
    t.same(seen, ['next-root-added:2', '-'], 'in subscription order, after the change');
    ca.activateNextRoot();
    ca.dropOldRoot();
    t.same(seen, ['next-root-added:2', '-', 'old-root-trusted:2', '-', 'none:1', '-']);
    unsubscribe();
    twice();
    await ca.addNextRoot();
    t.same(seen.length, 6, 'unsubscribed');
  },
);

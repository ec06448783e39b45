// SPDX-License-Identifier: Apache-2.0
// X.509-SVID verification: the cases of security-and-reliability.md checklist B.20–B.30 that apply
// at this layer (B.21 "no client certificate" is an HBONE test), plus RFC 5280 path-building
// edge cases, a DER-mutation fuzz, and real TLS on 127.0.0.1.
import t from 'tap';
import fc from 'fast-check';
import tls from 'node:tls';
import { X509Certificate as NodeX509Certificate } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { IdentityError } from '../../../../src/shared/identity/errors.ts';
import { TrustBundle } from '../../../../src/shared/identity/trust-bundle.ts';
import {
  peerChainDer,
  verifySvid,
  verifySvidSync,
  type VerifySvidOptions,
} from '../../../../src/shared/identity/svid.ts';
import {
  issueWorkloadCert,
  mintCert,
  newTestCa,
  presentedChainDer,
  tlsOptions,
  x509,
  type MintCertOptions,
  type MintedCert,
} from '../../../helpers/pki.ts';

const TD = 'cluster.local';
const ID = `spiffe://${TD}/ns/a/sa/b`;

const ca = await newTestCa({ trustDomain: TD });
const caInt = await newTestCa({ trustDomain: TD, useIntermediate: true });
const bundle = ca.trustBundle;

// A hand-built hierarchy: root → int1 → int2 → leaf.
const root = await mintCert({ ca: true, subject: `O=${TD}` });
const int1 = await mintCert({ ca: true, subject: `O=${TD}, CN=int1`, issuer: root });
const int2 = await mintCert({ ca: true, subject: `O=${TD}, CN=int2`, issuer: int1 });
const deepLeaf = await mintCert({ issuer: int2, uris: [ID] });
const deepBundle = TrustBundle.fromPem(root.certPem);

async function leafFrom(opts: MintCertOptions): Promise<MintedCert> {
  return mintCert({ issuer: ca, uris: [ID], ...opts });
}

/** The IdentityError code verifySvid rejects with, or 'accepted'. */
async function outcome(
  chain: readonly Uint8Array[],
  b: TrustBundle = bundle,
  opts?: VerifySvidOptions,
): Promise<string> {
  try {
    await verifySvid(chain, b, opts);
    return 'accepted';
  } catch (err) {
    if (err instanceof IdentityError) return err.code;
    throw err;
  }
}

t.test('a CA-issued workload certificate verifies, from DER, with the right identity', async (t) => {
  const cert = await issueWorkloadCert(ca, ID);
  const v = await verifySvid(presentedChainDer(cert), bundle, { trustDomain: TD, expectedIdentities: [ID] });
  t.equal(v.id.uri, ID);
  t.equal(v.id.trustDomain, TD);
  t.equal(v.id.path, '/ns/a/sa/b');
  t.same(v.notAfter, cert.notAfter);
  t.same(v.notBefore, cert.notBefore);
  t.match(v.serial, /^[0-9a-f]+$/);
  t.same(verifySvidSync(presentedChainDer(cert), bundle), v, 'sync form gives the same result');

  const viaInt = await issueWorkloadCert(caInt, ID);
  t.equal(presentedChainDer(viaInt).length, 2, 'leaf + intermediate presented');
  t.equal(await outcome(presentedChainDer(viaInt), caInt.trustBundle), 'accepted');
  t.equal(await outcome(presentedChainDer(viaInt), bundle), 'ID_ERR_CHAIN', 'not trusted by another CA');
});

t.test('B.25: two URI SANs are rejected; other SAN types are allowed', async (t) => {
  const two = await leafFrom({ uris: [ID, `spiffe://${TD}/ns/x/sa/y`] });
  t.equal(await outcome([two.der]), 'ID_ERR_SAN');
  const twoSame = await leafFrom({ uris: [ID, ID] });
  t.equal(await outcome([twoSame.der]), 'ID_ERR_SAN', 'even the same URI twice');
  const none = await leafFrom({ uris: [], dnsNames: ['a.example.com'] });
  t.equal(await outcome([none.der]), 'ID_ERR_SAN', 'no URI SAN at all');
  const noSan = await leafFrom({ uris: [] });
  t.equal(await outcome([noSan.der]), 'ID_ERR_SAN', 'no SAN extension');
  const withDns = await leafFrom({ dnsNames: ['a.example.com', 'b.example.com'] });
  const v = await verifySvid([withDns.der], bundle);
  t.equal(v.id.uri, ID, 'DNS SANs next to the single URI SAN are fine');
  const dup = await leafFrom({ duplicateSanExtension: true, uris: [ID] });
  t.equal(
    await outcome([dup.der]),
    'ID_ERR_CERT_PARSE',
    'a second SAN extension (RFC 5280 §4.2) is rejected',
  );
});

t.test('B.26: CA leaves and signing key usages are rejected', async (t) => {
  const caLeaf = await leafFrom({ ca: true });
  t.equal(await outcome([caLeaf.der]), 'ID_ERR_LEAF_IS_CA');
  const certSign = await leafFrom({
    keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign,
  });
  t.equal(await outcome([certSign.der]), 'ID_ERR_KEY_USAGE');
  const crlSign = await leafFrom({
    keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.cRLSign,
  });
  t.equal(await outcome([crlSign.der]), 'ID_ERR_KEY_USAGE');
  const noDigSig = await leafFrom({ keyUsage: x509.KeyUsageFlags.keyEncipherment });
  t.equal(await outcome([noDigSig.der]), 'ID_ERR_KEY_USAGE', 'keyUsage without digitalSignature');
  const noKu = await leafFrom({ keyUsage: null });
  t.equal(await outcome([noKu.der]), 'accepted', 'absent keyUsage is allowed at this layer');
  const noBc = await leafFrom({ ca: null });
  t.equal(await outcome([noBc.der]), 'accepted', 'absent basicConstraints means cA=false');

  // An intermediate (with a SPIFFE URI) presented as the leaf.
  const intWithUri = await mintCert({ issuer: root, ca: true, subject: 'O=x', uris: [ID] });
  t.equal(await outcome([intWithUri.der], deepBundle), 'ID_ERR_LEAF_IS_CA');
  // A leaf whose only problem is a keyCertSign bit — even when cA is false — cannot vouch for others.
  const leafAsIssuer = await leafFrom({
    keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign,
    ca: false,
  });
  const grandchild = await mintCert({ issuer: leafAsIssuer, uris: [`spiffe://${TD}/ns/x/sa/y`] });
  t.equal(
    await outcome([grandchild.der, leafAsIssuer.der]),
    'ID_ERR_CHAIN',
    'a leaf cannot act as an intermediate',
  );
});

t.test('B.30: EKU is checked against the role when asked', async (t) => {
  const serverOnly = await leafFrom({ extKeyUsage: [x509.ExtendedKeyUsage.serverAuth] });
  t.equal(await outcome([serverOnly.der], bundle, { usage: 'clientAuth' }), 'ID_ERR_KEY_USAGE');
  t.equal(await outcome([serverOnly.der], bundle, { usage: 'serverAuth' }), 'accepted');
  t.equal(await outcome([serverOnly.der]), 'accepted', 'no role given: not checked');
  const anyEku = await leafFrom({ extKeyUsage: ['2.5.29.37.0'] });
  t.equal(await outcome([anyEku.der], bundle, { usage: 'clientAuth' }), 'accepted', 'anyExtendedKeyUsage');
  const noEku = await leafFrom({ extKeyUsage: null });
  t.equal(
    await outcome([noEku.der], bundle, { usage: 'clientAuth' }),
    'accepted',
    'absent EKU is unrestricted',
  );
});

t.test('B.24: validity window boundaries, ±1 s, for the leaf and for an intermediate', async (t) => {
  const DAY = 86_400_000;
  const wideRoot = await mintCert({
    ca: true,
    subject: 'O=wide',
    notBefore: new Date(Date.now() - 2 * DAY),
    notAfter: new Date(Date.now() + 2 * DAY),
  });
  const wide = TrustBundle.fromPem(wideRoot.certPem);
  const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 3_600_000);
  const notAfter = new Date(notBefore.getTime() + 7_200_000);
  const leaf = await mintCert({ issuer: wideRoot, uris: [ID], notBefore, notAfter });
  const at = (ms: number): VerifySvidOptions => ({ now: new Date(ms) });
  t.equal(
    await outcome([leaf.der], wide, at(notBefore.getTime() - 1000)),
    'ID_ERR_NOT_YET_VALID',
    'notBefore - 1 s',
  );
  t.equal(await outcome([leaf.der], wide, at(notBefore.getTime())), 'accepted', 'notBefore exactly');
  t.equal(await outcome([leaf.der], wide, at(notAfter.getTime() - 1000)), 'accepted', '1 s before expiry');
  t.equal(
    await outcome([leaf.der], wide, at(notAfter.getTime())),
    'accepted',
    'notAfter exactly (inclusive)',
  );
  t.equal(await outcome([leaf.der], wide, at(notAfter.getTime() + 1000)), 'ID_ERR_EXPIRED', 'notAfter + 1 s');

  // An expired intermediate fails the path even when the leaf is fine.
  const oldInt = await mintCert({
    ca: true,
    subject: 'O=wide, CN=old',
    issuer: wideRoot,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() - 3_600_000),
  });
  const leafUnderOld = await mintCert({ issuer: oldInt, uris: [ID], notBefore: new Date(Date.now() - DAY) });
  t.equal(await outcome([leafUnderOld.der, oldInt.der], wide), 'ID_ERR_EXPIRED');
  t.equal(
    await outcome([leafUnderOld.der, oldInt.der], wide, at(Date.now() - 5_000_000)),
    'accepted',
    'same chain inside every window',
  );
  // The root's own window counts too: this leaf is valid 2.5 days ago, the root is not.
  const earlyLeaf = await mintCert({
    issuer: wideRoot,
    uris: [ID],
    notBefore: new Date(Date.now() - 3 * DAY),
  });
  t.equal(
    await outcome([earlyLeaf.der], wide, at(Date.now() - 2.5 * DAY)),
    'ID_ERR_NOT_YET_VALID',
    'before the root',
  );
  t.equal(await outcome([earlyLeaf.der], wide), 'accepted');
});

t.test('B.22: a certificate from a foreign CA is rejected, even with an identical issuer name', async (t) => {
  const foreign = await newTestCa({ trustDomain: 'evil.local' });
  const f = await issueWorkloadCert(foreign, 'spiffe://evil.local/ns/a/sa/b');
  t.equal(await outcome(presentedChainDer(f)), 'ID_ERR_CHAIN');

  // Same subject as our root ("O=cluster.local") but another key: only the signature tells.
  const lookalike = await newTestCa({ trustDomain: TD });
  const l = await issueWorkloadCert(lookalike, ID);
  t.equal(await outcome(presentedChainDer(l)), 'ID_ERR_CHAIN');
  // Presenting the foreign root along does not help: anchors come only from the bundle.
  t.equal(
    await outcome([...presentedChainDer(l), ...x509Ders(lookalike.trustBundle.rootsPem)]),
    'ID_ERR_CHAIN',
  );
});

function x509Ders(pems: readonly string[]): Uint8Array[] {
  return pems.map((p) => new Uint8Array(new NodeX509Certificate(p).raw));
}

t.test('B.23: our CA but another trust domain is rejected by the trust-domain check', async (t) => {
  const evil = await mintCert({ issuer: ca, uris: ['spiffe://evil.local/ns/a/sa/b'] });
  t.equal(await outcome([evil.der], bundle, { trustDomain: TD }), 'ID_ERR_TRUST_DOMAIN');
  t.equal(
    await outcome([evil.der]),
    'accepted',
    'the chain itself is fine; the trust-domain option is what rejects',
  );
});

t.test('B.27: a NUL byte or other non-SPIFFE bytes in the URI SAN are rejected', async (t) => {
  const nul = await leafFrom({ uris: [`spiffe://${TD}/ns/a\0/sa/b`] });
  t.equal(await outcome([nul.der]), 'ID_ERR_SPIFFE_INVALID');
  const nulTail = await leafFrom({ uris: [`${ID}\0.evil`] });
  t.equal(await outcome([nulTail.der]), 'ID_ERR_SPIFFE_INVALID');
  const high = await leafFrom({
    uris: [],
    rawUris: [Buffer.concat([Buffer.from(ID), Buffer.from([0xc3, 0xa9])])],
  });
  t.equal(await outcome([high.der]), 'ID_ERR_SPIFFE_INVALID', 'non-ASCII bytes');
  const upper = await leafFrom({ uris: ['spiffe://Cluster.local/ns/a/sa/b'] });
  t.equal(await outcome([upper.der]), 'ID_ERR_SPIFFE_INVALID');
});

t.test('B.28: CVE-2021-44532 SAN string injection yields no identity, never two', async (t) => {
  const injected = `${ID}, URI:spiffe://${TD}/ns/x/sa/y`;
  const leaf = await leafFrom({ uris: [injected] });
  // Node's own rendering shows why strings must not be trusted: the text contains two "URI:".
  const rendered = new NodeX509Certificate(leaf.der).subjectAltName ?? '';
  t.match(rendered, /spiffe:\/\/cluster\.local\/ns\/x\/sa\/y/, 'the attacker text is in the rendered string');
  const err = await verifySvid([leaf.der], bundle).catch((e: unknown) => e);
  t.ok(err instanceof IdentityError);
  t.equal((err as IdentityError).code, 'ID_ERR_SPIFFE_INVALID', 'one URI SAN, not a SPIFFE ID: rejected');
  t.equal(
    await outcome([leaf.der], bundle, { expectedIdentities: [`spiffe://${TD}/ns/x/sa/y`] }),
    'ID_ERR_SPIFFE_INVALID',
  );
});

t.test('B.29: identity mismatch against the expected identities', async (t) => {
  const cert = await issueWorkloadCert(ca, ID);
  const chain = presentedChainDer(cert);
  t.equal(
    await outcome(chain, bundle, { expectedIdentities: [`spiffe://${TD}/ns/a/sa/c`] }),
    'ID_ERR_IDENTITY_MISMATCH',
  );
  t.equal(
    await outcome(chain, bundle, { expectedIdentities: [] }),
    'ID_ERR_IDENTITY_MISMATCH',
    'empty set matches nothing',
  );
  t.equal(await outcome(chain, bundle, { expectedIdentities: [`spiffe://${TD}/ns/x/sa/y`, ID] }), 'accepted');
  t.equal(
    await outcome(chain, bundle, {
      expectedIdentities: [`${ID}/`, `spiffe://${TD.toUpperCase()}/ns/a/sa/b`],
    }),
    'ID_ERR_IDENTITY_MISMATCH',
    'comparison is exact',
  );
});

t.test('B.30: chain edge cases', async (t) => {
  t.equal(await outcome([deepLeaf.der, int2.der, int1.der], deepBundle), 'accepted', 'complete chain');
  t.equal(
    await outcome([deepLeaf.der, int1.der, int2.der], deepBundle),
    'accepted',
    'intermediates out of order (RFC 8446 §4.4.2)',
  );
  t.equal(
    await outcome([deepLeaf.der, int2.der, int1.der, root.der], deepBundle),
    'accepted',
    'root included',
  );
  const unrelated = await mintCert({ ca: true, subject: 'O=unrelated' });
  t.equal(
    await outcome(
      [deepLeaf.der, unrelated.der, int2.der, ca.trustBundle.anchors[0]!.der, int1.der],
      deepBundle,
    ),
    'accepted',
    'extra unrelated certificates are ignored',
  );
  t.equal(await outcome([deepLeaf.der, int2.der], deepBundle), 'ID_ERR_CHAIN', 'missing intermediate');
  t.equal(await outcome([deepLeaf.der], deepBundle), 'ID_ERR_CHAIN', 'no intermediates');
  t.equal(
    await outcome([int2.der, deepLeaf.der, int1.der], deepBundle),
    'ID_ERR_LEAF_IS_CA',
    'leaf not first',
  );
  t.equal(
    await outcome([deepLeaf.der], deepBundle, { intermediates: [int1.der, int2.der] }),
    'accepted',
    'locally known intermediates complete the path (Node server-side workaround)',
  );
  t.equal(
    await outcome([deepLeaf.der], TrustBundle.fromPem(int1.certPem), { intermediates: [int2.der] }),
    'accepted',
    'an intermediate in the bundle is a trust anchor',
  );

  // The TLS layer verified the path (Node's TLS server hides the client's intermediates).
  const tls = { pathVerifiedByTls: true };
  t.equal(
    await outcome([deepLeaf.der], deepBundle, { ...tls, intermediates: [int1.der] }),
    'accepted',
    'pathVerifiedByTls: a missing issuer defers to the TLS layer',
  );
  t.equal(
    await outcome([deepLeaf.der], deepBundle, { ...tls, trustDomain: 'other.domain' }),
    'ID_ERR_TRUST_DOMAIN',
    'pathVerifiedByTls: identity checks still apply',
  );
  t.equal(
    await outcome([deepLeaf.der], deepBundle, { ...tls, now: new Date(Date.now() + 2 * 3_600_000) }),
    'ID_ERR_EXPIRED',
    "pathVerifiedByTls: the leaf's validity still applies",
  );
  const caLeaf = await mintCert({ ca: true, issuer: int2, uris: [ID] });
  t.equal(
    await outcome([caLeaf.der], deepBundle, tls),
    'ID_ERR_LEAF_IS_CA',
    'pathVerifiedByTls: leaf rules still apply',
  );
  const expiredInt = await mintCert({
    ca: true,
    subject: `O=${TD}, CN=old`,
    issuer: root,
    notAfter: new Date(Date.now() - 60_000),
  });
  const underExpired = await mintCert({ issuer: expiredInt, uris: [ID] });
  t.equal(
    await outcome([underExpired.der, expiredInt.der], deepBundle, tls),
    'ID_ERR_EXPIRED',
    'pathVerifiedByTls: a path that is found and fails a check is refused as always',
  );

  // pathLenConstraint: root allows 0 intermediates, but there is one.
  const strictRoot = await mintCert({ ca: true, subject: 'O=strict', pathLen: 0 });
  const si = await mintCert({ ca: true, subject: 'O=strict, CN=i', issuer: strictRoot });
  const sl = await mintCert({ issuer: si, uris: [ID] });
  t.equal(
    await outcome([sl.der, si.der], TrustBundle.fromPem(strictRoot.certPem)),
    'ID_ERR_CHAIN',
    'root pathLen 0 violated',
  );
  const sl0 = await mintCert({ issuer: strictRoot, uris: [ID] });
  t.equal(
    await outcome([sl0.der], TrustBundle.fromPem(strictRoot.certPem)),
    'accepted',
    'pathLen 0 allows a direct leaf',
  );
  // Intermediate with pathLen 0 issuing another intermediate.
  const i0 = await mintCert({ ca: true, subject: 'O=p, CN=i0', issuer: root, pathLen: 0 });
  const i1 = await mintCert({ ca: true, subject: 'O=p, CN=i1', issuer: i0 });
  const l1 = await mintCert({ issuer: i1, uris: [ID] });
  t.equal(
    await outcome([l1.der, i1.der, i0.der], deepBundle),
    'ID_ERR_CHAIN',
    'intermediate pathLen 0 violated',
  );
  const l0 = await mintCert({ issuer: i0, uris: [ID] });
  t.equal(await outcome([l0.der, i0.der], deepBundle), 'accepted');

  // Intermediates must be CAs with keyCertSign.
  const notCa = await mintCert({
    ca: false,
    subject: 'O=nc',
    issuer: root,
    keyUsage: x509.KeyUsageFlags.keyCertSign,
    extKeyUsage: null,
  });
  const underNotCa = await mintCert({ issuer: notCa, uris: [ID] });
  t.equal(
    await outcome([underNotCa.der, notCa.der], deepBundle),
    'ID_ERR_CHAIN',
    'intermediate with cA=false',
  );
  const noCertSign = await mintCert({
    ca: true,
    subject: 'O=ncs',
    issuer: root,
    keyUsage: x509.KeyUsageFlags.cRLSign,
  });
  const underNoCertSign = await mintCert({ issuer: noCertSign, uris: [ID] });
  t.equal(
    await outcome([underNoCertSign.der, noCertSign.der], deepBundle),
    'ID_ERR_CHAIN',
    'intermediate without keyCertSign',
  );
  const noKuInt = await mintCert({ ca: true, subject: 'O=nku', issuer: root, keyUsage: null });
  const underNoKu = await mintCert({ issuer: noKuInt, uris: [ID] });
  t.equal(
    await outcome([underNoKu.der, noKuInt.der], deepBundle),
    'ID_ERR_CHAIN',
    'intermediate without keyUsage',
  );

  // Tampered signature.
  const tampered = new Uint8Array(deepLeaf.der);
  tampered[tampered.length - 5]! ^= 0x01;
  t.equal(await outcome([tampered, int2.der, int1.der], deepBundle), 'ID_ERR_CHAIN', 'bad signature');
});

t.test('RFC 5280 structure: critical extensions, name constraints, malformed input', async (t) => {
  const unknownCritical = await leafFrom({
    extensions: [new x509.Extension('1.3.6.1.4.1.99999.1', true, new Uint8Array([0x05, 0x00]))],
  });
  t.equal(await outcome([unknownCritical.der]), 'ID_ERR_CHAIN', 'unknown critical extension');
  const unknownNonCritical = await leafFrom({
    extensions: [new x509.Extension('1.3.6.1.4.1.99999.1', false, new Uint8Array([0x05, 0x00]))],
  });
  t.equal(await outcome([unknownNonCritical.der]), 'accepted', 'unknown non-critical extension is fine');

  const ncRoot = await mintCert({ ca: true, subject: 'O=nc', permittedUris: [TD] });
  const ncBundle = TrustBundle.fromPem(ncRoot.certPem);
  const inside = await mintCert({ issuer: ncRoot, uris: [ID] });
  const outside = await mintCert({ issuer: ncRoot, uris: ['spiffe://evil.local/ns/a/sa/b'] });
  const sub = await mintCert({ issuer: ncRoot, uris: [`spiffe://sub.${TD}/ns/a/sa/b`] });
  t.equal(await outcome([inside.der], ncBundle), 'accepted', 'permitted trust domain');
  t.equal(await outcome([outside.der], ncBundle), 'ID_ERR_CHAIN', 'outside permitted subtree');
  t.equal(
    await outcome([sub.der], ncBundle),
    'ID_ERR_CHAIN',
    'a URI constraint without leading "." is the exact host',
  );
  const exRoot = await mintCert({ ca: true, subject: 'O=ex', excludedUris: ['.evil.local'] });
  const exLeaf = await mintCert({ issuer: exRoot, uris: ['spiffe://x.evil.local/ns/a/sa/b'] });
  t.equal(
    await outcome([exLeaf.der], TrustBundle.fromPem(exRoot.certPem)),
    'ID_ERR_CHAIN',
    'excluded subtree',
  );

  t.equal(await outcome([]), 'ID_ERR_CHAIN', 'no certificate at all');
  const leaf = await leafFrom({});
  t.equal(await outcome(Array.from({ length: 11 }, () => leaf.der)), 'ID_ERR_CHAIN', 'too many certificates');
  t.equal(
    await outcome([new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])]),
    'ID_ERR_CERT_PARSE',
    'garbage DER',
  );
  t.equal(await outcome([Buffer.concat([leaf.der, Buffer.from([0])])]), 'ID_ERR_CERT_PARSE', 'trailing byte');
});

t.test('fuzz: any single-byte change to a valid chain is rejected with an IdentityError', async (t) => {
  const cert = await issueWorkloadCert(caInt, ID);
  const [leafDer, intDer] = presentedChainDer(cert) as [Uint8Array, Uint8Array];
  const b = caInt.trustBundle;
  t.equal(await outcome([leafDer, intDer], b), 'accepted');
  await fc.assert(
    fc.asyncProperty(fc.boolean(), fc.nat(), fc.integer({ min: 1, max: 255 }), async (inLeaf, pos, xor) => {
      const target = new Uint8Array(inLeaf ? leafDer : intDer);
      const i = pos % target.length;
      target[i]! ^= xor;
      const r = await outcome(inLeaf ? [target, intDer] : [leafDer, target], b);
      return r !== 'accepted';
    }),
    { numRuns: 400 },
  );
});

t.test('real TLS on 127.0.0.1: both sides verify the peer from DER', async (t) => {
  const serverCert = await issueWorkloadCert(caInt, `spiffe://${TD}/ns/srv/sa/server`);
  const clientCert = await issueWorkloadCert(caInt, `spiffe://${TD}/ns/cli/sa/client`);
  const b = caInt.trustBundle;
  const seen: string[] = [];
  const server = tls.createServer(
    { ...tlsOptions(serverCert), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
    (sock) => {
      // Node's server side only exposes the client's leaf; complete it with our own intermediates.
      verifySvid(peerChainDer(sock), b, {
        trustDomain: TD,
        usage: 'clientAuth',
        intermediates: presentedChainDer(serverCert).slice(1),
      }).then(
        (v) => {
          seen.push(`server saw ${v.id.uri}`);
          sock.end('ok');
        },
        (err: unknown) => {
          seen.push(`server error ${String(err)}`);
          sock.destroy();
        },
      );
    },
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const { port } = server.address() as AddressInfo;
  const sock = tls.connect({
    ...tlsOptions(clientCert),
    host: '127.0.0.1',
    port,
    minVersion: 'TLSv1.3',
    checkServerIdentity: () => undefined, // identity is checked from DER below, not by hostname
  });
  await once(sock, 'secureConnect');
  t.ok(sock.authorized, 'OpenSSL chain verification passed');
  const v = await verifySvid(peerChainDer(sock), b, {
    expectedIdentities: [`spiffe://${TD}/ns/srv/sa/server`],
    usage: 'serverAuth',
  });
  t.equal(v.id.uri, `spiffe://${TD}/ns/srv/sa/server`);
  t.equal(peerChainDer(sock).length, 3, 'client side sees leaf, intermediate and root');
  let data = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => (data += d));
  await once(sock, 'end');
  sock.destroy();
  t.equal(data, 'ok');
  t.same(seen, [`server saw spiffe://${TD}/ns/cli/sa/client`]);

  // A two-URI-SAN client cert passes OpenSSL but not verifySvid.
  const bad = await mintCert({
    issuer: caInt,
    uris: [`spiffe://${TD}/ns/cli/sa/client`, `spiffe://${TD}/ns/x/sa/y`],
  });
  const badSock = tls.connect({
    key: bad.privateKeyPem,
    cert:
      bad.certPem +
      presentedChainDer(serverCert)
        .slice(1)
        .map((d) => new NodeX509Certificate(d).toString())
        .join(''),
    ca: b.toPem(),
    host: '127.0.0.1',
    port,
    checkServerIdentity: () => undefined,
  });
  badSock.on('error', () => undefined);
  await once(badSock, 'close');
  t.match(seen[1] ?? '', /server error IdentityError: .*2 URI subjectAltNames/);
});

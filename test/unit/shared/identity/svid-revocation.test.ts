// SPDX-License-Identifier: Apache-2.0
// Revocation through verifySvid (checklist B.31) with real CA-issued chains (root → intermediate →
// leaf): revoked leaves and intermediates are refused, unrelated CRLs change nothing, the TLS-server
// fallback (leaf only) still honours the leaf's CRL, checkRevocation re-checks a verified path, and
// CertificateAuthority#issueCrl produces CRL files that accumulate, number themselves, keep other
// issuers' CRLs, and that OpenSSL agrees with.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CRL_VALIDITY_SECONDS, type CertificateAuthority } from '../../../../src/shared/identity/ca.ts';
import { parseCertificate, type ParsedCertificate } from '../../../../src/shared/identity/certificate.ts';
import type { WorkloadCertificate } from '../../../../src/shared/identity/cert-manager.ts';
import {
  crlSignedBy,
  normalizeSerial,
  RevocationList,
  type ParsedCrl,
} from '../../../../src/shared/identity/crl.ts';
import { IdentityError } from '../../../../src/shared/identity/errors.ts';
import { derToPem, pemBlocks } from '../../../../src/shared/identity/pem.ts';
import {
  checkRevocation,
  verifySvid,
  verifySvidSync,
  type VerifiedSvid,
  type VerifySvidOptions,
} from '../../../../src/shared/identity/svid.ts';
import { TrustBundle } from '../../../../src/shared/identity/trust-bundle.ts';
import {
  issueWorkloadCert,
  mintCert,
  mintCrl,
  newTestCa,
  pemToDerList,
  presentedChainDer,
  x509,
  thrownIdentityError,
} from '../../../helpers/pki.ts';

const TD = 'cluster.local';
const ID = `spiffe://${TD}/ns/a/sa/b`;

// The CA's clock runs two hours behind, so that the CRLs it issues are never "not yet valid" for
// OpenSSL, and can be moved forward between issueCrl calls.
let clock = new Date(Math.floor(Date.now() / 1000) * 1000 - 2 * 3_600_000);
const ca = await newTestCa({ trustDomain: TD, useIntermediate: true, now: () => clock });
const otherCa = await newTestCa({ trustDomain: TD, useIntermediate: true });
const bundle = ca.trustBundle;

function material(c: CertificateAuthority): { root: ParsedCertificate; int: ParsedCertificate } {
  const m = c.exportKeyMaterial();
  const [rootDer] = pemToDerList(m.rootCertPem);
  const [intDer] = pemToDerList(m.intermediateCertPem ?? '');
  if (!rootDer || !intDer) throw new Error('CA without an intermediate');
  return { root: parseCertificate(rootDer), int: parseCertificate(intDer) };
}
const { root, int } = material(ca);

const leafOf = (w: WorkloadCertificate): ParsedCertificate =>
  parseCertificate(presentedChainDer(w)[0] ?? new Uint8Array());
const a = await issueWorkloadCert(ca, ID);
const b = await issueWorkloadCert(ca, `spiffe://${TD}/ns/b/sa/b`);
const c = await issueWorkloadCert(ca, `spiffe://${TD}/ns/c/sa/c`);
const foreign = await issueWorkloadCert(otherCa, ID);

const thrown = thrownIdentityError;

function outcome(chain: readonly Uint8Array[], opts: VerifySvidOptions, tb: TrustBundle = bundle): string {
  try {
    verifySvidSync(chain, tb, opts);
    return 'accepted';
  } catch (err) {
    if (err instanceof IdentityError) return err.code;
    throw err;
  }
}

const hex = (d: Uint8Array): string => Buffer.from(d).toString('hex');

// Mint (rather than issueCrl) the basic lists, so that verifySvid is tested independently of it.
const revokesA = RevocationList.fromPem(
  (await mintCrl({ issuer: ca, serials: [leafOf(a).serial] })).pem +
    (await mintCrl({ issuer: ca, caCert: 'root' })).pem,
);
const revokesInt = RevocationList.fromPem(
  (await mintCrl({ issuer: ca, caCert: 'root', serials: [int.serial] })).pem,
);
const nothing = RevocationList.fromPem((await mintCrl({ issuer: ca })).pem);

t.test('an unrevoked chain passes and returns the verified path', async (t) => {
  for (const [name, revocation] of [
    ['no list', undefined],
    ['an empty CRL', nothing],
    ['a CRL revoking another leaf', revokesA],
  ] as const) {
    const v = verifySvidSync(presentedChainDer(b), bundle, { revocation });
    t.equal(v.id.uri, `spiffe://${TD}/ns/b/sa/b`, name);
    t.equal(v.pathFromTls, false, name);
    t.same(
      v.path.map((p) => hex(p.der)),
      [hex(leafOf(b).der), hex(int.der), hex(root.der)],
      `${name}: path is leaf, intermediate, root`,
    );
  }
  const asyncV = await verifySvid(presentedChainDer(b), bundle, { revocation: revokesA });
  t.equal(asyncV.path.length, 3, 'verifySvid (async) too');
});

t.test('a revoked leaf is refused with ID_ERR_REVOKED naming its serial', async (t) => {
  const e = thrown(() => verifySvidSync(presentedChainDer(a), bundle, { revocation: revokesA }));
  t.equal(e.code, 'ID_ERR_REVOKED');
  t.match(e.message, `the peer leaf certificate (serial ${leafOf(a).serial}) is revoked`);
  t.match(e.message, `by the CRL of "O=${TD}, CN=Intermediate CA"`);
  await t.rejects(verifySvid(presentedChainDer(a), bundle, { revocation: revokesA }), {
    code: 'ID_ERR_REVOKED',
  });
  // Revocation does not depend on the other options, nor on the chain carrying the root.
  t.equal(
    outcome([...presentedChainDer(a), root.der], {
      revocation: revokesA,
      trustDomain: TD,
      expectedIdentities: [ID],
      usage: 'clientAuth',
    }),
    'ID_ERR_REVOKED',
  );
  t.equal(
    outcome(presentedChainDer(a), { revocation: nothing }),
    'accepted',
    'the same leaf without the CRL',
  );
});

t.test('a revoked intermediate (root-signed CRL) refuses every leaf under it', async (t) => {
  for (const w of [a, b, c]) {
    const e = thrown(() => verifySvidSync(presentedChainDer(w), bundle, { revocation: revokesInt }));
    t.equal(e.code, 'ID_ERR_REVOKED');
    t.match(
      e.message,
      `the intermediate certificate #1 (serial ${int.serial}) is revoked by the CRL of "O=${TD}"`,
    );
  }
  // The server-side form: the leaf alone, the intermediate supplied from our own chain.
  t.equal(outcome([leafOf(b).der], { revocation: revokesInt, intermediates: [int.der] }), 'ID_ERR_REVOKED');
  // A found path that is revoked is refused even when the TLS layer verified one.
  t.equal(
    outcome(presentedChainDer(b), { revocation: revokesInt, pathVerifiedByTls: true }),
    'ID_ERR_REVOKED',
    'no fallback to the leaf-only check when the revoked path was built',
  );
  // A CRL claiming to be the root's but signed by the intermediate does nothing.
  const bySigner = RevocationList.fromPem(
    (
      await mintCrl({
        issuer: ca,
        issuerName: root.subjectDer,
        authorityKeyId: root.subjectKeyId ?? null,
        serials: [int.serial],
      })
    ).pem,
  );
  t.equal(
    outcome(presentedChainDer(b), { revocation: bySigner }),
    'accepted',
    'root CRL forged by the intermediate',
  );
});

t.test('another path that avoids the revoked intermediate is accepted', async (t) => {
  // Two certificates for the same intermediate key and name (a re-issued intermediate); the
  // first is revoked, the second still completes the path.
  const r = await mintCert({ ca: true, subject: 'O=reissue' });
  const i1 = await mintCert({ ca: true, subject: 'O=reissue, CN=int', issuer: r, serial: '11' });
  const i2 = await mintCert({
    ca: true,
    subject: 'O=reissue, CN=int',
    issuer: r,
    serial: '22',
    keys: i1.keys,
  });
  const l = await mintCert({ issuer: i1, uris: [ID] });
  const tb = TrustBundle.fromPem(r.certPem);
  const list = RevocationList.fromPem((await mintCrl({ issuer: r, serials: ['11'] })).pem);
  t.equal(outcome([l.der, i1.der], { revocation: list }, tb), 'ID_ERR_REVOKED', 'only the revoked one');
  const v = verifySvidSync([l.der, i1.der, i2.der], tb, { revocation: list });
  t.equal(v.path[1]?.serial, '22', 'the path goes through the unrevoked copy');
  const list2 = RevocationList.fromPem((await mintCrl({ issuer: r, serials: ['11', '22'] })).pem);
  t.equal(outcome([l.der, i1.der, i2.der], { revocation: list2 }, tb), 'ID_ERR_REVOKED', 'both revoked');
});

t.test("an unrelated CRL (another CA's) changes nothing", async (t) => {
  const o = material(otherCa);
  // The other CA lists our leaf's and our intermediate's serials: same numbers, other issuers.
  const otherCrl = await otherCa.issueCrl({
    revoke: [leafOf(a).serial, leafOf(foreign).serial, o.int.serial],
  });
  const list = RevocationList.fromPem(otherCrl.pem);
  t.equal(list.revokedCount, 3);
  for (const w of [a, b]) t.equal(outcome(presentedChainDer(w), { revocation: list }), 'accepted');
  t.equal(
    outcome([leafOf(a).der], { revocation: list, pathVerifiedByTls: true }),
    'accepted',
    'leaf-only too',
  );
  t.equal(
    outcome(presentedChainDer(foreign), { revocation: list }, otherCa.trustBundle),
    'ID_ERR_REVOKED',
    'while it does revoke in its own hierarchy',
  );
});

t.test('pathVerifiedByTls fallback: the leaf alone is still checked against its CRL', async (t) => {
  const leafOnly = (w: WorkloadCertificate): Uint8Array[] => [leafOf(w).der];
  const opts = { revocation: revokesA, pathVerifiedByTls: true };
  t.equal(outcome(leafOnly(b), { revocation: revokesA }), 'ID_ERR_CHAIN', 'without the fallback: no path');

  const v = verifySvidSync(leafOnly(b), bundle, opts);
  t.equal(v.pathFromTls, true);
  t.equal(v.path.length, 1);
  t.equal(hex(v.path[0]?.der ?? new Uint8Array()), hex(leafOf(b).der));

  const e = thrown(() => verifySvidSync(leafOnly(a), bundle, opts));
  t.equal(e.code, 'ID_ERR_REVOKED');
  t.match(e.message, `the peer leaf certificate (serial ${leafOf(a).serial}) is revoked`);
  // The intermediates at hand are other ones (e.g. the other CA's): still the fallback.
  t.equal(outcome(leafOnly(a), { ...opts, intermediates: [material(otherCa).int.der] }), 'ID_ERR_REVOKED');
  t.equal(outcome(leafOnly(b), { ...opts, intermediates: [material(otherCa).int.der] }), 'accepted');
  // Without the intermediate, its revocation cannot be seen: while a root revokes any
  // intermediate, a leaf-only path is refused (fail closed) ...
  t.match(
    thrown(() => verifySvidSync(leafOnly(b), bundle, { revocation: revokesInt, pathVerifiedByTls: true })),
    { code: 'ID_ERR_REVOKED', message: /issued by an intermediate this side does not hold/ },
  );
  // ... while a path through an intermediate at hand is checked as usual.
  t.equal(
    outcome(presentedChainDer(b), { revocation: revokesA, pathVerifiedByTls: true }),
    'accepted',
    'an unrevoked leaf through a known intermediate',
  );
});

t.test('checkRevocation re-checks a verified result when the list changes', async (t) => {
  const full = verifySvidSync(presentedChainDer(a), bundle, { revocation: nothing });
  const tlsOnly = verifySvidSync([leafOf(a).der], bundle, { revocation: nothing, pathVerifiedByTls: true });
  for (const [name, v] of [
    ['complete path', full],
    ['leaf-only path', tlsOnly],
  ] as [string, VerifiedSvid][]) {
    t.doesNotThrow(() => checkRevocation(v, undefined, bundle.anchors), `${name}: no list`);
    t.doesNotThrow(() => checkRevocation(v, nothing, bundle.anchors), `${name}: empty list`);
    const e = thrown(() => checkRevocation(v, revokesA, bundle.anchors));
    t.equal(e.code, 'ID_ERR_REVOKED', `${name}: revoked after the fact`);
    t.match(e.message, `serial ${leafOf(a).serial}`, name);
  }
  t.equal(
    thrown(() => checkRevocation(full, revokesInt, bundle.anchors)).code,
    'ID_ERR_REVOKED',
    'intermediate revoked later',
  );
  t.match(
    thrown(() => checkRevocation(full, revokesInt, bundle.anchors)).message,
    /intermediate certificate #1/,
  );
  // Leaf-only: the intermediate is hidden, and a root revokes an intermediate: refused (it could
  // be that one; a server cannot tell).
  t.match(
    thrown(() => checkRevocation(tlsOnly, revokesInt, bundle.anchors)),
    {
      code: 'ID_ERR_REVOKED',
      message: /issued by an intermediate this side does not hold .* a root's CRL revokes 1 intermediate/,
    },
    'leaf-only: fail closed while a root revokes an intermediate',
  );
  // A plain { path, pathFromTls } is enough (what a live session keeps).
  t.throws(() => checkRevocation({ path: full.path, pathFromTls: false }, revokesA, bundle.anchors), {
    code: 'ID_ERR_REVOKED',
  });
});

// ---- CertificateAuthority#issueCrl --------------------------------------------------------

function crlsOf(pem: string): ParsedCrl[] {
  return [...RevocationList.fromPem(pem).crls];
}
function byIssuer(crls: readonly ParsedCrl[], issuer: ParsedCertificate): ParsedCrl {
  const found = crls.filter(
    (x) => Buffer.from(x.issuerDer).equals(issuer.subjectDer) && crlSignedBy(x, issuer),
  );
  if (found.length !== 1) throw new Error(`expected one CRL of the issuer, found ${found.length}`);
  return found[0] as ParsedCrl;
}

t.test(
  'issueCrl: accumulates serials across calls, numbers increase, intermediates go to the root',
  async (t) => {
    const t1 = clock;
    const r1 = await ca.issueCrl({ revoke: [leafOf(a).serial] });
    t.same(r1.crls, [
      { issuer: 'root', serials: [] },
      { issuer: 'intermediate', serials: [normalizeSerial(leafOf(a).serial)] },
    ]);
    let crls = crlsOf(r1.pem);
    t.equal(crls.length, 2, 'one CRL per signing CA');
    t.equal(byIssuer(crls, root).crlNumber, '01');
    t.equal(byIssuer(crls, int).crlNumber, '01');
    t.equal(byIssuer(crls, int).authorityKeyId, int.subjectKeyId);
    t.equal(byIssuer(crls, root).authorityKeyId, root.subjectKeyId);
    t.equal(byIssuer(crls, int).thisUpdate.toISOString(), t1.toISOString());
    t.equal(byIssuer(crls, int).nextUpdate?.getTime(), t1.getTime() + CRL_VALIDITY_SECONDS * 1000);
    t.equal(outcome(presentedChainDer(a), { revocation: RevocationList.fromPem(r1.pem) }), 'ID_ERR_REVOKED');
    t.equal(outcome(presentedChainDer(b), { revocation: RevocationList.fromPem(r1.pem) }), 'accepted');

    clock = new Date(clock.getTime() + 3_600_000);
    const t2 = clock;
    const r2 = await ca.issueCrl({ revoke: [leafOf(b).serial], previousPem: r1.pem });
    crls = crlsOf(r2.pem);
    t.equal(crls.length, 2);
    const i2 = byIssuer(crls, int);
    t.equal(i2.crlNumber, '02');
    t.equal(byIssuer(crls, root).crlNumber, '02', "the root's CRL is renumbered too");
    t.equal(i2.revoked.size, 2, 'the earlier revocation is kept');
    t.equal(
      i2.revoked.get(normalizeSerial(leafOf(a).serial))?.toISOString(),
      t1.toISOString(),
      'with its date',
    );
    t.equal(i2.revoked.get(normalizeSerial(leafOf(b).serial))?.toISOString(), t2.toISOString());
    t.equal(i2.thisUpdate.toISOString(), t2.toISOString());

    // Revoking again what is already revoked changes nothing but the number.
    const r3 = await ca.issueCrl({ revoke: [leafOf(a).serial], previousPem: r2.pem });
    const i3 = byIssuer(crlsOf(r3.pem), int);
    t.equal(i3.crlNumber, '03');
    t.equal(i3.revoked.size, 2);
    t.equal(
      i3.revoked.get(normalizeSerial(leafOf(a).serial))?.toISOString(),
      t1.toISOString(),
      'first date kept',
    );

    // The intermediate's serial goes to the root's CRL and refuses every leaf.
    const r4 = await ca.issueCrl({ revoke: [int.serial], previousPem: r3.pem });
    t.same(r4.crls.find((x) => x.issuer === 'root')?.serials, [normalizeSerial(int.serial)]);
    t.notOk(r4.crls.find((x) => x.issuer === 'intermediate')?.serials.includes(normalizeSerial(int.serial)));
    const list4 = RevocationList.fromPem(r4.pem);
    t.equal(byIssuer(list4.crls, root).crlNumber, '04');
    t.match(
      thrown(() => verifySvidSync(presentedChainDer(c), bundle, { revocation: list4 })).message,
      /intermediate certificate #1/,
    );

    // An empty request still produces a valid (renumbered) file.
    const r5 = await ca.issueCrl({ revoke: [], previousPem: r4.pem });
    t.equal(byIssuer(crlsOf(r5.pem), int).crlNumber, '05');
    t.equal(RevocationList.fromPem(r5.pem).revokedCount, 3);
  },
);

t.test('issueCrl: serial input', async (t) => {
  const s = normalizeSerial(leafOf(b).serial);
  const colons = (s.match(/../g) ?? []).join(':').toUpperCase();
  for (const spelling of [colons, s.toUpperCase(), `0x${s}`, `  ${s}\n`, `00${s}`]) {
    const r = await ca.issueCrl({ revoke: [spelling] });
    t.same(r.crls.find((x) => x.issuer === 'intermediate')?.serials, [s], JSON.stringify(spelling));
    t.equal(outcome(presentedChainDer(b), { revocation: RevocationList.fromPem(r.pem) }), 'ID_ERR_REVOKED');
  }
  const odd = await ca.issueCrl({ revoke: ['abc'] });
  t.same(odd.crls.find((x) => x.issuer === 'intermediate')?.serials, ['0abc'], 'odd-length hex padded');

  for (const bad of ['xyz', '', '0x', '12 34', 'g1', '-5', '1'.repeat(43), 'serial=1234']) {
    await t.rejects(
      ca.issueCrl({ revoke: [leafOf(a).serial, bad] }),
      { code: 'ID_ERR_CRL' },
      JSON.stringify(bad),
    );
  }
  const e = await ca.issueCrl({ revoke: ['not-hex'] }).catch((err: unknown) => err);
  t.type(e, IdentityError);
  t.match((e as Error).message, '"not-hex" is not a certificate serial number');

  for (const rootSpelling of [root.serial, root.serial.toUpperCase(), root.serial.replace(/^00/, '')]) {
    const re = await ca.issueCrl({ revoke: [rootSpelling] }).catch((err: unknown) => err);
    t.equal((re as IdentityError).code, 'ID_ERR_CRL', `root serial ${rootSpelling}`);
    t.match((re as Error).message, /is the CA's own root: a root cannot be revoked by a CRL/);
  }

  await t.rejects(ca.issueCrl({ revoke: [], previousPem: 'garbage' }), {
    code: 'ID_ERR_CRL',
    message: /^the previous CRL file holds no PEM CRL/,
  });
});

t.test("issueCrl: other issuers' CRLs in previousPem are kept verbatim", async (t) => {
  const theirs = await otherCa.issueCrl({ revoke: [leafOf(foreign).serial] });
  const theirBlocks = pemBlocks(theirs.pem).map((blk) => derToPem(blk.der, 'X509 CRL'));
  t.equal(theirBlocks.length, 2);
  const ours = await ca.issueCrl({ revoke: [leafOf(a).serial] });
  const merged = await ca.issueCrl({ revoke: [leafOf(b).serial], previousPem: theirs.pem + ours.pem });
  for (const blk of theirBlocks) t.ok(merged.pem.includes(blk), 'their CRL, byte for byte');
  t.equal(pemBlocks(merged.pem).length, 4);
  t.equal(merged.crls.length, 2, 'the summary lists our CRLs only');
  const list = RevocationList.fromPem(merged.pem);
  t.equal(outcome(presentedChainDer(a), { revocation: list }), 'ID_ERR_REVOKED');
  t.equal(outcome(presentedChainDer(b), { revocation: list }), 'ID_ERR_REVOKED');
  t.equal(outcome(presentedChainDer(c), { revocation: list }), 'accepted');
  t.equal(outcome(presentedChainDer(foreign), { revocation: list }, otherCa.trustBundle), 'ID_ERR_REVOKED');

  // A CRL with our intermediate's name but another key (a forged or renewed one) is not ours.
  const imposter = await mintCrl({
    issuer: otherCa,
    issuerName: int.subjectDer,
    authorityKeyId: int.subjectKeyId ?? null,
    serials: [leafOf(c).serial],
    crlNumber: 99,
  });
  const again = await ca.issueCrl({ revoke: [], previousPem: ours.pem + imposter.pem });
  t.ok(again.pem.includes(imposter.pem), 'kept verbatim');
  const mine = byIssuer(crlsOf(again.pem), int);
  t.equal(mine.crlNumber, '02', 'its number does not count');
  t.notOk(mine.revoked.has(normalizeSerial(leafOf(c).serial)), 'nor its serials');
});

t.test('issueCrl without an intermediate: the root revokes leaves', async (t) => {
  const solo = await newTestCa({ trustDomain: TD });
  const w = await issueWorkloadCert(solo, ID);
  const r = await solo.issueCrl({ revoke: [leafOf(w).serial] });
  t.same(r.crls, [{ issuer: 'root', serials: [normalizeSerial(leafOf(w).serial)] }]);
  t.equal(
    outcome(presentedChainDer(w), { revocation: RevocationList.fromPem(r.pem) }, solo.trustBundle),
    'ID_ERR_REVOKED',
  );
});

t.test(
  'issueCrl after a root rotation: a still-valid leaf of the old hierarchy is not covered, and the result says so',
  async (t) => {
    let rclock = new Date(Math.floor(Date.now() / 1000) * 1000 - 3_600_000);
    const rca = await newTestCa({ trustDomain: TD, useIntermediate: true, now: () => rclock });
    const old = await issueWorkloadCert(rca, ID);
    t.equal(
      (await rca.issueCrl({ revoke: [] })).uncovered,
      undefined,
      'before a rotation everything is covered',
    );
    await rca.addNextRoot();
    rca.activateNextRoot();
    rclock = new Date(rclock.getTime() + 60_000);
    t.equal(
      outcome(presentedChainDer(old), {}, rca.trustBundle),
      'accepted',
      'the old leaf is still trusted',
    );
    const r = await rca.issueCrl({ revoke: [leafOf(old).serial] });
    // The previous root's key is gone: the new intermediate's CRL cannot speak for the old leaf.
    t.equal(
      outcome(presentedChainDer(old), { revocation: RevocationList.fromPem(r.pem) }, rca.trustBundle),
      'accepted',
      'the old leaf stays trusted until drop-old-root or its expiry',
    );
    t.match(r.uncovered, /issued before the last root activation .* are not covered/);
    rca.dropOldRoot();
    t.equal(
      (await rca.issueCrl({ revoke: [] })).uncovered,
      undefined,
      'after drop-old-root, everything is covered',
    );
    t.equal(
      outcome(presentedChainDer(old), {}, rca.trustBundle),
      'ID_ERR_CHAIN',
      'and the old leaf is refused',
    );
  },
);

// ---- OpenSSL agrees --------------------------------------------------------------------------

t.test('issueCrl output verifies with openssl verify -crl_check_all', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'crl-openssl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const m = ca.exportKeyMaterial();
  writeFileSync(join(dir, 'root.pem'), m.rootCertPem);
  writeFileSync(join(dir, 'int.pem'), m.intermediateCertPem ?? '');

  // A leaf whose serial has the high bit set (encoded with a 00 sign octet), and one without.
  let high: WorkloadCertificate | undefined;
  let low: WorkloadCertificate | undefined;
  for (let n = 0; n < 64 && (!high || !low); n++) {
    const w = await issueWorkloadCert(ca, ID);
    if (leafOf(w).serial.startsWith('00')) high ??= w;
    else low ??= w;
  }
  if (!high || !low) throw new Error('no serial of each kind in 64 tries');

  const verify = (crlPem: string, w: WorkloadCertificate, name: string): { ok: boolean; out: string } => {
    writeFileSync(join(dir, 'crl.pem'), crlPem);
    writeFileSync(join(dir, `${name}.pem`), w.certChainPem[0] ?? '');
    const res = spawnSync(
      'openssl',
      [
        'verify',
        '-crl_check_all',
        '-CRLfile',
        join(dir, 'crl.pem'),
        '-CAfile',
        join(dir, 'root.pem'),
        '-untrusted',
        join(dir, 'int.pem'),
        join(dir, `${name}.pem`),
      ],
      { encoding: 'utf8' },
    );
    if (res.error) throw res.error;
    return { ok: res.status === 0, out: `${res.stdout}${res.stderr}` };
  };

  const r1 = await ca.issueCrl({ revoke: [leafOf(high).serial] });
  const h = verify(r1.pem, high, 'high');
  t.notOk(h.ok, 'revoked leaf (high-bit serial) fails');
  t.match(h.out, /certificate revoked/);
  const l = verify(r1.pem, low, 'low');
  t.ok(l.ok, `unrevoked leaf is OK: ${l.out}`);
  t.match(l.out, /: OK/);

  const r2 = await ca.issueCrl({ revoke: [leafOf(low).serial.toUpperCase()], previousPem: r1.pem });
  t.match(verify(r2.pem, low, 'low').out, /certificate revoked/, 'accumulated: the second leaf');
  t.match(verify(r2.pem, high, 'high').out, /certificate revoked/, 'accumulated: the first leaf still');
  const cOk = verify(r2.pem, c, 'c');
  t.ok(cOk.ok, `the third is OK: ${cOk.out}`);

  const r3 = await ca.issueCrl({ revoke: [int.serial], previousPem: r2.pem });
  const cRev = verify(r3.pem, c, 'c');
  t.notOk(cRev.ok);
  t.match(cRev.out, /depth 1.*certificate revoked|certificate revoked/s, 'the intermediate is revoked');

  // Our verifier agrees on every case.
  for (const [pem, w, want] of [
    [r1.pem, high, 'ID_ERR_REVOKED'],
    [r1.pem, low, 'accepted'],
    [r2.pem, c, 'accepted'],
    [r3.pem, c, 'ID_ERR_REVOKED'],
  ] as const) {
    t.equal(outcome(presentedChainDer(w), { revocation: RevocationList.fromPem(pem) }), want);
  }
});

t.test('issueCrl refuses to sign with a CA certificate whose keyUsage lacks cRLSign', async (t) => {
  // Plugged-in CA material (cacerts) whose intermediate may sign certificates but not CRLs.
  const year = new Date(Date.now() + 365 * 24 * 3600 * 1000);
  const pluggedRoot = await mintCert({ ca: true, subject: `O=${TD}`, notAfter: year });
  const pluggedInt = await mintCert({
    ca: true,
    subject: `O=${TD}, CN=no crl`,
    issuer: pluggedRoot,
    keyUsage: x509.KeyUsageFlags.keyCertSign,
    notAfter: year,
  });
  const plugged = await newTestCa({
    trustDomain: TD,
    keyMaterial: {
      rootCertPem: pluggedRoot.certPem,
      rootKeyPem: pluggedRoot.privateKeyPem,
      intermediateCertPem: pluggedInt.certPem,
      intermediateKeyPem: pluggedInt.privateKeyPem,
    },
  });
  const w = await issueWorkloadCert(plugged, ID);
  const err = await plugged.issueCrl({ revoke: [leafOf(w).serial] }).catch((e: unknown) => e);
  t.match(err, { code: 'ID_ERR_CRL', message: /intermediate certificate .* keyUsage without cRLSign/ });
  // Nothing to revoke there: the root's CRL alone is written, and the intermediate still revocable through it.
  const rootOnly = await plugged.issueCrl({ revoke: [parseCertificate(pluggedInt.der).serial] });
  t.same(
    rootOnly.crls.map((c) => c.issuer),
    ['root'],
  );
  t.equal(
    outcome(presentedChainDer(w), { revocation: RevocationList.fromPem(rootOnly.pem) }, plugged.trustBundle),
    'ID_ERR_REVOKED',
    'the intermediate revoked by the root',
  );
});

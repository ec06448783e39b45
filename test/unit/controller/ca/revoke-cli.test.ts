// SPDX-License-Identifier: Apache-2.0
// `controller ca-revoke`: the operator's way to revoke certificates of the mesh CA. Each run
// re-signs the whole CRL file, keeping every earlier revocation; the CA's intermediate is revoked
// in the root's CRL; bad serials and a missing CA are refused, and nothing is created then.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runCaRevoke } from '../../../../src/controller/ca/revoke-cli.ts';
import { CA_FILES, CertificateAuthority } from '../../../../src/shared/identity/ca.ts';
import { parseCertificate } from '../../../../src/shared/identity/certificate.ts';
import { normalizeSerial, RevocationList } from '../../../../src/shared/identity/crl.ts';
import { pemCertificatesToDer } from '../../../../src/shared/identity/pem.ts';
import { issueWorkloadCert } from '../../../helpers/pki.ts';
import { NODE_BIN } from '../../../helpers/testbed-apps.ts';

async function run(args: string[]): Promise<{ status: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const status = await runCaRevoke(args, { out: (s) => (out += s), err: (s) => (err += s), env: {} });
  return { status, out, err };
}

function serialOfPem(pem: string): string {
  return parseCertificate(pemCertificatesToDer(pem)[0]!).serial;
}

t.test(
  'revocations accumulate in ca-crl.pem, each in the CRL of the CA that issued the certificate',
  async (t) => {
    const base = t.testdir();
    const dir = join(base, 'ca');
    const ca = await CertificateAuthority.create({
      trustDomain: 'cluster.local',
      dir,
      useIntermediate: true,
    });
    const a = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/demo/sa/a');
    const b = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/demo/sa/b');
    const [serialA, serialB] = [serialOfPem(a.certChainPem[0]!), serialOfPem(b.certChainPem[0]!)];
    const intermediate = serialOfPem(a.certChainPem[1]!);
    const file = join(dir, CA_FILES.crl);

    const empty = await run(['--ca-dir', dir]);
    t.equal(empty.status, 0, empty.err);
    t.match(empty.out, /root: nothing revoked\n {2}intermediate: nothing revoked/);
    t.equal(RevocationList.fromPem(readFileSync(file, 'utf8')).revokedCount, 0, 'an empty file to mount');
    t.equal(statSync(file).mode & 0o777, 0o644, 'readable by ztunnel, not secret');

    // Spelled as openssl prints it (upper case, colons) as well as plain hex.
    const colons = serialA.toUpperCase().match(/../g)!.join(':');
    const first = await run(['--ca-dir', dir, '--serial', colons]);
    t.equal(first.status, 0, first.err);
    t.match(first.out, `intermediate: ${normalizeSerial(serialA)}`);
    const second = await run(['--ca-dir', dir, '--serial', serialB, '--serial', intermediate]);
    t.equal(second.status, 0, second.err);
    t.match(second.out, `root: ${normalizeSerial(intermediate)}`, "the intermediate is in the root's CRL");
    t.match(
      second.out,
      `intermediate: ${normalizeSerial(serialA)}, ${normalizeSerial(serialB)}`,
      'a is still revoked',
    );

    const list = RevocationList.fromPem(readFileSync(file, 'utf8'));
    t.equal(list.crls.length, 2);
    t.same(
      list.crls.map((c) => c.crlNumber),
      ['03', '03'],
      'each CRL number went up with each run',
    );
    t.equal(list.revokedCount, 3);

    const out = join(base, 'elsewhere.pem');
    const elsewhere = await run(['--ca-dir', dir, '--out', out, '--serial', '0a']);
    t.equal(elsewhere.status, 0, elsewhere.err);
    t.equal(RevocationList.fromPem(readFileSync(out, 'utf8')).revokedCount, 1, '--out starts its own file');
  },
);

t.test('bad input: usage errors, bad serials, the root, a missing CA; nothing is created', async (t) => {
  const base = t.testdir();
  const dir = join(base, 'ca');
  const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local', dir });
  for (const args of [['positional'], ['--bogus'], ['--serial']]) {
    const r = await run(args);
    t.equal(r.status, 2, `${JSON.stringify(args)}: usage error`);
    t.match(r.err, /usage: controller ca-revoke/);
  }
  const notHex = await run(['--ca-dir', dir, '--serial', 'xyz']);
  t.equal(notHex.status, 2);
  t.match(notHex.err, /"xyz" is not a certificate serial number: give it in hex/);
  const root = serialOfPem(ca.trustBundle.rootsPem[0]!);
  const rootRevoke = await run(['--ca-dir', dir, '--serial', root]);
  t.equal(rootRevoke.status, 2);
  t.match(rootRevoke.err, /a root cannot be revoked by a CRL; rotate it out instead/);
  t.notOk(existsSync(join(dir, CA_FILES.crl)), 'no file written for refused input');

  const missing = await run(['--ca-dir', join(dir, 'nope'), '--serial', '0a']);
  t.equal(missing.status, 1);
  t.match(missing.err, /no CA in .*nope \(root-cert\.pem missing\); check --ca-dir/);
  t.notOk(existsSync(join(dir, 'nope')), 'no CA was created');

  const corrupt = join(base, 'corrupt.pem');
  writeFileSync(corrupt, 'not a CRL');
  const bad = await run(['--ca-dir', dir, '--out', corrupt, '--serial', '0a']);
  t.equal(bad.status, 2, 'an unreadable previous file is not overwritten');
  t.match(bad.err, /previous CRL file holds no PEM CRL/);
  t.equal(readFileSync(corrupt, 'utf8'), 'not a CRL', 'the file is left as it was');
  t.same(
    readdirSync(dir).filter((f) => f.includes('.tmp')),
    [],
    'no temporary file left',
  );
});

t.test('the controller binary dispatches the subcommand', async (t) => {
  const dir = join(t.testdir(), 'ca');
  await CertificateAuthority.create({ trustDomain: 'cluster.local', dir });
  const main = join(import.meta.dirname, '../../../../src/controller/main.ts');
  const r = spawnSync(NODE_BIN, [main, 'ca-revoke', '--ca-dir', dir, '--serial', '0b'], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /root: 0b/);
});

t.test('during a root rotation it says which certificates its CRLs cannot cover', async (t) => {
  const dir = join(t.testdir(), 'ca');
  const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local', dir });
  await ca.addNextRoot();
  const added = await run(['--ca-dir', dir, '--serial', '0c']);
  t.equal(added.status, 0, added.err);
  t.equal(added.err, '', 'step 1: the current root still signs everything, all covered');
  ca.activateNextRoot();
  const active = await run(['--ca-dir', dir, '--serial', '0d']);
  t.equal(active.status, 0, active.err);
  t.match(active.err, /note: certificates issued before the last root activation .* are not covered/);
});

t.test('one run at a time: a live run holds the lock, a dead one does not', async (t) => {
  const dir = join(t.testdir(), 'ca');
  await CertificateAuthority.create({ trustDomain: 'cluster.local', dir });
  const lock = join(dir, `${CA_FILES.crl}.lock`);
  // A live process (this one's parent test runner is alive: use our own pid's parent).
  writeFileSync(lock, `${process.ppid}\n`);
  const busy = await run(['--ca-dir', dir, '--serial', '0a']);
  t.equal(busy.status, 1);
  t.match(busy.err, new RegExp(`another ca-revoke \\(pid ${process.ppid}\\) is writing this CRL file`));
  t.notOk(existsSync(join(dir, CA_FILES.crl)), 'nothing written');
  // A pid that no longer runs: the lock is stale and taken over.
  writeFileSync(lock, '2147483646\n');
  const ok = await run(['--ca-dir', dir, '--serial', '0a']);
  t.equal(ok.status, 0, ok.err);
  t.notOk(existsSync(lock), 'the lock is released');
});

// SPDX-License-Identifier: Apache-2.0
// `controller ca-rotate`: the operator's way through the three steps of a root rotation on the
// CA directory, refused out of order, never creating a CA where there is none.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runCaRotate } from '../../../../src/controller/ca/rotate-cli.ts';
import { CertificateAuthority } from '../../../../src/shared/identity/ca.ts';
import { NODE_BIN } from '../../../helpers/testbed-apps.ts';

async function run(args: string[]): Promise<{ status: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const status = await runCaRotate(args, {
    out: (s) => (out += s),
    err: (s) => (err += s),
    env: {},
  });
  return { status, out, err };
}

t.test('the three steps, in order, on the directory the controller loads', async (t) => {
  const dir = join(t.testdir(), 'ca');
  const before = await CertificateAuthority.create({ trustDomain: 'cluster.local', dir });
  const oldRoot = before.trustBundle.rootsPem[0]!;

  const status = await run(['status', '--ca-dir', dir]);
  t.equal(status.status, 0);
  t.match(status.out, /rotation step: none\ntrusted roots \(serial\):\n {2}[0-9a-f]+ \(signs\)\n/);

  const add = await run(['add-next-root', '--ca-dir', dir]);
  t.equal(add.status, 0, add.err);
  t.match(add.out, /add-next-root: done\. Restart the controller/);
  t.match(add.out, /rotation step: next-root-added/);
  t.equal(add.out.match(/^ {2}[0-9a-f]+/gm)?.length, 2, 'two trusted roots');
  t.equal(add.out.match(/\(signs\)/g)?.length, 1, 'one of them signs');
  const again = await run(['add-next-root', '--ca-dir', dir]);
  t.equal(again.status, 2, 'a second add is refused');
  t.match(again.err, /already in the trust bundle; activate it/);
  const early = await run(['drop-old-root', '--ca-dir', dir]);
  t.equal(early.status, 2, 'a drop before the activation is refused');
  t.match(early.err, /not active yet/);

  const loaded = await CertificateAuthority.create({ trustDomain: 'cluster.local', dir });
  t.equal(loaded.rootRotationStep, 'next-root-added', 'what the restarted controller loads');
  t.equal(
    loaded.exportKeyMaterial().rootCertPem,
    before.exportKeyMaterial().rootCertPem,
    'still signing with the old root',
  );

  t.equal((await run(['activate-next-root', '--ca-dir', dir])).status, 0);
  const active = await CertificateAuthority.create({ trustDomain: 'cluster.local', dir });
  t.equal(active.rootRotationStep, 'old-root-trusted');
  t.not(active.exportKeyMaterial().rootCertPem, before.exportKeyMaterial().rootCertPem, 'the new root signs');
  t.ok(active.trustBundle.has(oldRoot), 'the old root is still trusted');

  const drop = await run(['drop-old-root', '--ca-dir', dir]);
  t.equal(drop.status, 0);
  t.match(drop.out, /rotation step: none/);
  const after = await CertificateAuthority.create({ trustDomain: 'cluster.local', dir });
  t.equal(after.trustBundle.size, 1);
  t.notOk(after.trustBundle.has(oldRoot), 'the old root is gone');
});

t.test('bad input: a usage error or a missing CA, and nothing is created', async (t) => {
  const dir = t.testdir();
  for (const args of [[], ['rotate'], ['status', 'extra'], ['status', '--bogus']]) {
    const r = await run(args);
    t.equal(r.status, 2, `${JSON.stringify(args)}: usage error`);
    t.match(r.err, /usage: controller ca-rotate <status\|add-next-root\|activate-next-root\|drop-old-root>/);
  }
  const missing = await run(['add-next-root', '--ca-dir', join(dir, 'nope')]);
  t.equal(missing.status, 1);
  t.match(missing.err, /no CA in .*nope \(root-cert\.pem missing\); check --ca-dir/);
  t.notOk(existsSync(join(dir, 'nope')), 'no CA was created');
  t.same(readdirSync(dir), []);
});

t.test('the controller binary dispatches the subcommand', async (t) => {
  const dir = join(t.testdir(), 'ca');
  await CertificateAuthority.create({ trustDomain: 'cluster.local', dir });
  const main = join(import.meta.dirname, '../../../../src/controller/main.ts');
  const r = spawnSync(NODE_BIN, [main, 'ca-rotate', 'status', '--ca-dir', dir], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /rotation step: none/);
  const bad = spawnSync(NODE_BIN, [main, 'ca-rotate', 'activate-next-root', '--ca-dir', dir], {
    encoding: 'utf8',
  });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /no next root to activate; add one first/);
});

// SPDX-License-Identifier: Apache-2.0
// The committed generated code is up to date (`npm run gen:check` passes), and the check really
// detects drift: against a doctored copy of src/shared/gen it fails and names each differing,
// missing and stale file.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cpSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '../../../..');
const TIMEOUT_MS = 120_000;

t.test('npm run gen:check passes on the committed output', async (t) => {
  const res = spawnSync('npm', ['run', '--silent', 'gen:check'], {
    cwd: root,
    encoding: 'utf8',
    timeout: TIMEOUT_MS,
  });
  t.equal(res.error, undefined, 'npm ran within the time limit');
  t.equal(res.status, 0, `stderr: ${res.stderr}`);
  t.match(res.stdout, /src\/shared\/gen is up to date/);
});

t.test('gen:check fails on drift and names the files', async (t) => {
  const copy = t.testdir();
  cpSync(join(root, 'src/shared/gen'), copy, { recursive: true });
  appendFileSync(join(copy, 'zds.ts'), '// hand edit\n');
  rmSync(join(copy, 'citadel.ts'));
  writeFileSync(join(copy, 'left-over.ts'), 'export {};\n');
  const res = spawnSync(process.execPath, [join(root, 'scripts/gen-check.ts'), '--committed', copy], {
    cwd: root,
    encoding: 'utf8',
    timeout: TIMEOUT_MS,
  });
  t.equal(res.status, 1, 'exit code 1 (drift)');
  t.match(res.stderr, /out of date \(3 file\(s\)\); run 'npm run gen'/);
  t.match(res.stderr, /differs: zds\.ts/);
  t.match(res.stderr, /missing \(not committed\): citadel\.ts/);
  t.match(res.stderr, /stale \(no longer generated\): left-over\.ts/);
});

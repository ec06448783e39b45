// SPDX-License-Identifier: Apache-2.0
// `npm run gen:check`: fails when the committed generated code (src/shared/gen/) is not exactly
// what `npm run gen` produces from src/shared/proto/ with buf.gen.yaml. It regenerates into a
// temporary directory (buf's --output base) and compares the two trees byte for byte, so it works
// in a clean clone and in a dirty working tree alike, without git. Offline: buf's well-known types
// are built in and the only plugin is the local ts-proto from node_modules.
//
// Usage: node scripts/gen-check.ts [--committed <dir>]   (default: src/shared/gen)
// Exit codes: 0 up to date, 1 drift (the differing files are named), 2 could not run buf.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const root = resolve(import.meta.dirname, '..');
const GEN_DIR = 'src/shared/gen';
const BUF_TIMEOUT_MS = 120_000;

/** Relative paths of every file under dir, sorted; empty when dir does not exist. */
function listFiles(dir: string, base = dir): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const name of names.sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...listFiles(p, base));
    else out.push(relative(base, p));
  }
  return out;
}

/** Files that are missing on either side or differ in content, with the reason. */
function compareTrees(expectedDir: string, actualDir: string): string[] {
  const expected = new Set(listFiles(expectedDir));
  const actual = new Set(listFiles(actualDir));
  const problems: string[] = [];
  for (const f of [...new Set([...expected, ...actual])].sort()) {
    if (!actual.has(f)) problems.push(`missing (not committed): ${f}`);
    else if (!expected.has(f)) problems.push(`stale (no longer generated): ${f}`);
    else if (!readFileSync(join(expectedDir, f)).equals(readFileSync(join(actualDir, f))))
      problems.push(`differs: ${f}`);
  }
  return problems;
}

function main(): number {
  const { values } = parseArgs({ options: { committed: { type: 'string' } } });
  const committed = resolve(root, values.committed ?? GEN_DIR);
  const tmp = mkdtempSync(join(tmpdir(), 'gen-check-'));
  try {
    const bin = join(root, 'node_modules/.bin');
    // node_modules/.bin first: the ts-proto plugin's `#!/usr/bin/env node` must get the pinned Node 24.
    const res = spawnSync(join(bin, 'buf'), ['generate', '--output', tmp], {
      cwd: root,
      env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ''}` },
      encoding: 'utf8',
      timeout: BUF_TIMEOUT_MS,
    });
    if (res.error !== undefined || res.status !== 0) {
      process.stderr.write(
        `gen:check: 'buf generate' failed (${res.error?.message ?? `exit ${String(res.status)}`})\n${res.stderr}`,
      );
      return 2;
    }
    const fresh = join(tmp, GEN_DIR);
    const problems = compareTrees(fresh, committed);
    if (problems.length > 0) {
      process.stderr.write(
        `gen:check: generated code in ${relative(root, committed) || '.'} is out of date ` +
          `(${problems.length} file(s)); run 'npm run gen' and commit the result:\n` +
          problems.map((p) => `  ${p}\n`).join(''),
      );
      return 1;
    }
    process.stdout.write(`gen:check: ${relative(root, committed)} is up to date\n`);
    return 0;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

process.exitCode = main();

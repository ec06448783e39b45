// SPDX-License-Identifier: Apache-2.0
// `npm run gen:check`: fails when the committed generated code (src/shared/gen/) is not exactly
// what `npm run gen` (scripts/gen.ts: protoc + ts-proto) produces from src/shared/proto/. It
// regenerates into a temporary directory and compares the two trees byte for byte, so it works in
// a clean clone and in a dirty working tree alike, without git.
//
// Usage: node scripts/gen-check.ts [--committed <dir>]   (default: src/shared/gen)
// Exit codes: 0 up to date, 1 drift (the differing files are named), 2 could not run protoc.
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { GEN_DIR, ROOT as root, generate } from './gen.ts';

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
    const err = generate(join(tmp, GEN_DIR));
    if (err !== undefined) {
      process.stderr.write(`gen:check: ${err}\n`);
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

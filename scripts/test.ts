// SPDX-License-Identifier: Apache-2.0
// The project's test command (`npm test`): runs every tier with tap and ends with the plain
// line `N passed, N failed[, N skipped]` that CI reads.
//
// Tiers: test/unit and test/integration run anywhere; test/netns needs root and network
// namespaces. Without root the netns tier is not skipped silently: it is reported as failed,
// unless AMBIENT_ALLOW_NO_ROOT=1 is set (for a developer laptop), in which case the skip is
// printed loudly and counted.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { FailureLog } from './failure-log.ts';

const root = join(import.meta.dirname, '..');

function findTests(dir: string): string[] {
  const out: string[] = [];
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries.sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...findTests(p));
    else if (name.endsWith('.test.ts')) out.push(relative(root, p));
  }
  return out;
}

const args = process.argv.slice(2);
const only = args.filter((a) => !a.startsWith('-'));
const isRoot = process.getuid?.() === 0;
const allowNoRoot = process.env.AMBIENT_ALLOW_NO_ROOT === '1';

/** A directory argument stands for every *.test.ts under it. */
const expand = (arg: string): string[] => {
  const abs = resolve(root, arg);
  let dir = false;
  try {
    dir = statSync(abs).isDirectory();
  } catch {
    // not a path here: tap reports it
  }
  return dir ? findTests(abs) : [arg];
};

let files =
  only.length > 0
    ? only.flatMap(expand)
    : [
        ...findTests(join(root, 'test/unit')),
        ...findTests(join(root, 'test/integration')),
        ...findTests(join(root, 'test/netns')),
      ];
let missingRoot = 0;
if (!isRoot) {
  const netns = files.filter((f) => f.startsWith('test/netns/'));
  if (netns.length > 0) {
    files = files.filter((f) => !f.startsWith('test/netns/'));
    missingRoot = netns.length;
    process.stderr.write(
      `\n!!! ${netns.length} network-namespace test file(s) NOT RUN: they need root (run 'sudo npm test').\n` +
        (allowNoRoot
          ? '!!! AMBIENT_ALLOW_NO_ROOT=1: counted as skipped.\n\n'
          : '!!! Counted as failed. Set AMBIENT_ALLOW_NO_ROOT=1 to count them as skipped.\n\n'),
    );
  }
}

const tap = join(root, 'node_modules/.bin/tap');
const child = spawn(tap, ['--reporter=tap', '--timeout=900', ...files], {
  cwd: root,
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, PATH: `${join(root, 'node_modules/.bin')}:${process.env.PATH ?? ''}` },
});

let tail = '';
const failures = new FailureLog();
child.stdout.on('data', (chunk: Buffer) => {
  process.stdout.write(chunk);
  const text = chunk.toString('utf8');
  tail = (tail + text).slice(-4096);
  failures.push(text);
});

child.on('close', (code) => {
  const m = /# \{ total: (\d+)(?:, pass: (\d+))?(?:, fail: (\d+))?(?:, skip: (\d+))?(?:, todo: (\d+))?/.exec(
    tail,
  );
  const pass = Number(m?.[2] ?? 0);
  let fail = Number(m?.[3] ?? 0);
  let skip = Number(m?.[4] ?? 0) + Number(m?.[5] ?? 0);
  if (!m) fail += 1; // tap printed no summary: count the run itself as a failure
  if (code !== 0 && fail === 0) fail += 1;
  if (missingRoot > 0) {
    if (allowNoRoot) skip += missingRoot;
    else fail += missingRoot;
  }
  const line = `${pass} passed, ${fail} failed` + (skip > 0 ? `, ${skip} skipped` : '');
  // CI shows only the end of the output: name what failed right above the closing line.
  const summary = failures.render();
  if (summary) process.stdout.write(`\n${summary}`);
  process.stdout.write(`\n${line}\n`);
  process.exit(fail > 0 ? 1 : 0);
});

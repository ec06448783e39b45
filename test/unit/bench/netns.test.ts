// SPDX-License-Identifier: Apache-2.0
// Unit tests for the pure parts of the bench's netns group: which ztunnel build is measured and
// when dist is stale (bench/ztunnel-build.ts), which namespaces the last-resort sweep may touch
// and the ztunnel log summary (bench/paths/pods.ts).
import t from 'tap';
import { ownNamespaces, ownTestbedPrefix, summarizeLogProblems } from '../../../bench/paths/pods.ts';
import { distPathFor, entryKind, staleSources, ZTUNNEL_ENTRY_ENV } from '../../../bench/ztunnel-build.ts';

t.test('dist paths follow the tsconfig outDirs', async (t) => {
  t.equal(distPathFor('ztunnel/src/main.ts'), 'dist/ztunnel/src/main.js');
  t.equal(distPathFor('src/shared/hbone/client.ts'), 'dist/src/shared/hbone/client.js');
});

t.test('stale: missing or older output; equal mtime is fresh', async (t) => {
  t.same(
    staleSources([
      { source: 'a.ts', sourceMtimeMs: 10, outputMtimeMs: 10 },
      { source: 'b.ts', sourceMtimeMs: 10, outputMtimeMs: 9 },
      { source: 'c.ts', sourceMtimeMs: 10, outputMtimeMs: undefined },
      { source: 'd.ts', sourceMtimeMs: 10, outputMtimeMs: 11 },
    ]),
    ['b.ts', 'c.ts'],
  );
});

t.test('entry kind: dist by default, source on request, anything else refused', async (t) => {
  t.equal(entryKind({}), 'js');
  t.equal(entryKind({ [ZTUNNEL_ENTRY_ENV]: '' }), 'js');
  t.equal(entryKind({ [ZTUNNEL_ENTRY_ENV]: 'ts' }), 'ts');
  t.throws(() => entryKind({ [ZTUNNEL_ENTRY_ENV]: 'dist' }), /expected js .* or ts/);
});

t.test('the sweep touches only this process’s test beds, pods before nodes before the fabric', async (t) => {
  const pid = 12345;
  const p = ownTestbedPrefix(pid);
  t.equal(p, 'amb009ix');
  const names = [
    `${p}0-fab`,
    `${p}0-n0`,
    `${p}0-p-plain-client`,
    `amb009iy0-n0`,
    `${p}1-p-mesh-server`,
    'other',
  ];
  t.same(ownNamespaces(names, pid), [`${p}0-p-plain-client`, `${p}1-p-mesh-server`, `${p}0-n0`, `${p}0-fab`]);
});

t.test('ztunnel log problems are counted by level, message, direction and error', async (t) => {
  const line = (level: string, error?: string): string =>
    JSON.stringify({
      level,
      message: 'connection complete',
      direction: 'outbound',
      ...(error ? { error } : {}),
    });
  const summary = summarizeLogProblems([
    line('info'),
    line('error', 'read ECONNRESET'),
    line('error', 'read ECONNRESET'),
    line('warn', 'refused'),
    '{"level":"error" not json',
  ]);
  t.equal(summary[0], '2× error connection complete (outbound): read ECONNRESET');
  t.equal(summary.length, 3);
  t.ok(summary.some((s) => s.startsWith('1× {"level":"error" not json')));
});

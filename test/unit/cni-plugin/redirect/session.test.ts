// SPDX-License-Identifier: Apache-2.0
// CommandSession (cni-plugin/src/redirect/exec.ts): one shell process runs batches of commands
// and hands back each command's exit status, stdout and stderr, as separate processes would. No
// network namespace here (no root needed); the applier's use of it inside pod namespaces is
// tested in test/netns/redirect/apply.test.ts, with the number of processes per apply.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { CommandSession, findBinary, type BatchCommand } from '../../../../cni-plugin/src/redirect/exec.ts';

const SH = findBinary('sh') ?? '/bin/sh';
const CAT = findBinary('cat') ?? '/bin/cat';
const sh = (script: string): BatchCommand => ({ cmd: SH, args: ['-c', script] });

/** Processes this process starts while `f` runs. */
async function spawnsDuring<T>(f: () => Promise<T>): Promise<{ value: T; spawns: number }> {
  let spawns = 0;
  const onSpawn = (): void => {
    spawns++;
  };
  subscribe('child_process', onSpawn);
  try {
    return { value: await f(), spawns };
  } finally {
    unsubscribe('child_process', onSpawn);
  }
}

t.test('every command gets its own status, stdout and stderr; one process for all batches', async (t) => {
  const { value: results, spawns } = await spawnsDuring(async () => {
    const s = CommandSession.open({ timeoutMs: 10_000 });
    try {
      const first = await s.run([
        sh('printf "one\\ntwo\\n"; printf "err1" >&2'),
        sh('printf "no newline at the end"; exit 3'),
        sh(':'),
      ]);
      const second = await s.run([sh('echo again'), sh('kill -TERM $$')]);
      return [...first, ...second];
    } finally {
      await s.close();
    }
  });
  t.equal(spawns, 1, 'two batches, five commands, one process');
  t.match(results[0], { code: 0, signal: null, stdout: 'one\ntwo\n', stderr: 'err1', timedOut: false });
  t.match(results[1], { code: 3, stdout: 'no newline at the end', stderr: '' });
  t.match(results[2], { code: 0, stdout: '', stderr: '' });
  t.match(results[3], { code: 0, stdout: 'again\n' });
  t.match(results[4], { code: null, signal: 'SIGTERM' }, 'a command killed by a signal');
  t.match(results[0]?.command, new RegExp(`^${SH} -c `), 'the command line, for error messages');
});

t.test('input reaches stdin byte for byte, never expanded by the shell', async (t) => {
  const input = [
    'plain line',
    '$HOME `id` $(id) \'single\' "double" \\ backslash',
    'EOF',
    "AMBIENT_EOF_'",
    '@@ marker-looking 0 0',
    '',
    '*nat',
    'COMMIT',
  ].join('\n');
  const s = CommandSession.open();
  try {
    const [withNl, withoutNl, empty] = await s.run([
      { cmd: CAT, args: [], input: `${input}\n` },
      { cmd: CAT, args: [], input },
      { cmd: CAT, args: [], input: '' },
    ]);
    t.equal(withNl?.stdout, `${input}\n`);
    t.equal(withoutNl?.stdout, `${input}\n`, 'a final newline is added (here-documents end in one)');
    t.equal(empty?.stdout, '');
    const [noInput] = await s.run([{ cmd: CAT, args: [] }]);
    t.match(
      noInput,
      { code: 0, stdout: '' },
      'without input, stdin is /dev/null (the script is not readable)',
    );
  } finally {
    await s.close();
  }
});

t.test('stopOnFailure: nothing after the first failure runs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'session-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const s = CommandSession.open();
  try {
    const r = await s.run([sh('echo a'), sh('echo bad >&2; exit 1'), sh(`touch ${join(dir, 'ran')}`)], {
      stopOnFailure: true,
    });
    t.match(r[0], { code: 0, stdout: 'a\n' });
    t.match(r[1], { code: 1, stderr: 'bad\n' });
    t.equal(r[2], undefined, 'not run');
    const after = await s.run([sh(`test -e ${join(dir, 'ran')} && echo ran || echo not-ran`)]);
    t.equal(after[0]?.stdout, 'not-ran\n', 'really not run; and the session goes on');
  } finally {
    await s.close();
  }
});

t.test('skipWhenEmpty: an empty listing file saves the command', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'session-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const empty = join(dir, 'empty');
  const full = join(dir, 'full');
  writeFileSync(empty, '');
  writeFileSync(full, 'nat'); // no final newline, as a proc file may print
  const s = CommandSession.open();
  try {
    const [skipped, ran, missing] = await s.run([
      { ...sh('echo ran'), skipWhenEmpty: empty },
      { ...sh('echo ran'), skipWhenEmpty: full },
      { ...sh('echo ran'), skipWhenEmpty: join(dir, 'absent') },
    ]);
    t.match(skipped, { code: 0, stdout: '', stderr: '' }, 'empty file: not run, empty output, status 0');
    t.match(ran, { code: 0, stdout: 'ran\n' }, 'non-empty file: run');
    t.match(missing, { code: 0, stdout: 'ran\n' }, 'unreadable file: run (it decides)');
  } finally {
    await s.close();
  }
});

t.test('a batch past its deadline kills the shell and the command it runs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'session-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pidFile = join(dir, 'pid');
  const s = CommandSession.open({ timeoutMs: 400 });
  const started = performance.now();
  const r = await s.run([sh('echo before'), sh(`echo $$ > ${pidFile}; exec sleep 30`), sh('echo after')]);
  t.ok(performance.now() - started < 5_000, 'ended at the deadline, not after the sleep');
  t.match(r[0], { code: 0, stdout: 'before\n' });
  t.match(r[1], { code: null, timedOut: true, signal: 'SIGKILL' });
  t.equal(r[2], undefined);
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  // Gone, or a zombie waiting for whoever adopted it to reap it.
  const running = (): boolean => {
    try {
      return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  };
  let alive = running();
  for (let i = 0; i < 50 && alive; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    alive = running();
  }
  t.notOk(alive, 'the sleeping command was killed with the shell (its process group)');
  t.equal(s.dead, true, 'the session says it is dead');
  const again = await s.run([sh('echo x')]);
  t.match(again[0], { code: null }, 'a dead session reports every later command as not having run');
  await s.close();
  await t.rejects(s.run([sh('echo x')]), /closed/, 'a closed session refuses new batches');
});

t.test('a shell that dies mid-batch reports no success for what it did not run', async (t) => {
  const s = CommandSession.open();
  const r = await s.run([
    sh('echo one'),
    { cmd: '/bin/sh', args: ['-c', 'kill -TERM $PPID; sleep 5'] },
    sh('echo three'),
  ]);
  t.match(r[0], { code: 0, stdout: 'one\n' });
  t.not(r[1]?.code, 0, 'the command the shell died under is not a success');
  t.equal(r[2], undefined, 'the rest did not run');
  t.equal(s.dead, true);
  const killed = CommandSession.open();
  const z = await killed.run([sh('echo a'), { cmd: '/bin/sh', args: ['-c', 'kill -KILL $PPID'] }]);
  t.match(z[0], { code: 0 });
  t.not(z[1]?.code, 0);
  await s.close();
  await killed.close();
});

t.test(
  'output is searched in linear time and capped: a flood kills the session, the batch fails',
  async (t) => {
    const s = CommandSession.open({ maxOutputBytes: 4 * 1024 * 1024 });
    // Many small chunks, with text that looks like a marker but carries no nonce.
    const [ok] = await s.run([
      sh("i=0; while [ $i -lt 2000 ]; do printf '\\n@@ffff 0 0\\nline %d\\n' $i; i=$((i+1)); done"),
    ]);
    t.equal(ok?.code, 0);
    t.equal(
      ok?.stdout.split('\n').filter((l) => l.startsWith('line ')).length,
      2000,
      'every line, fake markers kept as text',
    );
    const started = performance.now();
    const [flood, after] = await s.run([sh('head -c 8000000 /dev/zero | tr "\\0" a'), sh('echo after')]);
    t.ok(performance.now() - started < 10_000, 'killed promptly');
    t.not(flood?.code, 0, 'the flooding command failed');
    t.match(flood?.stderr, /printed more than 4194304 bytes/, 'and says why');
    t.equal(after, undefined, 'the rest did not run');
    t.equal(s.dead, true);
    await s.close();
  },
);

t.test('a netns nsenter cannot enter: the first command reports why, the rest did not run', async (t) => {
  const s = CommandSession.open({ netnsPath: '/nonexistent/netns' });
  const r = await s.run([sh('echo a'), sh('echo b')]);
  await s.close();
  t.match(r[0], { code: 1, signal: null, stdout: '', stderr: /nonexistent/ });
  t.match(r[0]?.command, /nsenter --net=\/nonexistent\/netns -- /);
  t.equal(r[1], undefined);
});

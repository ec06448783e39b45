// SPDX-License-Identifier: Apache-2.0
// watchFile's fallback: when the directory cannot be watched (here: it does not exist yet; in
// production an inotify limit), the file is re-read on a timer, so a change still arrives. The
// watched path is covered through its users (static-config.test.ts, the CRL tests).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { watchFile } from '../../../src/shared/watch-file.ts';
import { waitFor } from '../../helpers/wait.ts';

t.test('no watch possible: the error says so, and the file is picked up by polling', async (t) => {
  const dir = join(t.testdir(), 'later');
  const path = join(dir, 'value.txt');
  const values: string[] = [];
  const errors: Error[] = [];
  const w = watchFile(
    path,
    {
      what: 'value file',
      parse: (text) => {
        if (text.trim() === 'bad') throw new Error('bad value');
        return text.trim();
      },
      onValue: (v) => values.push(v),
      onError: (e) => errors.push(e),
      error: (message, cause) => new Error(message, { cause }),
    },
    { pollMs: 50, debounceMs: 5 },
  );
  t.teardown(() => w.close());
  await w.ready;
  t.match(errors[0]?.message, /cannot watch .*later .*ENOENT.*; re-reading value\.txt every 50 ms instead/);
  t.equal(w.lastGood(), undefined);

  mkdirSync(dir);
  writeFileSync(path, 'one\n');
  await waitFor(() => values.length === 1, 'the first value, by polling', 2000);
  t.equal(w.lastGood(), 'one');
  writeFileSync(path, 'bad\n');
  await waitFor(() => errors.some((e) => e.message === 'bad value'), 'the bad version reported', 2000);
  t.equal(w.lastGood(), 'one', 'the last good value stays');
  writeFileSync(path, 'two\n');
  await waitFor(() => values.length === 2, 'the next value', 2000);
  t.same(values, ['one', 'two']);

  w.close();
  writeFileSync(path, 'three\n');
  await new Promise((r) => setTimeout(r, 200));
  t.same(values, ['one', 'two'], 'nothing after close()');
});

// SPDX-License-Identifier: Apache-2.0
// StreamWriter (src/controller/xds/stream-writer.ts): one write at a time in the stream's order,
// small ones at once and large ones through the gate; `finish` ends after the large write in
// progress (never cutting a message short), at once otherwise, or when that write goes overdue;
// `close` stops everything and gives the gate place back.
import FakeTimers from '@sinonjs/fake-timers';
import t from 'tap';
import type { Test } from 'tap';
import { StreamWriter } from '../../../../src/controller/xds/stream-writer.ts';
import { WriteGate } from '../../../../src/controller/xds/write-gate.ts';

/** A response is its name; names starting with L are large (100 bytes), others 1 byte. */
function setup(t: Test, holdMs = 1000) {
  const clock = FakeTimers.install({ toFake: ['setTimeout', 'clearTimeout'] });
  t.teardown(() => clock.uninstall());
  const gate = new WriteGate({ largeResponseBytes: 50, budgetBytes: 1000, holdMs });
  const log: string[] = [];
  /** Completes the write in progress. */
  let complete: (() => void) | undefined;
  const w = new StreamWriter<string>({
    gate,
    length: (r) => (r.startsWith('L') ? 100 : 1),
    write: (r, written) => {
      log.push(`small ${r}`);
      complete = written;
    },
    writeLarge: (r, written) => {
      log.push(`large ${r}`);
      complete = written;
      return () => log.push(`stop ${r}`);
    },
    onOverdue: () => log.push('overdue'),
  });
  const done = (): void => {
    const c = complete;
    complete = undefined;
    c?.();
  };
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  return { clock, gate, log, w, done, turn };
}

t.test('writes one at a time, in order; a small response waits behind a large one', async (t) => {
  const { log, w, done, turn } = setup(t);
  w.send('s1');
  w.send('L2');
  w.send('s3');
  t.same(log, ['small s1'], 'one write at a time');
  done();
  t.same(log, ['small s1'], 'the large one waits for the gate');
  await turn();
  t.same(log, ['small s1', 'large L2']);
  done();
  t.same(log, ['small s1', 'large L2', 'small s3']);
});

t.test('finish during a small write ends at once and drops what was queued', async (t) => {
  const { log, w, done } = setup(t);
  w.send('s1');
  w.send('s2');
  let ended = 0;
  w.finish(() => ended++);
  t.equal(ended, 1, 'grpc-js sends the status after its own write');
  done();
  w.send('s3');
  t.same(log, ['small s1'], 's2 was dropped, s3 refused');
});

t.test('finish during a large write ends only once the message is out', async (t) => {
  const { gate, log, w, done, turn } = setup(t);
  w.send('L1');
  w.send('s2');
  await turn();
  let ended = 0;
  w.finish(() => ended++);
  t.equal(ended, 0, 'not while the message is being written');
  done();
  t.equal(ended, 1);
  t.same(log, ['large L1'], 'the queued response was dropped');
  t.equal(gate.writingBytes, 0, 'and the place given back');
});

t.test('finish while the large write waits at the gate ends at once and leaves the queue', async (t) => {
  const { gate, log, w, turn } = setup(t);
  w.send('L1');
  let ended = 0;
  w.finish(() => ended++);
  t.equal(ended, 1);
  await turn();
  t.same(log, [], 'it never starts');
  t.equal(gate.waiting, 0);
});

t.test('finish waits for a large write only until it goes overdue', async (t) => {
  const { clock, log, w, turn } = setup(t, 100);
  w.send('L1');
  await turn();
  let ended = 0;
  w.finish(() => ended++);
  clock.tick(100);
  t.equal(ended, 1);
  t.same(log, ['large L1', 'overdue', 'stop L1']);
});

t.test('close stops the large write and gives its place back to the next stream', async (t) => {
  const { gate, log, w, turn } = setup(t);
  w.send('L1');
  await turn();
  t.equal(gate.writingBytes, 100);
  w.close();
  t.same(log, ['large L1', 'stop L1']);
  t.equal(gate.writingBytes, 0);
  w.send('s2');
  t.same(log, ['large L1', 'stop L1'], 'nothing is written after close');
});

t.test(
  'a large write that completes before writeLarge returns does not leave the stream stuck',
  async (t) => {
    const clock = FakeTimers.install({ toFake: ['setTimeout', 'clearTimeout'] });
    t.teardown(() => clock.uninstall());
    const log: string[] = [];
    const w = new StreamWriter<string>({
      gate: new WriteGate({ largeResponseBytes: 50 }),
      length: (r) => (r.startsWith('L') ? 100 : 1),
      write: (r, written) => {
        log.push(`small ${r}`);
        written();
      },
      writeLarge: (r, written) => {
        log.push(`large ${r}`);
        written();
        return () => log.push(`stop ${r}`);
      },
      onOverdue: () => log.push('overdue'),
    });
    w.send('L1');
    w.send('s2');
    await new Promise((resolve) => setImmediate(resolve));
    t.same(log, ['large L1', 'small s2']);
    let ended = 0;
    w.finish(() => ended++);
    t.equal(ended, 1, 'nothing is in progress');
    t.notOk(log.includes('stop L1'), 'the finished write is not stopped');
  },
);

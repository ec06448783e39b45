// SPDX-License-Identifier: Apache-2.0
// Waiting for a condition in tests instead of sleeping: checks every 10 ms, rejects naming what
// it waited for once `ms` has passed.
export function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 10);
    };
    tick();
  });
}

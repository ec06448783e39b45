// SPDX-License-Identifier: Apache-2.0
// Waiting for a condition in tests instead of sleeping: checks every `everyMs` (default 10 ms),
// rejects naming what it waited for once `ms` has passed, or with the condition's own error. The
// condition may be asynchronous (an HTTP probe, a command run in a netns).
export function waitFor(
  cond: () => boolean | Promise<boolean>,
  what: string,
  ms = 5000,
  everyMs = 10,
): Promise<void> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      Promise.resolve()
        .then(cond)
        .then((ok) => {
          if (ok) resolve();
          else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
          else setTimeout(tick, everyMs);
        }, reject);
    };
    tick();
  });
}

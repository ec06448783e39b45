// SPDX-License-Identifier: Apache-2.0
// Jittered exponential backoff, the one formula every retry loop of the mesh uses (certificate
// refresh, Kubernetes watch restarts, the controller's serving certificate): the delay after
// `failures` consecutive failures (0-based) is initial·2^failures, capped at `maxMs`, then
// multiplied by a factor in [1 − jitter, 1 + jitter) so that many clients failing together do
// not retry together.

/** ±20 %, ztunnel's and client-go's choice. */
export const BACKOFF_JITTER = 0.2;

export function jitteredBackoffMs(
  failures: number,
  initialMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  // The exponent is capped so 2 ** n stays finite; the cap at maxMs applies long before.
  const base = Math.min(initialMs * 2 ** Math.min(failures, 62), maxMs);
  return Math.max(0, Math.round(base * (1 + (random() * 2 - 1) * BACKOFF_JITTER)));
}

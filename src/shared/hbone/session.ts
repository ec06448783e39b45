// SPDX-License-Identifier: Apache-2.0
// Per-session upkeep shared by the HBONE client and server (ambient-protocols.md §1.4): the
// connection-level receive window, and the HTTP/2 PING keepalive (first PING after 10 s, then
// every 10 s; the connection is dropped when no PONG arrives within 20 s; checklist F.76 / I.98:
// a dead peer must be noticed without relying on TCP keepalive).
import type http2 from 'node:http2';
import { HboneError } from './errors.ts';

/**
 * Starts the keepalive loop on `session`. One timer per session: it waits `intervalMs`, sends a
 * PING, then waits up to `timeoutMs` for the PONG; on a PONG the next round starts. A missing PONG
 * destroys the session with HBONE_ERR_PING_TIMEOUT (after telling `onDead`). The loop stops by itself when the session
 * closes; the returned function stops it earlier. Timers are unref'ed: keepalive never holds the
 * process open.
 */
export function startKeepalive(
  session: http2.Http2Session,
  intervalMs: number,
  timeoutMs: number,
  onDead?: (err: HboneError) => void,
): () => void {
  let stopped = false;
  let round = 0;
  let timer: NodeJS.Timeout | undefined;
  const stop = (): void => {
    stopped = true;
    clearTimeout(timer);
  };

  const onTimeout = (): void => {
    if (stopped || session.destroyed) return;
    const err = new HboneError(
      'HBONE_ERR_PING_TIMEOUT',
      `HBONE peer did not answer an HTTP/2 PING within ${timeoutMs} ms; dropping the connection (the peer may be gone or its network path blackholed)`,
    );
    // Before destroy(): its streams close synchronously, the session 'error' only comes later.
    onDead?.(err);
    session.destroy(err);
  };

  const sendPing = (): void => {
    if (stopped || session.destroyed || session.closed) return;
    const mine = ++round;
    timer = setTimeout(onTimeout, timeoutMs);
    timer.unref();
    try {
      // Returns false when too many pings are outstanding (maxOutstandingPings); the deadline
      // keeps running then: a peer that answers none of them is dead either way.
      session.ping((err) => {
        // An error means the ping was cancelled (session closing); the 'close' handler stops us.
        if (err !== null || stopped || mine !== round) return;
        clearTimeout(timer);
        schedule();
      });
    } catch {
      // The session is being torn down; 'close' stops the loop.
    }
  };

  const schedule = (): void => {
    if (stopped) return;
    timer = setTimeout(sendPing, intervalMs);
    timer.unref();
  };

  schedule();
  session.once('close', stop);
  return stop;
}

/**
 * Raises the connection-level receive window. It is not a SETTINGS value: Node sends a
 * WINDOW_UPDATE on stream 0 (RFC 9113 §6.9.2; PERFORMANCE.md B.5: needed on both sides).
 */
export function setConnectionWindow(session: http2.Http2Session, bytes: number): void {
  const apply = (): void => {
    if (!session.destroyed) session.setLocalWindowSize(bytes);
  };
  if (session.connecting) session.once('connect', apply);
  else apply();
}

// SPDX-License-Identifier: Apache-2.0
// The upstream (application) connect of an HBONE server, for onConnect handlers: the 200 is sent
// only after this connect succeeds; a refusal or a timeout becomes 503 (ambient-protocols.md §1.3
// status table; ztunnel's upstream connect timeout is 10 s, security-and-reliability.md §3.1,
// checklist G.87).
import net from 'node:net';
import { HboneError } from './errors.ts';

export type ConnectUpstreamOptions = net.NetConnectOpts & {
  /** Give up after this long (HBONE_ERR_UNAVAILABLE). */
  timeoutMs: number;
  /** Abort the attempt (e.g. InboundConnect.signal: the CONNECT stream was cancelled). */
  signal?: AbortSignal;
};

function target(opts: net.NetConnectOpts): string {
  if ('path' in opts) return opts.path;
  const host = opts.host ?? 'localhost';
  return host.includes(':') ? `[${host}]:${opts.port}` : `${host}:${opts.port}`;
}

/**
 * Connects to the application. Resolves with a connected socket (TCP_NODELAY, allowHalfOpen so
 * that relay() can half-close) or rejects with HboneError HBONE_ERR_UNAVAILABLE (status 503) on
 * refusal, error or timeout, and HBONE_ERR_ABORTED when `signal` fires; the socket is destroyed
 * in every failure case.
 */
export function connectUpstream(opts: ConnectUpstreamOptions): Promise<net.Socket> {
  const { timeoutMs, signal, ...connectOpts } = opts;
  const where = target(connectOpts);
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(new HboneError('HBONE_ERR_ABORTED', `upstream connect to ${where} aborted before it started`));
      return;
    }
    // TCP keepalive on every proxied socket: 180 s (ambient-protocols.md §1.4).
    const socket = net.connect({
      noDelay: true,
      allowHalfOpen: true,
      keepAlive: true,
      keepAliveInitialDelay: 180_000,
      ...connectOpts,
    });
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const failWith = (err: HboneError): void => {
      cleanup();
      // Swallow late errors of the discarded socket.
      socket.on('error', () => undefined);
      socket.destroy();
      reject(err);
    };
    const onConnect = (): void => {
      cleanup();
      resolve(socket);
    };
    const onError = (err: Error): void => {
      failWith(
        new HboneError(
          'HBONE_ERR_UNAVAILABLE',
          `upstream connect to ${where} failed: ${err.message}; check that the application listens on that address and port (not only on 127.0.0.1)`,
          { cause: err, status: 503 },
        ),
      );
    };
    const onAbort = (): void => {
      failWith(
        new HboneError('HBONE_ERR_ABORTED', `upstream connect to ${where} aborted`, {
          cause: signal?.reason,
        }),
      );
    };
    const timer = setTimeout(() => {
      failWith(
        new HboneError(
          'HBONE_ERR_UNAVAILABLE',
          `upstream connect to ${where} timed out after ${timeoutMs} ms; check that the application is running and not blocked by a firewall`,
          { status: 503 },
        ),
      );
    }, timeoutMs);
    socket.once('connect', onConnect);
    socket.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

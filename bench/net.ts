// SPDX-License-Identifier: Apache-2.0
// Small network helpers for path set-up: a free loopback port for tools that need a fixed port
// in a config file (stunnel), and a readiness probe that pushes one echo (or reads the first
// bulk bytes) through a freshly started path before it is measured.
import { connect, createServer } from 'node:net';
import { MeshError } from '../src/shared/errors.ts';
import type { Endpoint } from './types.ts';

export class PathNotReadyError extends MeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BENCH_ERR_NOT_READY', message, options);
  }
}

/**
 * A port that was free a moment ago on `host`. Racy by nature (another process may take it
 * before the tool binds it): callers that can should retry their start on a bind failure.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      srv.close(() => {
        if (addr === null || typeof addr === 'string') reject(new Error('no TCP address'));
        else resolve(addr.port);
      });
    });
  });
}

const PROBE = Buffer.from('bench-ready-probe\n');
const PROBE_TIMEOUT_MS = 3000;

/** One attempt: `echo` sends a probe and waits for it back; `source` waits for any bytes. */
function probeOnce(target: Endpoint, mode: 'echo' | 'source'): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: target.host, port: target.port, noDelay: true });
    let got = 0;
    const done = (err?: Error): void => {
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    sock.setTimeout(PROBE_TIMEOUT_MS, () => done(new Error('probe timed out')));
    sock.on('error', done);
    sock.on('end', () => done(new Error('closed before the probe completed')));
    sock.on('connect', () => {
      if (mode === 'echo') sock.write(PROBE);
    });
    sock.on('data', (b: Buffer) => {
      got += b.length;
      if (mode === 'source' || got >= PROBE.length) done();
    });
  });
}

/**
 * Retries a probe through a path until it works or `timeoutMs` passes; bounded so that a path
 * that never comes up fails its start instead of hanging the run.
 */
export async function waitForService(
  target: Endpoint,
  mode: 'echo' | 'source',
  timeoutMs: number,
  isAlive: () => boolean = () => true,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (!isAlive())
      throw new PathNotReadyError(`process exited before ${target.host}:${target.port} was ready`);
    try {
      await probeOnce(target, mode);
      return;
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new PathNotReadyError(
    `${mode} service at ${target.host}:${target.port} not ready after ${timeoutMs} ms`,
    {
      cause: last,
    },
  );
}

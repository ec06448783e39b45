// SPDX-License-Identifier: Apache-2.0
// Small network helpers for path set-up: a free loopback port for tools that need a fixed port
// in a config file (stunnel, nginx, sockperf), and a readiness probe that pushes one echo (reads
// the first bulk bytes, fetches the 1 KiB file, holds a connection) through a freshly started
// path before it is measured.
import { connect, createServer } from 'node:net';
import { MeshError } from '../src/shared/errors.ts';
import { HTTP_FILE, HTTP_FILE_SIZE } from './b1.ts';
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
/** `open` mode: a connection that stays up this long was accepted by the far end, not refused. */
const OPEN_HOLD_MS = 300;
/** `http` mode: a request for the 1 KiB file nginx serves (bench/b1.ts). */
const HTTP_PROBE = Buffer.from(`GET /${HTTP_FILE} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n`);
const HTTP_OK = /^HTTP\/1\.[01] 200 /;

/**
 * How a readiness probe checks a service: `echo` sends a probe and waits for it back, `source`
 * waits for any bytes, `http` fetches the 1 KiB file and wants a 200 with the whole body,
 * `open` (sockperf's server, which echoes only its own framing) wants the connection to stay
 * up for a moment: a tunnel whose far end cannot reach the server closes or resets it.
 */
export type ProbeMode = 'echo' | 'source' | 'http' | 'open';
export const PROBE_MODES: readonly ProbeMode[] = ['echo', 'source', 'http', 'open'];

/** One attempt of a readiness probe (see ProbeMode). */
function probeOnce(target: Endpoint, mode: ProbeMode): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: target.host, port: target.port, noDelay: true });
    let got = 0;
    let http = '';
    let settled = false;
    let holdTimer: NodeJS.Timeout | undefined;
    const done = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(holdTimer);
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    sock.setTimeout(PROBE_TIMEOUT_MS, () => done(new Error('probe timed out')));
    sock.on('error', done);
    sock.on('end', () => {
      if (mode === 'http' && HTTP_OK.test(http) && got > HTTP_FILE_SIZE) done();
      else
        done(
          new Error(
            mode === 'http'
              ? `bad HTTP answer: ${http.split('\r\n')[0] ?? ''}`
              : 'closed before the probe completed',
          ),
        );
    });
    sock.on('connect', () => {
      if (mode === 'echo') sock.write(PROBE);
      else if (mode === 'http') sock.write(HTTP_PROBE);
      else if (mode === 'open') holdTimer = setTimeout(() => done(), OPEN_HOLD_MS);
    });
    sock.on('data', (b: Buffer) => {
      got += b.length;
      if (mode === 'http') {
        if (http.length < 256) http += b.toString('latin1');
        return; // judged at the end: Connection: close
      }
      if (mode === 'open') return;
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
  mode: ProbeMode,
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

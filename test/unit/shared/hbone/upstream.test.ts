// SPDX-License-Identifier: Apache-2.0
// connectUpstream (src/shared/hbone/upstream.ts): refusal and timeout become 503-class
// HBONE_ERR_UNAVAILABLE, abort becomes HBONE_ERR_ABORTED, success gives a half-close-capable socket.
import net from 'node:net';
import { once } from 'node:events';
import t from 'tap';
import { HboneError } from '../../../../src/shared/hbone/errors.ts';
import { connectUpstream } from '../../../../src/shared/hbone/upstream.ts';
import { startEchoServer } from '../../../helpers/hbone.ts';

async function failure(p: Promise<unknown>): Promise<HboneError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof HboneError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

/** A name lookup that never answers stands in for a blackholed SYN (no packet leaves the host). */
const neverResolves = (): void => undefined;

t.test('success: connected, allowHalfOpen', async (t) => {
  const echo = await startEchoServer();
  t.teardown(() => echo.close());
  const s = await connectUpstream({ host: '127.0.0.1', port: echo.port, timeoutMs: 2000 });
  t.equal(s.remotePort, echo.port);
  t.equal(s.allowHalfOpen, true);
  s.end('x');
  const [d] = (await once(s, 'data')) as [Buffer];
  t.equal(d.toString(), 'x', 'still reads after our FIN');
  s.destroy();
});

t.test('refused → HBONE_ERR_UNAVAILABLE (503)', async (t) => {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  const err = await failure(connectUpstream({ host: '127.0.0.1', port, timeoutMs: 2000 }));
  t.equal(err.code, 'HBONE_ERR_UNAVAILABLE');
  t.equal(err.status, 503);
  t.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}.*ECONNREFUSED`));
});

t.test('timeout → HBONE_ERR_UNAVAILABLE (503)', async (t) => {
  const started = performance.now();
  const err = await failure(
    connectUpstream({ host: 'upstream.invalid', port: 80, timeoutMs: 100, lookup: neverResolves }),
  );
  const ms = performance.now() - started;
  t.equal(err.code, 'HBONE_ERR_UNAVAILABLE');
  t.match(err.message, /timed out after 100 ms/);
  t.ok(ms >= 95 && ms < 3000, `after ${ms.toFixed(0)} ms`);
});

t.test('abort → HBONE_ERR_ABORTED, before or during the attempt', async (t) => {
  const pre = new AbortController();
  pre.abort();
  t.equal(
    (await failure(connectUpstream({ host: '127.0.0.1', port: 1, timeoutMs: 1000, signal: pre.signal })))
      .code,
    'HBONE_ERR_ABORTED',
  );
  const ac = new AbortController();
  const p = connectUpstream({
    host: 'upstream.invalid',
    port: 80,
    timeoutMs: 5000,
    lookup: neverResolves,
    signal: ac.signal,
  });
  setTimeout(() => ac.abort(), 20);
  const started = performance.now();
  t.equal((await failure(p)).code, 'HBONE_ERR_ABORTED');
  t.ok(performance.now() - started < 2000, 'promptly');
});

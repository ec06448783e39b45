// SPDX-License-Identifier: Apache-2.0
// relay() (src/shared/hbone/relay.ts) between two plain TCP sockets: byte counts, backpressure,
// half-close per direction, reset propagation, already-closed sides. The HTTP/2 side is covered
// end to end in tunnel.test.ts.
import net from 'node:net';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { RELAY_BUFFER_BYTES, relay, type RelayResult } from '../../../../src/shared/hbone/relay.ts';
import { PassThrough } from 'node:stream';

interface Rig {
  /** The application end (talks to the relay's `a`). */
  app: net.Socket;
  /** The upstream end (talks to the relay's `b`). */
  up: net.Socket;
  result: Promise<RelayResult>;
  a: net.Socket;
  b: net.Socket;
}

/** app ⇄ a =relay= b ⇄ up, all on loopback. */
async function rig(
  opts: { pauseOnConnect?: boolean; before?: (a: net.Socket, b: net.Socket) => void } = {},
): Promise<Rig> {
  const accept = async (): Promise<[net.Socket, net.Socket]> => {
    const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: opts.pauseOnConnect ?? false });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const client = net.connect({
      port: (srv.address() as net.AddressInfo).port,
      host: '127.0.0.1',
      allowHalfOpen: true,
    });
    const [server] = (await once(srv, 'connection')) as [net.Socket];
    await once(client, 'connect').catch(() => undefined);
    srv.close();
    return [client, server];
  };
  const [app, a] = await accept();
  const [b, up] = await accept();
  for (const s of [app, up]) s.on('error', () => undefined);
  opts.before?.(a, b);
  return { app, up, a, b, result: relay(a, b) };
}

function collect(s: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  return new Promise((resolve) => s.once('end', () => resolve(Buffer.concat(chunks))));
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('byte-exact both ways with counts; clean end', async (t) => {
  const r = await rig();
  const toUp = randomBytes(3 * 1024 * 1024 + 7);
  const toApp = randomBytes(1024 * 1024 + 1);
  const gotUp = collect(r.up);
  const gotApp = collect(r.app);
  r.app.end(toUp);
  r.up.end(toApp);
  t.equal(sha(await gotUp), sha(toUp));
  t.equal(sha(await gotApp), sha(toApp));
  const res = await r.result;
  t.same(res, { bytesAToB: toUp.length, bytesBToA: toApp.length });
  t.ok(r.a.destroyed && r.b.destroyed, 'both relay sockets closed');
});

t.test('half-close: FIN from the app, upstream keeps sending', async (t) => {
  const r = await rig();
  const reply = randomBytes(2 * 1024 * 1024);
  const gotApp = collect(r.app);
  r.up.on('data', () => undefined);
  r.app.end('request');
  await once(r.up, 'end');
  t.pass('upstream saw the FIN');
  // Still able to send after the app's FIN.
  r.up.end(reply);
  t.equal(sha(await gotApp), sha(reply));
  const res = await r.result;
  t.equal(res.error, undefined);
  t.equal(res.bytesBToA, reply.length);
});

t.test('half-close: FIN from upstream first, app keeps sending', async (t) => {
  const r = await rig();
  const upload = randomBytes(2 * 1024 * 1024);
  const gotUp = collect(r.up);
  r.up.end('greeting'); // server-first protocol, then closes its sending side
  const gotApp = collect(r.app);
  t.equal((await gotApp).toString(), 'greeting', 'app saw the greeting and the FIN');
  r.app.end(upload);
  t.equal(sha(await gotUp), sha(upload));
  t.equal((await r.result).error, undefined);
});

t.test('reset propagation: RST on one side becomes RST on the other', async (t) => {
  for (const side of ['app', 'up'] as const) {
    const r = await rig();
    const [resetter, peer] = side === 'app' ? [r.app, r.up] : [r.up, r.app];
    peer.on('data', () => undefined);
    resetter.write('some bytes');
    await sleep(20);
    const started = performance.now();
    resetter.resetAndDestroy();
    const [err] = (await once(peer, 'error')) as [Error & { code?: string }];
    t.equal(err.code, 'ECONNRESET', `${side} reset → the other end sees ECONNRESET`);
    t.ok(performance.now() - started < 2000);
    const res = await r.result;
    t.ok(res.error, 'relay reports the error');
  }
});

t.test('a source accepted with pauseOnConnect still flows', async (t) => {
  let pausedAtStart = false;
  const r = await rig({ pauseOnConnect: true, before: (a) => (pausedAtStart = a.isPaused()) });
  t.equal(pausedAtStart, true, 'relay input starts paused');
  const got = collect(r.up);
  r.up.resume(); // the test's own end was accepted paused too
  r.app.end('paused at accept');
  t.equal((await got).toString(), 'paused at accept');
  r.up.end();
  await r.result;
});

t.test('a side already destroyed: the other is torn down, relay resolves', async (t) => {
  const r = await rig({ before: (a) => a.destroy() });
  const res = await r.result;
  t.ok(res.error, 'error reported');
  t.ok(r.b.destroyed, 'other side destroyed');
  const [err] = (await once(r.up, 'error').catch((e: unknown) => [e])) as [Error & { code?: string }];
  t.equal(err.code, 'ECONNRESET', 'and reset');
  r.app.destroy();
});

t.test('chunks that arrive in one tick leave for a TCP socket in one writev', async (t) => {
  // `src` stands in for an HTTP/2 stream, which delivers the DATA frames of one TLS read in one
  // tick; `b` is the TCP socket they are relayed to, `up` its peer.
  const srv = net.createServer({ allowHalfOpen: true }).listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const b = net.connect({
    port: (srv.address() as net.AddressInfo).port,
    host: '127.0.0.1',
    allowHalfOpen: true,
  });
  const [up] = (await once(srv, 'connection')) as [net.Socket];
  await once(b, 'connect').catch(() => undefined);
  srv.close();
  const calls: number[] = [];
  const spied = b as net.Socket & { _writev: (chunks: { chunk: Buffer }[], cb: () => void) => void };
  const origWritev = spied._writev.bind(b);
  spied._writev = (chunks, cb) => {
    calls.push(chunks.length);
    origWritev(chunks, cb);
  };
  const src = new PassThrough({ allowHalfOpen: true });
  const result = relay(src, b);
  const frames = [0, 1, 2, 3].map(() => randomBytes(16 * 1024));
  const got = collect(up);
  for (const f of frames) src.write(f);
  await sleep(50);
  t.same(calls, [4], 'four frames of one tick, one writev');
  src.write(frames[0]);
  src.end();
  t.equal(sha(await got), sha(Buffer.concat([...frames, frames[0]!])), 'bytes intact and in order');
  up.end();
  const res = await result;
  t.equal(res.error, undefined, 'clean end');
  t.equal(res.bytesAToB, 5 * 16 * 1024);
});

t.test('the source is paused once the destination holds RELAY_BUFFER_BYTES, resumed on drain', async (t) => {
  const r = await rig({ pauseOnConnect: true }); // `up` does not read: b's kernel buffers fill, then b's own buffer
  const total = 96 * RELAY_BUFFER_BYTES; // more than the kernel buffers of both loopback sockets take
  const payload = randomBytes(total);
  r.app.write(payload);
  const deadline = Date.now() + 10_000;
  while (!r.a.isPaused() && Date.now() < deadline) {
    await sleep(5);
  }
  t.ok(r.a.isPaused(), 'relay paused its source');
  t.ok(r.b.writableLength >= RELAY_BUFFER_BYTES, `destination holds ${r.b.writableLength} B before pausing`);
  t.ok(
    r.b.writableLength < RELAY_BUFFER_BYTES + 128 * 1024,
    `and not much more (${r.b.writableLength} B: one read past the limit at most)`,
  );
  const got = collect(r.up);
  r.up.resume();
  r.app.end();
  t.equal(sha(await got), sha(payload), 'everything arrives once the reader drains it');
  r.up.end();
  await r.result;
});

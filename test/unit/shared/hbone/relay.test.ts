// SPDX-License-Identifier: Apache-2.0
// relay() (src/shared/hbone/relay.ts) between two plain TCP sockets: byte counts, backpressure,
// half-close per direction, reset propagation, already-closed sides. The HTTP/2 side is covered
// end to end in tunnel.test.ts.
import net from 'node:net';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { relay, type RelayResult } from '../../../../src/shared/hbone/relay.ts';

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

// SPDX-License-Identifier: Apache-2.0
// End-to-end TCP semantics through an HBONE tunnel (checklist G.84-G.86, G.90): app socket →
// relay → HboneClient stream → mTLS HTTP/2 → HboneServer stream → relay → upstream socket.
// Byte integrity with sha256 over boundary sizes and parallel streams, half-close each way, and
// reset propagation each way (RST_STREAM CONNECT_ERROR ⇄ TCP RST).
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import type { HboneTunnel } from '../../../../src/shared/hbone/client.ts';
import {
  startEchoServer,
  startHbonePair,
  startTcpForwarder,
  startTcpServer,
} from '../../../helpers/hbone.ts';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function collect(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

async function appConnect(port: number): Promise<net.Socket> {
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await once(s, 'connect');
  return s;
}

t.test('byte integrity: boundary sizes both ways, in parallel on one session', async (t) => {
  const echo = await startEchoServer();
  const closed: { bytesIn: number; bytesOut: number; error?: Error }[] = [];
  const pair = await startHbonePair({ onTunnelClosed: (_r, res) => closed.push(res) });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const sizes = [
    0,
    1,
    16 * 1024 - 1,
    16 * 1024,
    16 * 1024 + 1,
    1024 * 1024 - 1,
    1024 * 1024,
    1024 * 1024 + 1,
  ];
  const run = async (size: number): Promise<void> => {
    const payload = randomBytes(size);
    const tunnel: HboneTunnel = await pair.connect(`127.0.0.1:${echo.port}`);
    const back = collect(tunnel.stream);
    tunnel.stream.end(payload);
    const got = await back;
    t.equal(got.length, size, `${size} B: length`);
    t.equal(sha(got), sha(payload), `${size} B: sha256`);
  };
  await Promise.all(sizes.map(run));
  t.equal(pair.client.stats().sessionsOpened, 1, 'all streams on one pooled session');
  t.ok(
    await (async () => {
      for (let i = 0; i < 100 && closed.length < sizes.length; i++) await sleep(10);
      return closed.length === sizes.length;
    })(),
  );
  const total = sizes.reduce((a, b) => a + b, 0);
  t.equal(
    closed.reduce((a, c) => a + c.bytesIn, 0),
    total,
    'onTunnelClosed bytesIn',
  );
  t.equal(
    closed.reduce((a, c) => a + c.bytesOut, 0),
    total,
    'onTunnelClosed bytesOut',
  );
  t.ok(
    closed.every((c) => c.error === undefined),
    'all ended cleanly',
  );
});

t.test('byte integrity through app sockets: 8 parallel 1 MiB+1 transfers', async (t) => {
  const echo = await startEchoServer();
  const pair = await startHbonePair();
  const fwd = await startTcpForwarder(pair, `127.0.0.1:${echo.port}`);
  t.teardown(async () => {
    await fwd.close();
    await pair.close();
    await echo.close();
  });
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      const payload = randomBytes(1024 * 1024 + 1);
      const app = await appConnect(fwd.port);
      const back = collect(app);
      app.end(payload);
      t.equal(sha(await back), sha(payload));
    }),
  );
});

t.test('half-close: app FIN first, upstream keeps streaming', async (t) => {
  const reply = randomBytes(2 * 1024 * 1024 + 3);
  let upstreamSawFin = false;
  const upstream = await startTcpServer((s) => {
    s.resume();
    s.on('end', () => {
      upstreamSawFin = true;
      s.end(reply);
    });
  });
  const pair = await startHbonePair();
  const fwd = await startTcpForwarder(pair, `127.0.0.1:${upstream.port}`);
  t.teardown(async () => {
    await fwd.close();
    await pair.close();
    await upstream.close();
  });
  const app = await appConnect(fwd.port);
  const back = collect(app);
  app.end('request then shutdown(SHUT_WR)');
  const got = await back;
  t.ok(upstreamSawFin, 'FIN → END_STREAM → FIN reached the upstream');
  t.equal(sha(got), sha(reply), 'every byte sent after the FIN arrived');
});

t.test('half-close: upstream FIN first, app keeps uploading', async (t) => {
  const upload = randomBytes(2 * 1024 * 1024 + 5);
  let received: Promise<Buffer> | undefined;
  const upstream = await startTcpServer((s) => {
    received = collect(s);
    s.end('220 greeting, then FIN');
  });
  const pair = await startHbonePair();
  const fwd = await startTcpForwarder(pair, `127.0.0.1:${upstream.port}`);
  t.teardown(async () => {
    await fwd.close();
    await pair.close();
    await upstream.close();
  });
  const app = await appConnect(fwd.port);
  const greeting = await collect(app);
  t.equal(greeting.toString(), '220 greeting, then FIN', 'server-first bytes and the FIN arrived');
  app.end(upload);
  t.ok(
    await (async () => {
      for (let i = 0; i < 200 && !received; i++) await sleep(10);
      return received !== undefined;
    })(),
  );
  t.equal(sha(await received!), sha(upload), 'upload after the peer FIN delivered');
});

t.test('upstream RST → RST_STREAM(CONNECT_ERROR) → app sees ECONNRESET', async (t) => {
  const upstream = await startTcpServer((s) => {
    s.write('partial');
    setTimeout(() => s.resetAndDestroy(), 50);
  });
  const pair = await startHbonePair();
  const fwd = await startTcpForwarder(pair, `127.0.0.1:${upstream.port}`);
  t.teardown(async () => {
    await fwd.close();
    await pair.close();
    await upstream.close();
  });
  // Raw tunnel: the stream is reset with CONNECT_ERROR (RFC 9113 §8.5).
  const tunnel = await pair.connect(`127.0.0.1:${upstream.port}`);
  tunnel.stream.resume();
  await new Promise((resolve) => tunnel.stream.once('close', resolve));
  t.equal(tunnel.stream.rstCode, http2.constants.NGHTTP2_CONNECT_ERROR, 'RST_STREAM code 0xa');
  // Through the app socket: ECONNRESET, not a clean EOF.
  const app = await appConnect(fwd.port);
  let data = '';
  app.on('data', (d: Buffer) => (data += d.toString()));
  let sawEnd = false;
  app.on('end', () => (sawEnd = true));
  const started = performance.now();
  const [err] = (await once(app, 'error')) as [Error & { code?: string }];
  t.equal(err.code, 'ECONNRESET');
  t.equal(sawEnd, false, 'no clean EOF before the reset');
  t.equal(data, 'partial');
  t.ok(performance.now() - started < 2000, 'observed promptly');
});

t.test('app RST mid-upload → RST_STREAM → upstream socket reset promptly', async (t) => {
  const upstreamErrors: string[] = [];
  let upstreamClosedAt = 0;
  let bytes = 0;
  const upstream = await startTcpServer((s) => {
    s.on('data', (d: Buffer) => (bytes += d.length));
    s.on('error', (e: Error & { code?: string }) => upstreamErrors.push(e.code ?? e.message));
    s.on('close', () => (upstreamClosedAt = performance.now()));
  });
  const pair = await startHbonePair();
  const fwd = await startTcpForwarder(pair, `127.0.0.1:${upstream.port}`);
  t.teardown(async () => {
    await fwd.close();
    await pair.close();
    await upstream.close();
  });
  const app = await appConnect(fwd.port);
  app.on('error', () => undefined);
  app.write(randomBytes(256 * 1024));
  for (let i = 0; i < 200 && bytes === 0; i++) await sleep(5);
  t.ok(bytes > 0, 'upload flowing');
  const started = performance.now();
  app.resetAndDestroy();
  for (let i = 0; i < 400 && upstreamClosedAt === 0; i++) await sleep(5);
  t.ok(upstreamClosedAt > 0, 'upstream socket closed');
  t.ok(upstreamClosedAt - started < 2000, `within ${(upstreamClosedAt - started).toFixed(0)} ms`);
  t.same(upstreamErrors, ['ECONNRESET'], 'as a reset, not a FIN');

  // Same with a raw stream reset from the client side.
  upstreamErrors.length = 0;
  upstreamClosedAt = 0;
  const tunnel = await pair.connect(`127.0.0.1:${upstream.port}`);
  tunnel.stream.write('x');
  for (let i = 0; i < 200 && upstream.sockets.size === 0; i++) await sleep(5);
  tunnel.stream.close(http2.constants.NGHTTP2_CONNECT_ERROR);
  for (let i = 0; i < 400 && upstreamClosedAt === 0; i++) await sleep(5);
  t.same(upstreamErrors, ['ECONNRESET'], 'RST_STREAM(CONNECT_ERROR) → TCP RST');
});

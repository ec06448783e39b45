// SPDX-License-Identifier: Apache-2.0
// HBONE server (src/shared/hbone/server.ts): CONNECT validation without onConnect (checklist
// A.1-A.3), early data of refused CONNECTs (A.13), HTTP/2 settings of ambient-protocols.md §1.4
// as seen by the peer, pinned Node limits (security §3.5), PING keepalive, graceful drain (I.96),
// handler failures. Real TLS + HTTP/2 on 127.0.0.1, with Node's own http2 client as the raw peer.
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { HboneError } from '../../../../src/shared/hbone/errors.ts';
import { connectUpstream, type InboundConnect } from '../../../../src/shared/hbone/server.ts';
import { tlsOptions } from '../../../helpers/pki.ts';
import { startEchoServer, startHbonePair, startTcpServer } from '../../../helpers/hbone.ts';
import type { HbonePair, TestTcpServer } from '../../../helpers/hbone.ts';

async function eventually(cond: () => boolean, timeoutMs = 3000): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > end) return false;
    await sleep(10);
  }
  return true;
}

/** Node's own HTTP/2 client with the pair's client certificate (no HBONE logic in between). */
async function rawSession(pair: HbonePair, settings: http2.Settings = {}): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`https://127.0.0.1:${pair.address.port}`, {
    ...tlsOptions(pair.clientCert),
    checkServerIdentity: () => undefined,
    settings,
  });
  session.on('error', () => undefined);
  await once(session, 'connect');
  return session;
}

/** Status (or error) of one request on a raw session. */
async function statusOf(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
): Promise<number | string> {
  const req = session.request(headers, { endStream: false });
  return new Promise((resolve) => {
    req.on('response', (h) => resolve(Number(h[':status'])));
    req.on('error', (err: Error & { code?: string }) => resolve(err.code ?? err.message));
    req.on('close', () => resolve(`closed rst=${req.rstCode}`));
  });
}

let echo: TestTcpServer;
t.before(async () => {
  echo = await startEchoServer();
});
t.teardown(() => echo.close());

t.test('non-CONNECT and bad authorities: 400 without calling onConnect', async (t) => {
  const pair = await startHbonePair();
  t.teardown(() => pair.close());
  const rejected: { status: number; reason: string }[] = [];
  pair.server.on('rejected', (r) => rejected.push(r));
  const session = await rawSession(pair);
  t.teardown(() => session.destroy());
  t.equal(await statusOf(session, { ':method': 'GET', ':path': '/' }), 400, 'GET');
  t.equal(await statusOf(session, { ':method': 'POST', ':path': '/' }), 400, 'POST');
  for (const authority of ['10.0.0.5', '10.0.0.5:0', '[fe80::1%eth0]:80', 'a'.repeat(300) + ':80']) {
    t.equal(
      await statusOf(session, { ':method': 'CONNECT', ':authority': authority }),
      400,
      authority.slice(0, 30),
    );
  }
  // nghttp2 itself refuses userinfo in :authority (RST_STREAM PROTOCOL_ERROR) before we see it.
  t.equal(
    await statusOf(session, { ':method': 'CONNECT', ':authority': 'u@10.0.0.5:80' }),
    'ERR_HTTP2_STREAM_ERROR',
  );
  t.equal(pair.upstream.calls, 0, 'onConnect never called');
  t.equal(rejected.length, 6);
  t.match(rejected[0]?.reason, /not CONNECT/);
  t.match(rejected[2]?.reason, /no port/);
  // The same session still works for a valid CONNECT (refusals are per stream).
  t.equal(await statusOf(session, { ':method': 'CONNECT', ':authority': `127.0.0.1:${echo.port}` }), 200);
  // Outside 127/8 the test handler itself refuses (400), after being called.
  t.equal(await statusOf(session, { ':method': 'CONNECT', ':authority': `10.1.2.3:80` }), 400);
  t.equal(pair.upstream.calls, 2);
  t.ok(await eventually(() => pair.server.stats().streamsActive === 1), 'refused streams are released');
});

t.test(
  'early data of a refused CONNECT never reaches an upstream; of an accepted one, all of it does',
  async (t) => {
    let received = 0;
    const chunks: Buffer[] = [];
    const upstreamServer = await startTcpServer((s) => {
      s.on('data', (d: Buffer) => {
        received += d.length;
        chunks.push(d);
      });
      s.on('end', () => s.end());
    });
    t.teardown(() => upstreamServer.close());
    let decide: 'deny' | 'allow' = 'deny';
    const pair = await startHbonePair({
      onConnect: async (req) => {
        // Dial first (worst case: an upstream exists while the early data sits at the server), and
        // decide only after the client's early data has had time to arrive.
        const up = await connectUpstream({
          host: '127.0.0.1',
          port: upstreamServer.port,
          timeoutMs: 2000,
          signal: req.signal,
        });
        await sleep(150);
        if (decide === 'deny') {
          up.destroy();
          return { status: 401, reason: 'policy' };
        }
        return { status: 200, upstream: up };
      },
    });
    t.teardown(() => pair.close());
    const session = await rawSession(pair);
    t.teardown(() => session.destroy());
    const early = Buffer.alloc(100_000, 0x61);
    for (let i = 0; i < early.length; i++) early[i] = i & 0xff;

    const denied = session.request(
      { ':method': 'CONNECT', ':authority': `127.0.0.1:${upstreamServer.port}` },
      { endStream: false },
    );
    denied.on('error', () => undefined);
    denied.write(early);
    const [h] = (await once(denied, 'response')) as [http2.IncomingHttpHeaders];
    t.equal(h[':status'], 401);
    await sleep(100);
    t.equal(upstreamServer.accepted, 1, 'the handler did dial');
    t.equal(received, 0, '0 bytes of early data reached the upstream');

    decide = 'allow';
    const allowed = session.request(
      { ':method': 'CONNECT', ':authority': `127.0.0.1:${upstreamServer.port}` },
      { endStream: false },
    );
    allowed.on('error', () => undefined);
    allowed.end(early);
    const [h2] = (await once(allowed, 'response')) as [http2.IncomingHttpHeaders];
    t.equal(h2[':status'], 200);
    allowed.resume();
    await once(allowed, 'close');
    t.ok(Buffer.concat(chunks).equals(early), 'held early data delivered byte-exact after the 200');
  },
);

t.test('HTTP/2 settings of spec 1.4 as each peer sees them; connection windows raised', async (t) => {
  const sessions: http2.ServerHttp2Session[] = [];
  const pair = await startHbonePair();
  t.teardown(() => pair.close());
  pair.server.on('session', (s) => sessions.push(s));
  const tunnel = await pair.connect(`127.0.0.1:${echo.port}`);
  const client = tunnel.stream.session!;
  const fromServer = client.remoteSettings;
  t.equal(fromServer.initialWindowSize, 4 * 1024 * 1024, 'server stream window 4 MiB');
  t.equal(fromServer.maxFrameSize, 1024 * 1024, 'server max frame 1 MiB');
  t.equal(fromServer.maxHeaderListSize, 64 * 1024, 'server max header list 64 KiB');
  t.equal(fromServer.maxConcurrentStreams, 200, 'server max concurrent streams 200');
  t.ok(await eventually(() => sessions.length === 1));
  const server = sessions[0]!;
  const fromClient = server.remoteSettings;
  t.equal(fromClient.initialWindowSize, 4 * 1024 * 1024, 'client stream window 4 MiB');
  t.equal(fromClient.maxFrameSize, 1024 * 1024, 'client max frame 1 MiB');
  t.equal(fromClient.maxHeaderListSize, 16 * 1024, 'client max header list 16 KiB');
  t.equal(fromClient.enablePush, false, 'push disabled');
  // Connection-level windows (WINDOW_UPDATE on stream 0), both directions.
  t.ok(
    await eventually(() => (client.state.remoteWindowSize ?? 0) >= 16 * 1024 * 1024 - 65_536),
    'server connection window 16 MiB',
  );
  t.ok((client.state.localWindowSize ?? 0) >= 16 * 1024 * 1024 - 65_536, 'client connection window 16 MiB');
  t.ok((server.state.localWindowSize ?? 0) >= 16 * 1024 * 1024 - 65_536);
  tunnel.stream.destroy();
});

t.test('pinned Node limits apply: header list pairs and size', async (t) => {
  const pair = await startHbonePair({ serverSettings: { maxHeaderListPairs: 8 } });
  t.teardown(() => pair.close());
  const auth = `127.0.0.1:${echo.port}`;
  const few: Record<string, string> = { a: '1', b: '2' };
  const many: Record<string, string> = {};
  for (let i = 0; i < 12; i++) many[`x-h${i}`] = String(i);
  const ok = await pair.connect(auth, { headers: few });
  ok.stream.destroy();
  const err = await pair.connect(auth, { headers: many }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof HboneError, `12 extra headers over a limit of 8 pairs refused (${String(err)})`);

  const big = await startHbonePair({ ca: pair.ca });
  t.teardown(() => big.close());
  const session = await rawSession(big);
  t.teardown(() => session.destroy());
  t.equal(
    await statusOf(session, { ':method': 'CONNECT', ':authority': auth, 'x-big': 'v'.repeat(8 * 1024) }),
    200,
    '8 KiB header ok',
  );
  const over = await statusOf(session, {
    ':method': 'CONNECT',
    ':authority': auth,
    'x-big': 'v'.repeat(70 * 1024),
  });
  t.not(over, 200, `70 KiB header list refused (${over})`);
});

t.test('the handshake deadline extends to the HTTP/2 preface', async (t) => {
  const pair = await startHbonePair({ serverSettings: { handshakeTimeoutMs: 300 } });
  t.teardown(() => pair.close());
  const openTls = async (): Promise<tls.TLSSocket> => {
    const s = tls.connect({
      host: '127.0.0.1',
      port: pair.address.port,
      ...tlsOptions(pair.clientCert),
      ALPNProtocols: ['h2'],
      checkServerIdentity: () => undefined,
    });
    s.on('error', () => undefined);
    await once(s, 'secureConnect');
    s.resume();
    return s;
  };
  const closedWithin = async (s: tls.TLSSocket, ms: number): Promise<number | undefined> => {
    const started = performance.now();
    const closed = await Promise.race([
      new Promise<boolean>((resolve) => s.once('close', () => resolve(true))),
      sleep(ms).then(() => false),
    ]);
    s.destroy();
    return closed ? performance.now() - started : undefined;
  };
  // TLS done, then silence: dropped at the deadline.
  const silent = await closedWithin(await openTls(), 4000);
  t.ok(
    silent !== undefined && silent < 3000,
    `silent TLS client dropped after ${silent?.toFixed(0) ?? '-'} ms`,
  );
  // Control: a client that sends the preface stays.
  const talker = await openTls();
  talker.write(
    Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
    ]),
  );
  t.equal(await closedWithin(talker, 700), undefined, 'a client that sent its preface is kept');
});

t.test(
  'rapid reset protection: CONNECTs cancelled before their answer are not worked on, and cost the session',
  async (t) => {
    const pair = await startHbonePair({ serverSettings: { maxPrematureResets: 10 } });
    t.teardown(() => pair.close());
    const errors: string[] = [];
    pair.server.on('sessionError', (e) => errors.push(e.message));
    const auth = `127.0.0.1:${echo.port}`;

    // A mostly healthy session: 30 tunnels and 12 cancels (under half) → the session survives.
    const healthy = await rawSession(pair);
    t.teardown(() => healthy.destroy());
    for (let i = 0; i < 30; i++)
      t.equal(await statusOf(healthy, { ':method': 'CONNECT', ':authority': auth }), 200);
    for (let i = 0; i < 12; i++) {
      const r = healthy.request({ ':method': 'CONNECT', ':authority': auth }, { endStream: false });
      r.on('error', () => undefined);
      r.close(http2.constants.NGHTTP2_CANCEL);
    }
    await sleep(200);
    t.equal(healthy.destroyed || healthy.closed, false, 'mostly healthy session kept');
    const callsBefore = pair.upstream.calls;
    t.equal(callsBefore, 30);

    // HEADERS + RST_STREAM pairs only: no onConnect for them, and the session is dropped.
    const attacker = await rawSession(pair);
    const goaway = new Promise<number>((resolve) => attacker.once('goaway', (code: number) => resolve(code)));
    const closed = new Promise<void>((resolve) => attacker.once('close', () => resolve()));
    for (let i = 0; i < 40 && !attacker.destroyed && !attacker.closed; i++) {
      const r = attacker.request({ ':method': 'CONNECT', ':authority': auth }, { endStream: false });
      r.on('error', () => undefined);
      r.close(http2.constants.NGHTTP2_CANCEL);
    }
    const code = await Promise.race([goaway, closed.then(() => -1)]);
    await Promise.race([closed, sleep(2000)]);
    t.ok(attacker.destroyed, 'attacking session closed by the server');
    t.ok(
      code === http2.constants.NGHTTP2_ENHANCE_YOUR_CALM || code === -1,
      `GOAWAY ENHANCE_YOUR_CALM (${code})`,
    );
    t.equal(pair.upstream.calls, callsBefore, 'no onConnect for streams reset in the same read');
    t.match(errors.join('\n'), /rapid reset/);
  },
);

t.test('keepalive: a client that stops answering PINGs is dropped', async (t) => {
  // Bounded waits: 3 s for the fast pair (10x its interval + timeout), 800 ms for the control.
  const measure = async (pair: HbonePair, windowMs: number): Promise<boolean> => {
    const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    const SETTINGS_EMPTY = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    const s = tls.connect({
      host: '127.0.0.1',
      port: pair.address.port,
      ...tlsOptions(pair.clientCert),
      ALPNProtocols: ['h2'],
      checkServerIdentity: () => undefined,
    });
    s.on('error', () => undefined);
    await once(s, 'secureConnect');
    s.write(Buffer.concat([PREFACE, SETTINGS_EMPTY]));
    s.pause(); // never read again: PINGs go unanswered
    t.ok(await eventually(() => pair.server.stats().sessionsActive === 1), 'session up');
    const dropped = await eventually(() => pair.server.stats().sessionsActive === 0, windowMs);
    s.destroy();
    return dropped;
  };
  const fast = await startHbonePair({ serverSettings: { pingIntervalMs: 100, pingTimeoutMs: 200 } });
  t.teardown(() => fast.close());
  t.equal(await measure(fast, 3000), true, 'dropped within interval + timeout');
  const slow = await startHbonePair({ ca: fast.ca });
  t.teardown(() => slow.close());
  t.equal(await measure(slow, 800), false, 'control: with the default 10 s interval it is still there');
});

t.test(
  'graceful drain: tunnels continue, new connections refused, close resolves when they end',
  async (t) => {
    const closedTunnels: { error?: Error }[] = [];
    const pair = await startHbonePair({ onTunnelClosed: (_req, r) => closedTunnels.push(r) });
    const tunnel = await pair.connect(`127.0.0.1:${echo.port}`);
    const session = tunnel.stream.session!;
    const goaway = once(session, 'goaway');
    const started = performance.now();
    const closing = pair.server.close({ deadlineMs: 5000 });
    await goaway;
    t.pass('client got GOAWAY');
    // The open tunnel keeps working during the drain.
    tunnel.stream.write('during drain');
    const [d] = (await once(tunnel.stream, 'data')) as [Buffer];
    t.equal(d.toString(), 'during drain');
    // New TCP connections are refused.
    const probe = net.connect(pair.address.port, '127.0.0.1');
    const [err] = (await once(probe, 'error').catch((e: unknown) => [e])) as [Error & { code?: string }];
    t.equal(err.code, 'ECONNREFUSED');
    // New tunnels from the same client do not use the draining session.
    const refused = await pair.connect(`127.0.0.1:${echo.port}`).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(refused instanceof HboneError && refused.code === 'HBONE_ERR_CONNECT_FAILED', String(refused));
    // The tunnel ends on its own: close() resolves well before the deadline.
    tunnel.stream.end();
    tunnel.stream.resume();
    await closing;
    const ms = performance.now() - started;
    t.ok(ms < 3000, `close resolved after ${ms.toFixed(0)} ms, not at the 5 s deadline`);
    t.equal(closedTunnels.length, 1);
    t.equal(closedTunnels[0]?.error, undefined, 'the drained tunnel ended cleanly');
    await pair.client.close();
  },
);

t.test('drain deadline: tunnels still open are reset, upstreams closed', async (t) => {
  const closedTunnels: { error?: Error }[] = [];
  const pair = await startHbonePair({ onTunnelClosed: (_req, r) => closedTunnels.push(r) });
  t.teardown(() => pair.client.close());
  const tunnel = await pair.connect(`127.0.0.1:${echo.port}`);
  tunnel.stream.resume();
  t.ok(await eventually(() => echo.sockets.size >= 1));
  const upstreamSockets = [...echo.sockets];
  const started = performance.now();
  await pair.server.close({ deadlineMs: 200 });
  const ms = performance.now() - started;
  t.ok(ms >= 190 && ms < 4000, `close resolved after ${ms.toFixed(0)} ms (deadline 200)`);
  t.ok(await eventually(() => tunnel.stream.closed), 'client stream closed');
  t.ok(await eventually(() => upstreamSockets.every((s) => s.destroyed)), 'upstream connection closed');
  t.equal(closedTunnels.length, 1);
  t.ok(closedTunnels[0]?.error, 'reported with an error');
  t.same(pair.server.stats(), {
    sessionsActive: 0,
    streamsActive: 0,
    tunnelsActive: 0,
    secureContextsBuilt: 1,
  });
  // After close: accepted sockets are refused at once, listen() too.
  const [a, b] = await new Promise<[net.Socket, net.Socket]>((resolve) => {
    const srv = net.createServer((s) => {
      resolve([s, c]);
      srv.close();
    });
    let c: net.Socket;
    srv.listen(0, '127.0.0.1', () => {
      c = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
      c.on('error', () => undefined);
    });
  });
  pair.server.handleSocket(a);
  t.ok(a.destroyed, 'handleSocket after close destroys the socket');
  b.destroy();
  await t.rejects(pair.server.listen({ port: 0, host: '127.0.0.1' }), { code: 'HBONE_ERR_CLOSED' });
});

t.test('handler failures and late decisions', async (t) => {
  const errors: Error[] = [];
  let mode: 'throw' | 'late' = 'throw';
  let lateUpstream: net.Socket | undefined;
  const closed: { error?: Error }[] = [];
  const pair = await startHbonePair({
    onConnect: async (req: InboundConnect) => {
      if (mode === 'throw') throw new Error('handler exploded');
      // Decide 200 only after the client has gone away.
      await new Promise((resolve) => req.signal.addEventListener('abort', resolve, { once: true }));
      lateUpstream = await connectUpstream({ host: '127.0.0.1', port: echo.port, timeoutMs: 2000 });
      return { status: 200, upstream: lateUpstream };
    },
    onTunnelClosed: (_r, res) => closed.push(res),
  });
  t.teardown(() => pair.close());
  pair.server.on('handlerError', (e) => errors.push(e));
  const err = await pair.connect(`127.0.0.1:${echo.port}`).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof HboneError && err.status === 503, 'a throwing handler answers 503');
  t.match(errors[0]?.message, /exploded/);

  mode = 'late';
  const ac = new AbortController();
  const p = pair.connect(`127.0.0.1:${echo.port}`, { signal: ac.signal }).catch(() => undefined);
  await sleep(50);
  ac.abort();
  await p;
  t.ok(await eventually(() => lateUpstream?.destroyed === true), 'the late upstream is dropped');
  t.ok(await eventually(() => closed.length === 1));
  t.match(closed[0]?.error?.message, /before the tunnel was established/);
});

t.test('certificate source failing: connection refused and reported', async (t) => {
  const pair = await startHbonePair();
  t.teardown(() => pair.close());
  const errors: Error[] = [];
  pair.server.on('tlsError', (e) => errors.push(e));
  const good = pair.serverCert;
  Object.defineProperty(pair, 'serverCert', {
    get: () => {
      throw new Error('no certificate yet');
    },
    configurable: true,
  });
  const err = await pair.connect(`127.0.0.1:${echo.port}`).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof HboneError, String(err));
  t.equal((errors[0] as HboneError | undefined)?.code, 'HBONE_ERR_CERTIFICATE');
  Object.defineProperty(pair, 'serverCert', { value: good, writable: true, configurable: true });
  const tunnel = await pair.connect(`127.0.0.1:${echo.port}`);
  t.equal(tunnel.responseHeaders[':status'], 200, 'serves again once the certificate exists');
  tunnel.stream.destroy();
});

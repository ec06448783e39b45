// SPDX-License-Identifier: Apache-2.0
// HBONE client (src/shared/hbone/client.ts): the CONNECT request (ambient-protocols.md §1.3),
// status mapping, connect/abort errors, PING keepalive (§1.4) and the session pool (§1.5).
// Real TLS and HTTP/2 on 127.0.0.1; session counts are checked on both ends.
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import type { Test } from 'tap';
import { HboneClient, type HboneTunnel } from '../../../../src/shared/hbone/client.ts';
import { HboneError } from '../../../../src/shared/hbone/errors.ts';
import type { InboundConnect, InboundDecision } from '../../../../src/shared/hbone/server.ts';
import { connectUpstream } from '../../../../src/shared/hbone/server.ts';
import { issueWorkloadCert, newTestCa, tlsOptions } from '../../../helpers/pki.ts';
import { startEchoServer, startHbonePair, TEST_SERVER_ID } from '../../../helpers/hbone.ts';
import type { HbonePair, TestTcpServer } from '../../../helpers/hbone.ts';

async function errorOf(p: Promise<unknown>): Promise<HboneError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof HboneError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

/** Ends the tunnel from our side and waits until the stream is gone. */
async function finish(tunnel: HboneTunnel): Promise<void> {
  tunnel.stream.end();
  tunnel.stream.resume();
  if (!tunnel.stream.closed) await once(tunnel.stream, 'close');
}

async function eventually(cond: () => boolean, timeoutMs = 3000): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > end) return false;
    await sleep(10);
  }
  return true;
}

/** A plain Node HTTP/2 server with an HBONE-valid certificate, for peer behaviours ours never shows. */
async function fakeH2Server(
  t: Test,
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
): Promise<{
  port: number;
  server: http2.Http2SecureServer;
  sessions: Set<http2.ServerHttp2Session>;
  certOf: HbonePair;
}> {
  const pair = await startHbonePair();
  await pair.server.close();
  const server = http2.createSecureServer({ ...tlsOptions(pair.serverCert), requestCert: true });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    onStream(stream, headers);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    for (const s of sessions) s.destroy();
    await pair.client.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as net.AddressInfo).port, server, sessions, certOf: pair };
}

let echo: TestTcpServer;
t.before(async () => {
  echo = await startEchoServer();
});
t.teardown(() => echo.close());

t.test('CONNECT request: method, authority, no :scheme/:path, extra headers, peer identity', async (t) => {
  const seen: InboundConnect[] = [];
  const pair = await startHbonePair({
    onConnect: async (req) => {
      seen.push(req);
      return {
        status: 200,
        upstream: await connectUpstream({ host: '127.0.0.1', port: echo.port, timeoutMs: 2000 }),
      };
    },
  });
  t.teardown(() => pair.close());
  const tunnel = await pair.connect(`127.0.0.1:${echo.port}`, {
    headers: {
      baggage: 'k8s.namespace.name=client',
      forwarded: 'for="10.0.0.1:1234"',
      traceparent: '00-0-0-00',
    },
  });
  t.equal(tunnel.responseHeaders[':status'], 200);
  t.equal(tunnel.peer.id.uri, pair.serverId, 'tunnel.peer is the verified server identity');
  const req = seen[0];
  t.ok(req);
  t.equal(req?.headers[':method'], 'CONNECT');
  t.equal(req?.headers[':authority'], `127.0.0.1:${echo.port}`);
  t.equal(req?.authority, `127.0.0.1:${echo.port}`);
  t.same(req?.target, { kind: 'ip', ip: '127.0.0.1', family: 4, port: echo.port });
  t.notOk(':scheme' in (req?.headers ?? {}), 'no :scheme');
  t.notOk(':path' in (req?.headers ?? {}), 'no :path');
  t.equal(req?.headers.baggage, 'k8s.namespace.name=client');
  t.equal(req?.headers.forwarded, 'for="10.0.0.1:1234"');
  t.equal(req?.headers.traceparent, '00-0-0-00');
  t.equal(req?.peer.id.uri, pair.clientId);
  t.equal(req?.remoteAddress, '127.0.0.1');
  t.equal(req?.localAddress, '127.0.0.1');
  t.equal(req?.localPort, pair.address.port);
  t.ok((req?.remotePort ?? 0) > 0);
  t.equal(req?.signal.aborted, false);
  tunnel.stream.write('ping');
  const [echoed] = (await once(tunnel.stream, 'data')) as [Buffer];
  t.equal(echoed.toString(), 'ping');
  await finish(tunnel);
  t.ok(await eventually(() => req?.signal.aborted === true), 'signal aborted once the stream is gone');
});

t.test('request validation before anything is sent', async (t) => {
  const pair = await startHbonePair();
  t.teardown(() => pair.close());
  const bad = await errorOf(pair.connect('no-port'));
  t.equal(bad.code, 'HBONE_ERR_BAD_REQUEST');
  const noIds = await errorOf(pair.connect(`127.0.0.1:${echo.port}`, { expectedIdentities: [] }));
  t.equal(noIds.code, 'HBONE_ERR_CONFIG');
  const pseudo = await errorOf(pair.connect(`127.0.0.1:${echo.port}`, { headers: { ':path': '/x' } }));
  t.equal(pseudo.code, 'HBONE_ERR_CONFIG');
  t.equal(pair.client.stats().sessionsOpened, 0, 'no session opened');
  t.equal(pair.server.stats().sessionsActive, 0);
});

t.test('status mapping: 400, 401, 503 and any other non-200', async (t) => {
  const decisions: InboundDecision[] = [
    { status: 400, reason: 'bad' },
    { status: 401, reason: 'denied' },
    { status: 503, reason: 'down' },
  ];
  let i = 0;
  const pair = await startHbonePair({
    onConnect: async () => decisions[i++] ?? { status: 503, reason: 'x' },
  });
  t.teardown(() => pair.close());
  const codes: [string, number | undefined][] = [];
  for (let k = 0; k < 3; k++) {
    const err = await errorOf(pair.connect(`127.0.0.1:${echo.port}`));
    codes.push([err.code, err.status]);
  }
  t.same(codes, [
    ['HBONE_ERR_BAD_REQUEST', 400],
    ['HBONE_ERR_UNAUTHORIZED', 401],
    ['HBONE_ERR_UNAVAILABLE', 503],
  ]);
  t.equal(pair.client.stats().sessionsOpened, 1, 'refusals do not cost the session');
  t.ok(await eventually(() => pair.client.stats().streamsActive === 0), 'refused streams are released');

  const fake = await fakeH2Server(t, (stream, headers) => {
    if (headers[':authority'] === '127.0.0.1:403') stream.respond({ ':status': 403 }, { endStream: true });
    else if (headers[':authority'] === '127.0.0.1:302')
      stream.respond({ ':status': 302 }, { endStream: true });
    else stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  });
  const client = new HboneClient({ certificate: () => fake.certOf.clientCert });
  t.teardown(() => client.close());
  const peer = { host: '127.0.0.1', port: fake.port };
  for (const s of [403, 302]) {
    const err = await errorOf(
      client.connect({ peer, authority: `127.0.0.1:${s}`, expectedIdentities: [TEST_SERVER_ID] }),
    );
    t.equal(err.code, 'HBONE_ERR_STATUS');
    t.equal(err.status, s);
  }
  const reset = await errorOf(
    client.connect({ peer, authority: '127.0.0.1:1', expectedIdentities: [TEST_SERVER_ID] }),
  );
  t.equal(reset.code, 'HBONE_ERR_STREAM_RESET');
  t.match(reset.message, /RST_STREAM code 2/);
});

t.test('connect failures: refused, timeout (NetworkPolicy hint), missing certificate', async (t) => {
  const ca = await newTestCa();
  const cert = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/a/sa/client');
  const closed = net.createServer();
  closed.listen(0, '127.0.0.1');
  await once(closed, 'listening');
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const client = new HboneClient({ certificate: () => cert, settings: { connectTimeoutMs: 150 } });
  t.teardown(() => client.close());
  const refused = await errorOf(
    client.connect({
      peer: { host: '127.0.0.1', port },
      authority: '127.0.0.1:1',
      expectedIdentities: [TEST_SERVER_ID],
    }),
  );
  t.equal(refused.code, 'HBONE_ERR_CONNECT_FAILED');
  t.match(refused.message, /ECONNREFUSED/);

  // A TCP connect that never completes (a name lookup that never answers stands in for a
  // blackholed SYN; no packet leaves the machine).
  const blackhole = new HboneClient({
    certificate: () => cert,
    settings: { connectTimeoutMs: 150 },
    dial: (peer) =>
      net.connect({ host: 'hbone-blackhole.invalid', port: peer.port, lookup: () => undefined }),
  });
  t.teardown(() => blackhole.close());
  const started = performance.now();
  const timeout = await errorOf(
    blackhole.connect({
      peer: { host: '127.0.0.1', port: 15008 },
      authority: '127.0.0.1:1',
      expectedIdentities: [TEST_SERVER_ID],
    }),
  );
  t.equal(timeout.code, 'HBONE_ERR_CONNECT_TIMEOUT');
  t.match(timeout.message, /^connection timed out, maybe a NetworkPolicy is blocking HBONE port 15008/);
  const ms = performance.now() - started;
  t.ok(ms >= 140 && ms < 3000, `timed out after ${ms.toFixed(0)} ms`);

  const noCert = new HboneClient({
    certificate: () => {
      throw new Error('CA unreachable');
    },
  });
  const e = await errorOf(
    noCert.connect({
      peer: { host: '127.0.0.1', port: 1 },
      authority: '127.0.0.1:1',
      expectedIdentities: [TEST_SERVER_ID],
    }),
  );
  t.equal(e.code, 'HBONE_ERR_CERTIFICATE');
  t.match(e.message, /CA unreachable/);
});

t.test('abort: the caller gives up while the server decides; the server sees its signal abort', async (t) => {
  let serverReq: InboundConnect | undefined;
  const pair = await startHbonePair({
    onConnect: async (req) => {
      serverReq = req;
      await new Promise((resolve) => req.signal.addEventListener('abort', resolve, { once: true }));
      return { status: 503, reason: 'cancelled' };
    },
  });
  t.teardown(() => pair.close());
  const ac = new AbortController();
  const p = pair.connect(`127.0.0.1:${echo.port}`, { signal: ac.signal });
  t.ok(await eventually(() => serverReq !== undefined));
  ac.abort();
  const err = await errorOf(p);
  t.equal(err.code, 'HBONE_ERR_ABORTED');
  t.ok(
    await eventually(() => serverReq?.signal.aborted === true),
    'server-side signal aborted (stream cancelled)',
  );
  const pre = new AbortController();
  pre.abort();
  t.equal(
    (await errorOf(pair.connect(`127.0.0.1:${echo.port}`, { signal: pre.signal }))).code,
    'HBONE_ERR_ABORTED',
  );
});

t.test('pool: reuse, burst serialization, stream cap, key fields', async (t) => {
  const pair = await startHbonePair({ clientSettings: { poolMaxStreamsPerConnection: 3 } });
  t.teardown(() => pair.close());
  const auth = `127.0.0.1:${echo.port}`;

  // Sequential tunnels reuse one session.
  for (let i = 0; i < 3; i++) await finish(await pair.connect(auth));
  t.equal(pair.client.stats().sessionsOpened, 1, 'sequential: one session');
  t.equal(pair.server.stats().sessionsActive, 1, 'server sees one session');

  // A burst of 3 (= cap) concurrent connects to a fresh key opens ONE session.
  const burst = await Promise.all([1, 2, 3].map(() => pair.connect(auth, { sourceIp: '127.0.0.2' })));
  t.equal(pair.client.stats().sessionsOpened, 2, 'burst of 3 on a fresh key: one new session');
  // The fourth concurrent stream exceeds the cap of 3: a new session.
  const fourth = await pair.connect(auth, { sourceIp: '127.0.0.2' });
  t.equal(pair.client.stats().sessionsOpened, 3, 'stream cap reached: new session');
  t.equal(fourth.stream.session === burst[0]?.stream.session, false);
  t.ok(
    burst.every((b) => b.stream.session === burst[0]?.stream.session),
    'the burst shares one session',
  );
  // A burst of 7 on another fresh key: ceil(7/3) = 3 sessions, created one at a time.
  const seven = await Promise.all(
    [1, 2, 3, 4, 5, 6, 7].map(() => pair.connect(auth, { sourceIp: '127.0.0.3' })),
  );
  t.equal(pair.client.stats().sessionsOpened, 6, 'burst of 7 with cap 3: three sessions');
  t.equal(new Set(seven.map((s) => s.stream.session)).size, 3);
  t.equal(pair.server.stats().sessionsActive, 6);
  t.equal(pair.client.stats().streamsActive, 11);
  await Promise.all([...burst, fourth, ...seven].map(finish));

  // Key fields: expected identities are a set (order and duplicates do not matter) ...
  const ids = [pair.serverId, 'spiffe://cluster.local/ns/x/sa/y'];
  await finish(await pair.connect(auth, { expectedIdentities: ids }));
  const before = pair.client.stats().sessionsOpened;
  await finish(await pair.connect(auth, { expectedIdentities: [ids[1]!, ids[0]!, ids[0]!] }));
  t.equal(pair.client.stats().sessionsOpened, before, 'same identity set, other order: reused');
  // ... but a different set, or a different source IP, is a different key.
  await finish(
    await pair.connect(auth, { expectedIdentities: [pair.serverId, 'spiffe://cluster.local/ns/z/sa/z'] }),
  );
  t.equal(pair.client.stats().sessionsOpened, before + 1, 'other identity set: new session');
  const seenFrom: string[] = [];
  pair.server.on('rejected', () => undefined);
  const srcPair = await startHbonePair({
    ca: pair.ca,
    onConnect: async (req) => {
      seenFrom.push(req.remoteAddress);
      return {
        status: 200,
        upstream: await connectUpstream({ host: '127.0.0.1', port: echo.port, timeoutMs: 2000 }),
      };
    },
  });
  t.teardown(() => srcPair.close());
  await finish(await srcPair.connect(auth, { sourceIp: '127.0.0.5' }));
  await finish(await srcPair.connect(auth));
  t.same(seenFrom, ['127.0.0.5', '127.0.0.1'], 'the tunnel is dialled from the source IP');
  t.equal(srcPair.client.stats().sessionsOpened, 2);
});

t.test(
  'pool: source identity is part of the key (rotation to another identity opens a new session)',
  async (t) => {
    const pair = await startHbonePair();
    t.teardown(() => pair.close());
    const auth = `127.0.0.1:${echo.port}`;
    const a = await pair.connect(auth);
    pair.clientCert = await issueWorkloadCert(pair.ca, 'spiffe://cluster.local/ns/client/sa/other');
    const b = await pair.connect(auth);
    t.not(a.stream.session, b.stream.session, 'different source identity: different session');
    t.equal(pair.client.stats().sessionsOpened, 2);
    // Same identity, new certificate object: existing sessions stay usable.
    pair.clientCert = await issueWorkloadCert(pair.ca, 'spiffe://cluster.local/ns/client/sa/other');
    const c = await pair.connect(auth);
    t.equal(c.stream.session, b.stream.session, 'same identity: pooled session reused');
    await Promise.all([a, b, c].map(finish));
  },
);

t.test("pool: honours the peer's SETTINGS_MAX_CONCURRENT_STREAMS", async (t) => {
  const pair = await startHbonePair({ serverSettings: { serverMaxConcurrentStreams: 2 } });
  t.teardown(() => pair.close());
  const auth = `127.0.0.1:${echo.port}`;
  const tunnels: HboneTunnel[] = [];
  for (let i = 0; i < 5; i++) tunnels.push(await pair.connect(auth));
  t.equal(pair.client.stats().sessionsOpened, 3, '5 streams at 2 per session: 3 sessions');
  await Promise.all(tunnels.map(finish));
});

t.test('pool: sessions that got GOAWAY or failed are never handed out', async (t) => {
  const fake = await fakeH2Server(t, (stream) => {
    stream.respond({ ':status': 200 });
    stream.on('data', () => undefined);
    stream.on('end', () => stream.end());
  });
  const client = new HboneClient({ certificate: () => fake.certOf.clientCert });
  t.teardown(() => client.close());
  const req = {
    peer: { host: '127.0.0.1', port: fake.port },
    authority: '127.0.0.1:1',
    expectedIdentities: [TEST_SERVER_ID],
  };
  const first = await client.connect(req);
  t.equal(client.stats().sessionsOpened, 1);
  // Graceful GOAWAY from the peer while a stream is open.
  const [serverSession] = [...fake.sessions];
  serverSession?.goaway(http2.constants.NGHTTP2_NO_ERROR, 1);
  await once(first.stream.session!, 'goaway');
  const second = await client.connect(req);
  t.equal(client.stats().sessionsOpened, 2, 'GOAWAY: a new session for the next stream');
  t.not(second.stream.session, first.stream.session);
  // The old stream still completes (GOAWAY lets it finish).
  first.stream.end();
  first.stream.resume();
  await once(first.stream, 'close');
  t.equal(first.stream.rstCode, http2.constants.NGHTTP2_NO_ERROR);

  // A session destroyed by the peer: dropped from the pool.
  for (const s of fake.sessions) s.destroy();
  await once(second.stream.session!, 'close');
  t.ok(await eventually(() => client.stats().sessionsActive === 0));
  const third = await client.connect(req);
  t.equal(client.stats().sessionsOpened, 3, 'destroyed session: a new one');
  third.stream.destroy();
});

t.test('pool: idle sessions are released after poolIdleReleaseMs, busy ones are not', async (t) => {
  const pair = await startHbonePair({ clientSettings: { poolIdleReleaseMs: 150 } });
  t.teardown(() => pair.close());
  const auth = `127.0.0.1:${echo.port}`;
  const busy = await pair.connect(auth, { sourceIp: '127.0.0.2' });
  await finish(await pair.connect(auth));
  t.equal(pair.client.stats().sessionsActive, 2);
  // Reuse within the idle window keeps the same session.
  await sleep(60);
  const again = await pair.connect(auth);
  t.equal(pair.client.stats().sessionsOpened, 2, 'reused before the idle timeout');
  await finish(again);
  t.ok(await eventually(() => pair.client.stats().sessionsActive === 1, 2000), 'idle session released');
  t.ok(await eventually(() => pair.server.stats().sessionsActive === 1, 2000), 'and closed on the server');
  t.equal(busy.stream.closed, false, 'the session with an open stream stays');
  await finish(busy);
  t.ok(await eventually(() => pair.client.stats().sessionsActive === 0, 2000));
  await finish(await pair.connect(auth));
  t.equal(pair.client.stats().sessionsOpened, 3, 'after release a new session is opened');
});

t.test('pool: retire() takes sessions to departed peers out of the pool; their tunnels finish', async (t) => {
  const pair = await startHbonePair();
  t.teardown(() => pair.close());
  const auth = `127.0.0.1:${echo.port}`;
  const open = await pair.connect(auth);
  t.equal(
    pair.client.retire(() => true),
    0,
    'every peer still known: nothing retired',
  );
  t.equal(
    pair.client.retire((host) => host !== pair.peer.host),
    1,
    'the departed peer',
  );
  t.equal(
    pair.client.retire(() => false),
    0,
    'a retired session is not retired twice',
  );
  // The open tunnel carries on: a graceful close.
  open.stream.write('still\n');
  const [d] = (await once(open.stream, 'data')) as [Buffer];
  t.equal(d.toString(), 'still\n', 'the open tunnel carries on');
  await finish(await pair.connect(auth));
  t.equal(pair.client.stats().sessionsOpened, 2, 'a new tunnel gets a new session');
  await finish(open);
  t.ok(await eventually(() => pair.client.stats().sessionsActive === 1, 2000), 'the retired session closed');
});

t.test('keepalive: a peer that stops answering PINGs is dropped', async (t) => {
  const ca = await newTestCa();
  const serverCert = await issueWorkloadCert(ca, TEST_SERVER_ID);
  const clientCert = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/a/sa/client');
  // Completes TLS, sends its SETTINGS, then never reads again (a hung or blackholed peer).
  const SETTINGS_EMPTY = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
  const mute = tls.createServer(
    { ...tlsOptions(serverCert), ALPNProtocols: ['h2'], requestCert: true },
    (s) => {
      s.on('error', () => undefined);
      s.write(SETTINGS_EMPTY);
      s.pause();
    },
  );
  mute.listen(0, '127.0.0.1');
  await once(mute, 'listening');
  t.teardown(() => mute.close());
  const client = new HboneClient({
    certificate: () => clientCert,
    settings: { pingIntervalMs: 100, pingTimeoutMs: 200 },
  });
  t.teardown(() => client.close());
  const started = performance.now();
  const err = await errorOf(
    client.connect({
      peer: { host: '127.0.0.1', port: (mute.address() as net.AddressInfo).port },
      authority: '127.0.0.1:1',
      expectedIdentities: [TEST_SERVER_ID],
    }),
  );
  const ms = performance.now() - started;
  t.equal(err.code, 'HBONE_ERR_PING_TIMEOUT', err.message);
  t.ok(ms >= 250 && ms < 4000, `dropped after ${ms.toFixed(0)} ms (interval 100 + timeout 200)`);
  t.ok(await eventually(() => client.stats().sessionsActive === 0), 'session gone');

  // A healthy peer answers: a tunnel outlives many ping rounds.
  const pair = await startHbonePair({
    clientSettings: { pingIntervalMs: 20, pingTimeoutMs: 100 },
    serverSettings: { pingIntervalMs: 20, pingTimeoutMs: 100 },
  });
  t.teardown(() => pair.close());
  const tunnel = await pair.connect(`127.0.0.1:${echo.port}`);
  await sleep(400);
  tunnel.stream.write('still here');
  const [d] = (await once(tunnel.stream, 'data')) as [Buffer];
  t.equal(d.toString(), 'still here');
  t.equal(pair.client.stats().sessionsOpened, 1);
  await finish(tunnel);
});

t.test('close(): new connects refused, sessions closed', async (t) => {
  const pair = await startHbonePair();
  t.teardown(() => pair.close());
  const tunnel = await pair.connect(`127.0.0.1:${echo.port}`);
  await pair.client.close();
  t.equal(pair.client.stats().sessionsActive, 0);
  t.ok(tunnel.stream.destroyed, 'open streams reset at deadline 0');
  const err = await errorOf(pair.connect(`127.0.0.1:${echo.port}`));
  t.equal(err.code, 'HBONE_ERR_CLOSED');
  t.ok(await eventually(() => pair.server.stats().sessionsActive === 0));
});

// SPDX-License-Identifier: Apache-2.0
// HBONE TLS (src/shared/hbone/{tls,client,server}.ts; ambient-protocols.md §1.2; checklist
// A.18, B.20-B.23, B.25, B.29, B.32, B.33, F.75): version, ciphers, ALPN, SNI, resumption,
// client certificates, identity checks before any HTTP/2 byte, SecureContext caching, handshake
// deadlines. Real TLS on 127.0.0.1.
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { HboneClient } from '../../../../src/shared/hbone/client.ts';
import { HboneError } from '../../../../src/shared/hbone/errors.ts';
import { connectUpstream } from '../../../../src/shared/hbone/server.ts';
import type { InboundConnect } from '../../../../src/shared/hbone/server.ts';
import type { WorkloadCertificate } from '../../../../src/shared/identity/cert-manager.ts';
import { parseCertificate } from '../../../../src/shared/identity/certificate.ts';
import { pemCertificatesToDer } from '../../../../src/shared/identity/pem.ts';
import { parseSpiffeId } from '../../../../src/shared/identity/spiffe.ts';
import { issueWorkloadCert, mintCert, newTestCa, tlsOptions } from '../../../helpers/pki.ts';
import type { MintedCert } from '../../../helpers/pki.ts';
import { startEchoServer, startHbonePair, TEST_SERVER_ID } from '../../../helpers/hbone.ts';

function serialOf(cert: WorkloadCertificate): string {
  const der = pemCertificatesToDer(cert.certChainPem[0] ?? '')[0];
  if (!der) throw new Error('no leaf');
  return parseCertificate(der).serial;
}

/** A WorkloadCertificate around a hand-minted leaf (for certificates our CA would refuse to issue). */
function workloadFromMinted(m: MintedCert, uri: string, rootsPem: readonly string[]): WorkloadCertificate {
  const now = Date.now();
  return {
    id: parseSpiffeId(uri),
    privateKeyPem: m.privateKeyPem,
    certChainPem: [m.certPem],
    rootsPem,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
  };
}

/** Raw TLS client to an HboneServer with arbitrary options; resolves with the socket or the error. */
async function rawTls(
  port: number,
  opts: tls.ConnectionOptions,
): Promise<{ socket?: tls.TLSSocket; error?: Error }> {
  const socket = tls.connect({ host: '127.0.0.1', port, checkServerIdentity: () => undefined, ...opts });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
      socket.once('close', () => reject(new Error('closed during handshake')));
    });
  } catch (err) {
    socket.destroy();
    return { error: err as Error };
  }
  return { socket };
}

/** After a TLS 1.3 handshake the server may still reject the client certificate: wait for that. */
async function survives(socket: tls.TLSSocket, ms: number): Promise<boolean> {
  if (socket.destroyed) return false;
  socket.on('error', () => undefined);
  socket.resume();
  const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(false)));
  const ok = sleep(ms).then(() => true);
  const r = await Promise.race([closed, ok]);
  socket.destroy();
  return r;
}

t.test('negotiated parameters: TLS 1.3, AES-128-GCM, ALPN h2, no SNI', async (t) => {
  const echo = await startEchoServer();
  const pair = await startHbonePair();
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const tunnel = await pair.connect(`127.0.0.1:${echo.port}`);
  const sock = tunnel.stream.session?.socket as tls.TLSSocket;
  t.equal(sock.getProtocol(), 'TLSv1.3');
  t.equal(sock.getCipher().standardName, 'TLS_AES_128_GCM_SHA256');
  t.equal(sock.alpnProtocol, 'h2');
  t.equal(tunnel.peer.id.uri, TEST_SERVER_ID);
  tunnel.stream.destroy();

  // Server side: a client that prefers AES-256 still gets AES-128 (server order wins); one that
  // offers only ChaCha20 or only TLS 1.2 is refused.
  const aes256First = await rawTls(pair.address.port, {
    ...tlsOptions(pair.clientCert),
    ciphers: 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256',
    ALPNProtocols: ['h2'],
  });
  t.equal(aes256First.socket?.getCipher().standardName, 'TLS_AES_128_GCM_SHA256');
  aes256First.socket?.destroy();
  const chacha = await rawTls(pair.address.port, {
    ...tlsOptions(pair.clientCert),
    ciphers: 'TLS_CHACHA20_POLY1305_SHA256',
    ALPNProtocols: ['h2'],
  });
  t.ok(chacha.error, `ChaCha20-only client refused (${chacha.error?.message ?? ''})`);
  const tls12 = await rawTls(pair.address.port, {
    ...tlsOptions(pair.clientCert),
    maxVersion: 'TLSv1.2',
    ALPNProtocols: ['h2'],
  });
  t.ok(tls12.error, `TLS 1.2 client refused (${tls12.error?.message ?? ''})`);
});

t.test('client sends no SNI, even when dialing a hostname; server does not require one', async (t) => {
  const ca = await newTestCa();
  const serverCert = await issueWorkloadCert(ca, TEST_SERVER_ID);
  const clientCert = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/a/sa/client');
  const seen: (string | false | null)[] = [];
  const spy = tls.createServer(
    { ...tlsOptions(serverCert), ALPNProtocols: ['h2'], requestCert: true },
    (s) => {
      seen.push(s.servername);
      s.destroy();
    },
  );
  spy.listen(0, '127.0.0.1');
  await once(spy, 'listening');
  t.teardown(() => spy.close());
  const client = new HboneClient({ certificate: () => clientCert });
  const port = (spy.address() as net.AddressInfo).port;
  for (const host of ['127.0.0.1', 'localhost']) {
    await client
      .connect({ peer: { host, port }, authority: '127.0.0.1:1', expectedIdentities: [TEST_SERVER_ID] })
      .catch(() => undefined);
  }
  await client.close();
  t.same(seen, [false, false], 'the server saw no servername');

  // And an HboneServer accepts a client that does send SNI (it is neither required nor used).
  const pair = await startHbonePair({ ca });
  t.teardown(() => pair.close());
  const withSni = await rawTls(pair.address.port, {
    ...tlsOptions(pair.clientCert),
    servername: 'anything.example',
    ALPNProtocols: ['h2'],
  });
  t.ok(withSni.socket && (await survives(withSni.socket, 150)), 'SNI client accepted');
});

t.test('ALPN: exactly h2 on both sides', async (t) => {
  const pair = await startHbonePair();
  t.teardown(() => pair.close());
  const tlsErrors: string[] = [];
  pair.server.on('tlsError', (err) => tlsErrors.push(err.message));

  const h1 = await rawTls(pair.address.port, { ...tlsOptions(pair.clientCert), ALPNProtocols: ['http/1.1'] });
  t.ok(h1.error, `http/1.1-only client refused: ${h1.error?.message ?? ''}`);
  const none = await rawTls(pair.address.port, { ...tlsOptions(pair.clientCert) });
  // Without ALPN the handshake can complete, but the server drops the connection at once.
  t.notOk(none.socket && (await survives(none.socket, 300)), 'no-ALPN client dropped');
  const good = await rawTls(pair.address.port, { ...tlsOptions(pair.clientCert), ALPNProtocols: ['h2'] });
  t.ok(good.socket && (await survives(good.socket, 150)), 'h2 client kept');
  t.ok(
    tlsErrors.some((m) => /ALPN|application protocol/i.test(m)),
    'tlsError reported',
  );
  t.equal(pair.upstream.calls, 0);

  // Client side: a TLS server that negotiates no ALPN (or another one) is not an HBONE server.
  for (const alpn of [undefined, ['http/1.1']]) {
    const spy = tls.createServer({
      ...tlsOptions(pair.serverCert),
      requestCert: true,
      ...(alpn ? { ALPNProtocols: alpn } : {}),
    });
    spy.on('secureConnection', (s) => s.on('error', () => undefined));
    spy.on('tlsClientError', () => undefined);
    spy.listen(0, '127.0.0.1');
    await once(spy, 'listening');
    const err = await pair.client
      .connect({
        peer: { host: '127.0.0.1', port: (spy.address() as net.AddressInfo).port },
        authority: '127.0.0.1:1',
        expectedIdentities: [TEST_SERVER_ID],
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    t.ok(
      err instanceof HboneError && err.code === 'HBONE_ERR_TLS',
      `alpn=${JSON.stringify(alpn)}: ${String(err)}`,
    );
    spy.close();
  }
});

t.test('no TLS session resumption, either side', async (t) => {
  const pair = await startHbonePair();
  t.teardown(() => pair.close());
  // Server: a client that offers the session from its previous connection gets a full handshake.
  const first = tls.connect({
    host: '127.0.0.1',
    port: pair.address.port,
    ...tlsOptions(pair.clientCert),
    ALPNProtocols: ['h2'],
    checkServerIdentity: () => undefined,
  });
  let session: Buffer | undefined;
  first.on('session', (s: Buffer) => (session = s));
  first.on('error', () => undefined);
  await once(first, 'secureConnect');
  await sleep(100);
  first.destroy();
  t.ok(session, 'the server issued something a client could offer');
  const second = await rawTls(pair.address.port, {
    ...tlsOptions(pair.clientCert),
    ALPNProtocols: ['h2'],
    ...(session ? { session } : {}),
  });
  t.equal(second.socket?.isSessionReused(), false, 'HboneServer did not resume');
  second.socket?.destroy();

  // Client: against a server that does resume (control below proves it), our client's second
  // connection is still a full handshake because it never offers a session.
  const reused: boolean[] = [];
  const resuming = tls.createServer(
    { ...tlsOptions(pair.serverCert), ALPNProtocols: ['h2'], requestCert: true },
    (s) => {
      reused.push(s.isSessionReused());
      s.on('error', () => undefined);
      setTimeout(() => s.destroy(), 50);
    },
  );
  resuming.listen(0, '127.0.0.1');
  await once(resuming, 'listening');
  t.teardown(() => resuming.close());
  const port = (resuming.address() as net.AddressInfo).port;
  for (let i = 0; i < 2; i++) {
    await pair.client
      .connect({
        peer: { host: '127.0.0.1', port },
        authority: '127.0.0.1:1',
        expectedIdentities: [TEST_SERVER_ID],
      })
      .catch(() => undefined);
  }
  t.same(reused, [false, false], 'our client never resumed');
  // Control: a plain client offering its session IS resumed by this server.
  const c1 = tls.connect({
    host: '127.0.0.1',
    port,
    ...tlsOptions(pair.clientCert),
    checkServerIdentity: () => undefined,
  });
  let s1: Buffer | undefined;
  c1.on('session', (s: Buffer) => (s1 = s));
  c1.on('error', () => undefined);
  await once(c1, 'close');
  const c2 = tls.connect({
    host: '127.0.0.1',
    port,
    ...tlsOptions(pair.clientCert),
    checkServerIdentity: () => undefined,
    ...(s1 ? { session: s1 } : {}),
  });
  c2.on('error', () => undefined);
  await once(c2, 'secureConnect');
  t.equal(c2.isSessionReused(), true, 'control: the resuming server does resume offered sessions');
  c2.destroy();
});

t.test('client certificates: required, chain-checked, SVID-checked in our trust domain', async (t) => {
  const ca = await newTestCa();
  const calls: InboundConnect[] = [];
  const echo = await startEchoServer();
  const pair = await startHbonePair({
    ca,
    onConnect: async (req) => {
      calls.push(req);
      return { status: 503, reason: 'test' };
    },
  });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const rejected: string[] = [];
  pair.server.on('peerRejected', (err) => rejected.push(err.message));
  const tlsErrors: string[] = [];
  pair.server.on('tlsError', (err) => tlsErrors.push(err.message));

  // No client certificate: the handshake is refused.
  const noCert = await rawTls(pair.address.port, {
    ca: pair.serverCert.rootsPem.join('\n'),
    ALPNProtocols: ['h2'],
  });
  t.notOk(noCert.socket && (await survives(noCert.socket, 300)), 'client without certificate refused');

  // A certificate from a foreign CA: refused by the OpenSSL chain check.
  const foreign = await newTestCa({ trustDomain: 'cluster.local' });
  const foreignCert = await issueWorkloadCert(foreign, 'spiffe://cluster.local/ns/a/sa/client');
  const viaForeign = new HboneClient({
    certificate: () => ({ ...foreignCert, rootsPem: pair.clientCert.rootsPem }),
  });
  const e1 = await viaForeign
    .connect({
      peer: pair.peer,
      authority: `127.0.0.1:${echo.port}`,
      expectedIdentities: [pair.serverId],
    })
    .catch((e: unknown) => e);
  t.ok(e1 instanceof HboneError, `foreign CA refused: ${String(e1)}`);
  await viaForeign.close();

  // Signed by OUR CA but for another trust domain (checklist B.23), and with two URI SANs (B.25):
  // OpenSSL accepts the chain, the SVID check refuses the session before any stream.
  const evilUri = 'spiffe://evil.local/ns/a/sa/b';
  const evil = await mintCert({ issuer: ca, uris: [evilUri] });
  const twoSans = await mintCert({
    issuer: ca,
    uris: ['spiffe://cluster.local/ns/a/sa/b', 'spiffe://cluster.local/ns/x/sa/y'],
  });
  for (const [name, m, uri] of [
    ['other trust domain', evil, evilUri],
    ['two URI SANs', twoSans, 'spiffe://cluster.local/ns/a/sa/b'],
  ] as const) {
    const before = rejected.length;
    const c = new HboneClient({ certificate: () => workloadFromMinted(m, uri, pair.clientCert.rootsPem) });
    const err = await c
      .connect({ peer: pair.peer, authority: `127.0.0.1:${echo.port}`, expectedIdentities: [pair.serverId] })
      .catch((e: unknown) => e);
    t.ok(err instanceof HboneError, `${name}: client sees a failure (${String(err)})`);
    t.equal(rejected.length, before + 1, `${name}: server reported peerRejected`);
    await c.close();
  }
  t.match(rejected.join('\n'), /trust domain/);
  // A rejected client never receives a byte of HTTP/2 (not even the server's SETTINGS).
  const raw = tls.connect({
    host: '127.0.0.1',
    port: pair.address.port,
    key: evil.privateKeyPem,
    cert: evil.certPem,
    ca: pair.clientCert.rootsPem.join('\n'),
    ALPNProtocols: ['h2'],
    checkServerIdentity: () => undefined,
  });
  raw.on('error', () => undefined);
  let rx = 0;
  raw.on('data', (d: Buffer) => (rx += d.length));
  raw.write(
    Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
    ]),
  );
  await new Promise((resolve) => raw.once('close', resolve));
  t.equal(rx, 0, 'rejected client received 0 bytes of HTTP/2');
  t.equal(calls.length, 0, 'onConnect never called for a rejected peer');
  t.equal(echo.accepted, 0, 'nothing dialled');

  // The valid client gets through to onConnect, with its verified identity.
  const err = await pair.connect(`127.0.0.1:${echo.port}`).catch((e: unknown) => e);
  t.ok(err instanceof HboneError && err.status === 503);
  t.equal(calls.length, 1);
  t.equal(calls[0]?.peer.id.uri, pair.clientId);
});

t.test('client verifies the server identity before sending any HTTP/2 byte', async (t) => {
  const ca = await newTestCa();
  const serverCert = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/other/sa/impostor');
  const clientCert = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/a/sa/client');
  let bytesAfterHandshake = 0;
  let handshakes = 0;
  const spy = tls.createServer(
    { ...tlsOptions(serverCert), ALPNProtocols: ['h2'], requestCert: true },
    (s) => {
      handshakes++;
      s.on('data', (d: Buffer) => (bytesAfterHandshake += d.length));
      s.on('error', () => undefined);
    },
  );
  spy.listen(0, '127.0.0.1');
  await once(spy, 'listening');
  t.teardown(() => spy.close());
  const client = new HboneClient({ certificate: () => clientCert });
  t.teardown(() => client.close());
  const err = await client
    .connect({
      peer: { host: '127.0.0.1', port: (spy.address() as net.AddressInfo).port },
      authority: '127.0.0.1:9',
      expectedIdentities: [TEST_SERVER_ID],
    })
    .catch((e: unknown) => e);
  t.ok(err instanceof HboneError, String(err));
  t.equal((err as HboneError).code, 'HBONE_ERR_PEER_IDENTITY');
  t.match((err as HboneError).message, /impostor/);
  await sleep(100);
  t.equal(handshakes, 1, 'the TLS handshake did happen');
  t.equal(
    bytesAfterHandshake,
    0,
    'not one byte (not even the HTTP/2 preface) was sent to the wrong identity',
  );
  t.equal(client.stats().sessionsOpened, 0);

  // A server certificate from a foreign CA fails the chain check (HBONE_ERR_TLS).
  const foreign = await newTestCa();
  const foreignServer = await issueWorkloadCert(foreign, TEST_SERVER_ID);
  const spy2 = tls.createServer(
    { ...tlsOptions(foreignServer), ALPNProtocols: ['h2'], requestCert: true },
    (s) => s.on('error', () => undefined),
  );
  spy2.on('tlsClientError', () => undefined);
  spy2.listen(0, '127.0.0.1');
  await once(spy2, 'listening');
  t.teardown(() => spy2.close());
  const err2 = await client
    .connect({
      peer: { host: '127.0.0.1', port: (spy2.address() as net.AddressInfo).port },
      authority: '127.0.0.1:9',
      expectedIdentities: [TEST_SERVER_ID],
    })
    .catch((e: unknown) => e);
  t.ok(err2 instanceof HboneError && err2.code === 'HBONE_ERR_TLS', String(err2));
});

t.test('intermediate CA chains verify in both directions', async (t) => {
  const ca = await newTestCa({ useIntermediate: true });
  const echo = await startEchoServer();
  const pair = await startHbonePair({ ca });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  t.equal(pair.serverCert.certChainPem.length, 2, 'leaf + intermediate');
  const tunnel = await pair.connect(`127.0.0.1:${echo.port}`);
  t.equal(tunnel.peer.id.uri, pair.serverId);
  tunnel.stream.end('x');
  tunnel.stream.resume();
  await once(tunnel.stream, 'close');
});

t.test('SecureContext cached per certificate object; rotation takes effect for new sessions', async (t) => {
  const echo = await startEchoServer();
  const peers: string[] = [];
  const pair = await startHbonePair({
    onConnect: async (req) => {
      peers.push(req.peer.serial);
      return {
        status: 200,
        upstream: await connectUpstream({ host: '127.0.0.1', port: echo.port, timeoutMs: 2000 }),
      };
    },
  });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const open = async (sourceIp?: string): Promise<string> => {
    const tun = await pair.connect(`127.0.0.1:${echo.port}`, sourceIp ? { sourceIp } : {});
    tun.stream.end();
    tun.stream.resume();
    await once(tun.stream, 'close');
    return tun.peer.serial;
  };
  // Three different pool keys → three sessions, three handshakes, one context per side.
  const s1 = await open();
  await open('127.0.0.2');
  await open('127.0.0.3');
  t.equal(pair.client.stats().sessionsOpened, 3);
  t.equal(pair.client.stats().secureContextsBuilt, 1, 'client built one SecureContext');
  t.equal(pair.server.stats().secureContextsBuilt, 1, 'server built one SecureContext');

  // Rotate both certificates (same identities, new objects).
  const oldClientSerial = peers[0];
  pair.clientCert = await issueWorkloadCert(pair.ca, pair.clientId);
  pair.serverCert = await issueWorkloadCert(pair.ca, pair.serverId);
  const s4 = await open('127.0.0.4');
  t.equal(pair.client.stats().secureContextsBuilt, 2);
  t.equal(pair.server.stats().secureContextsBuilt, 2);
  t.not(s4, s1);
  t.equal(s4, serialOf(pair.serverCert), 'the new session saw the rotated server certificate');
  t.not(peers[3], oldClientSerial);
  t.equal(peers[3], serialOf(pair.clientCert), 'the server saw the rotated client certificate');
  t.equal(peers[0], peers[2], 'before rotation every session presented the same client certificate');
});

t.test('TCP_NODELAY is set on client and server sockets', async (t) => {
  const echo = await startEchoServer();
  const noDelay: string[] = [];
  const spyDial = (peer: { host: string; port: number }): net.Socket => {
    const s = net.connect({ host: peer.host, port: peer.port });
    const orig = s.setNoDelay.bind(s);
    s.setNoDelay = (v?: boolean) => {
      noDelay.push(`client:${String(v)}`);
      return orig(v);
    };
    return s;
  };
  const pair = await startHbonePair({ dial: spyDial });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  // Server side through handleSocket, with a spied accepted socket.
  const acceptor = net.createServer((s) => {
    const orig = s.setNoDelay.bind(s);
    s.setNoDelay = (v?: boolean) => {
      noDelay.push(`server:${String(v)}`);
      return orig(v);
    };
    pair.server.handleSocket(s);
  });
  acceptor.listen(0, '127.0.0.1');
  await once(acceptor, 'listening');
  t.teardown(() => acceptor.close());
  const tun = await pair.client.connect({
    peer: { host: '127.0.0.1', port: (acceptor.address() as net.AddressInfo).port },
    authority: `127.0.0.1:${echo.port}`,
    expectedIdentities: [pair.serverId],
  });
  tun.stream.destroy();
  t.ok(noDelay.includes('client:true'), 'client socket');
  t.ok(noDelay.includes('server:true'), 'server socket');
});

t.test('handshake deadlines', async (t) => {
  const pair = await startHbonePair({
    serverSettings: { handshakeTimeoutMs: 300 },
    clientSettings: { handshakeTimeoutMs: 200, connectTimeoutMs: 200 },
  });
  t.teardown(() => pair.close());
  const timeouts: string[] = [];
  pair.server.on('tlsError', (err) => timeouts.push((err as Error & { code?: string }).code ?? err.message));

  // Server: a silent socket and a slowloris (1 byte every 50 ms) are both cut at the deadline.
  const measure = async (slow: boolean): Promise<number> => {
    const started = performance.now();
    const s = net.connect(pair.address.port, '127.0.0.1');
    s.on('error', () => undefined);
    let timer: NodeJS.Timeout | undefined;
    if (slow) {
      const hello = Buffer.from('160301020001000000', 'hex');
      let i = 0;
      timer = setInterval(() => {
        if (!s.destroyed) s.write(hello.subarray(i % hello.length, (i % hello.length) + 1));
        i++;
      }, 50);
    }
    await Promise.race([new Promise((resolve) => s.once('close', resolve)), sleep(5000)]);
    clearInterval(timer);
    const ms = performance.now() - started;
    s.destroy();
    return ms;
  };
  const silent = await measure(false);
  const slowloris = await measure(true);
  t.ok(silent >= 250 && silent < 3000, `silent socket closed after ${silent.toFixed(0)} ms`);
  t.ok(slowloris >= 250 && slowloris < 3000, `slowloris socket closed after ${slowloris.toFixed(0)} ms`);
  t.ok(
    timeouts.filter((c) => c === 'ERR_TLS_HANDSHAKE_TIMEOUT').length >= 2,
    'reported as handshake timeouts',
  );

  // Client: a peer that accepts TCP and never speaks TLS.
  const mute = net.createServer((s) => s.on('error', () => undefined));
  mute.listen(0, '127.0.0.1');
  await once(mute, 'listening');
  t.teardown(() => mute.close());
  const started = performance.now();
  const err = await pair.client
    .connect({
      peer: { host: '127.0.0.1', port: (mute.address() as net.AddressInfo).port },
      authority: '127.0.0.1:9',
      expectedIdentities: [pair.serverId],
    })
    .catch((e: unknown) => e);
  t.ok(err instanceof HboneError && err.code === 'HBONE_ERR_HANDSHAKE_TIMEOUT', String(err));
  t.ok(performance.now() - started < 3000);
});

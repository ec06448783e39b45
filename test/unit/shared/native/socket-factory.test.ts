// SPDX-License-Identifier: Apache-2.0
// Unit tests of the SocketFactory seam (ztunnel/src/inpod/socket-factory.ts) on loopback:
// DefaultSocketFactory listen/connect/originalDst, and InPodSocketFactory without a netns
// (sockets in our own netns, still marked). The in-pod paths with real namespaces and iptables
// are in test/netns/native/.
import net from 'node:net';
import { statSync } from 'node:fs';
import t from 'tap';

import { getMark, socketFd, socketNetnsInode } from '../../../../src/shared/native/index.ts';
import {
  DEFAULT_INPOD_MARK,
  DefaultSocketFactory,
  InPodSocketFactory,
} from '../../../../ztunnel/src/inpod/socket-factory.ts';
import type { SocketFactory } from '../../../../ztunnel/src/inpod/socket-factory.ts';

const isRoot = process.getuid?.() === 0;

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function portOf(server: net.Server): number {
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('server has no TCP address');
  return a.port;
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Sends `msg`, half-closes, and resolves with everything the peer sent back. */
function roundTrip(socket: net.Socket, msg: string): Promise<string> {
  return within(
    new Promise((resolve, reject) => {
      let data = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (data += d));
      socket.once('end', () => resolve(data));
      socket.once('error', reject);
      socket.end(msg);
    }),
    3000,
    'round trip',
  );
}

interface Accepted {
  remote: string | undefined;
  /** factory.originalDst(socket), or the error it threw. Read at accept time: once the socket
   * closes its addresses are gone. */
  dst: unknown;
}

/** Echo server that records, for each accepted socket, its peer and original destination. */
async function echoOn(factory: SocketFactory, host: string, reusePort?: boolean) {
  const server = await factory.listen({ host, port: 0, ...(reusePort !== undefined && { reusePort }) });
  const accepted: Accepted[] = [];
  server.on('connection', (s) => {
    let dst: unknown;
    try {
      dst = factory.originalDst(s);
    } catch (err) {
      dst = err;
    }
    accepted.push({ remote: s.remoteAddress, dst });
    s.pipe(s);
  });
  return { server, accepted };
}

t.test('DefaultSocketFactory: listen, connect, originalDst', async (t) => {
  const f = new DefaultSocketFactory();
  const { server, accepted } = await echoOn(f, '127.0.0.1');
  t.teardown(() => closeServer(server));
  t.ok(server.listening, 'listening when the promise resolves');
  const port = portOf(server);
  const socket = await f.connect({ host: '127.0.0.1', port, timeoutMs: 2000 });
  t.notOk(socket.connecting, 'connected when the promise resolves');
  const reply = roundTrip(socket, 'hello');
  t.equal(await reply, 'hello');
  t.equal(accepted.length, 1);
  t.same(accepted[0]?.dst, { address: '127.0.0.1', port, family: 4 });
});

t.test('DefaultSocketFactory: dual-stack listener maps IPv4 clients to family 4', async (t) => {
  const f = new DefaultSocketFactory();
  const { server, accepted } = await echoOn(f, '::');
  t.teardown(() => closeServer(server));
  const port = portOf(server);
  const v4 = await f.connect({ host: '127.0.0.1', port });
  t.equal(await roundTrip(v4, 'a'), 'a');
  const v6 = await f.connect({ host: '::1', port });
  t.equal(await roundTrip(v6, 'b'), 'b');
  t.same(accepted[0]?.dst, { address: '127.0.0.1', port, family: 4 });
  t.same(accepted[1]?.dst, { address: '::1', port, family: 6 });
});

t.test('DefaultSocketFactory: localAddress, transparent and errors', async (t) => {
  const f = new DefaultSocketFactory();
  const { server, accepted } = await echoOn(f, '127.0.0.1');
  t.teardown(() => closeServer(server));
  const port = portOf(server);
  const bound = await f.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.3' });
  t.equal(bound.localAddress, '127.0.0.3');
  await roundTrip(bound, 'x');
  t.equal(accepted[0]?.remote, '127.0.0.3', 'server sees the bound source');
  // Plain sockets cannot spoof: a foreign transparent source is dropped, not bound.
  const spoof = await f.connect({ host: '127.0.0.1', port, localAddress: '198.18.99.7', transparent: true });
  t.equal(spoof.localAddress, '127.0.0.1');
  await roundTrip(spoof, 'y');

  await t.rejects(f.listen({ host: '127.0.0.1', port }), { code: 'ZT_ERR_LISTEN', message: /127\.0\.0\.1/ });
  const closed = await f.listen({ host: '127.0.0.1', port: 0 });
  const deadPort = portOf(closed);
  await closeServer(closed);
  await t.rejects(f.connect({ host: '127.0.0.1', port: deadPort }), {
    code: 'ZT_ERR_CONNECT',
    message: new RegExp(`127\\.0\\.0\\.1:${deadPort}`),
    cause: { code: 'ECONNREFUSED' },
  });
  t.throws(() => f.originalDst(new net.Socket()), { code: 'ZT_ERR_ORIGINAL_DST' });
});

t.test('DefaultSocketFactory: reusePort lets two servers share a port', async (t) => {
  const f = new DefaultSocketFactory();
  const a = await f.listen({ host: '127.0.0.1', port: 0, reusePort: true });
  t.teardown(() => closeServer(a));
  const b = await f.listen({ host: '127.0.0.1', port: portOf(a), reusePort: true });
  t.teardown(() => closeServer(b));
  t.equal(portOf(b), portOf(a));
});

t.test('InPodSocketFactory without a netns: marked sockets in our own netns', async (t) => {
  if (!isRoot) {
    // SO_MARK needs CAP_NET_ADMIN: EPERM is expected without root.
    const f = new InPodSocketFactory();
    await t.rejects(f.listen({ host: '127.0.0.1', port: 0 }), { code: 'EPERM' });
    return;
  }
  const f = new InPodSocketFactory();
  t.equal(f.mark, DEFAULT_INPOD_MARK);
  t.equal(DEFAULT_INPOD_MARK, 0x539);
  t.equal(f.netnsInode(), undefined);
  const { server, accepted } = await echoOn(f, '127.0.0.1', true);
  t.teardown(() => closeServer(server));
  t.equal(getMark(socketFd(server)), 1337, 'listener marked');
  const port = portOf(server);
  const socket = await f.connect({ host: '127.0.0.1', port, timeoutMs: 2000 });
  t.equal(getMark(socketFd(socket)), 1337, 'client marked');
  t.equal(socketNetnsInode(socketFd(socket)), statSync('/proc/self/ns/net').ino);
  t.equal(await roundTrip(socket, 'in-pod'), 'in-pod');
  t.equal(accepted.length, 1);
  // No iptables redirect happened, so SO_ORIGINAL_DST either has no entry or reports the real
  // destination; it never invents one.
  const dst = accepted[0]?.dst;
  if (dst instanceof Error) t.match(dst, { name: 'NativeError', code: /^(ENOENT|ENOPROTOOPT)$/ });
  else t.same(dst, { address: '127.0.0.1', port, family: 4 });
  // Connection errors come back as MeshErrors with the errno in the cause.
  const dead = await f.listen({ host: '127.0.0.1', port: 0 });
  const deadPort = portOf(dead);
  await closeServer(dead);
  await t.rejects(f.connect({ host: '127.0.0.1', port: deadPort }), {
    code: 'ZT_ERR_CONNECT',
    cause: { code: 'ECONNREFUSED' },
  });
  // Names are refused: they would be resolved in ztunnel's netns, not the pod's. Errors surface
  // as rejections, not synchronous throws.
  await t.rejects(f.connect({ host: 'localhost', port: 1 }), { code: 'ZT_ERR_INVALID_ADDRESS' });
  await t.rejects(f.listen({ host: 'localhost', port: 0 }), TypeError);
});

t.test('InPodSocketFactory rejects netnsPath together with netnsFd', async (t) => {
  t.throws(() => new InPodSocketFactory({ netnsPath: '/proc/self/ns/net', netnsFd: 3 }), {
    code: 'ZT_ERR_SOCKET_FACTORY',
  });
});

t.test('InPodSocketFactory with our own netns path opens and closes the fd', async (t) => {
  if (!isRoot) {
    // Opening a netns file needs no privilege; entering it (setns) needs CAP_SYS_ADMIN.
    const f = new InPodSocketFactory({ netnsPath: '/proc/self/ns/net', mark: 42 });
    t.teardown(() => f.close());
    await t.rejects(f.listen({ host: '127.0.0.1', port: 0 }), { code: 'EPERM' });
    return;
  }
  const f = new InPodSocketFactory({ netnsPath: '/proc/self/ns/net', mark: 42 });
  t.equal(f.netnsInode(), statSync('/proc/self/ns/net').ino);
  const { server } = await echoOn(f, '127.0.0.1');
  t.equal(getMark(socketFd(server)), 42);
  const s = await f.connect({ host: '127.0.0.1', port: portOf(server) });
  t.equal(await roundTrip(s, 'z'), 'z');
  await closeServer(server);
  f.close();
  f.close();
  t.throws(() => f.netnsInode(), { code: 'ZT_ERR_SOCKET_FACTORY' });
  await t.rejects(f.listen({ host: '127.0.0.1', port: 0 }), { code: 'ZT_ERR_SOCKET_FACTORY' });
});

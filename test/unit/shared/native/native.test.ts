// SPDX-License-Identifier: Apache-2.0
// Unit tests of the native socket addon (src/shared/native) that need no extra network
// namespace: loopback listeners and connects, SO_REUSEPORT, SO_MARK, SO_ORIGINAL_DST error
// paths, argument validation, and setns into our own namespace (restore check).
// Needs the addon built first: npm run build:native.
import { openSync, closeSync, statSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';

import { MeshError } from '../../../../src/shared/errors.ts';
import {
  NativeError,
  closeFd,
  currentNetns,
  getMark,
  listenTcp,
  loadNativeAddon,
  nativeAddonPath,
  nativeAvailable,
  netnsInode,
  openNetns,
  originalDst,
  setMark,
  setTransparent,
  socketFd,
  socketForConnect,
  socketNetnsInode,
} from '../../../../src/shared/native/index.ts';

const isRoot = process.getuid?.() === 0;

/** Rejects when `p` does not settle within `ms`, so a broken socket never hangs the run. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Serves a listening fd: replies to each connection with its remote address, then ends. */
async function serveFd(fd: number): Promise<net.Server> {
  const server = net.createServer((s) => s.end(`${s.remoteAddress}:${s.remotePort}`));
  await within(
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, resolve);
    }),
    2000,
    'listen({fd})',
  );
  return server;
}

function portOf(server: net.Server): number {
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('server has no TCP address');
  return a.port;
}

function readAll(socket: net.Socket): Promise<string> {
  return within(
    new Promise((resolve, reject) => {
      let data = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (data += d));
      socket.once('end', () => resolve(data));
      socket.once('error', reject);
    }),
    3000,
    'reading the reply',
  );
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Connects a natively created fd with net.Socket (the pattern the factory uses). */
function connectFd(fd: number, port: number, host: string): Promise<net.Socket> {
  const socket = new net.Socket({ fd });
  return within(
    new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(port, host, () => resolve(socket));
    }),
    3000,
    `connect ${host}:${port}`,
  );
}

t.test('the addon is built and loads', async (t) => {
  t.ok(nativeAvailable(), `addon loads from ${nativeAddonPath()} (run npm run build:native if not)`);
  t.match(nativeAddonPath(), /build\/native\/mesh_native\.node$/);
});

t.test('missing addon and non-Linux give clear MeshErrors', async (t) => {
  t.throws(() => loadNativeAddon('/nonexistent/mesh_native.node'), {
    code: 'NATIVE_ERR_NOT_BUILT',
    message: /native addon not built: run npm run build:native/,
  });
  t.throws(() => loadNativeAddon(nativeAddonPath(), 'darwin'), { code: 'NATIVE_ERR_UNSUPPORTED' });
  t.throws(() => loadNativeAddon('/etc/hostname'), { code: 'NATIVE_ERR_LOAD' });
  try {
    loadNativeAddon('/nonexistent/x.node');
  } catch (err) {
    t.ok(err instanceof MeshError, 'a MeshError');
  }
});

t.test('listenTcp on 127.0.0.1 without netns serves connections', async (t) => {
  const fd = listenTcp({ host: '127.0.0.1', port: 0 });
  t.equal(socketNetnsInode(fd), statSync('/proc/self/ns/net').ino, 'socket lives in our own netns');
  const server = await serveFd(fd);
  t.teardown(() => closeServer(server));
  const client = net.connect(portOf(server), '127.0.0.1');
  const reply = await readAll(client);
  t.match(reply, /^127\.0\.0\.1:\d+$/);
});

t.test('listenTcp on ::1 (IPv6)', async (t) => {
  const fd = listenTcp({ host: '::1', port: 0, v6only: true });
  const server = await serveFd(fd);
  t.teardown(() => closeServer(server));
  const addr = server.address();
  t.match(addr, { address: '::1', family: 'IPv6' });
  const reply = await readAll(net.connect(portOf(server), '::1'));
  t.match(reply, /^::1:\d+$/);
});

t.test('reusePort: two listeners share a port and both accept', async (t) => {
  const first = listenTcp({ host: '127.0.0.1', port: 0, reusePort: true });
  const counts = [0, 0];
  const servers: net.Server[] = [];
  const makeServer = async (fd: number, i: 0 | 1): Promise<net.Server> => {
    const server = net.createServer((s) => {
      counts[i] = (counts[i] ?? 0) + 1;
      s.end('x');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, resolve);
    });
    servers.push(server);
    return server;
  };
  t.teardown(() => Promise.all(servers.map(closeServer)));
  const a = await makeServer(first, 0);
  const port = portOf(a);

  // Without SO_REUSEPORT on the second socket the port is taken.
  t.throws(() => listenTcp({ host: '127.0.0.1', port }), {
    name: 'NativeError',
    code: 'EADDRINUSE',
    syscall: 'bind',
    message: /SO_REUSEPORT/,
  });

  await makeServer(listenTcp({ host: '127.0.0.1', port, reusePort: true }), 1);
  // The kernel spreads connections by a hash of the 4-tuple; 40 connections all landing on one
  // listener has probability 2^-39.
  for (let i = 0; i < 40; i++) {
    await readAll(net.connect(port, '127.0.0.1'));
  }
  t.equal((counts[0] ?? 0) + (counts[1] ?? 0), 40, 'every connection accepted');
  t.ok((counts[0] ?? 0) >= 1, `first listener accepted ${counts[0]}`);
  t.ok((counts[1] ?? 0) >= 1, `second listener accepted ${counts[1]}`);
});

t.test('socketForConnect + new net.Socket({fd}).connect() works (IPv4, bound source)', async (t) => {
  const server = await serveFd(listenTcp({ host: '127.0.0.1', port: 0 }));
  t.teardown(() => closeServer(server));
  const fd = socketForConnect({ family: 4, bindHost: '127.0.0.2' });
  const socket = await connectFd(fd, portOf(server), '127.0.0.1');
  t.equal(socket.localAddress, '127.0.0.2', 'bound source address kept');
  t.equal(socketFd(socket), fd, 'net.Socket wraps our fd');
  const reply = await readAll(socket);
  t.match(reply, /^127\.0\.0\.2:\d+$/, 'server sees the bound source');
});

t.test('socketForConnect IPv6 and a refused connection', async (t) => {
  const server = await serveFd(listenTcp({ host: '::1', port: 0 }));
  const port = portOf(server);
  const socket = await connectFd(socketForConnect({ family: 6 }), port, '::1');
  t.match(await readAll(socket), /^::1:\d+$/);
  await closeServer(server);
  // Now nothing listens there: the wrapped socket reports ECONNREFUSED like any net.Socket.
  await t.rejects(connectFd(socketForConnect({ family: 6 }), port, '::1'), { code: 'ECONNREFUSED' });
});

t.test('SO_MARK: set at creation and setMark/getMark round trip', async (t) => {
  const server = await serveFd(listenTcp({ host: '127.0.0.1', port: 0 }));
  t.teardown(() => closeServer(server));
  if (!isRoot) {
    // Setting SO_MARK needs CAP_NET_ADMIN (or CAP_NET_RAW): EPERM is the expected answer.
    t.throws(() => socketForConnect({ family: 4, mark: 1337 }), { code: 'EPERM', message: /CAP_NET_ADMIN/ });
    return;
  }
  const fd = socketForConnect({ family: 4, mark: 1337 });
  t.equal(getMark(fd), 1337, 'mark set before connect');
  const socket = await connectFd(fd, portOf(server), '127.0.0.1');
  t.equal(getMark(socketFd(socket)), 1337, 'mark survives connect');
  setMark(socketFd(socket), 0xffffffff);
  t.equal(getMark(socketFd(socket)), 0xffffffff, 'full unsigned 32-bit range');
  setMark(socketFd(socket), 0);
  t.equal(getMark(socketFd(socket)), 0);
  await readAll(socket);

  const lfd = listenTcp({ host: '127.0.0.1', port: 0, mark: 0x539 });
  t.equal(getMark(lfd), 0x539, 'listener mark');
  closeFd(lfd);
});

t.test('setTransparent on IPv4 and IPv6 sockets', async (t) => {
  const v4 = socketForConnect({ family: 4 });
  const v6 = socketForConnect({ family: 6 });
  t.teardown(() => {
    closeFd(v4);
    closeFd(v6);
  });
  if (!isRoot) {
    t.throws(() => setTransparent(v4, true), { code: 'EPERM' }, 'IP_TRANSPARENT needs CAP_NET_ADMIN');
    return;
  }
  t.doesNotThrow(() => setTransparent(v4, true));
  t.doesNotThrow(() => setTransparent(v6, true));
  t.doesNotThrow(() => setTransparent(v4, false));
  const devNull = openSync('/dev/null', 'r');
  t.teardown(() => closeSync(devNull));
  t.throws(() => setTransparent(devNull, true), { code: 'ENOTSOCK', syscall: 'getsockopt(SO_DOMAIN)' });
});

t.test('transparent + freebind bind a foreign source address', async (t) => {
  if (!isRoot) {
    t.throws(() => socketForConnect({ family: 4, transparent: true }), { code: 'EPERM' });
    return;
  }
  // 198.18.99.7 is assigned nowhere; plain bind fails, transparent+freebind binds it.
  t.throws(() => socketForConnect({ family: 4, bindHost: '198.18.99.7' }), {
    code: 'EADDRNOTAVAIL',
    message: /198\.18\.99\.7/,
  });
  const fd = socketForConnect({ family: 4, transparent: true, freebind: true, bindHost: '198.18.99.7' });
  closeFd(fd);
  t.pass('bound a foreign address');
});

t.test('originalDst on a non-redirected socket: a clear error or the real local address', async (t) => {
  const server = net.createServer();
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => closeServer(server));
  const client = net.connect(portOf(server), '127.0.0.1');
  const conn = await within(accepted, 2000, 'accept');
  t.teardown(() => {
    client.destroy();
    conn.destroy();
  });
  try {
    // With conntrack active in this netns the kernel reports the tracked (unchanged) destination.
    const dst = originalDst(socketFd(conn));
    t.same(dst, { address: '127.0.0.1', port: portOf(server), family: 4 }, 'tracked: the real destination');
  } catch (err) {
    t.ok(err instanceof NativeError, 'a NativeError');
    t.match(err, { syscall: 'getsockopt(SO_ORIGINAL_DST)', message: /not redirected|not active/ });
    t.ok(['ENOENT', 'ENOPROTOOPT'].includes((err as NativeError).code), `code ${(err as NativeError).code}`);
  }

  const devNull = openSync('/dev/null', 'r');
  t.teardown(() => closeSync(devNull));
  t.throws(() => originalDst(devNull), { code: 'ENOTSOCK', syscall: 'getsockname', message: /not a socket/ });
  // fd numbers this high are never open here (RLIMIT_NOFILE is far lower).
  t.throws(() => originalDst(1_000_000_000), { code: 'EBADF' });
});

t.test('netns fds: open, compare, reject non-netns files', async (t) => {
  const own = openNetns('/proc/self/ns/net');
  const cur = currentNetns();
  t.teardown(() => {
    closeFd(own);
    closeFd(cur);
  });
  t.equal(netnsInode(own), netnsInode(cur), 'same namespace, same inode');
  t.equal(netnsInode(own), statSync('/proc/self/ns/net').ino);
  t.throws(() => openNetns('/nonexistent/netns'), { code: 'ENOENT', syscall: 'open' });
  t.throws(() => openNetns('/etc/hostname'), { code: 'EINVAL', message: /not a network namespace/ });
  t.throws(() => openNetns('/proc/self/ns/uts'), { code: 'EINVAL', message: /not a network namespace/ });
});

t.test('setns into a netns restores the thread, on success and on error', async (t) => {
  const before = statSync('/proc/thread-self/ns/net').ino;
  const own = openNetns('/proc/self/ns/net');
  t.teardown(() => closeFd(own));
  if (!isRoot) {
    t.throws(() => listenTcp({ netnsFd: own, host: '127.0.0.1', port: 0 }), {
      code: 'EPERM',
      syscall: 'setns',
    });
    return;
  }
  const fd = listenTcp({ netnsFd: own, host: '127.0.0.1', port: 0 });
  t.equal(socketNetnsInode(fd), before);
  closeFd(fd);
  // A bind error after setns: we must still be home.
  t.throws(() => listenTcp({ netnsFd: own, host: '198.18.99.7', port: 0 }), { code: 'EADDRNOTAVAIL' });
  // setns with something that is not a netns fd fails before anything is created.
  const devNull = openSync('/dev/null', 'r');
  t.teardown(() => closeSync(devNull));
  t.throws(() => socketForConnect({ netnsFd: devNull, family: 4 }), { code: 'EINVAL', syscall: 'setns' });
  t.equal(statSync('/proc/thread-self/ns/net').ino, before, 'thread back in its own netns');
});

t.test('bad arguments throw TypeErrors', async (t) => {
  const cases: [string, () => unknown][] = [
    ['host name instead of IP', () => listenTcp({ host: 'localhost', port: 0 })],
    ['port out of range', () => listenTcp({ host: '127.0.0.1', port: 70000 })],
    ['fractional port', () => listenTcp({ host: '127.0.0.1', port: 1.5 })],
    ['negative mark', () => listenTcp({ host: '127.0.0.1', port: 0, mark: -1 })],
    ['mark above 32 bits', () => listenTcp({ host: '127.0.0.1', port: 0, mark: 2 ** 32 })],
    ['family/host mismatch', () => listenTcp({ host: '::1', port: 0, family: 4 })],
    ['family 5', () => socketForConnect({ family: 5 as 4 })],
    ['missing host', () => listenTcp({ port: 0 } as unknown as { host: string; port: number })],
    [
      'non-boolean option',
      () => listenTcp({ host: '127.0.0.1', port: 0, transparent: 'yes' as unknown as boolean }),
    ],
    ['options not an object', () => listenTcp(null as unknown as { host: string; port: number })],
    ['no family for connect', () => socketForConnect({} as unknown as { family: 4 })],
    ['bad bindHost', () => socketForConnect({ family: 6, bindHost: '1.2.3.4' })],
    ['fd as string', () => closeFd('3' as unknown as number)],
    ['negative fd', () => getMark(-1)],
    ['missing argument', () => (setMark as unknown as (fd: number) => void)(0)],
    ['path with NUL', () => openNetns('/proc/self/ns/net\0x')],
  ];
  for (const [what, fn] of cases) t.throws(fn, TypeError, what);
});

t.test('socketFd refuses a socket without a handle', async (t) => {
  t.throws(() => socketFd(new net.Socket()), { code: 'NATIVE_ERR_NO_FD' });
});

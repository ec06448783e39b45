// SPDX-License-Identifier: Apache-2.0
// Root-only proofs of the native socket addon and InPodSocketFactory with real network
// namespaces (DESIGN.md decision 4, spec 2.2, 2.3, 2.7). Two namespaces, A ("the pod") and B
// ("a peer"), joined by a veth pair in 198.18.250.0/30; the test process itself stays in the
// root netns and creates sockets inside A and B through setns-in-one-call.
//   (a) a listener created in A from the root netns accepts a connection from B
//   (b) SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST after nat REDIRECT (PREROUTING, OUTPUT, IPv6,
//       dual-stack)
//   (c) SO_MARK is what an iptables `-m mark --mark 1337` rule counts
//   (d) InPodSocketFactory end to end: captured outbound -> proxy in A -> marked upstream to B
//   (e) IP_TRANSPARENT + foreign source to the app in A, replies via connmark + table 100
// Every namespace carries the prefix amt-<pid>- and is deleted in teardown, even on failure.
import { execFileSync } from 'node:child_process';
import { closeSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';

import {
  closeFd,
  getMark,
  listenTcp,
  netnsInode,
  openNetns,
  originalDst,
  socketFd,
  socketForConnect,
  socketNetnsInode,
} from '../../../src/shared/native/index.ts';
import type { OriginalDst } from '../../../src/shared/native/index.ts';
import { InPodSocketFactory } from '../../../ztunnel/src/inpod/socket-factory.ts';

const PREFIX = `amt-${process.pid}-`;
const NS_A = `${PREFIX}a`;
const NS_B = `${PREFIX}b`;
// Interface names are limited to 15 bytes: "amt-" + pid (<= 7 digits) + "-va" fits.
const VETH_A = `${PREFIX}va`;
const VETH_B = `${PREFIX}vb`;
const IP_A = '198.18.250.1';
const IP_B = '198.18.250.2';
/** Assigned nowhere: the spoofed client address for (e). */
const FOREIGN = '198.18.99.7';

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
}

function inNs(ns: string, cmd: string, args: string[]): string {
  return run('ip', ['netns', 'exec', ns, cmd, ...args]);
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Serves a listening fd with `handler`. */
async function serveFd(fd: number, handler: (s: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer(handler);
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

/** Connects a natively created fd, sends `msg`, half-closes and returns the whole reply. */
function exchange(fd: number, host: string, port: number, msg: string): Promise<string> {
  const socket = new net.Socket({ fd });
  return within(
    new Promise((resolve, reject) => {
      let data = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (data += d));
      socket.once('end', () => resolve(data));
      socket.once('error', reject);
      socket.connect(port, host, () => socket.end(msg));
    }),
    5000,
    `exchange with ${host}:${port}`,
  );
}

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
    5000,
    'round trip',
  );
}

/** Replies "<remote address>|<everything received>" once the client half-closes. */
function echoWithPeer(s: net.Socket): void {
  let got = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => (got += d));
  s.on('end', () => s.end(`${s.remoteAddress}|${got}`));
  s.on('error', () => s.destroy());
}

/** Replies with JSON of originalDst(fd) of the accepted socket, or the error code. */
function replyOriginalDst(s: net.Socket): void {
  let body: string;
  try {
    body = JSON.stringify(originalDst(socketFd(s)));
  } catch (err) {
    body = JSON.stringify({ error: (err as { code?: string }).code, message: (err as Error).message });
  }
  s.on('error', () => s.destroy());
  s.resume();
  s.end(body);
}

/** Packet counters of the mangle OUTPUT rules in `ns` whose text contains `match`. */
function mangleCounters(ns: string, match: string): number[] {
  return inNs(ns, 'iptables', ['-w', '-t', 'mangle', '-n', '-v', '-x', '-L', 'OUTPUT'])
    .split('\n')
    .filter((l) => l.includes(match))
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

function leftovers(): string[] {
  const netns = run('ip', ['netns', 'list'])
    .split('\n')
    .filter((l) => l.includes(PREFIX));
  const links = run('ip', ['-o', 'link', 'show'])
    .split('\n')
    .filter((l) => l.includes(PREFIX));
  return [...netns, ...links];
}

const fds: number[] = [];

function cleanup(): void {
  while (fds.length > 0) {
    const fd = fds.pop();
    if (fd === undefined) break;
    try {
      closeFd(fd);
    } catch {
      // already closed
    }
  }
  for (const ns of [NS_A, NS_B]) {
    try {
      // Deleting a namespace removes its veth end (and so the pair) and all its rules.
      run('ip', ['netns', 'del', ns]);
    } catch {
      // not created, or already deleted
    }
  }
}

if (process.getuid?.() !== 0) {
  t.fail('needs root: creates network namespaces, veth pairs and iptables rules (run sudo npm test)');
} else {
  t.teardown(cleanup);
  // If the process dies before tap's teardown runs, still remove what we created.
  process.once('exit', cleanup);

  let nsA = -1;
  let nsB = -1;
  const own = statSync('/proc/self/ns/net').ino;

  t.test('setup: two namespaces joined by a veth pair', async (t) => {
    t.equal(leftovers().length, 0, `nothing named ${PREFIX}* before we start`);
    run('ip', ['netns', 'add', NS_A]);
    run('ip', ['netns', 'add', NS_B]);
    run('ip', ['link', 'add', VETH_A, 'netns', NS_A, 'type', 'veth', 'peer', 'name', VETH_B, 'netns', NS_B]);
    for (const [ns, dev, addr] of [
      [NS_A, VETH_A, IP_A],
      [NS_B, VETH_B, IP_B],
    ] as const) {
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      run('ip', ['-n', ns, 'addr', 'add', `${addr}/30`, 'dev', dev]);
      run('ip', ['-n', ns, 'link', 'set', dev, 'up']);
    }
    // A pod has a default route. (e) needs one: the app's SYN-ACK to the foreign client address
    // must route somewhere before mangle OUTPUT restores the mark and re-routes it to lo. B does
    // not forward, so nothing sent this way leaves the pair.
    run('ip', ['-n', NS_A, 'route', 'add', 'default', 'via', IP_B]);
    nsA = openNetns(`/run/netns/${NS_A}`);
    fds.push(nsA);
    nsB = openNetns(`/run/netns/${NS_B}`);
    fds.push(nsB);
    t.not(netnsInode(nsA), own, 'A is another namespace');
    t.not(netnsInode(nsA), netnsInode(nsB));
    t.match(inNs(NS_A, 'ip', ['-o', 'addr', 'show', 'dev', VETH_A]), IP_A);
    t.match(run('iptables', ['-V']), /iptables v/, 'iptables present');
  });

  t.test('(a) a listener created in A from the root netns accepts a connection from B', async (t) => {
    const lfd = listenTcp({ netnsFd: nsA, host: '0.0.0.0', port: 8080 });
    t.equal(socketNetnsInode(lfd), netnsInode(nsA), 'listening socket lives in A');
    t.equal(statSync('/proc/thread-self/ns/net').ino, own, 'test thread still in the root netns');
    const server = await serveFd(lfd, echoWithPeer);
    t.teardown(() => closeServer(server));
    const cfd = socketForConnect({ netnsFd: nsB, family: 4 });
    t.equal(socketNetnsInode(cfd), netnsInode(nsB), 'client socket lives in B');
    const reply = await exchange(cfd, IP_A, 8080, 'from-b');
    t.equal(reply, `${IP_B}|from-b`, 'A saw the connection come from B');
    // The same address does not exist in the root netns: the listener really is inside A.
    t.notMatch(run('ip', ['-o', 'addr', 'show']), IP_A);
    // An error after setns (bind to B's address, which A does not have) still restores us.
    t.throws(() => listenTcp({ netnsFd: nsA, host: IP_B, port: 8080 }), { code: 'EADDRNOTAVAIL' });
    t.equal(statSync('/proc/thread-self/ns/net').ino, own, 'restored after an error path');
  });

  t.test(
    '(a2) sockets made in other namespaces, one after another, cost no fd and keep us home',
    async (t) => {
      const fds = (): number => readdirSync('/proc/self/fd').length;
      // The first call may open the thread's way back (kept for the thread's life).
      closeFd(socketForConnect({ netnsFd: nsA, family: 4 }));
      const before = fds();
      let elsewhere = 0;
      for (let i = 0; i < 200; i++) {
        const ns = i % 2 === 0 ? nsA : nsB;
        const fd = socketForConnect({ netnsFd: ns, family: 4 });
        if (socketNetnsInode(fd) !== netnsInode(ns)) elsewhere++;
        closeFd(fd);
      }
      t.equal(elsewhere, 0, 'each of 200 sockets lives in the namespace asked for');
      t.equal(fds(), before, 'no descriptor left behind');
      t.equal(statSync('/proc/thread-self/ns/net').ino, own, 'thread still in the root netns');
      // The kept way back, closed by mistake elsewhere: the next socket opens a new one instead
      // of failing to return (which would abort the process).
      const home = readdirSync('/proc/self/fd')
        .map(Number)
        .filter((fd) => fd >= 512 && /^net:\[\d+\]$/.test(readlinkSync(`/proc/self/fd/${fd}`)));
      t.equal(home.length, 1, 'one kept descriptor for the way back, at a high number');
      for (const fd of home) closeSync(fd);
      const again = socketForConnect({ netnsFd: nsB, family: 4 });
      t.equal(socketNetnsInode(again), netnsInode(nsB), 'a socket in B again');
      closeFd(again);
      t.equal(statSync('/proc/thread-self/ns/net').ino, own, 'and home again');
    },
  );

  t.test('(b) SO_ORIGINAL_DST returns the pre-REDIRECT destination', async (t) => {
    // Inbound capture (spec 2.2 nat ISTIO_PRERT, here narrowed to two ports): B -> A:80 goes to
    // the IPv4 listener on 15006, B -> A:81 to a dual-stack listener on 15007.
    inNs(NS_A, 'iptables', [
      '-w',
      '-t',
      'nat',
      '-A',
      'PREROUTING',
      '-p',
      'tcp',
      '-d',
      IP_A,
      '--dport',
      '80',
      '-j',
      'REDIRECT',
      '--to-ports',
      '15006',
    ]);
    inNs(NS_A, 'iptables', [
      '-w',
      '-t',
      'nat',
      '-A',
      'PREROUTING',
      '-p',
      'tcp',
      '-d',
      IP_A,
      '--dport',
      '81',
      '-j',
      'REDIRECT',
      '--to-ports',
      '15007',
    ]);
    // Outbound capture (nat ISTIO_OUTPUT): A -> 198.18.250.77:9090 goes to 15001 in A.
    inNs(NS_A, 'iptables', [
      '-w',
      '-t',
      'nat',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '-d',
      '198.18.250.77',
      '--dport',
      '9090',
      '-j',
      'REDIRECT',
      '--to-ports',
      '15001',
    ]);
    // IPv6 over loopback inside A: [::1]:9091 goes to [::1]:15002.
    inNs(NS_A, 'ip6tables', [
      '-w',
      '-t',
      'nat',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '-d',
      '::1',
      '--dport',
      '9091',
      '-j',
      'REDIRECT',
      '--to-ports',
      '15002',
    ]);

    const servers = [
      await serveFd(listenTcp({ netnsFd: nsA, host: '0.0.0.0', port: 15006 }), replyOriginalDst),
      await serveFd(listenTcp({ netnsFd: nsA, host: '::', port: 15007, v6only: false }), replyOriginalDst),
      await serveFd(listenTcp({ netnsFd: nsA, host: '0.0.0.0', port: 15001 }), replyOriginalDst),
      await serveFd(listenTcp({ netnsFd: nsA, host: '::1', port: 15002 }), replyOriginalDst),
    ];
    t.teardown(() => Promise.all(servers.map(closeServer)));

    const parse = (s: string): OriginalDst => JSON.parse(s) as OriginalDst;
    t.same(
      parse(await exchange(socketForConnect({ netnsFd: nsB, family: 4 }), IP_A, 80, '')),
      { address: IP_A, port: 80, family: 4 },
      'PREROUTING REDIRECT, IPv4 listener',
    );
    t.same(
      parse(await exchange(socketForConnect({ netnsFd: nsB, family: 4 }), IP_A, 81, '')),
      { address: IP_A, port: 81, family: 4 },
      'PREROUTING REDIRECT, IPv4 client on a dual-stack listener',
    );
    t.same(
      parse(await exchange(socketForConnect({ netnsFd: nsA, family: 4 }), '198.18.250.77', 9090, '')),
      { address: '198.18.250.77', port: 9090, family: 4 },
      'OUTPUT REDIRECT of a locally generated connection',
    );
    t.same(
      parse(await exchange(socketForConnect({ netnsFd: nsA, family: 6 }), '::1', 9091, '')),
      { address: '::1', port: 9091, family: 6 },
      'IP6T_SO_ORIGINAL_DST after ip6tables REDIRECT',
    );
    // A direct (non-redirected) connection to 15006: conntrack is active in A now, so the
    // kernel reports the real destination, never garbage.
    t.same(
      parse(await exchange(socketForConnect({ netnsFd: nsB, family: 4 }), IP_A, 15006, '')),
      { address: IP_A, port: 15006, family: 4 },
      'not redirected: the real destination',
    );
  });

  t.test('(c) SO_MARK 1337 is what an iptables mark rule counts', async (t) => {
    inNs(NS_A, 'iptables', [
      '-w',
      '-t',
      'mangle',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '-d',
      IP_B,
      '--dport',
      '7070',
      '-m',
      'mark',
      '--mark',
      '1337',
      '-j',
      'ACCEPT',
    ]);
    inNs(NS_A, 'iptables', [
      '-w',
      '-t',
      'mangle',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '-d',
      IP_B,
      '--dport',
      '7070',
      '-j',
      'ACCEPT',
    ]);
    const server = await serveFd(listenTcp({ netnsFd: nsB, host: IP_B, port: 7070 }), echoWithPeer);
    t.teardown(() => closeServer(server));
    const counters = (): { marked: number; unmarked: number } => {
      const marked = mangleCounters(NS_A, 'mark match 0x539');
      const all = mangleCounters(NS_A, 'dpt:7070');
      t.equal(marked.length, 1);
      t.equal(all.length, 2);
      return { marked: marked[0] ?? -1, unmarked: all[1] ?? -1 };
    };
    t.same(counters(), { marked: 0, unmarked: 0 }, 'counters start at zero');

    const marked = socketForConnect({ netnsFd: nsA, family: 4, mark: 1337 });
    t.equal(getMark(marked), 1337);
    t.equal(await exchange(marked, IP_B, 7070, 'm'), `${IP_A}|m`);
    const afterMarked = counters();
    t.ok(afterMarked.marked >= 3, `marked rule counted the connection (${afterMarked.marked} packets)`);
    t.equal(afterMarked.unmarked, 0, 'unmarked rule saw nothing');

    t.equal(await exchange(socketForConnect({ netnsFd: nsA, family: 4 }), IP_B, 7070, 'u'), `${IP_A}|u`);
    const afterUnmarked = counters();
    t.equal(afterUnmarked.marked, afterMarked.marked, 'an unmarked socket does not match --mark 1337');
    t.ok(afterUnmarked.unmarked >= 3, `unmarked rule counted it (${afterUnmarked.unmarked} packets)`);
  });

  t.test('(d) InPodSocketFactory end to end in A: capture, original dst, marked upstream', async (t) => {
    // Outbound capture as in spec 2.2 (narrowed to one destination port): everything except
    // ztunnel's own marked traffic is redirected to 15001.
    inNs(NS_A, 'iptables', [
      '-w',
      '-t',
      'nat',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '--dport',
      '9000',
      '-m',
      'mark',
      '!',
      '--mark',
      '0x539/0xfff',
      '-j',
      'REDIRECT',
      '--to-ports',
      '15001',
    ]);
    // The peer drops 9001, for the connect timeout.
    inNs(NS_B, 'iptables', ['-w', '-A', 'INPUT', '-p', 'tcp', '--dport', '9001', '-j', 'DROP']);

    const factory = new InPodSocketFactory({ netnsPath: `/run/netns/${NS_A}` });
    t.teardown(() => factory.close());
    t.equal(factory.netnsInode(), netnsInode(nsA));

    const upstream = await serveFd(listenTcp({ netnsFd: nsB, host: IP_B, port: 9000 }), echoWithPeer);
    t.teardown(() => closeServer(upstream));

    // ztunnel's outbound listener (spec 2.7); (b)'s plain listener on 15001 is closed by now.
    const proxy = await factory.listen({ host: '0.0.0.0', port: 15001, transparent: true, reusePort: true });
    t.teardown(() => closeServer(proxy));
    t.equal(socketNetnsInode(socketFd(proxy)), netnsInode(nsA), 'proxy listener lives in A');
    t.equal(getMark(socketFd(proxy)), 1337, 'proxy listener marked');

    const seen: OriginalDst[] = [];
    const upstreamMarks: number[] = [];
    proxy.on('connection', (client) => {
      const dst = factory.originalDst(client);
      seen.push(dst);
      client.pause();
      factory
        .connect({ host: dst.address, port: dst.port, timeoutMs: 3000 })
        .then((up) => {
          upstreamMarks.push(getMark(socketFd(up)));
          client.pipe(up).pipe(client);
          client.resume();
        })
        .catch(() => client.destroy());
    });

    const reply = await exchange(socketForConnect({ netnsFd: nsA, family: 4 }), IP_B, 9000, 'ping');
    t.equal(reply, `${IP_A}|ping`, 'echo through the proxy; the peer sees the pod IP');
    t.same(seen, [{ address: IP_B, port: 9000, family: 4 }], 'one captured connection, original destination');
    t.same(upstreamMarks, [1337], 'upstream marked, so it was not captured again');

    await t.rejects(factory.connect({ host: IP_B, port: 9001, timeoutMs: 300 }), {
      code: 'ZT_ERR_CONNECT_TIMEOUT',
      message: /198\.18\.250\.2:9001 timed out after 300 ms/,
    });
  });

  t.test('(e) IP_TRANSPARENT: a spoofed source reaches the app in A and replies return', async (t) => {
    // spec 2.3: connmark for ztunnel's marked connections, restore on the replies, and route
    // those replies to the local stack.
    inNs(NS_A, 'iptables', [
      '-w',
      '-t',
      'mangle',
      '-A',
      'PREROUTING',
      '-m',
      'mark',
      '--mark',
      '0x539/0xfff',
      '-j',
      'CONNMARK',
      '--set-xmark',
      '0x111/0xfff',
    ]);
    inNs(NS_A, 'iptables', [
      '-w',
      '-t',
      'mangle',
      '-A',
      'OUTPUT',
      '-m',
      'connmark',
      '--mark',
      '0x111/0xfff',
      '-j',
      'CONNMARK',
      '--restore-mark',
      '--nfmask',
      '0xffffffff',
      '--ctmask',
      '0xffffffff',
    ]);
    run('ip', ['-n', NS_A, 'rule', 'add', 'fwmark', '0x111/0xfff', 'pref', '32764', 'lookup', '100']);
    run('ip', ['-n', NS_A, 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100']);

    const app = await serveFd(listenTcp({ netnsFd: nsA, host: IP_A, port: 8081 }), echoWithPeer);
    t.teardown(() => closeServer(app));

    const factory = new InPodSocketFactory({ netnsFd: nsA });
    const socket = await factory.connect({
      host: IP_A,
      port: 8081,
      localAddress: FOREIGN,
      transparent: true,
      timeoutMs: 3000,
    });
    t.equal(socket.localAddress, FOREIGN, 'bound to the foreign source');
    t.equal(getMark(socketFd(socket)), 1337);
    t.equal(
      await roundTrip(socket, 'spoofed'),
      `${FOREIGN}|spoofed`,
      'app saw the foreign source and its reply came back',
    );
  });

  t.test('cleanup: nothing with our prefix remains', async (t) => {
    cleanup();
    t.same(leftovers(), [], `no namespace or link named ${PREFIX}*`);
    t.equal(statSync('/proc/self/ns/net').ino, own, 'still in the root netns');
  });
}

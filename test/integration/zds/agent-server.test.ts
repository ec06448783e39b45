// SPDX-License-Identifier: Apache-2.0
// The node agent's ZDS server (cni-plugin/src/agent/zds-server.ts) against scripted ztunnels that
// speak raw ZDS datagrams, so every ordering and timing rule of spec 2.6 is observable: the hello
// gate, the snapshot (Add with the netns fd, Keep without, one at a time, then SnapshotSent),
// NACKs, per-message deadlines, adds to the newest connection only, deletes to all, immediate
// detection of a ztunnel that went away, the peer-uid check, unsolicited messages, the socket
// file's mode and the stale-file rules. No root: the netns is a scratch one from `unshare -rn`.
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';

import { ZdsServer, type ZtunnelPeer } from '../../../cni-plugin/src/agent/zds-server.ts';
import type { SnapshotEntry } from '../../../cni-plugin/src/agent/agent.ts';
import { WorkloadRequest, ZdsHello } from '../../../src/shared/gen/zds.ts';
import { closeFd, namespaceType, netnsInode, seqpacketListen } from '../../../src/shared/native/index.ts';
import { ZDS_LIMITS, encodeAck, encodeHello } from '../../../src/shared/zds/framing.ts';
import { SeqpacketSocket, type Datagram } from '../../../src/shared/zds/seqpacket.ts';
import { memoryLogger, openFdCount, scratchDir, scratchNetns, settledFdCount } from './fixtures.ts';

const { dir, cleanup } = scratchDir();
t.teardown(cleanup);
const netns = await scratchNetns();
t.teardown(() => netns.destroy());
let n = 0;
const sockPath = (): string => join(dir, `agent${String(n++)}.sock`);
const info = (name: string): SnapshotEntry['info'] => ({ name, namespace: 'demo', serviceAccount: 'sa' });

/** A scripted ztunnel: raw datagrams in, raw datagrams out. */
class FakeZtunnel {
  readonly socket: SeqpacketSocket;
  readonly #inbox: Datagram[] = [];
  #waiter: ((d: Datagram | undefined) => void) | undefined;
  readonly closed: Promise<Error | undefined>;

  constructor(path: string) {
    this.socket = SeqpacketSocket.connect(path, ZDS_LIMITS);
    this.socket.on('datagram', (d) => {
      const w = this.#waiter;
      this.#waiter = undefined;
      if (w) w(d);
      else this.#inbox.push(d);
    });
    this.closed = new Promise((resolve) =>
      this.socket.once('close', (err) => {
        this.#waiter?.(undefined);
        resolve(err);
      }),
    );
  }

  static async ready(server: ZdsServer, path: string): Promise<FakeZtunnel> {
    const z = new FakeZtunnel(path);
    const ready = new Promise<void>((resolve) => server.once('ready', () => resolve()));
    await z.hello();
    const snap = await z.next();
    if (snap.payload?.$case !== 'snapshotSent')
      throw new Error('an empty snapshot must be just SnapshotSent');
    await z.ack();
    await ready;
    return z;
  }

  hello(version: number = 1): Promise<void> {
    return this.socket.send(
      version === 1 ? encodeHello() : ZdsHello.encode({ version: version as 0 }).finish(),
    );
  }

  ack(error = ''): Promise<void> {
    return this.socket.send(encodeAck(error));
  }

  /** The next raw datagram, or undefined when the connection closed first. */
  nextRaw(): Promise<Datagram | undefined> {
    const queued = this.#inbox.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.socket.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => (this.#waiter = resolve));
  }

  /** The next request (fds closed unless `keepFds`). */
  async next(keepFds = false): Promise<WorkloadRequest & { fds: readonly number[] }> {
    const d = await this.nextRaw();
    if (d === undefined) throw new Error('the agent closed the connection');
    if (!keepFds) for (const fd of d.fds) closeFd(fd);
    return { ...WorkloadRequest.decode(d.data), fds: d.fds };
  }

  /** How many datagrams arrived and are still unread. */
  get unread(): number {
    return this.#inbox.length;
  }

  close(): void {
    this.socket.close();
  }
}

function listen(
  snapshot: () => Iterable<SnapshotEntry> = () => [],
  extra: { deadlineMs?: number; allowedUids?: number[] } = {},
): { server: ZdsServer; path: string; lines: Record<string, unknown>[] } {
  const { logger, lines } = memoryLogger();
  const path = sockPath();
  const server = ZdsServer.listen({ path, snapshot, logger, ...extra });
  return { server, path, lines };
}

const baseline = openFdCount();

t.test('the first message must be ZdsHello{V1}; anything else closes the connection', async (t) => {
  const { server, path } = listen();
  let connects = 0;
  server.on('connect', () => connects++);
  const wrongVersion = new FakeZtunnel(path);
  await wrongVersion.hello(0);
  await wrongVersion.closed;
  t.pass('version NOT_USED: closed');
  const notHello = new FakeZtunnel(path);
  await notHello.socket.send(encodeAck(''));
  await notHello.closed;
  t.pass('a WorkloadResponse first: closed');
  t.equal(connects, 0, 'neither counted as a ztunnel');
  t.same(server.connections(), []);
  await server.close();
});

t.test('no hello within the deadline closes the connection', async (t) => {
  const { server, path, lines } = listen(() => [], { deadlineMs: 300 });
  const silent = new FakeZtunnel(path);
  await silent.closed;
  t.ok(
    lines.some(
      (l) => typeof l.err === 'string' && /nothing within 300 ms while waiting for ZdsHello/.test(l.err),
    ),
    'logged why',
  );
  await server.close();
});

t.test(
  'snapshot: Add with the fd, Keep without, each acked before the next, then SnapshotSent; ready after its Ack',
  async (t) => {
    const fdA = netns.open();
    const fdC = netns.open();
    const { server, path, lines } = listen(() => [
      { uid: 'a', info: info('a'), netnsFd: fdA },
      { uid: 'b', info: info('b') },
      { uid: 'c', info: info('c'), netnsFd: fdC },
    ]);
    const events: string[] = [];
    server.on('connect', () => events.push('connect'));
    server.on('ready', () => events.push('ready'));
    const z = new FakeZtunnel(path);
    await z.hello();

    const a = await z.next(true);
    t.same(a.payload, { $case: 'add', value: { uid: 'a', workloadInfo: info('a') } });
    t.equal(a.fds.length, 1, 'the Add carries one fd');
    t.equal(namespaceType(a.fds[0]!), 'net', 'a network namespace');
    t.equal(netnsInode(a.fds[0]!), netns.inode, "the pod's own netns");
    closeFd(a.fds[0]!);
    // Lock-step: nothing else comes until this Add is acked.
    await new Promise((r) => setTimeout(r, 200));
    t.equal(z.unread, 0, 'the agent waits for the Ack before the next message');
    t.same(events, ['connect'], 'connected, not ready');
    await z.ack();

    const b = await z.next();
    t.same(
      b.payload,
      { $case: 'keep', value: { uid: 'b' } },
      'a pod whose fd the agent no longer holds: Keep',
    );
    t.equal(b.fds.length, 0, 'without an fd');
    await z.ack('cannot keep b');

    const c = await z.next();
    t.equal(c.payload?.$case, 'add', 'a NACK does not stop the snapshot');
    await z.ack();
    t.ok(
      lines.some((l) => l.message === 'snapshot entry NACKed' && l.uid === 'b'),
      'the NACK is logged',
    );

    const end = await z.next();
    t.equal(end.payload?.$case, 'snapshotSent');
    t.same(events, ['connect'], 'still not ready before the SnapshotSent Ack');
    const ready = new Promise<ZtunnelPeer>((resolve) => server.once('ready', resolve));
    await z.ack();
    const peer = await ready;
    t.equal(peer.pid, process.pid, 'the peer is identified by SO_PEERCRED');
    t.same(
      server.connections().map((p) => p.ready),
      [true],
    );
    closeFd(fdA);
    closeFd(fdC);
    z.close();
    await server.close();
  },
);

t.test('adds go to the newest connection only; deletes go to every connection', async (t) => {
  const { server, path } = listen();
  const old = await FakeZtunnel.ready(server, path);
  const newest = await FakeZtunnel.ready(server, path);
  t.equal(server.connections().length, 2);
  const fd = netns.open();
  const added = server.addWorkload('p1', info('p1'), fd);
  const add = await newest.next();
  t.same(add.payload, { $case: 'add', value: { uid: 'p1', workloadInfo: info('p1') } });
  await newest.ack();
  await added;
  closeFd(fd);
  const deleted = server.delWorkload('p1');
  // Per connection, messages keep their order: had the Add gone to the old ztunnel, it would come first.
  const oldFirst = await old.next();
  t.same(
    oldFirst.payload,
    { $case: 'del', value: { uid: 'p1' } },
    'the old ztunnel got the Del and never the Add',
  );
  const newDel = await newest.next();
  t.same(newDel.payload, { $case: 'del', value: { uid: 'p1' } }, 'the newest got the Del too');
  let settled = false;
  void deleted.then(() => (settled = true));
  await old.ack();
  await new Promise((r) => setImmediate(r));
  t.notOk(settled, 'delWorkload waits for every Ack');
  await newest.ack();
  await deleted;
  old.close();
  newest.close();
  await server.close();
});

t.test(
  "fds are the agent's own copies: the caller closing (and reusing) its numbers meanwhile changes nothing",
  async (t) => {
    // Snapshot: the caller closes b's fd while a's Add is still unanswered.
    const fdA = netns.open();
    const fdB = netns.open();
    const { server, path } = listen(() => [
      { uid: 'a', info: info('a'), netnsFd: fdA },
      { uid: 'b', info: info('b'), netnsFd: fdB },
    ]);
    const z = new FakeZtunnel(path);
    await z.hello();
    await z.next();
    closeFd(fdB);
    closeFd(fdA);
    const reused = openSync('/dev/null', 'r');
    await z.ack();
    const b = await z.next(true);
    t.equal(b.fds.length, 1);
    t.equal(netnsInode(b.fds[0]!), netns.inode, "b's Add still carries the pod's netns");
    closeFd(b.fds[0]!);
    await z.ack();
    await z.next();
    await z.ack();

    // addWorkload queued behind another request: the caller closes its fd as soon as it returns.
    const first = netns.open();
    const p1 = server.addWorkload('p1', info('p1'), first);
    closeFd(first);
    const second = netns.open();
    const p2 = server.addWorkload('p2', info('p2'), second);
    closeFd(second);
    const other = openSync('/dev/zero', 'r');
    for (const uid of ['p1', 'p2']) {
      const add = await z.next(true);
      t.equal(add.payload?.$case === 'add' ? add.payload.value.uid : undefined, uid);
      t.equal(namespaceType(add.fds[0]!), 'net', `${uid}: a netns, not whatever took the number`);
      t.equal(netnsInode(add.fds[0]!), netns.inode);
      closeFd(add.fds[0]!);
      await z.ack();
    }
    await Promise.all([p1, p2]);
    closeSync(reused);
    closeSync(other);
    z.close();
    await server.close();
  },
);

t.test(
  'a NACK rejects addWorkload with the reason; a missing Ack times out and drops the connection',
  async (t) => {
    const { server, path } = listen(() => [], { deadlineMs: 1500 });
    const z = await FakeZtunnel.ready(server, path);
    const fd = netns.open();
    const nacked = server.addWorkload('p1', info('p1'), fd);
    await z.next();
    await z.ack('bind 15008: address in use');
    await t.rejects(nacked, {
      code: 'ZDS_ERR_NACK',
      message: /refused AddWorkload\(p1\): bind 15008: address in use/,
    });

    const gone = new Promise<Error | undefined>((resolve) =>
      server.once('disconnect', (_p, err) => resolve(err)),
    );
    const unanswered = server.addWorkload('p2', info('p2'), fd);
    await z.next();
    await t.rejects(unanswered, {
      code: 'ZDS_ERR_TIMEOUT',
      message: /nothing within 1500 ms while waiting for the Ack to add/,
    });
    t.match(
      await gone,
      { code: 'ZDS_ERR_TIMEOUT' },
      'the connection is dropped: a late Ack would answer the next request',
    );
    t.same(server.connections(), []);
    await z.closed;
    await t.rejects(server.addWorkload('p3', info('p3'), fd), { code: 'ZDS_ERR_NO_ZTUNNEL' });
    closeFd(fd);
    await server.close();
  },
);

t.test(
  'with no ztunnel connected: add is refused so the pod stays pending, delete has nothing to do',
  async (t) => {
    const { server } = listen();
    const fd = netns.open();
    await t.rejects(server.addWorkload('p1', info('p1'), fd), {
      code: 'ZDS_ERR_NO_ZTUNNEL',
      message: /no ztunnel is connected to .*; the pod goes to ztunnel in the snapshot/,
    });
    await server.delWorkload('p1');
    closeFd(fd);
    await server.close();
  },
);

t.test('a ztunnel that goes away is seen at once, without waiting for a liveness probe', async (t) => {
  const { server, path } = listen();
  const z = await FakeZtunnel.ready(server, path);
  const t0 = Date.now();
  const gone = new Promise<ZtunnelPeer>((resolve) => server.once('disconnect', (p) => resolve(p)));
  z.close();
  const peer = await gone;
  const ms = Date.now() - t0;
  t.equal(peer.pid, process.pid);
  t.ok(ms < 4000, `disconnect seen after ${ms} ms (upstream's probe runs every 5 s)`);
  t.same(server.connections(), []);
  await server.close();
});

t.test('a peer whose uid may not hand pods to ztunnel is refused before its hello', async (t) => {
  const { server, path, lines } = listen(() => [], { allowedUids: [4242] });
  const z = new FakeZtunnel(path);
  await z.closed;
  t.same(server.connections(), []);
  t.ok(
    lines.some((l) => l.message === 'refused a ZDS connection from a uid that may not hand pods to ztunnel'),
  );
  await server.close();
});

t.test('a message ztunnel sends unasked is a protocol error at the next request', async (t) => {
  const { server, path } = listen();
  const z = await FakeZtunnel.ready(server, path);
  await z.ack();
  // Let the stray Ack reach the agent before the next request is made.
  await new Promise((r) => setTimeout(r, 100));
  const fd = netns.open();
  await t.rejects(server.addWorkload('p1', info('p1'), fd), {
    code: 'ZDS_ERR_PROTOCOL',
    message: /answers no request/,
  });
  await z.closed;
  closeFd(fd);
  await server.close();
});

t.test(
  'the socket file: root-only, a stale one is replaced, a live agent or a non-socket is not touched',
  async (t) => {
    const { server, path } = listen();
    const { statSync } = await import('node:fs');
    t.equal(statSync(path).mode & 0o777, 0o600, 'mode 0600');
    t.throws(() => ZdsServer.listen({ path, snapshot: () => [], logger: memoryLogger().logger }), {
      code: 'CNI_ERR_ZDS_IN_USE',
      message: /another node agent is listening/,
    });
    await server.close();

    // A socket file whose listener is gone (the agent was killed): removed and replaced.
    const stale = sockPath();
    closeFd(seqpacketListen(stale, 0o600));
    const fresh = ZdsServer.listen({ path: stale, snapshot: () => [], logger: memoryLogger().logger });
    const z = await FakeZtunnel.ready(fresh, stale);
    t.pass('the new agent serves on the old path');
    z.close();
    await fresh.close();

    const file = sockPath();
    writeFileSync(file, 'not a socket');
    t.throws(() => ZdsServer.listen({ path: file, snapshot: () => [], logger: memoryLogger().logger }), {
      code: 'CNI_ERR_ZDS_SOCKET',
      message: /exists and is not a socket; refusing to remove it/,
    });
    t.equal(statSync(file).size, 12, 'left as it was');
  },
);

t.test('every connection and fd is gone after close', async (t) => {
  t.equal(await settledFdCount(baseline), baseline);
});

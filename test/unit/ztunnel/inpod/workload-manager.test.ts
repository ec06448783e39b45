// SPDX-License-Identifier: Apache-2.0
// WorkloadManager (ztunnel/src/inpod/workload-manager.ts): real WorkloadProxies on loopback with
// certificates from a test CA. What ZDS relies on: an fd netns belongs to the manager from add()
// on and is closed exactly when the pod goes (del, replacement by another netns, re-add of the
// same netns, reconcile, stopAll, a failed add) and never otherwise; retain() is the snapshot
// reconcile; a failed start leaves the pod pending, is retried, and the pending count follows;
// an add while a start is in flight joins it (one proxy, nothing leaked); an identity's
// certificate is forgotten with the last pod holding it; after stopAll no pod is taken and a
// start still in flight leaves nothing running; and after many cycles the process has exactly
// the fds it started with.
import { fstatSync, openSync, statSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';

import { MeshError } from '../../../../src/shared/errors.ts';
import { WorkloadManager, type NetnsRef } from '../../../../ztunnel/src/inpod/workload-manager.ts';
import type { PodInfo } from '../../../../ztunnel/src/proxy/context.ts';
import {
  LOOPBACK_PORTS,
  loopbackSocketFactory,
  memoryLogger,
  openFdCount,
  testProxyContext,
  until,
} from '../../../integration/zds/fixtures.ts';

const { logger } = memoryLogger('silent');
const ctx = await testProxyContext(logger);
t.teardown(() => ctx.certs.close());

const pod = (uid: string, serviceAccount = 'sa'): PodInfo => ({
  uid,
  name: `pod-${uid}`,
  namespace: 'demo',
  serviceAccount,
});

/**
 * A loopback factory whose listen() waits for `gate` (a slow netns, a start still in flight),
 * recording every server it opened.
 */
function gatedFactory(gate: Promise<void>, servers: net.Server[]) {
  return (ns: NetnsRef) => {
    const f = loopbackSocketFactory(ns);
    const listen = f.listen.bind(f);
    f.listen = async (opts) => {
      await gate;
      const server = await listen(opts);
      servers.push(server);
      return server;
    };
    return f;
  };
}

function opened(): { gate: Promise<void>; open: () => void } {
  let open: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (open = resolve));
  return { gate, open };
}

/** A stand-in netns fd: what matters to the manager is ownership and the inode (same file = same netns). */
const fdOf = (file: '/dev/null' | '/dev/zero'): { fd: number; file: string } => ({
  fd: openSync(file, 'r'),
  file,
});

/**
 * Whether `fd` still refers to `ns`'s file. A closed fd number is soon reused (a new listener
 * socket takes it), so "closed" means: no longer that file.
 */
function holds(ns: { fd: number; file: string }): boolean {
  try {
    const st = fstatSync(ns.fd);
    const want = statSync(ns.file);
    return st.ino === want.ino && st.rdev === want.rdev;
  } catch {
    return false;
  }
}

function manager(opts: { failFor?: string; retryMs?: number; hbonePort?: number } = {}): WorkloadManager {
  return new WorkloadManager(ctx, {
    delDrainMs: 0,
    socketFactory: (ns: NetnsRef) => {
      if (opts.failFor !== undefined && 'fd' in ns && fstatSync(ns.fd).rdev === statSync(opts.failFor).rdev) {
        throw new MeshError('ZT_ERR_SOCKET_FACTORY', 'cannot enter that netns');
      }
      return loopbackSocketFactory(ns);
    },
    ports: { ...LOOPBACK_PORTS, ...(opts.hbonePort !== undefined && { hbone: opts.hbonePort }) },
    ...(opts.retryMs !== undefined && { retryMs: opts.retryMs }),
  });
}

const baseline = openFdCount();

t.test('del closes the fd it was handed; the proxy was up until then', async (t) => {
  const m = manager();
  const ns = fdOf('/dev/null');
  await m.add(pod('a'), ns);
  t.equal(m.snapshot().a?.state, 'Up');
  t.ok(m.has('a'));
  t.ok(holds(ns), 'held while the pod runs');
  await m.del('a');
  t.notOk(m.has('a'));
  t.notOk(holds(ns), 'closed with the pod');
  await m.del('a');
  t.pass('a second del is a no-op');
});

t.test('re-add with the same netns keeps the running proxy and drops the new duplicate', async (t) => {
  const m = manager();
  const first = fdOf('/dev/null');
  const again = fdOf('/dev/null');
  await m.add(pod('a'), first);
  const started = ctx.metrics.proxiesStarted.get();
  await m.add(pod('a'), again);
  t.equal(ctx.metrics.proxiesStarted.get(), started, 'no new proxy started');
  t.ok(holds(first), 'the original fd is still held');
  t.notOk(holds(again), 'the duplicate was closed');
  await m.stopAll(0);
  t.notOk(holds(first), 'stopAll closes it');
});

t.test('re-add with another netns replaces the proxy and closes the old fd', async (t) => {
  const m = manager();
  const old = fdOf('/dev/null');
  const fresh = fdOf('/dev/zero');
  await m.add(pod('a'), old);
  const stopped = ctx.metrics.proxiesStopped.get();
  await m.add(pod('a'), fresh);
  t.equal(ctx.metrics.proxiesStopped.get(), stopped + 1, 'the old proxy was stopped');
  t.equal(m.snapshot().a?.state, 'Up', 'and a new one runs');
  t.notOk(holds(old), 'old fd closed');
  t.ok(holds(fresh), 'new fd held');
  await m.del('a');
  t.notOk(holds(fresh));
});

t.test('an add that fails before the pod is recorded still closes the fd', async (t) => {
  const m = manager({ failFor: '/dev/zero' });
  const ns = fdOf('/dev/zero');
  await t.rejects(m.add(pod('a'), ns), { code: 'ZT_ERR_SOCKET_FACTORY' });
  t.notOk(holds(ns));
  t.notOk(m.has('a'), 'nothing recorded');
});

t.test('retain removes every pod not kept, running or pending, and closes their fds', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = (blocker.address() as net.AddressInfo).port;
  const failing = manager({ hbonePort: port, retryMs: 60_000 });
  const pendingNs = fdOf('/dev/null');
  await t.rejects(failing.add(pod('p'), pendingNs), { message: /EADDRINUSE|address already in use/ });
  t.equal(failing.pendingCount, 1);
  t.same(await failing.retain(new Set()), ['p'], 'the pending pod is removed too');
  t.equal(failing.pendingCount, 0);
  t.notOk(holds(pendingNs));
  await new Promise((r) => blocker.close(r));

  const m = manager();
  const fds = { a: fdOf('/dev/null'), b: fdOf('/dev/null'), c: fdOf('/dev/zero') };
  for (const [uid, ns] of Object.entries(fds)) await m.add(pod(uid), ns);
  const removed = await m.retain(new Set(['b', 'x']));
  t.same(removed.sort(), ['a', 'c']);
  t.same(m.uids(), ['b']);
  t.notOk(holds(fds.a));
  t.notOk(holds(fds.c));
  t.ok(holds(fds.b));
  await m.stopAll(0);
});

t.test('a failed start leaves the pod pending, retries, and the pending count follows', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = (blocker.address() as net.AddressInfo).port;
  const m = manager({ hbonePort: port, retryMs: 100 });
  const counts: number[] = [];
  m.on('pending', (n) => counts.push(n));
  await t.rejects(m.add(pod('a'), fdOf('/dev/null')), { message: /cannot listen/ });
  t.equal(m.snapshot().a?.state, 'Pending');
  t.match(m.snapshot().a?.error, /127\.0\.0\.1/, 'the reason is kept for /config_dump');
  t.equal(m.pendingCount, 1);
  // The manager's retry timer is unref'd (it must not keep ztunnel alive); this one keeps the test
  // process alive meanwhile, and fails it if no retry ever comes.
  const guard = setTimeout(() => t.fail('no successful retry within 20 s'), 20_000);
  const up = new Promise<void>((resolve) =>
    m.on('pending', (n) => {
      if (n === 0) resolve();
    }),
  );
  await new Promise((r) => blocker.close(r));
  await up;
  clearTimeout(guard);
  t.equal(m.snapshot().a?.state, 'Up', 'started on a retry once the port was free');
  t.same(counts.slice(0, 1), [1], 'pending went to 1 first');
  t.equal(counts.at(-1), 0, 'and back to 0');
  await m.stopAll(0);
});

t.test('an add while the start is in flight joins it: one proxy, and del leaves no listener', async (t) => {
  const { gate, open } = opened();
  const servers: net.Server[] = [];
  const m = new WorkloadManager(ctx, {
    delDrainMs: 0,
    ports: LOOPBACK_PORTS,
    socketFactory: gatedFactory(gate, servers),
  });
  const started = ctx.metrics.proxiesStarted.get();
  const first = m.add(pod('a'), fdOf('/dev/null'));
  await new Promise((r) => setImmediate(r));
  t.equal(m.snapshot().a?.state, 'Pending', 'the first start is in flight');
  // The agent sends the Add again (a new connection, a retry): same pod, same netns.
  const second = m.add(pod('a'), fdOf('/dev/null'));
  open();
  await Promise.all([first, second]);
  t.equal(ctx.metrics.proxiesStarted.get(), started + 1, 'one proxy started');
  t.equal(servers.length, 3, "that proxy's three listeners, no second set");
  await m.del('a');
  t.same(
    servers.filter((s) => s.listening),
    [],
    'no listener left after del',
  );
});

t.test('an identity is forgotten by the certificate manager with the last pod holding it', async (t) => {
  const m = manager();
  const shared = 'spiffe://cluster.local/ns/demo/sa/shared';
  const other = 'spiffe://cluster.local/ns/demo/sa/other';
  await m.add(pod('s1', 'shared'), fdOf('/dev/null'));
  await m.add(pod('s2', 'shared'), fdOf('/dev/null'));
  await m.add(pod('o1', 'other'), fdOf('/dev/null'));
  await until(
    () => ctx.certs.current(shared) !== undefined && ctx.certs.current(other) !== undefined,
    10_000,
    'the prefetched certificates',
  );
  const cert = ctx.certs.current(shared);
  await m.add(pod('s1', 'shared'), fdOf('/dev/zero'));
  t.equal(ctx.certs.current(shared), cert, 'a pod moving to another netns keeps its certificate');
  await m.del('s1');
  t.equal(ctx.certs.current(shared), cert, 'kept while another pod has the identity');
  await m.del('s2');
  t.equal(ctx.certs.current(shared), undefined, 'forgotten with the last pod');
  t.ok(ctx.certs.current(other), 'other identities are kept');
  await m.retain(new Set());
  t.equal(ctx.certs.current(other), undefined, 'a reconcile forgets too');
});

t.test(
  'after stopAll: add is refused (fd closed) and a start in flight leaves nothing running',
  async (t) => {
    const { gate, open } = opened();
    const servers: net.Server[] = [];
    const m = new WorkloadManager(ctx, {
      delDrainMs: 0,
      ports: LOOPBACK_PORTS,
      socketFactory: gatedFactory(gate, servers),
    });
    const started = ctx.metrics.proxiesStarted.get();
    const inFlight = m.add(pod('a'), fdOf('/dev/null'));
    await new Promise((r) => setImmediate(r));
    await m.stopAll(0);
    t.same(m.uids(), [], 'stopAll did not wait for the start in flight');
    const late = fdOf('/dev/null');
    const refused = m.add(pod('b'), late);
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error('add() did not settle')), 2000).unref(),
    );
    await t.rejects(Promise.race([refused, timeout]), {
      code: 'ZT_ERR_SHUTTING_DOWN',
      message: /shutting down/,
    });
    t.notOk(holds(late), 'the refused netns fd is closed');
    open();
    await inFlight;
    t.equal(ctx.metrics.proxiesStarted.get(), started, 'the start in flight did not bring a proxy up');
    t.same(
      servers.filter((s) => s.listening),
      [],
      'and left no listener',
    );
  },
);

t.test('after many add/del/replace cycles the fd count is back to the baseline', async (t) => {
  const m = manager();
  for (let i = 0; i < 20; i++) {
    await m.add(pod('a'), fdOf('/dev/null'));
    await m.add(pod('a'), fdOf('/dev/null'));
    await m.add(pod('a'), fdOf('/dev/zero'));
    await m.add(pod('b'), fdOf('/dev/null'));
    await m.retain(new Set(['b']));
    await m.del('b');
  }
  t.same(m.uids(), []);
  t.equal(openFdCount(), baseline);
});

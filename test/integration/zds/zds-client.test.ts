// SPDX-License-Identifier: Apache-2.0
// ztunnel's ZDS client (ztunnel/src/inpod/zds-client.ts) against a scripted node agent, with a
// real WorkloadManager whose proxies listen on loopback (no root). Spec 2.6 from ztunnel's side:
// hello first; Add starts the pod (the fd checked with NS_GET_NSTYPE, NACK otherwise), Keep
// protects it, Del before SnapshotSent only drops it from the snapshot, SnapshotSent reconciles
// and opens the client's readiness gate (a pending pod is the manager's gate, not this one);
// protocol errors (second SnapshotSent, Keep after it, an fd where none belongs) drop the
// connection and the client reconnects with its proxies intact; a failed start is NACKed and
// retried; with a CA that has not answered, Add is still acked at once; close() does not wait for
// a request being handled; a socket directory others could write to is refused (the other-uid
// listener case is test/netns/zds/peer-check.test.ts); the client keeps trying until an agent
// listens. Every received fd is accounted for.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, openSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';

import type { WorkloadRequest } from '../../../src/shared/gen/zds.ts';
import { closeFd, writeNetSysctl } from '../../../src/shared/native/index.ts';
import { ZdsConnection } from '../../../src/shared/zds/connection.ts';
import { ZDS_LIMITS } from '../../../src/shared/zds/framing.ts';
import { SeqpacketListener } from '../../../src/shared/zds/seqpacket.ts';
import {
  WorkloadManager,
  type ManagedSocketFactory,
  type NetnsRef,
} from '../../../ztunnel/src/inpod/workload-manager.ts';
import {
  checkAgentPeer,
  checkSocketDirectory,
  startZdsClient,
  type ZdsClient,
} from '../../../ztunnel/src/inpod/zds-client.ts';
import type { ProxyContext } from '../../../ztunnel/src/proxy/context.ts';
import {
  LOOPBACK_PORTS,
  loopbackSocketFactory,
  memoryLogger,
  openFdCount,
  settledFdCount,
  scratchDir,
  scratchNetns,
  testProxyContext,
  until,
} from './fixtures.ts';

const { dir, cleanup } = scratchDir();
t.teardown(cleanup);
const { logger, lines } = memoryLogger();
const ctx = await testProxyContext(logger);
t.teardown(() => ctx.certs.close());
const netns = await scratchNetns();
t.teardown(() => netns.destroy());
let n = 0;

const addReq = (uid: string): WorkloadRequest => ({
  payload: {
    $case: 'add',
    value: { uid, workloadInfo: { name: uid, namespace: 'demo', serviceAccount: 'sa' } },
  },
});
const keepReq = (uid: string): WorkloadRequest => ({ payload: { $case: 'keep', value: { uid } } });
const delReq = (uid: string): WorkloadRequest => ({ payload: { $case: 'del', value: { uid } } });
const snapshotSent: WorkloadRequest = { payload: { $case: 'snapshotSent', value: {} } };

/** A scripted agent: hands out each ztunnel connection after checking its hello. */
class FakeAgent {
  readonly path: string;
  #listener: SeqpacketListener | undefined;
  readonly #queue: ZdsConnection[] = [];
  readonly #all: ZdsConnection[] = [];
  #waiter: ((c: ZdsConnection) => void) | undefined;

  constructor(socketDir = dir) {
    this.path = join(socketDir, `agent${String(n++)}.sock`);
  }

  listen(): this {
    this.#listener = new SeqpacketListener(this.path, { mode: 0o600, limits: ZDS_LIMITS });
    this.#listener.on('connection', (socket) => {
      const conn = new ZdsConnection(socket);
      this.#all.push(conn);
      const w = this.#waiter;
      this.#waiter = undefined;
      if (w) w(conn);
      else this.#queue.push(conn);
    });
    return this;
  }

  /** The next ztunnel connection, once it said hello (V1). */
  async accept(): Promise<ZdsConnection> {
    const conn =
      this.#queue.shift() ?? (await new Promise<ZdsConnection>((resolve) => (this.#waiter = resolve)));
    await conn.readHello();
    return conn;
  }

  close(): void {
    this.#listener?.close();
    for (const c of this.#all) c.close();
  }
}

interface Rig {
  agent: FakeAgent;
  manager: WorkloadManager;
  client: ZdsClient;
  readiness: boolean[];
}

interface RigOptions {
  listen?: boolean;
  hbonePort?: number;
  retryMs?: number;
  /** Another ProxyContext (e.g. with a slow CA). */
  ctx?: ProxyContext;
  socketFactory?: (ns: NetnsRef) => ManagedSocketFactory;
  agentDir?: string;
}

function rig(t: Test, opts: RigOptions = {}): Rig {
  const agent = new FakeAgent(opts.agentDir);
  if (opts.listen !== false) agent.listen();
  const manager = new WorkloadManager(opts.ctx ?? ctx, {
    delDrainMs: 0,
    socketFactory: opts.socketFactory ?? loopbackSocketFactory,
    ports: { ...LOOPBACK_PORTS, ...(opts.hbonePort !== undefined && { hbone: opts.hbonePort }) },
    ...(opts.retryMs !== undefined && { retryMs: opts.retryMs }),
  });
  const readiness: boolean[] = [];
  const client = startZdsClient({ path: agent.path, manager, logger, onReady: () => readiness.push(true) });
  t.teardown(async () => {
    await client.close();
    await manager.stopAll(0);
    agent.close();
  });
  return { agent, manager, client, readiness };
}

const baseline = openFdCount();

t.test(
  'hello, then Add / Keep / SnapshotSent: pods start, and ztunnel is ready only after the snapshot',
  async (t) => {
    const { agent, manager, client, readiness } = rig(t);
    const conn = await agent.accept();
    t.pass('the first message was ZdsHello{V1}');
    const fd = netns.open();
    t.equal(await conn.request(addReq('a'), fd), '', 'Add acked');
    closeFd(fd);
    t.equal(manager.snapshot().a?.state, 'Up', 'the proxy runs');
    t.equal(await conn.request(keepReq('k')), '', 'Keep of a pod this ztunnel does not run is acked');
    t.same(readiness, [], 'not ready before SnapshotSent');
    t.notOk(client.status().snapshotReceived);
    t.equal(await conn.request(snapshotSent), '', 'SnapshotSent acked');
    t.same(readiness, [true], 'ready once the snapshot is in and nothing is pending');
    t.match(client.status(), {
      connected: true,
      snapshotReceived: true,
      ready: true,
      pending: 0,
      connections: 1,
    });
    t.equal(await conn.request(delReq('a')), '', 'Del after the snapshot');
    t.notOk(manager.has('a'), 'removes the pod at once');
  },
);

t.test('Add enables listener migration (tcp_migrate_req) in the pod netns', async (t) => {
  const scratch = await scratchNetns();
  t.teardown(() => scratch.destroy());
  const { agent } = rig(t);
  const conn = await agent.accept();
  const fd = scratch.open();
  writeNetSysctl(fd, 'ipv4/tcp_migrate_req', '0');
  t.equal(await conn.request(addReq('m'), fd), '');
  closeFd(fd);
  // /proc/sys/net shows the netns of the reading process: read it from inside the pod netns.
  const value = execFileSync(
    'nsenter',
    [`--net=${scratch.path}`, 'cat', '/proc/sys/net/ipv4/tcp_migrate_req'],
    {
      encoding: 'utf8',
    },
  );
  t.equal(value.trim(), '1');
});

t.test('an fd that is not a network namespace is NACKed, closed, and the pod not started', async (t) => {
  const { agent, manager } = rig(t);
  const conn = await agent.accept();
  const notNs = openSync('/dev/null', 'r');
  const mnt = openSync('/proc/self/ns/mnt', 'r');
  const before = openFdCount();
  t.match(
    await conn.request(addReq('x'), notNs),
    /AddWorkload\(x\): the fd is not a namespace, not a network namespace/,
  );
  t.match(await conn.request(addReq('y'), mnt), /the fd is a mnt namespace, not a network namespace/);
  t.equal(await settledFdCount(before), before, 'ztunnel closed the duplicates it refused');
  closeFd(notNs);
  closeFd(mnt);
  t.same(manager.uids(), [], 'nothing started');
  const fd = netns.open();
  const noInfo: WorkloadRequest = { payload: { $case: 'add', value: { uid: 'z', workloadInfo: undefined } } };
  t.match(await conn.request(noInfo, fd), /AddWorkload\(z\) without workload_info/);
  closeFd(fd);
});

t.test(
  'Del before SnapshotSent drops the pod from the snapshot; the reconcile removes it and anything unmentioned',
  async (t) => {
    const { agent, manager } = rig(t);
    // A pod this ztunnel already runs that the agent will not mention.
    await manager.add(
      { uid: 'old', name: 'old', namespace: 'demo', serviceAccount: 'sa' },
      { fd: netns.open() },
    );
    const conn = await agent.accept();
    for (const uid of ['x', 'y']) {
      const fd = netns.open();
      t.equal(await conn.request(addReq(uid), fd), '');
      closeFd(fd);
    }
    t.equal(await conn.request(delReq('y')), '');
    t.ok(manager.has('y'), 'before SnapshotSent a Del only edits the snapshot');
    t.equal(await conn.request(snapshotSent), '');
    t.same(manager.uids(), ['x'], 'y (deleted) and old (not in the snapshot) were drained');
  },
);

t.test(
  'protocol errors drop the connection; the client reconnects and its proxies keep running',
  async (t) => {
    const { agent, manager, client } = rig(t);
    let conn = await agent.accept();
    const fd = netns.open();
    await conn.request(addReq('a'), fd);
    await conn.request(snapshotSent);

    await t.rejects(conn.request(snapshotSent), { code: 'ZDS_ERR_CLOSED' }, 'a second SnapshotSent: closed');
    conn = await agent.accept();
    t.pass('reconnected with a new hello');
    t.equal(manager.snapshot().a?.state, 'Up', 'the pod kept running while disconnected');
    t.equal(await conn.request(snapshotSent), '');
    t.notOk(manager.has('a'), 'the new snapshot did not mention a: reconciled away');
    t.equal(await conn.request(addReq('b'), fd), '');

    await t.rejects(
      conn.request(keepReq('b')),
      { code: 'ZDS_ERR_CLOSED' },
      'Keep after SnapshotSent: closed',
    );
    conn = await agent.accept();
    await t.rejects(conn.request(delReq('b'), fd), { code: 'ZDS_ERR_CLOSED' }, 'an fd on a Del: closed');
    conn = await agent.accept();
    t.ok(manager.has('b'), 'b still runs: no snapshot has been completed since');
    t.ok(client.status().connections >= 4);
    t.ok(
      lines.some(
        (l) =>
          l.message === 'disconnected from the node agent; proxies keep running' &&
          /second SnapshotSent/.test(String(l.err)),
      ),
      'the reason is logged',
    );
    closeFd(fd);
    await conn.request(snapshotSent);
  },
);

t.test(
  'a failed start is NACKed with the reason and stays pending; the ZDS gate is the snapshot only',
  async (t) => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    const { agent, manager, client, readiness } = rig(t, { hbonePort: port, retryMs: 100 });
    const conn = await agent.accept();
    const fd = netns.open();
    const nack = await conn.request(addReq('a'), fd);
    closeFd(fd);
    t.match(nack, /starting the proxy for pod demo\/a failed: .*cannot listen/);
    t.equal(await conn.request(snapshotSent), '');
    // The pending pod is the manager's own readiness gate (app.ts), not this client's: one gate
    // per condition, so /healthz/ready names what is missing.
    t.same(readiness, [true], 'the snapshot is in: the ZDS gate opens');
    t.match(client.status(), { ready: true, snapshotReceived: true, pending: 1 });
    t.equal(manager.pendingCount, 1);
    const guard = setTimeout(() => t.fail('no retry within 20 s'), 20_000);
    const ready = new Promise<void>((resolve) =>
      manager.on('pending', (count) => {
        if (count === 0) resolve();
      }),
    );
    await new Promise((r) => blocker.close(r));
    await ready;
    clearTimeout(guard);
    t.equal(manager.snapshot().a?.state, 'Up', 'the retry started the proxy');
    t.same(readiness, [true], 'the ZDS gate opened once');
  },
);

t.test('the client keeps trying until an agent listens (backoff from 10 ms)', async (t) => {
  const { agent, client } = rig(t, { listen: false });
  await until(() => client.status().lastError !== undefined, 5000, 'a failed attempt');
  t.match(client.status().lastError, /ENOENT/, 'the first attempts fail: no socket yet');
  t.notOk(client.status().connected);
  agent.listen();
  const conn = await agent.accept();
  t.pass('connected once the agent listened');
  await conn.request(snapshotSent);
  t.ok(client.status().connected);
});

t.test('with a CA that has not answered, Add is acked once the listeners are bound', async (t) => {
  // Upstream acks as soon as the pod's proxy is set up and fetches the certificate in the
  // background; waiting for the CA here (10 s deadline) would overrun the agent's 5 s per-message
  // deadline and tear ZDS down.
  let answer: () => void = () => undefined;
  const never = new Promise<void>((resolve) => (answer = resolve));
  const slow = await testProxyContext(logger, { beforeSign: () => never });
  t.teardown(() => {
    answer();
    slow.certs.close();
  });
  const { agent, manager } = rig(t, { ctx: slow });
  const conn = await agent.accept();
  const fd = netns.open();
  const started = performance.now();
  t.equal(await conn.request(addReq('a'), fd), '', 'acked');
  closeFd(fd);
  const ms = performance.now() - started;
  t.ok(ms < 2000, `within ${Math.round(ms)} ms, far inside the agent's 5 s deadline`);
  t.equal(manager.snapshot().a?.state, 'Up', 'the proxy is up');
  t.equal(
    slow.certs.current('spiffe://cluster.local/ns/demo/sa/sa'),
    undefined,
    'while its certificate is still being fetched',
  );
  t.equal(await conn.request(snapshotSent), '', 'and the connection is still there');
});

t.test('close() does not wait for a request being handled', async (t) => {
  let bind: () => void = () => undefined;
  const slowBind = new Promise<void>((resolve) => (bind = resolve));
  t.teardown(() => bind());
  const { agent, manager, client } = rig(t, {
    socketFactory: (ns) => {
      const f = loopbackSocketFactory(ns);
      const listen = f.listen.bind(f);
      f.listen = async (o) => {
        await slowBind;
        return listen(o);
      };
      return f;
    },
  });
  const conn = await agent.accept();
  const fd = netns.open();
  const acked = conn.request(addReq('a'), fd).catch((err: unknown) => err);
  await until(() => manager.has('a'), 5000, 'the Add being handled');
  closeFd(fd);
  const started = performance.now();
  const timeout = new Promise<string>((resolve) => setTimeout(() => resolve('timed out'), 2000).unref());
  t.equal(await Promise.race([client.close().then(() => 'closed'), timeout]), 'closed');
  t.ok(performance.now() - started < 500, 'at once, while the Add still waits on its listeners');
  t.match(await acked, { code: 'ZDS_ERR_CLOSED' }, 'the agent sees the connection close, not an Ack');
  await manager.stopAll(0);
  bind();
});

t.test('the ZDS socket directory must be trusted: no group/other write, a trusted owner', async (t) => {
  const sub = join(dir, 'open-dir');
  mkdirSync(sub, { mode: 0o700 });
  chmodSync(sub, 0o777);
  const { agent, client } = rig(t, { agentDir: sub });
  await until(() => /writable by others/.test(client.status().lastError ?? ''), 5000, 'a refusal');
  t.match(
    client.status().lastError,
    /the ZDS socket directory .*open-dir is writable by others \(mode 0777\); make it writable by its owner only/,
  );
  t.equal(client.status().connections, 0, 'no hello sent to whoever listens there');
  t.ok(
    lines.some((l) => l.message === 'refused to take pods from the ZDS socket'),
    'logged as an error',
  );
  chmodSync(sub, 0o700);
  const conn = await agent.accept();
  t.pass('connected once the directory was fixed: the client kept retrying');
  await conn.request(snapshotSent);

  t.throws(() => checkSocketDirectory(join(sub, 'x.sock'), new Set([4242])), {
    code: 'ZT_ERR_ZDS_UNTRUSTED',
    message: /owned by uid 0, not a trusted uid \(4242\)/,
  });
  chmodSync(sub, 0o770);
  t.throws(
    () => checkSocketDirectory(join(sub, 'x.sock'), new Set([0])),
    /writable by its group \(mode 0770\)/,
  );
  t.doesNotThrow(() => checkSocketDirectory(join(dir, 'x.sock'), new Set([process.getuid?.() ?? 0])));
});

t.test(
  'the listener must run as a trusted uid (SO_PEERCRED; a real other-uid listener: test/netns/zds/peer-check.test.ts)',
  async (t) => {
    const trusted = new Set([0, 1337]);
    t.doesNotThrow(() => checkAgentPeer('/run/ztunnel.sock', { pid: 1, uid: 0, gid: 0 }, trusted));
    t.doesNotThrow(() => checkAgentPeer('/run/ztunnel.sock', { pid: 1, uid: 1337, gid: 0 }, trusted));
    t.throws(() => checkAgentPeer('/run/ztunnel.sock', { pid: 42, uid: 1000, gid: 1000 }, trusted), {
      code: 'ZT_ERR_ZDS_UNTRUSTED',
      message:
        /the process listening on \/run\/ztunnel\.sock \(pid 42\) runs as uid 1000, not a trusted uid \(0, 1337\); it may not hand pods to ztunnel/,
    });
  },
);

t.test('all fds are back to the baseline', async (t) => {
  t.equal(await settledFdCount(baseline), baseline);
});

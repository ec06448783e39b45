// SPDX-License-Identifier: Apache-2.0
// ztunnel's ZDS client (ztunnel/src/inpod/zds-client.ts) against a scripted node agent, with a
// real WorkloadManager whose proxies listen on loopback (no root). Spec 2.6 from ztunnel's side:
// hello first; Add starts the pod (the fd checked with NS_GET_NSTYPE, NACK otherwise), Keep
// protects it, Del before SnapshotSent only drops it from the snapshot, SnapshotSent reconciles
// and makes ztunnel ready; protocol errors (second SnapshotSent, Keep after it, an fd where none
// belongs) drop the connection and the client reconnects with its proxies intact; a failed start
// is NACKed and retried, and readiness waits for it; the client keeps trying until an agent
// listens. Every received fd is accounted for.
import { execFileSync } from 'node:child_process';
import { openSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';

import type { WorkloadRequest } from '../../../src/shared/gen/zds.ts';
import { closeFd, writeNetSysctl } from '../../../src/shared/native/index.ts';
import { ZdsConnection } from '../../../src/shared/zds/connection.ts';
import { ZDS_LIMITS } from '../../../src/shared/zds/framing.ts';
import { SeqpacketListener } from '../../../src/shared/zds/seqpacket.ts';
import { WorkloadManager } from '../../../ztunnel/src/inpod/workload-manager.ts';
import { startZdsClient, type ZdsClient } from '../../../ztunnel/src/inpod/zds-client.ts';
import {
  LOOPBACK_PORTS,
  loopbackSocketFactory,
  memoryLogger,
  openFdCount,
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
  readonly path = join(dir, `agent${String(n++)}.sock`);
  #listener: SeqpacketListener | undefined;
  readonly #queue: ZdsConnection[] = [];
  readonly #all: ZdsConnection[] = [];
  #waiter: ((c: ZdsConnection) => void) | undefined;

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

function rig(t: Test, opts: { listen?: boolean; hbonePort?: number; retryMs?: number } = {}): Rig {
  const agent = new FakeAgent();
  if (opts.listen !== false) agent.listen();
  const manager = new WorkloadManager(ctx, {
    delDrainMs: 0,
    socketFactory: loopbackSocketFactory,
    ports: { ...LOOPBACK_PORTS, ...(opts.hbonePort !== undefined && { hbone: opts.hbonePort }) },
    ...(opts.retryMs !== undefined && { retryMs: opts.retryMs }),
  });
  const readiness: boolean[] = [];
  const client = startZdsClient({ path: agent.path, manager, logger, onReady: (r) => readiness.push(r) });
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
  t.equal(openFdCount(), before, 'ztunnel closed the duplicates it refused');
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
  'a failed start is NACKed with the reason, stays pending, and readiness waits for the retry',
  async (t) => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    const { agent, manager, readiness } = rig(t, { hbonePort: port, retryMs: 100 });
    const conn = await agent.accept();
    const fd = netns.open();
    const nack = await conn.request(addReq('a'), fd);
    closeFd(fd);
    t.match(nack, /starting the proxy for pod demo\/a failed: .*cannot listen/);
    t.equal(await conn.request(snapshotSent), '');
    t.same(readiness, [], 'snapshot in, but a pod is pending: not ready');
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
    t.same(readiness, [true], 'ready once the retry started the proxy');
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

t.test('all fds are back to the baseline', async (t) => {
  t.equal(openFdCount(), baseline);
});

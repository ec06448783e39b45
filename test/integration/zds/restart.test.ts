// SPDX-License-Identifier: Apache-2.0
// Both real ZDS ends together (cni-plugin zds-server, ztunnel zds-client + WorkloadManager on
// loopback, no root), through the restarts spec 2.6 is built for: the agent restarting (ztunnel
// keeps its proxies, reconnects, and the new snapshot keeps the pods that still exist — without
// restarting them — and drains the ones that vanished meanwhile), and a ztunnel rollout (the new
// ztunnel gets the snapshot with the netns fds, adds go to it alone, deletes to both, and the old
// one leaving is noticed at once).
import { join } from 'node:path';
import t from 'tap';

import type { SnapshotEntry } from '../../../cni-plugin/src/agent/agent.ts';
import { ZdsServer, type ZtunnelPeer } from '../../../cni-plugin/src/agent/zds-server.ts';
import { closeFd } from '../../../src/shared/native/index.ts';
import { WorkloadManager } from '../../../ztunnel/src/inpod/workload-manager.ts';
import { startZdsClient, type ZdsClient } from '../../../ztunnel/src/inpod/zds-client.ts';
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
const { logger } = memoryLogger('warn');
const ctx = await testProxyContext(logger);
t.teardown(() => ctx.certs.close());
const netns = await scratchNetns();
t.teardown(() => netns.destroy());

const info = (name: string): SnapshotEntry['info'] => ({ name, namespace: 'demo', serviceAccount: 'sa' });

/** The agent's held pods: uid → entry (the fds are the test's, closed at the end). */
class Held {
  readonly pods = new Map<string, SnapshotEntry>();
  readonly #fds: number[] = [];

  hold(uid: string): void {
    const fd = netns.open();
    this.#fds.push(fd);
    this.pods.set(uid, { uid, info: info(uid), netnsFd: fd });
  }

  snapshot = (): SnapshotEntry[] => [...this.pods.values()];

  closeAll(): void {
    for (const fd of this.#fds) closeFd(fd);
  }
}

function ztunnel(path: string): { manager: WorkloadManager; client: ZdsClient; stop(): Promise<void> } {
  const manager = new WorkloadManager(ctx, {
    delDrainMs: 0,
    socketFactory: loopbackSocketFactory,
    ports: LOOPBACK_PORTS,
  });
  const client = startZdsClient({ path, manager, logger });
  return {
    manager,
    client,
    stop: async () => {
      await client.close();
      await manager.stopAll(0);
    },
  };
}

const nextEvent = (server: ZdsServer, e: 'ready' | 'disconnect'): Promise<ZtunnelPeer> =>
  new Promise((resolve) => {
    if (e === 'ready') server.once('ready', resolve);
    else server.once('disconnect', (p) => resolve(p));
  });

const baseline = openFdCount();

t.test(
  'agent restart: proxies keep running, ztunnel reconnects, the snapshot keeps what exists and drains what vanished',
  async (t) => {
    const path = join(dir, 'restart.sock');
    const held = new Held();
    held.hold('a');
    held.hold('b');
    let agent = ZdsServer.listen({ path, snapshot: held.snapshot, logger });
    const zt = ztunnel(path);
    await nextEvent(agent, 'ready');
    t.same(zt.manager.uids().sort(), ['a', 'b'], 'both pods handed over');
    const started = ctx.metrics.proxiesStarted.get();

    await agent.close();
    await until(() => !zt.client.status().connected, 5000, 'ztunnel to see the agent go');
    t.same(zt.manager.uids().sort(), ['a', 'b'], 'the proxies keep running without the agent');
    t.equal(zt.manager.snapshot().a?.state, 'Up');

    // The new agent process no longer holds a's netns (Keep) and b was deleted while it was down.
    const restarted: SnapshotEntry[] = [{ uid: 'a', info: info('a') }];
    agent = ZdsServer.listen({ path, snapshot: () => restarted, logger });
    const peer = await nextEvent(agent, 'ready');
    t.equal(peer.pid, process.pid);
    t.same(zt.manager.uids(), ['a'], 'b was drained by the reconcile');
    t.equal(zt.manager.snapshot().a?.state, 'Up', 'a kept running');
    t.equal(ctx.metrics.proxiesStarted.get(), started, 'and was not restarted');
    t.equal(zt.client.status().connections, 2, 'one reconnect');
    t.ok(zt.client.status().ready);

    await zt.stop();
    await agent.close();
    held.closeAll();
  },
);

t.test(
  'ztunnel rollout: the new ztunnel gets the snapshot, adds go to it alone, deletes to both; the old one leaving is seen at once',
  async (t) => {
    const path = join(dir, 'rollout.sock');
    const held = new Held();
    held.hold('a');
    const agent = ZdsServer.listen({ path, snapshot: held.snapshot, logger });
    const oldZt = ztunnel(path);
    const first = await nextEvent(agent, 'ready');
    const newZt = ztunnel(path);
    const second = await nextEvent(agent, 'ready');
    t.ok(second.id > first.id, 'the second connection is the newest');
    t.ok(newZt.manager.has('a'), 'the new ztunnel received the pod, with its netns fd, in its snapshot');
    t.ok(oldZt.manager.has('a'), 'the old one still serves it');

    held.hold('c');
    const c = held.pods.get('c')!;
    await agent.addWorkload('c', c.info, c.netnsFd!);
    t.ok(newZt.manager.has('c'), 'an add goes to the newest ztunnel');
    t.notOk(oldZt.manager.has('c'), 'and not to the old one');

    await agent.delWorkload('a');
    t.notOk(newZt.manager.has('a'), 'a delete reaches the newest');
    t.notOk(oldZt.manager.has('a'), 'and the old one');

    const gone = nextEvent(agent, 'disconnect');
    await oldZt.stop();
    t.equal((await gone).id, first.id, 'the old ztunnel leaving is seen');
    t.same(
      agent.connections().map((p) => p.id),
      [second.id],
    );

    await newZt.stop();
    await agent.close();
    held.closeAll();
  },
);

t.test('nothing left open', async (t) => {
  t.equal(await settledFdCount(baseline), baseline);
});

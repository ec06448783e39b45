// SPDX-License-Identifier: Apache-2.0
// ZDS with real pods (network namespaces attached by the CNI reference plugins) and ztunnel as a
// separate process (ztunnel-child.ts): the agent in this process hands each pod's netns fd over
// SCM_RIGHTS, and the other process opens 15001/15006/15008 inside that netns. Proves: listeners
// open on Add and close on Del; an fd that is not a netns is refused; tcp_migrate_req is set in
// the pod; a killed ztunnel is noticed at once and a new process rebuilds every pod from the
// snapshot; an agent restart keeps the pods that still exist (not restarted) and drains the one
// that vanished; and add/del cycles leave the ztunnel process with the fds it had.
import { openSync, closeSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';

import type { SnapshotEntry } from '../../../cni-plugin/src/agent/agent.ts';
import { ZdsServer, type ZtunnelPeer } from '../../../cni-plugin/src/agent/zds-server.ts';
import { CertificateAuthority } from '../../../src/shared/identity/ca.ts';
import { closeFd, openNetns } from '../../../src/shared/native/index.ts';
import { createTestbed, type Pod, type Testbed } from '../../helpers/testbed.ts';
import { memoryLogger } from '../../integration/zds/fixtures.ts';
import { ZtunnelProc, proxyPids } from './ztunnel-proc.ts';

if (process.getuid?.() !== 0) {
  t.fail('the ZDS netns suite needs root (network namespaces)');
} else {
  let tb: Testbed;
  const pods: Record<string, Pod> = {};
  const procs: ZtunnelProc[] = [];
  const fds: number[] = [];
  let agent: ZdsServer | undefined;
  let zdsPath = '';
  let caDir = '';
  const { logger } = memoryLogger('warn');

  t.before(async () => {
    tb = await createTestbed({ nodes: 1 });
    for (const name of ['p1', 'p2']) pods[name] = await tb.addPod({ node: 0, name, namespace: 'demo' });
    const dir = join(tb.stateDir, 'zds');
    mkdirSync(dir, { recursive: true });
    zdsPath = join(dir, 'ztunnel.sock');
    caDir = join(dir, 'ca');
    await CertificateAuthority.create({ trustDomain: 'cluster.local', dir: caDir });
  });
  t.teardown(async () => {
    await Promise.all(procs.map((p) => p.kill()));
    await agent?.close();
    for (const fd of fds) closeFd(fd);
    await tb.destroy();
  });

  /** The agent's view of a pod: its uid, info and (held) netns fd. */
  const entry = (name: string, withFd = true): SnapshotEntry => {
    const pod = pods[name]!;
    const info = { name, namespace: 'demo', serviceAccount: 'default' };
    if (!withFd) return { uid: `uid-${name}`, info };
    const fd = openNetns(pod.netnsPath);
    fds.push(fd);
    return { uid: `uid-${name}`, info, netnsFd: fd };
  };

  let held: SnapshotEntry[] = [];
  const startAgent = (): ZdsServer => {
    agent = ZdsServer.listen({ path: zdsPath, snapshot: () => held, logger });
    return agent;
  };
  const nextReady = (server: ZdsServer): Promise<ZtunnelPeer> =>
    new Promise((resolve) => server.once('ready', resolve));
  const startZtunnel = async (server: ZdsServer): Promise<ZtunnelProc> => {
    const ready = nextReady(server);
    const zt = new ZtunnelProc(zdsPath, caDir);
    procs.push(zt);
    const peer = await ready;
    if (peer.pid !== zt.pid) throw new Error(`expected ztunnel pid ${zt.pid} to connect, got ${peer.pid}`);
    return zt;
  };

  t.test(
    'Add hands the netns to another process, which opens the in-pod listeners; Del closes them',
    async (t) => {
      const server = startAgent();
      const zt = await startZtunnel(server);
      t.same(await proxyPids(pods.p1!), [], 'nothing listens in p1 yet');
      const p1 = entry('p1');
      await server.addWorkload(p1.uid, p1.info, p1.netnsFd!);
      t.same(
        await proxyPids(pods.p1!),
        [zt.pid],
        '15001, 15006 and 15008 are open in p1, held by the ztunnel process',
      );
      const sysctl = await pods.p1!.exec('sysctl', ['-n', 'net.ipv4.tcp_migrate_req']);
      t.equal(sysctl.stdout.trim(), '1', 'listener migration is on in the pod netns');
      t.equal((await zt.status()).pods['uid-p1']?.state, 'Up');

      await server.delWorkload(p1.uid);
      t.same(await proxyPids(pods.p1!), [], 'Del closed them');
      t.same(Object.keys((await zt.status()).pods), []);

      const notNs = openSync('/dev/null', 'r');
      await t.rejects(server.addWorkload('uid-bad', p1.info, notNs), {
        code: 'ZDS_ERR_NACK',
        message: /the fd is not a namespace, not a network namespace/,
      });
      closeSync(notNs);
      const mntNs = openSync('/proc/self/ns/mnt', 'r');
      await t.rejects(server.addWorkload('uid-bad', p1.info, mntNs), { message: /a mnt namespace/ });
      closeSync(mntNs);
      t.same(Object.keys((await zt.status()).pods), [], 'nothing started for refused fds');
    },
  );

  t.test('add/del cycles leave the ztunnel process with the fds it had', async (t) => {
    const server = agent!;
    const zt = procs.at(-1)!;
    const p2 = entry('p2');
    const cycle = async (): Promise<void> => {
      await server.addWorkload(p2.uid, p2.info, p2.netnsFd!);
      await server.delWorkload(p2.uid);
    };
    await cycle();
    const after1 = (await zt.status()).fds;
    for (let i = 0; i < 10; i++) await cycle();
    t.equal((await zt.status()).fds, after1, `fds after 11 cycles = after 1 (${after1})`);
    t.same(await proxyPids(pods.p2!), []);
  });

  t.test(
    'ztunnel killed: the agent sees it at once; a new process gets every pod, with its fd, from the snapshot',
    async (t) => {
      const server = agent!;
      held = [entry('p1'), entry('p2')];
      for (const e of held) await server.addWorkload(e.uid, e.info, e.netnsFd!);
      const old = procs.at(-1)!;
      t.same(await proxyPids(pods.p2!), [old.pid]);

      const gone = new Promise<ZtunnelPeer>((resolve) => server.once('disconnect', (p) => resolve(p)));
      const t0 = Date.now();
      await old.kill();
      const peer = await gone;
      t.equal(peer.pid, old.pid, `the agent noticed the kill after ${Date.now() - t0} ms`);
      t.same(await proxyPids(pods.p1!), [], 'its listeners died with it');

      const fresh = await startZtunnel(server);
      t.same(await proxyPids(pods.p1!), [fresh.pid], 'p1 is served by the new process');
      t.same(await proxyPids(pods.p2!), [fresh.pid], 'and so is p2');
    },
  );

  t.test('agent restart: kept pods stay up without a restart, the vanished pod is drained', async (t) => {
    const zt = procs.at(-1)!;
    const before = await zt.status();
    await agent!.close();
    t.same(await proxyPids(pods.p1!), [zt.pid], 'the proxies keep running without the agent');

    // The restarted agent still knows p1 but no longer holds its netns (Keep); p2 was deleted.
    held = [entry('p1', false)];
    const server = startAgent();
    const peer = await nextReady(server);
    t.equal(peer.pid, zt.pid, 'the same ztunnel reconnected');
    t.same(await proxyPids(pods.p1!), [zt.pid], 'p1 still served');
    t.same(await proxyPids(pods.p2!), [], 'p2 drained by the reconcile');
    const after = await zt.status();
    t.equal(after.started, before.started, 'p1 was not restarted');
    t.same(Object.keys(after.pods), ['uid-p1']);
    t.ok(after.status.ready);
    t.equal(after.status.connections, 2);

    t.equal(await zt.stop(1000), 0, 'a graceful stop exits 0');
    t.same(await proxyPids(pods.p1!), [], 'and takes its listeners with it');
  });
}

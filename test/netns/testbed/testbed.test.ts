// SPDX-License-Identifier: Apache-2.0
// Proof of the network-namespace test bed (test/helpers/testbed.ts, DESIGN.md §4): two nodes
// with two pods each, attached by the real CNI reference plugins; same-node and cross-node pod
// TCP works; pod IPs come from their node's /24; teardown leaves nothing behind and the root
// netns is never touched. Needs root: without it this file fails loudly.
import t from 'tap';
import { createTestbed, cleanupOrphanedTestbeds, cleanupStale, uniquePrefix } from '../../helpers/testbed.ts';
import { isAlive } from '../../helpers/testbed-exec.ts';
import { startTcpServer, tcpRequest } from '../../helpers/testbed-apps.ts';
import { runOk } from '../../helpers/testbed-exec.ts';

async function rootNetnsSnapshot(): Promise<{ links: string[]; routes: string[]; rules: string[] }> {
  // Interface names and flags only (counters and neighbour state change on their own).
  const links = (await runOk(undefined, 'ip', ['-o', 'link', 'show']))
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(':').slice(1, 2).join('').trim())
    .sort();
  const routes = (await runOk(undefined, 'ip', ['route', 'show', 'table', 'all']))
    .split('\n')
    .filter((l) => l !== '')
    .sort();
  const rules = [
    ...(await runOk(undefined, 'ip', ['-4', 'rule', 'show'])).split('\n'),
    ...(await runOk(undefined, 'ip', ['-6', 'rule', 'show'])).split('\n'),
  ].filter((l) => l !== '');
  return { links, routes, rules };
}

async function netnsList(): Promise<string[]> {
  return (await runOk(undefined, 'ip', ['netns', 'list']))
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n !== '');
}

t.test('netns test bed', { timeout: 60_000 }, async (t) => {
  if (process.getuid?.() !== 0) {
    t.fail('this test needs root (network namespaces); run it as root — it is not skipped silently');
    return;
  }
  const before = await rootNetnsSnapshot();
  const prefix = uniquePrefix();
  // createTestbed cleans up after itself if it fails; from here on teardown owns everything.
  t.teardown(() =>
    cleanupStale(prefix).then(
      () => undefined,
      () => undefined,
    ),
  );
  const bed = await createTestbed({ prefix, nodes: 2 });
  t.teardown(() => bed.destroy().catch(() => undefined));
  t.equal(bed.nodes.length, 2);
  t.same(bed.namespaces(), [`${prefix}-fab`, `${prefix}-n0`, `${prefix}-n1`]);

  const a0 = await bed.addPod({ node: 0, name: 'a0' });
  const b0 = await bed.addPod({ node: 0, name: 'b0' });
  const a1 = await bed.addPod({ node: 1, name: 'a1', namespace: 'other' });
  const b1 = await bed.addPod({ node: 1, name: 'b1' });

  t.test("pod addresses come from their node's /24 and are distinct", async (t) => {
    t.match(a0.ip, /^198\.18\.0\.\d+$/);
    t.match(b0.ip, /^198\.18\.0\.\d+$/);
    t.match(a1.ip, /^198\.18\.1\.\d+$/);
    t.match(b1.ip, /^198\.18\.1\.\d+$/);
    t.equal(new Set([a0.ip, b0.ip, a1.ip, b1.ip]).size, 4);
    t.equal(a1.namespace, 'other');
    t.equal(a0.netnsPath, `/run/netns/${prefix}-p-a0`);
    // The bridge plugin made cni0 the gateway; the pod's default route points at it.
    const route = await a0.exec('ip', ['-4', 'route', 'show', 'default']);
    t.match(route.stdout, /default via 198\.18\.0\.1 dev eth0/);
    const addr = await a0.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']);
    t.match(addr.stdout, new RegExp(`inet ${a0.ip.replace(/\./g, '\\.')}/24`));
    const lo = await a0.exec('ip', ['-o', 'link', 'show', 'lo']);
    t.match(lo.stdout, /UP/, 'loopback plugin brought lo up');
    const cni0 = await bed.nodes[0]!.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'cni0']);
    t.match(cni0.stdout, /inet 198\.18\.0\.1\/24/, 'bridge plugin created cni0 in the node netns');
  });

  t.test('pod-to-pod TCP: same node and cross node', async (t) => {
    await startTcpServer(b0, 'b0', [8080]);
    await startTcpServer(b1, 'b1', [8080]);
    const same = await tcpRequest(a0, b0.ip, 8080, { payload: 'hello-same' });
    t.ok(same.ok, `same-node connect: ${same.output}`);
    t.equal(same.server, 'b0');
    t.match(same.output, /hello-same$/, 'echoed');
    t.match(
      same.output,
      new RegExp(`peer=${a0.ip.replace(/\./g, '\\.')}\\n`),
      'server sees the client pod IP (no masquerade)',
    );

    const cross = await tcpRequest(a0, b1.ip, 8080, { payload: 'hello-cross' });
    t.ok(cross.ok, `cross-node connect: ${cross.output}`);
    t.equal(cross.server, 'b1');
    t.match(cross.output, /hello-cross$/);
    t.match(
      cross.output,
      new RegExp(`peer=${a0.ip.replace(/\./g, '\\.')}\\n`),
      'cross-node traffic is routed, not NATed',
    );

    const back = await tcpRequest(a1, b0.ip, 8080, { payload: 'hello-back' });
    t.ok(back.ok, `cross-node the other way: ${back.output}`);

    // Nothing routes out of the fabric: an address outside the test bed is unreachable.
    const out = await tcpRequest(a0, '198.19.0.1', 80, { timeoutMs: 1_000 });
    t.notOk(out.ok, `no route out of the test bed (${out.output})`);
    const fabRoutes = await bed.fabric.exec('ip', ['-4', 'route', 'show', 'default']);
    t.equal(fabRoutes.stdout.trim(), '', 'the fabric has no default route');
  });

  t.test('removePod runs CNI DEL and releases the address', async (t) => {
    const tmp = await bed.addPod({ node: 0, name: 'tmp' });
    const ipamFile = `${bed.stateDir}/ipam/${bed.nodes[0]!.conflist.name}/${tmp.ip}`;
    const { existsSync } = await import('node:fs');
    t.ok(existsSync(ipamFile), 'host-local recorded the lease');
    await bed.removePod('tmp');
    t.notOk(existsSync(ipamFile), 'CNI DEL released the lease');
    t.notOk((await netnsList()).includes(`${prefix}-p-tmp`), 'pod netns deleted');
  });

  t.test('destroy leaves nothing behind', async (t) => {
    await bed.destroy();
    await bed.destroy(); // idempotent
    const left = (await netnsList()).filter((n) => n.startsWith(prefix));
    t.same(left, [], 'no namespaces with the prefix');
    const { existsSync } = await import('node:fs');
    t.notOk(existsSync(bed.stateDir), 'state directory removed');
    const after = await rootNetnsSnapshot();
    t.same(after.links, before.links, 'root netns interfaces unchanged');
    t.same(after.routes, before.routes, 'root netns routes unchanged');
    t.same(after.rules, before.rules, 'root netns ip rules unchanged');
    t.same(await cleanupStale(prefix), [], 'cleanupStale finds nothing left');
  });
});

t.test('cleanupStale removes leftovers of a crashed run', { timeout: 30_000 }, async (t) => {
  if (process.getuid?.() !== 0) {
    t.fail('this test needs root (network namespaces)');
    return;
  }
  const prefix = uniquePrefix();
  t.teardown(() =>
    cleanupStale(prefix).then(
      () => undefined,
      () => undefined,
    ),
  );
  const tb = await createTestbed({ prefix, nodes: 1 });
  const pod = await tb.addPod({ node: 0, name: 'x' });
  await startTcpServer(pod, 'x', [9000]);
  // Simulate a crash: forget the handle, never call destroy().
  const removed = await cleanupStale(prefix);
  t.same(removed.sort(), [`${prefix}-fab`, `${prefix}-n0`, `${prefix}-p-x`].sort());
  t.same(
    (await netnsList()).filter((n) => n.startsWith(prefix)),
    [],
  );
  await t.rejects(cleanupStale(''), /refusing/, 'an empty prefix is refused (it would match everything)');
  await t.rejects(cleanupStale('a'), /refusing/);
});

t.test('cleanupOrphanedTestbeds removes test beds whose process died', { timeout: 30_000 }, async (t) => {
  if (process.getuid?.() !== 0) {
    t.fail('this test needs root (network namespaces)');
    return;
  }
  // A prefix as uniquePrefix() would make it for a pid that is not running.
  let pid = 4_000_000;
  while (isAlive(pid) && pid > 3_000_000) pid--;
  const dead = `amb${pid.toString(36).padStart(5, '0')}0`;
  const live = uniquePrefix();
  t.teardown(async () => {
    await cleanupStale(dead).catch(() => undefined);
    await cleanupStale(live).catch(() => undefined);
  });
  const orphan = await createTestbed({ prefix: dead, nodes: 1 });
  await orphan.addPod({ node: 0, name: 'o' });
  const mine = await createTestbed({ prefix: live, nodes: 1 });
  t.teardown(() => mine.destroy().catch(() => undefined));
  // Restricted to the two prefixes of this test: other test runs on the machine are not ours.
  const removed = await cleanupOrphanedTestbeds({ only: (p) => p === dead || p === live });
  t.ok(
    removed.includes(`${dead}-fab`) && removed.includes(`${dead}-p-o`),
    `orphan removed: ${removed.join(', ')}`,
  );
  t.notOk(
    removed.some((n) => n.startsWith(live)),
    'a live test bed is left alone',
  );
  const left = await netnsList();
  t.same(
    left.filter((n) => n.startsWith(dead)),
    [],
  );
  t.same(left.filter((n) => n.startsWith(live)).sort(), [`${live}-fab`, `${live}-n0`]);
});

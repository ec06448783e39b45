// SPDX-License-Identifier: Apache-2.0
// The memory guard behind load shedding (checklist F.80): reading the container's limit and
// working set from cgroup v1 and v2 files (laid out here as the kernel lays them out), the
// thresholds with their hysteresis, a failing source, and the OVERLOAD_* settings.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { loadConfig } from '../../../../ztunnel/src/config/env.ts';
import {
  cgroupMemorySource,
  OverloadGuard,
  rssMemorySource,
  type MemorySample,
} from '../../../../ztunnel/src/proxy/overload.ts';

function files(root: string, dir: string, entries: Record<string, string>): void {
  mkdirSync(join(root, dir), { recursive: true });
  for (const [name, text] of Object.entries(entries)) writeFileSync(join(root, dir, name), text);
}

t.test('cgroup v2: working set = memory.current - inactive_file, against memory.max', async (t) => {
  const root = t.testdir();
  files(root, 'kubepods/pod-1/ztunnel', {
    'memory.max': '104857600\n',
    'memory.current': '95000000\n',
    'memory.stat': 'anon 60000000\nfile 35000000\nactive_file 30000000\ninactive_file 5000000\n',
  });
  const source = cgroupMemorySource('0::/kubepods/pod-1/ztunnel\n', root);
  t.ok(source, 'a limit is found');
  t.same(source?.(), { usedBytes: 90_000_000, limitBytes: 104_857_600, source: 'cgroup v2 working set' });

  writeFileSync(join(root, 'kubepods/pod-1/ztunnel/memory.current'), '100000000\n');
  t.equal(source?.()?.usedBytes, 95_000_000, 'each sample reads the files again');
  writeFileSync(join(root, 'kubepods/pod-1/ztunnel/memory.max'), 'max\n');
  t.equal(source?.(), undefined, 'a limit lifted at run time: nothing to protect');
  t.equal(cgroupMemorySource('0::/kubepods/pod-1/ztunnel\n', root), undefined, 'no limit, no source');
  t.equal(cgroupMemorySource('0::/elsewhere\n', root), undefined, 'no memory controller files');
});

t.test('cgroup v1: usage_in_bytes - total_inactive_file, against limit_in_bytes', async (t) => {
  const root = t.testdir();
  files(root, 'memory/kubepods/burstable/pod:2/ctr', {
    'memory.limit_in_bytes': '209715200\n',
    'memory.usage_in_bytes': '150000000\n',
    'memory.stat': 'cache 40000000\ninactive_file 1\ntotal_inactive_file 30000000\n',
  });
  // Controllers may share a hierarchy ("cpu,memory"), and a path may hold ':'.
  const text = '12:pids:/x\n4:cpu,memory:/kubepods/burstable/pod:2/ctr\n0::/\n';
  t.same(cgroupMemorySource(text, root)?.(), {
    usedBytes: 120_000_000,
    limitBytes: 209_715_200,
    source: 'cgroup v1 working set',
  });
  files(root, 'memory/unlimited', { 'memory.limit_in_bytes': '9223372036854771712\n' });
  t.equal(cgroupMemorySource('4:memory:/unlimited\n', root), undefined, "v1's 'no limit' value");
});

t.test('this machine: reading its own cgroup never throws', async (t) => {
  const source = cgroupMemorySource(readFileSync('/proc/self/cgroup', 'utf8'));
  const s = source?.();
  if (s === undefined) t.pass('no memory limit on this process (shedding stays off)');
  else t.ok(s.usedBytes > 0 && s.limitBytes > s.usedBytes / 2, `used ${s.usedBytes} of ${s.limitBytes}`);
  const rss = rssMemorySource(1e9)();
  t.ok(rss && rss.usedBytes > 10e6 && rss.limitBytes === 1e9, 'RSS against a fixed limit');
});

t.test('the guard: starts at shedAt, stops below resumeAt, off when the source fails', async (t) => {
  let next: MemorySample | undefined | Error = { usedBytes: 50, limitBytes: 100, source: 's' };
  const guard = new OverloadGuard({
    source: () => {
      if (next instanceof Error) throw next;
      return next;
    },
    shedAt: 0.9,
  });
  const changes: boolean[] = [];
  const errors: Error[] = [];
  guard.on('changed', (s) => changes.push(s));
  guard.on('error', (e) => errors.push(e));
  const at = (used: number): boolean => {
    next = { usedBytes: used, limitBytes: 100, source: 's' };
    guard.sample();
    return guard.shedding;
  };
  t.notOk(at(50));
  t.notOk(at(89));
  t.ok(at(90), 'at the threshold');
  t.ok(at(86), 'above the resume mark: still shedding (no flapping)');
  t.notOk(at(84), 'below it: over');
  t.ok(at(99));
  next = new Error('memory.current vanished');
  guard.sample();
  t.notOk(guard.shedding, 'an unreadable source never leaves shedding stuck on');
  t.equal(errors[0]?.message, 'memory.current vanished');
  next = undefined;
  guard.sample();
  t.notOk(guard.shedding);
  t.same(changes, [true, false, true, false], 'one event per transition');
  t.match(guard.status(), { shedding: false, shedAt: 0.9, resumeAt: 0.85 });

  const none = new OverloadGuard({ source: undefined });
  none.start();
  none.sample();
  t.notOk(none.shedding, 'no source: never sheds');
  none.stop();
  t.throws(() => new OverloadGuard({ source: undefined, shedAt: 1.5 }), RangeError);
  t.throws(() => new OverloadGuard({ source: undefined, shedAt: 0.5, resumeAt: 0.6 }), RangeError);
});

t.test('start() samples at once and then on its timer; stop() ends it', async (t) => {
  let used = 95;
  let calls = 0;
  const guard = new OverloadGuard({
    source: () => {
      calls++;
      return { usedBytes: used, limitBytes: 100, source: 's' };
    },
    intervalMs: 20,
  });
  guard.start();
  t.ok(guard.shedding, 'the first sample is taken by start()');
  used = 10;
  await new Promise((r) => setTimeout(r, 100));
  t.notOk(guard.shedding, 'the timer sampled again');
  guard.stop();
  const after = calls;
  await new Promise((r) => setTimeout(r, 60));
  t.equal(calls, after, 'no sample after stop()');
});

t.test('OVERLOAD_MEMORY_LIMIT and OVERLOAD_SHED_FRACTION', async (t) => {
  const base = { NODE_NAME: 'n', LOCAL_XDS_PATH: '/tmp/unused.yaml', LOCAL_CA_DIR: '/tmp/unused-ca' };
  t.same(loadConfig(base).overload, { memoryLimitBytes: undefined, shedFraction: 0.9 }, 'defaults');
  for (const [v, n] of [
    ['536870912', 536870912],
    ['512Mi', 536870912],
    ['1Gi', 2 ** 30],
    ['500M', 5e8],
  ] as const) {
    t.equal(loadConfig({ ...base, OVERLOAD_MEMORY_LIMIT: v }).overload.memoryLimitBytes, n, v);
  }
  for (const v of ['0', '-1', '1.5Gi', '512MB', 'lots']) {
    t.throws(
      () => loadConfig({ ...base, OVERLOAD_MEMORY_LIMIT: v }),
      {
        code: 'ZT_ERR_CONFIG',
        message: /OVERLOAD_MEMORY_LIMIT=.*expected a positive byte count such as 536870912, 512Mi or 1Gi/,
      },
      v,
    );
  }
  t.equal(loadConfig({ ...base, OVERLOAD_SHED_FRACTION: '0.8' }).overload.shedFraction, 0.8);
  for (const v of ['0', '1.2', '0.05', 'high']) {
    t.throws(() => loadConfig({ ...base, OVERLOAD_SHED_FRACTION: v }), { code: 'ZT_ERR_CONFIG' }, v);
  }
});

t.test('inside a container: the mount root from mountinfo is stripped from the cgroup path', async (t) => {
  const root = t.testdir();
  const cid = '/kubepods/burstable/pod-3/abc';
  // v1 without a cgroup namespace: /proc/self/cgroup shows the host's path, and the container's
  // memory mount is that very cgroup.
  files(root, 'sys/fs/cgroup/memory', {
    'memory.limit_in_bytes': '100000000\n',
    'memory.usage_in_bytes': '50000000\n',
    'memory.stat': 'total_inactive_file 0\n',
  });
  const mountinfoV1 =
    `25 20 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n` +
    `30 25 0:27 ${cid} ${root}/sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:12 - cgroup cgroup rw,memory\n` +
    `31 25 0:28 ${cid} ${root}/sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n`;
  const v1 = cgroupMemorySource(`9:memory:${cid}\n`, '/nonexistent', mountinfoV1);
  t.same(v1?.(), { usedBytes: 50_000_000, limitBytes: 100_000_000, source: 'cgroup v1 working set' });
  t.equal(
    cgroupMemorySource(`9:memory:${cid}\n`, '/nonexistent'),
    undefined,
    'joining the host path misses the files',
  );

  // v2 with a cgroup namespace: "0::/" and the container's cgroup mounted at /sys/fs/cgroup.
  files(root, 'v2', {
    'memory.max': '200000000\n',
    'memory.current': '20000000\n',
    'memory.stat': 'inactive_file 10000000\n',
  });
  const mountinfoV2 = `40 30 0:30 / ${root}/v2 rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n`;
  t.equal(cgroupMemorySource('0::/\n', '/nonexistent', mountinfoV2)?.()?.usedBytes, 10_000_000);
  // An escaped space in a mount point (mountinfo writes it as \040).
  files(root, 'with space', {
    'memory.max': '300\n',
    'memory.current': '3\n',
    'memory.stat': '',
  });
  const escaped = `41 30 0:31 / ${root.replaceAll(' ', '\\040')}/with\\040space rw - cgroup2 cgroup2 rw\n`;
  t.equal(cgroupMemorySource('0::/\n', '/nonexistent', escaped)?.()?.limitBytes, 300);
});

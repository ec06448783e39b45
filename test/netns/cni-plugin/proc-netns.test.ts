// SPDX-License-Identifier: Apache-2.0
// findPodNetns: the pod of a given uid is found by its processes' cgroup paths (both kubelet
// cgroup drivers' spellings), in a real network namespace, never in the agent's own one, and,
// when a process of the pod sits in a namespace of its own (a decoy), only the namespace that
// holds the pod's IP is taken. The /proc tree is a built copy (cgroup files, ns/net links to real
// namespaces, net/fib_trie and net/if_inet6 as those namespaces print them) so the test does not
// depend on the machine's cgroup layout.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findPodNetns, localAddresses } from '../../../cni-plugin/src/agent/proc-netns.ts';

if (process.getuid?.() !== 0) throw new Error('this suite needs root (network namespaces)');

const tag = process.pid.toString(36);
const ns = `pnt${tag}`;
const decoy = `pnd${tag}`;
const run = (args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
const proc = mkdtempSync(join(tmpdir(), 'proc-'));
t.teardown(() => {
  rmSync(proc, { recursive: true, force: true });
  for (const name of [ns, decoy]) {
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      // never created
    }
  }
});
// Two namespaces joined by a veth pair, each end with its own addresses.
run(['netns', 'add', ns]);
run(['netns', 'add', decoy]);
run(['-n', ns, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1', 'netns', decoy]);
for (const [name, dev, v4, v6] of [
  [ns, 'v0', '198.18.77.5/24', 'fd00:77::5/64'],
  [decoy, 'v1', '198.18.77.9/24', 'fd00:77::9/64'],
] as const) {
  run(['-n', name, 'addr', 'add', v4, 'dev', dev]);
  run(['-n', name, '-6', 'addr', 'add', v6, 'dev', dev, 'nodad']);
  run(['-n', name, 'link', 'set', dev, 'up']);
}

/** A process of the built /proc, in `netns` (a /run/netns name, or undefined for the host's). */
function fakeProcess(pid: number, cgroup: string, netns: string | undefined): void {
  const dir = join(proc, String(pid));
  mkdirSync(join(dir, 'ns'), { recursive: true });
  mkdirSync(join(dir, 'net'), { recursive: true });
  writeFileSync(join(dir, 'cgroup'), cgroup);
  symlinkSync(netns === undefined ? '/proc/self/ns/net' : `/run/netns/${netns}`, join(dir, 'ns', 'net'));
  const view = (file: string): string =>
    netns === undefined
      ? execFileSync('cat', [`/proc/net/${file}`], { encoding: 'utf8' })
      : execFileSync('ip', ['netns', 'exec', netns, 'cat', `/proc/net/${file}`], { encoding: 'utf8' });
  writeFileSync(join(dir, 'net', 'fib_trie'), view('fib_trie'));
  writeFileSync(join(dir, 'net', 'if_inet6'), view('if_inet6'));
}
mkdirSync(join(proc, 'self', 'ns'), { recursive: true });
symlinkSync('/proc/self/ns/net', join(proc, 'self', 'ns', 'net'));

const uid = '4a7b9c1e-2d3f-4a5b-8c6d-7e8f9a0b1c2d';
const systemd = (u: string): string =>
  `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u.replace(/-/g, '_')}.slice/cri-containerd-1.scope\n`;
// A host-network process of the same pod (a pause container sharing the host netns) comes first.
fakeProcess(100, `0::/kubepods/besteffort/pod${uid}/abc\n`, undefined);
fakeProcess(200, systemd(uid), ns);
fakeProcess(300, '0::/kubepods/besteffort/podffffffff-0000-0000-0000-000000000000/x\n', ns);

t.test('the local addresses of a namespace, from its process’s /proc/<pid>/net view', async (t) => {
  const got = localAddresses(join(proc, '200'));
  t.ok(got.includes('198.18.77.5'), 'IPv4 from fib_trie');
  t.ok(got.includes('fd00:77::5'), 'IPv6 from if_inet6');
  t.notOk(got.includes('198.18.77.0'), 'the network route is not a local address');
});

t.test('finds the pod by the systemd-driver spelling, skipping the host netns', async (t) => {
  t.equal(
    findPodNetns(uid, { procRoot: proc }),
    join(proc, '200', 'ns', 'net'),
    'one candidate, no IPs needed',
  );
  t.equal(
    findPodNetns(uid, { procRoot: proc, podIps: ['198.18.77.5'] }),
    join(proc, '200', 'ns', 'net'),
    'and its namespace holds the pod IP',
  );
  t.equal(
    findPodNetns(uid, { procRoot: proc, podIps: ['198.18.77.6'] }),
    undefined,
    'not a namespace without the pod IP',
  );
});

t.test('a process of the pod in a namespace of its own: only the one with the pod IP is taken', async (t) => {
  const other = '0badc0de-2d3f-4a5b-8c6d-7e8f9a0b1c2d';
  // The decoy comes first in the scan.
  fakeProcess(150, systemd(other), decoy);
  fakeProcess(250, systemd(other), ns);
  t.equal(findPodNetns(other, { procRoot: proc }), undefined, 'two namespaces and no IP to tell: nothing');
  t.equal(findPodNetns(other, { procRoot: proc, podIps: ['198.18.77.5'] }), join(proc, '250', 'ns', 'net'));
  t.equal(
    findPodNetns(other, { procRoot: proc, podIps: ['fd00:77:0:0::5'] }),
    join(proc, '250', 'ns', 'net'),
    'IPv6 pod IPs compared in canonical form',
  );
  t.equal(findPodNetns(other, { procRoot: proc, podIps: ['198.18.77.9'] }), join(proc, '150', 'ns', 'net'));
  t.equal(findPodNetns(other, { procRoot: proc, podIps: ['198.18.1.1'] }), undefined, 'neither holds it');
  t.equal(
    findPodNetns(other, { procRoot: proc, podIps: ['198.18.77.5', '198.18.77.9'] }),
    undefined,
    'both hold an IP of the pod: as ambiguous as none',
  );
});

t.test('a decoy that claims the pod IP too makes the answer ambiguous: nothing', async (t) => {
  const uid3 = 'c0ffee00-2d3f-4a5b-8c6d-7e8f9a0b1c2d';
  // The decoy carries the pod's address on an interface of its own namespace, and comes first.
  run(['-n', decoy, 'addr', 'add', '198.18.77.5/32', 'dev', 'lo']);
  t.teardown(() => run(['-n', decoy, 'addr', 'del', '198.18.77.5/32', 'dev', 'lo']));
  fakeProcess(160, systemd(uid3), decoy);
  fakeProcess(260, systemd(uid3), ns);
  t.equal(findPodNetns(uid3, { procRoot: proc, podIps: ['198.18.77.5'] }), undefined);
});

t.test('an unknown uid, or a malformed one, finds nothing', async (t) => {
  t.equal(findPodNetns('11111111-2222-3333-4444-555555555555', { procRoot: proc }), undefined);
  t.equal(findPodNetns('../etc', { procRoot: proc }), undefined);
  t.equal(findPodNetns('', { procRoot: proc }), undefined);
});

// SPDX-License-Identifier: Apache-2.0
// findPodNetns: the pod of a given uid is found by its processes' cgroup paths (both kubelet
// cgroup drivers' spellings), in a real network namespace, and never in the agent's own one.
// The /proc tree is a built copy (cgroup files, ns/net links to real namespaces) so the test does
// not depend on the machine's cgroup layout.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findPodNetns } from '../../../cni-plugin/src/agent/proc-netns.ts';

if (process.getuid?.() !== 0) throw new Error('this suite needs root (network namespaces)');

const ns = `pnt${process.pid.toString(36)}`;
execFileSync('ip', ['netns', 'add', ns]);
const proc = mkdtempSync(join(tmpdir(), 'proc-'));
t.teardown(() => {
  rmSync(proc, { recursive: true, force: true });
  execFileSync('ip', ['netns', 'del', ns]);
});

function fakeProcess(pid: number, cgroup: string, netns: string): void {
  mkdirSync(join(proc, String(pid), 'ns'), { recursive: true });
  writeFileSync(join(proc, String(pid), 'cgroup'), cgroup);
  symlinkSync(netns, join(proc, String(pid), 'ns', 'net'));
}
mkdirSync(join(proc, 'self', 'ns'), { recursive: true });
symlinkSync('/proc/self/ns/net', join(proc, 'self', 'ns', 'net'));

const uid = '4a7b9c1e-2d3f-4a5b-8c6d-7e8f9a0b1c2d';
// A host-network process of the same pod (a pause container sharing the host netns) comes first.
fakeProcess(100, `0::/kubepods/besteffort/pod${uid}/abc\n`, '/proc/self/ns/net');
fakeProcess(
  200,
  `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid.replace(/-/g, '_')}.slice/cri-containerd-1.scope\n`,
  `/run/netns/${ns}`,
);
fakeProcess(300, '0::/kubepods/besteffort/podffffffff-0000-0000-0000-000000000000/x\n', `/run/netns/${ns}`);

t.test('finds the pod by the systemd-driver spelling, skipping the host netns', async (t) => {
  t.equal(findPodNetns(uid, proc), join(proc, '200', 'ns', 'net'));
});

t.test('an unknown uid, or a malformed one, finds nothing', async (t) => {
  t.equal(findPodNetns('11111111-2222-3333-4444-555555555555', proc), undefined);
  t.equal(findPodNetns('../etc', proc), undefined);
  t.equal(findPodNetns('', proc), undefined);
});

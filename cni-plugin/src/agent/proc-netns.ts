// SPDX-License-Identifier: Apache-2.0
// Finding the network namespace of a pod the agent never saw a CNI ADD for: a pod that was
// already running when the mesh was installed, or when its namespace opted in while the agent
// had no record of it (spec §2.1 step 4: upstream scans host /proc the same way). The kubelet
// puts every container of a pod in a cgroup whose path contains `pod<uid>` (cgroupfs driver) or
// `pod<uid with _ for ->` (systemd driver); any such process's /proc/<pid>/ns/net is the pod's
// netns. Processes in the agent's own (host) netns are skipped: hostNetwork pods are never
// enrolled, and a wrong match there would put rules on the node itself.
import { readFileSync, readdirSync } from 'node:fs';
import { closeFd, netnsInode, openNetns } from '../../../src/shared/native/index.ts';

const UID_RE = /^[0-9a-f-]{8,64}$/i;

/** `/proc/<pid>/ns/net` of a process of the pod, or undefined when none is found. */
export function findPodNetns(uid: string, procRoot = '/proc'): string | undefined {
  if (!UID_RE.test(uid)) return undefined;
  const markers = [`pod${uid}`, `pod${uid.replace(/-/g, '_')}`];
  const own = inodeOf(`${procRoot}/self/ns/net`);
  for (const entry of readdirSync(procRoot)) {
    if (!/^\d+$/.test(entry)) continue;
    let cgroup: string;
    try {
      cgroup = readFileSync(`${procRoot}/${entry}/cgroup`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    if (!markers.some((m) => cgroup.includes(m))) continue;
    const path = `${procRoot}/${entry}/ns/net`;
    const inode = inodeOf(path);
    if (inode !== undefined && inode !== own) return path;
  }
  return undefined;
}

function inodeOf(path: string): number | undefined {
  try {
    const fd = openNetns(path);
    try {
      return netnsInode(fd);
    } finally {
      closeFd(fd);
    }
  } catch {
    return undefined;
  }
}

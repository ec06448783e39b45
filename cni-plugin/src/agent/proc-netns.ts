// SPDX-License-Identifier: Apache-2.0
// Finding the network namespace of a pod the agent never saw a CNI ADD for: a pod that was
// already running when the mesh was installed, or when its namespace opted in while the agent
// had no record of it (spec §2.1 step 4: upstream scans host /proc the same way). The kubelet
// puts every container of a pod in a cgroup whose path contains `pod<uid>` (cgroupfs driver) or
// `pod<uid with _ for ->` (systemd driver); a process there is the pod's, and its
// /proc/<pid>/ns/net is a candidate. Processes in the agent's own (host) netns are skipped:
// hostNetwork pods are never enrolled, and a wrong match there would put rules on the node itself.
//
// A container can make network namespaces of its own (with CAP_SYS_ADMIN), so the first
// candidate is not trusted blindly: the namespace chosen is the one that holds the pod's IP
// (status.podIPs) as a local address, read from that process's /proc/<pid>/net view, and only
// when exactly one does (a decoy can claim the pod IP too). Without IPs to check, only an
// unambiguous answer (every candidate the same namespace) is taken.
// Anything else finds nothing: the pod waits (fails closed) rather than getting rules in a decoy.
import { readFileSync, readdirSync } from 'node:fs';
import { closeFd, netnsInode, openNetns } from '../../../src/shared/native/index.ts';
import { canonicalIp } from '../../../src/shared/net/ip.ts';

const UID_RE = /^[0-9a-f-]{8,64}$/i;

export interface FindPodNetnsOptions {
  /** status.podIPs: the namespace must hold one of them. */
  readonly podIps?: readonly string[];
  /** For tests: a built /proc tree. */
  readonly procRoot?: string;
}

/** `/proc/<pid>/ns/net` of a process of the pod, or undefined when none (or no unambiguous one) is found. */
export function findPodNetns(uid: string, opts: FindPodNetnsOptions = {}): string | undefined {
  const procRoot = opts.procRoot ?? '/proc';
  if (!UID_RE.test(uid)) return undefined;
  const markers = [`pod${uid}`, `pod${uid.replace(/-/g, '_')}`];
  const own = inodeOf(`${procRoot}/self/ns/net`);
  // netns inode → the first process seen in it.
  const candidates = new Map<number, string>();
  for (const entry of readdirSync(procRoot)) {
    if (!/^\d+$/.test(entry)) continue;
    let cgroup: string;
    try {
      cgroup = readFileSync(`${procRoot}/${entry}/cgroup`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    if (!markers.some((m) => cgroup.includes(m))) continue;
    const inode = inodeOf(`${procRoot}/${entry}/ns/net`);
    if (inode !== undefined && inode !== own && !candidates.has(inode)) {
      candidates.set(inode, `${procRoot}/${entry}`);
    }
  }
  const wanted = new Set((opts.podIps ?? []).map((ip) => canonicalIp(ip)).filter((ip) => ip !== undefined));
  if (wanted.size === 0) {
    const [only, ...more] = [...candidates.values()];
    return only !== undefined && more.length === 0 ? `${only}/ns/net` : undefined;
  }
  // Every namespace that holds a pod IP: a container can put the pod's address on an interface
  // of a namespace of its own, so two of them are as ambiguous as none.
  const holding = [...candidates.values()].filter((pidDir) =>
    localAddresses(pidDir).some((ip) => wanted.has(ip)),
  );
  return holding.length === 1 ? `${holding[0]}/ns/net` : undefined;
}

/**
 * The local addresses of the namespace a process is in, from its /proc/<pid>/net view: IPv4 host
 * routes of type LOCAL in fib_trie, IPv6 addresses in if_inet6. Canonical text.
 */
export function localAddresses(pidDir: string): string[] {
  const out: string[] = [];
  try {
    let last: string | undefined;
    for (const line of readFileSync(`${pidDir}/net/fib_trie`, 'utf8').split('\n')) {
      const leaf = /^[\s|]*[|`]-- ([0-9.]+)$/.exec(line);
      if (leaf) last = leaf[1];
      else if (last !== undefined && /\/32 host LOCAL/.test(line)) {
        const ip = canonicalIp(last);
        if (ip !== undefined) out.push(ip);
      }
    }
  } catch {
    // no IPv4 view (or the process exited)
  }
  try {
    for (const line of readFileSync(`${pidDir}/net/if_inet6`, 'utf8').split('\n')) {
      const hex = /^([0-9a-f]{32})\s/.exec(line)?.[1];
      if (hex === undefined) continue;
      const ip = canonicalIp(hex.match(/.{4}/g)?.join(':') ?? '');
      if (ip !== undefined) out.push(ip);
    }
  } catch {
    // no IPv6 view
  }
  return out;
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

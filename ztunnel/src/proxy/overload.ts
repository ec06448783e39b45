// SPDX-License-Identifier: Apache-2.0
// Load shedding under memory pressure (security-and-reliability.md checklist F.80): when the
// memory ztunnel is charged for nears its limit, new connections are refused, so the ones it
// already carries survive instead of the whole node's traffic dying with an OOM kill. Envoy's
// overload manager does the same with its heap; upstream ztunnel has no such guard.
//
// * What is measured: the container's working set, as the kubelet and the OOM killer see it: the
//   cgroup's usage minus its inactive file pages (page cache the kernel can drop), against the
//   cgroup's limit. cgroup v2 (memory.current, memory.max, memory.stat) and v1
//   (memory.usage_in_bytes, memory.limit_in_bytes, memory.stat) are both read. Without a cgroup
//   limit, OVERLOAD_MEMORY_LIMIT sets one against the process's own RSS; with neither, there is
//   nothing to protect and no shedding.
// * When: a sample every 250 ms (a few small file reads, off the data path); shedding starts at
//   OVERLOAD_SHED_FRACTION of the limit (default 0.9) and stops 5 points below it, so a working
//   set hovering at the threshold does not flap.
// * What is shed (WorkloadProxy, InboundHandler): new connections on 15001 and 15006 (reset),
//   new TCP connections on 15008 (closed before TLS, the costliest part), and new CONNECT streams
//   on sessions that already exist (503). Established connections are never touched.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EventEmitter } from 'eventemitter3';

export interface MemorySample {
  /** Bytes in use, as the limit counts them (working set, or RSS). */
  readonly usedBytes: number;
  readonly limitBytes: number;
  /** Where the figures come from, for logs and /config_dump. */
  readonly source: string;
}

/** Reads the current usage and limit; undefined when there is no limit to protect. */
export type MemorySource = () => MemorySample | undefined;

/** cgroup v1 writes this (PAGE_COUNTER_MAX pages) for "no limit"; anything at least 2^62 is unlimited. */
const V1_UNLIMITED = 2 ** 62;

function readNumber(path: string): number | undefined {
  const text = readFileSync(path, 'utf8').trim();
  if (text === 'max') return undefined;
  const n = Number(text);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

function statValue(statText: string, key: string): number {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(statText);
  return m ? Number(m[1]) : 0;
}

interface CgroupMount {
  /** The path inside the hierarchy that is mounted (a container sees its own cgroup as "/"). */
  readonly root: string;
  readonly mountPoint: string;
}

/**
 * Where the memory hierarchy is mounted, from /proc/self/mountinfo's text: the cgroup2 mount
 * (v2), or the cgroup mount whose super options include `memory` (v1). Lines are
 * `id parent dev root mountpoint options [tags…] - fstype source superoptions`.
 */
export function cgroupMounts(mountinfo: string): {
  v1: CgroupMount | undefined;
  v2: CgroupMount | undefined;
} {
  let v1: CgroupMount | undefined;
  let v2: CgroupMount | undefined;
  for (const line of mountinfo.split('\n')) {
    const [before, after] = line.split(' - ');
    if (before === undefined || after === undefined) continue;
    const f = before.split(' ');
    const [fstype, , superOptions] = after.split(' ');
    const mount = { root: unescapeMount(f[3] ?? '/'), mountPoint: unescapeMount(f[4] ?? '') };
    if (fstype === 'cgroup2') v2 ??= mount;
    else if (fstype === 'cgroup' && (superOptions ?? '').split(',').includes('memory')) v1 ??= mount;
  }
  return { v1, v2 };
}

/** mountinfo escapes space, tab, newline and backslash as octal (\040 …). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** The directory of cgroup `path` under `mount`, or under `fallbackRoot` when the mount is unknown. */
function cgroupDir(path: string, mount: CgroupMount | undefined, fallbackRoot: string): string {
  if (!mount) return join(fallbackRoot, path);
  // Without a cgroup namespace a container's /proc/self/cgroup shows the host's path while its
  // mount's root is that same path: strip it, or the files are looked for where they are not.
  const rel =
    mount.root === '/'
      ? path
      : path === mount.root
        ? '/'
        : path.startsWith(`${mount.root}/`)
          ? path.slice(mount.root.length)
          : path;
  return join(mount.mountPoint, rel);
}

/**
 * The memory cgroup of this process (from `procCgroup`, /proc/self/cgroup's text) as a
 * MemorySource, or undefined when it has no memory limit. `mountinfo` (/proc/self/mountinfo)
 * says where the hierarchy is mounted; without it, `root` is taken as the cgroup mount point
 * (`root/memory` for v1). v2: the `0::<path>` line; v1: the line whose controllers include `memory`.
 */
export function cgroupMemorySource(
  procCgroup: string,
  root = '/sys/fs/cgroup',
  mountinfo?: string,
): MemorySource | undefined {
  const mounts = mountinfo === undefined ? { v1: undefined, v2: undefined } : cgroupMounts(mountinfo);
  const lines = procCgroup.split('\n').filter((l) => l !== '');
  const v1 = lines
    .map((l) => l.split(':'))
    .find((p) => p.length >= 3 && (p[1] ?? '').split(',').includes('memory'));
  let files: { usage: string; limit: string; stat: string; inactive: string; version: string } | undefined;
  if (v1) {
    const dir = cgroupDir(p3(v1), mounts.v1, join(root, 'memory'));
    files = {
      usage: join(dir, 'memory.usage_in_bytes'),
      limit: join(dir, 'memory.limit_in_bytes'),
      stat: join(dir, 'memory.stat'),
      inactive: 'total_inactive_file',
      version: 'cgroup v1',
    };
  } else {
    const v2 = lines.map((l) => l.split(':')).find((p) => p[0] === '0' && p[1] === '');
    if (v2) {
      const dir = cgroupDir(p3(v2), mounts.v2, root);
      files = {
        usage: join(dir, 'memory.current'),
        limit: join(dir, 'memory.max'),
        stat: join(dir, 'memory.stat'),
        inactive: 'inactive_file',
        version: 'cgroup v2',
      };
    }
  }
  if (!files) return undefined;
  const f = files;
  let limit: number | undefined;
  try {
    limit = readNumber(f.limit);
  } catch {
    return undefined; // no memory controller here (a v2 path without memory.max)
  }
  if (limit === undefined || limit >= V1_UNLIMITED) return undefined;
  return () => {
    const lim = readNumber(f.limit);
    if (lim === undefined || lim >= V1_UNLIMITED) return undefined;
    const usage = readNumber(f.usage) ?? 0;
    const inactive = statValue(readFileSync(f.stat, 'utf8'), f.inactive);
    return { usedBytes: Math.max(0, usage - inactive), limitBytes: lim, source: `${f.version} working set` };
  };
}

/** The path part of a /proc/self/cgroup line split on ':' (the path itself may hold ':'). */
function p3(parts: string[]): string {
  return parts.slice(2).join(':');
}

/** RSS of this process against a fixed limit (OVERLOAD_MEMORY_LIMIT). */
export function rssMemorySource(limitBytes: number): MemorySource {
  return () => ({ usedBytes: process.memoryUsage.rss(), limitBytes, source: 'process RSS' });
}

export interface OverloadStatus {
  readonly shedding: boolean;
  readonly usedBytes: number | undefined;
  readonly limitBytes: number | undefined;
  readonly source: string | undefined;
  readonly shedAt: number;
  readonly resumeAt: number;
  /** Connections refused since start. */
  readonly shed: number;
}

export interface OverloadGuardOptions {
  /** undefined: no limit known, never sheds. */
  readonly source: MemorySource | undefined;
  /** Fraction of the limit at which shedding starts (0 < f ≤ 1; default 0.9). */
  readonly shedAt?: number;
  /** Fraction below which it stops (default shedAt - 0.05). */
  readonly resumeAt?: number;
  readonly intervalMs?: number;
}

interface OverloadEvents {
  /** Shedding started or stopped; the sample that decided it. */
  changed: (shedding: boolean, sample: MemorySample | undefined) => void;
  /** The source failed (a cgroup file went away); shedding is off until it reads again. */
  error: (err: Error) => void;
}

export const DEFAULT_SHED_FRACTION = 0.9;
const HYSTERESIS = 0.05;

export class OverloadGuard extends EventEmitter<OverloadEvents> {
  readonly #source: MemorySource | undefined;
  readonly #shedAt: number;
  readonly #resumeAt: number;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | undefined;
  #shedding = false;
  #last: MemorySample | undefined;
  #shed = 0;

  constructor(opts: OverloadGuardOptions) {
    super();
    this.#source = opts.source;
    this.#shedAt = opts.shedAt ?? DEFAULT_SHED_FRACTION;
    this.#resumeAt = opts.resumeAt ?? this.#shedAt - HYSTERESIS;
    this.#intervalMs = opts.intervalMs ?? 250;
    if (
      !(this.#shedAt > 0 && this.#shedAt <= 1) ||
      !(this.#resumeAt >= 0 && this.#resumeAt <= this.#shedAt)
    ) {
      throw new RangeError(
        `overload thresholds: shed at ${this.#shedAt} and resume at ${this.#resumeAt} must satisfy 0 ≤ resume ≤ shed ≤ 1`,
      );
    }
  }

  /** True while new connections must be refused. */
  get shedding(): boolean {
    return this.#shedding;
  }

  /** Counts one refused connection (for /config_dump; the metric is the caller's). */
  noteShed(): void {
    this.#shed++;
  }

  /** Takes a sample now and then every intervalMs (unref'd timer). */
  start(): void {
    if (this.#source === undefined || this.#timer !== undefined) return;
    this.sample();
    this.#timer = setInterval(() => this.sample(), this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One sample and decision (exported for tests; start() calls it on its timer). */
  sample(): void {
    if (this.#source === undefined) return;
    let s: MemorySample | undefined;
    try {
      s = this.#source();
    } catch (err) {
      this.#last = undefined;
      this.#set(false, undefined);
      this.emit('error', err instanceof Error ? err : new Error(String(err)));
      return;
    }
    this.#last = s;
    if (s === undefined) {
      this.#set(false, undefined);
      return;
    }
    const fraction = s.usedBytes / s.limitBytes;
    if (!this.#shedding && fraction >= this.#shedAt) this.#set(true, s);
    else if (this.#shedding && fraction < this.#resumeAt) this.#set(false, s);
  }

  status(): OverloadStatus {
    return {
      shedding: this.#shedding,
      usedBytes: this.#last?.usedBytes,
      limitBytes: this.#last?.limitBytes,
      source: this.#last?.source,
      shedAt: this.#shedAt,
      resumeAt: this.#resumeAt,
      shed: this.#shed,
    };
  }

  #set(shedding: boolean, s: MemorySample | undefined): void {
    if (shedding === this.#shedding) return;
    this.#shedding = shedding;
    this.emit('changed', shedding, s);
  }
}

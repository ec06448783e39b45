// SPDX-License-Identifier: Apache-2.0
// Child-process bookkeeping for the benchmark: every child is spawned in its own process group
// (detached) and tracked, so that on exit, on SIGINT/SIGTERM and on errors the harness kills the
// whole group (a stunnel's threads, a Node child's workers). Also reads CPU time and RSS of a
// pid from /proc, which is how the resource metrics are taken (PERFORMANCE.md B.1: "CPU was
// taken from the tunnel processes' utime+stime, and RSS from /proc").
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { MeshError } from '../src/shared/errors.ts';
import type { SpawnSpec, TrackedChild } from './types.ts';

export const REPO_ROOT = join(import.meta.dirname, '..');
export const BENCH_DIR = import.meta.dirname;
/** Node 24, pinned as the npm package "node"; the system node (v20) cannot strip types. */
export const NODE_BIN = join(REPO_ROOT, 'node_modules/.bin/node');

/** Grace between SIGTERM and SIGKILL when stopping a child. */
const KILL_GRACE_MS = 1500;
const STDERR_TAIL_LINES = 20;

export class ChildProcessError extends MeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BENCH_ERR_CHILD', message, options);
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Group already gone (ESRCH); also try the pid itself in case it left its group.
    try {
      process.kill(pid, signal);
    } catch {
      /* gone */
    }
  }
}

/** Tracks every child the bench starts; `killAllSync` is safe to call from an 'exit' handler. */
export class ProcessRegistry {
  readonly #live = new Map<number, string>();
  /** Set by killAllSync: the bench is stopping, nothing new may start. */
  #closed = false;

  get livePids(): number[] {
    return [...this.#live.keys()];
  }

  spawn(
    label: string,
    command: string,
    args: readonly string[],
    spec: SpawnSpec & { cwd?: string } = {},
  ): TrackedChild {
    if (this.#closed) throw new ChildProcessError(`${label}: not started, the bench is stopping`);
    const argv = [...(spec.prefix ?? []), command, ...args];
    const [cmd, ...rest] = argv;
    if (cmd === undefined) throw new ChildProcessError(`${label}: empty command`);
    const child = spawn(cmd, rest, {
      cwd: spec.cwd ?? REPO_ROOT,
      env: { ...process.env, ...spec.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      // Own process group: kill(-pid) reaches the child and anything it forks, and a Ctrl-C in
      // the terminal reaches only the harness, which then stops the children in order.
      detached: true,
    });
    const pid = child.pid;
    if (pid === undefined) throw new ChildProcessError(`${label}: could not spawn ${cmd}`);
    this.#live.set(pid, label);

    const stderrLines: string[] = [];
    const lineListeners: ((v: unknown) => void)[] = [];
    const textListeners: ((line: string) => void)[] = [];
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('exit', (code, signal) => {
        this.#live.delete(pid);
        resolve({ code, signal });
      });
    });
    child.on('error', (err) => {
      stderrLines.push(`spawn error: ${err.message}`);
    });
    // A child that exits while we write to its stdin must not crash the harness.
    child.stdin.on('error', () => undefined);
    createInterface({ input: child.stderr }).on('line', (line) => {
      stderrLines.push(line);
      if (stderrLines.length > STDERR_TAIL_LINES) stderrLines.shift();
    });
    const stdoutLines = createInterface({ input: child.stdout });
    const stdoutClosed = new Promise<void>((resolve) => stdoutLines.once('close', resolve));
    stdoutLines.on('line', (line) => {
      for (const l of textListeners) l(line);
      if (lineListeners.length === 0) return;
      let value: unknown;
      try {
        value = JSON.parse(line) as unknown;
      } catch {
        return; // not a protocol line (e.g. a library's log output)
      }
      for (const l of lineListeners) l(value);
    });

    const stderrTail = (): string => stderrLines.join('\n');
    let killing: Promise<void> | undefined;
    const tracked: TrackedChild = {
      pid,
      label,
      exited,
      stdoutClosed,
      stderrTail,
      onLine: (listener) => {
        lineListeners.push(listener);
      },
      onText: (listener) => {
        textListeners.push(listener);
      },
      send: (line) => {
        if (child.stdin.writable) child.stdin.write(line + '\n');
      },
      waitForLine: <T>(accept: (value: unknown) => T | undefined, timeoutMs: number) =>
        new Promise<T>((resolve, reject) => {
          let done = false;
          const timer = setTimeout(() => {
            finish();
            reject(new ChildProcessError(`${label}: no answer within ${timeoutMs} ms\n${stderrTail()}`));
          }, timeoutMs);
          const finish = (): void => {
            done = true;
            clearTimeout(timer);
          };
          lineListeners.push((v) => {
            if (done) return;
            let r: T | undefined;
            try {
              r = accept(v);
            } catch (err) {
              finish();
              reject(err instanceof Error ? err : new ChildProcessError(String(err)));
              return;
            }
            if (r !== undefined) {
              finish();
              resolve(r);
            }
          });
          void exited.then(({ code, signal }) => {
            if (done) return;
            finish();
            reject(
              new ChildProcessError(
                `${label} exited (code ${code ?? 'none'}, signal ${signal ?? 'none'}) before answering\n${stderrTail()}`,
              ),
            );
          });
        }),
      kill: () => {
        killing ??= (async () => {
          if (!this.#live.has(pid)) return;
          child.stdin.end();
          killGroup(pid, 'SIGTERM');
          const timer = setTimeout(() => killGroup(pid, 'SIGKILL'), KILL_GRACE_MS);
          await exited;
          clearTimeout(timer);
          // The leader is gone; make sure nothing it forked survives in its group.
          killGroup(pid, 'SIGKILL');
        })();
        return killing;
      },
    };
    return tracked;
  }

  spawnNode(label: string, script: string, args: readonly string[], spec: SpawnSpec = {}): TrackedChild {
    return this.spawn(label, NODE_BIN, [join(BENCH_DIR, script), ...args], spec);
  }

  /**
   * Synchronous last resort for 'exit', signals and fatal paths: SIGKILL every tracked group;
   * later spawns are refused.
   */
  killAllSync(): void {
    this.#closed = true;
    for (const pid of this.#live.keys()) killGroup(pid, 'SIGKILL');
    this.#live.clear();
  }
}

/** Clock ticks per second for /proc/<pid>/stat times (`getconf CLK_TCK`; 100 on common Linux builds). */
const CLK_TCK = ((): number => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isInteger(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

/**
 * CPU seconds (utime + stime) used so far by a process, all its threads included
 * (proc(5): fields 14 and 15 of /proc/<pid>/stat, in clock ticks).
 */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so utime (14) is fields[11] and stime (15) fields[12].
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new ChildProcessError(`cannot parse /proc/${pid}/stat`);
  }
  return (utime + stime) / CLK_TCK;
}

/** Resident set size of a process in KiB (VmRSS in /proc/<pid>/status). */
export function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!m?.[1]) throw new ChildProcessError(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

/** Number of open file descriptors of a process (entries of /proc/<pid>/fd). */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** A soft limit of this process ("Max open files", "Max processes"; children inherit it), from /proc/self/limits. */
export function softLimit(name: string): number {
  const limits = readFileSync('/proc/self/limits', 'utf8');
  const line = limits.split('\n').find((l) => l.startsWith(name));
  const v = line?.slice(name.length).trim().split(/\s+/)[0];
  if (v === undefined || v === 'unlimited') return Number.POSITIVE_INFINITY;
  const n = Number(v);
  return Number.isFinite(n) ? n : Number.POSITIVE_INFINITY;
}

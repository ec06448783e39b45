// SPDX-License-Identifier: Apache-2.0
// The test side of ztunnel-child.ts: fork a ztunnel-in-a-process, ask for its status, stop it
// gracefully or kill it, and see which processes hold listeners in a pod's netns (`ss -ltnp`).
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

import type { Pod } from '../../helpers/testbed.ts';
import type { ChildMessage, ChildRequest } from './ztunnel-child.ts';

const CHILD = join(import.meta.dirname, 'ztunnel-child.ts');

export type ChildStatus = Extract<ChildMessage, { type: 'status' }>;

export class ZtunnelProc {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Its log lines (stderr), for failure messages. */
  readonly logs: string[] = [];
  readonly exited: Promise<number | null>;
  readonly #statusWaiters: ((s: ChildStatus) => void)[] = [];

  constructor(zdsPath: string, caDir: string) {
    // No inherited execArgv: the test runner's loader hooks are not the child's business.
    this.child = fork(CHILD, [zdsPath, caDir], { execArgv: [], stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    if (this.child.pid === undefined) throw new Error('fork of the ztunnel child failed');
    this.pid = this.child.pid;
    this.child.stderr?.on('data', (d: Buffer) => this.logs.push(...d.toString().split('\n').filter(Boolean)));
    this.child.on('message', (m: ChildMessage) => {
      if (m.type === 'status') this.#statusWaiters.shift()?.(m);
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  status(): Promise<ChildStatus> {
    return new Promise((resolve) => {
      this.#statusWaiters.push(resolve);
      this.#send({ type: 'status' });
    });
  }

  /** Graceful stop: ZDS closed, listeners closed at once, connections drained up to drainMs. */
  stop(drainMs: number): Promise<number | null> {
    if (this.alive) this.#send({ type: 'stop', drainMs });
    return this.exited;
  }

  async kill(): Promise<void> {
    if (this.alive) this.child.kill('SIGKILL');
    await this.exited;
  }

  #send(m: ChildRequest): void {
    this.child.send(m);
  }
}

/** Which pids hold a TCP listener on each port inside `pod`'s netns. */
export async function listeners(pod: Pod): Promise<Map<number, number[]>> {
  const r = await pod.exec('ss', ['-Hltnp']);
  if (r.code !== 0) throw new Error(`ss failed in ${pod.name}: ${r.stderr}`);
  const out = new Map<number, number[]>();
  for (const line of r.stdout.split('\n')) {
    const port = /\S+:(\d+)\s+\S+:\*/.exec(line)?.[1];
    if (port === undefined) continue;
    const pids = [...line.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
    out.set(Number(port), [...(out.get(Number(port)) ?? []), ...pids]);
  }
  return out;
}

export const INPOD_PORTS = [15001, 15006, 15008] as const;

/** The pids listening on all three in-pod ports (a pid listening on only some is not counted). */
export async function proxyPids(pod: Pod): Promise<number[]> {
  const l = await listeners(pod);
  const sets = INPOD_PORTS.map((p) => new Set(l.get(p) ?? []));
  return [...(sets[0] ?? [])].filter((pid) => sets.every((s) => s.has(pid))).sort();
}

// SPDX-License-Identifier: Apache-2.0
// Helpers for the bench's smoke tests: run `node bench/main.ts` as a child in its own process
// group (SIGTERM, then SIGKILL, to the group on timeout), read its JSON lines, and find the B.1
// tool servers (nginx, sockperf server) a run started, so a test can check that none is left.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findB1Tools, missingTools, toolMissingMessage } from '../../bench/tools.ts';

const REPO = join(import.meta.dirname, '../..');
const NODE = join(REPO, 'node_modules/.bin/node');
const KILL_GRACE_MS = 5_000;

/**
 * Throws, naming each missing tool and its Debian package, unless wrk, nginx and sockperf are all
 * installed: a B.1 bench test without them would measure nothing, and must fail, not skip.
 */
export function requireB1Tools(): void {
  const absent = missingTools(findB1Tools(), { http: true, latency: true });
  if (absent.length > 0) {
    throw new Error(
      `B.1 tools missing (${absent.map(toolMissingMessage).join('; ')}); run scripts/bootstrap.sh as root`,
    );
  }
}

export interface BenchOutcome {
  /** The bench's pid (its test beds' namespaces are named after it: bench/paths/pods.ts). */
  readonly pid: number;
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function runBench(
  args: readonly string[],
  timeoutMs: number,
  env: Readonly<Record<string, string>> = {},
): Promise<BenchOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, ['bench/main.ts', ...args], {
      cwd: REPO,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const kill = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        /* already gone */
      }
    };
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      kill('SIGTERM');
      killTimer = setTimeout(() => kill('SIGKILL'), KILL_GRACE_MS);
      reject(new Error(`bench did not finish within ${timeoutMs} ms; stderr:\n${stderr.slice(-2000)}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      resolve({ pid: child.pid ?? 0, code, stdout, stderr });
    });
  });
}

export interface JsonRecord {
  readonly metric: string;
  readonly path: string;
  readonly value: number;
  readonly unit: string;
  readonly ratio_to_direct: number | null;
}

export function readRecords(file: string): JsonRecord[] {
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((line) => JSON.parse(line) as JsonRecord);
}

/**
 * The B.1 tool servers a run started, from its progress log (`B.1 tool servers on 127.0.0.1:
 * nginx-host=123 sockperf-server-host=124 ...`, `... in pod plain-server: nginx-plain-server=…`).
 */
export function toolServerPids(stderr: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of stderr.split('\n')) {
    if (!line.includes('B.1 tool servers')) continue;
    for (const m of line.matchAll(/\b((?:nginx|sockperf-server)-[\w-]+)=(\d+)/g))
      out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/**
 * Whether `pid` is still a live `comm` process (not gone, not a zombie waiting for its parent,
 * not a reused pid of another program).
 */
export function aliveAs(pid: number, comm: string): boolean {
  try {
    if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== comm) return false;
    return /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] !== 'Z';
  } catch {
    return false;
  }
}

/** The tool servers of `toolServerPids` still running (`label=pid`). */
export function leftoverToolServers(stderr: string): string[] {
  return [...toolServerPids(stderr)]
    .filter(([label, pid]) => aliveAs(pid, label.startsWith('nginx') ? 'nginx' : 'sockperf'))
    .map(([label, pid]) => `${label}=${pid}`);
}

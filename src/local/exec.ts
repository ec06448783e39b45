// SPDX-License-Identifier: Apache-2.0
// Process helpers for the network-namespace test bed (DESIGN.md §4): run a command (optionally
// inside a named netns via `ip netns exec`), bounded by a timeout, collecting its output.
//
// `ip netns exec` (not nsenter) is used for the test bed's own named namespaces because it also
// gives the process a /sys of that netns, which the CNI reference plugins read.
import { spawn } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { spawnCollect, type CommandResult } from '../../cni-plugin/src/redirect/exec.ts';

/** The result spawnCollect gives (one type for every command the project runs). */
export type ExecResult = CommandResult;

export interface ExecOptions {
  /** Written to stdin, then closed. */
  input?: string;
  /** Extra environment variables (the parent environment is inherited). */
  env?: Record<string, string>;
  /** Default 20 s: every command in the test bed is bounded. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 20_000;

/** argv prefix that runs a command inside the named netns (or nothing for the current one). */
export function netnsArgv(
  netnsName: string | undefined,
  cmd: string,
  args: readonly string[],
): [string, string[]] {
  return netnsName === undefined ? [cmd, [...args]] : ['ip', ['netns', 'exec', netnsName, cmd, ...args]];
}

/** Run a command to completion. Never rejects on a non-zero exit; check `code`. */
export function run(
  netnsName: string | undefined,
  cmd: string,
  args: readonly string[],
  opts: ExecOptions = {},
): Promise<ExecResult> {
  const [file, argv] = netnsArgv(netnsName, cmd, args);
  return spawnCollect(file, argv, {
    env: { ...process.env, ...(opts.env ?? {}) },
    ...(opts.input !== undefined && { input: opts.input }),
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  });
}

/** Run a command and throw (with its stderr) unless it exits 0; returns stdout. */
export async function runOk(
  netnsName: string | undefined,
  cmd: string,
  args: readonly string[],
  opts: ExecOptions = {},
): Promise<string> {
  const r = await run(netnsName, cmd, args, opts);
  if (r.code !== 0) {
    const how = r.timedOut
      ? 'timed out'
      : `exited with ${r.code === null ? String(r.signal) : String(r.code)}`;
    throw new Error(`\`${r.command}\` ${how}: ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout;
}

/** Start a long-running process (inside the named netns); the caller owns it. */
export function spawnIn(
  netnsName: string | undefined,
  cmd: string,
  args: readonly string[],
  opts: SpawnOptions = {},
): ChildProcess {
  const [file, argv] = netnsArgv(netnsName, cmd, args);
  // `ip netns exec` execs the command in place, so the child's pid is the process itself.
  return spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

export { isAlive } from '../shared/process.ts';

/** SIGKILL a child we started and wait (bounded) until it has exited. */
export async function killAndWait(child: ChildProcess, timeoutMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGKILL');
  });
}

// SPDX-License-Identifier: Apache-2.0
// Running the rule tools (iptables-*-restore/-save, nft, ip) inside a pod network namespace
// (spec ambient-protocols.md §2.1 step 3.1: "enter the pod netns and install the in-pod rules").
//
// We enter the netns with `nsenter --net=<path>` (util-linux) rather than `ip netns exec`: the
// node agent holds netns paths such as /proc/<pid>/ns/net, not names under /run/netns. Only the
// network namespace is entered; these tools need nothing else from the pod.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { RedirectError } from './errors.ts';

/** Result of one command. */
export interface CommandResult {
  /** The command line as run, for error messages. */
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunOptions {
  /** Network namespace to run in (a path such as /run/netns/x or /proc/123/ns/net). */
  netnsPath?: string;
  /** Written to the command's stdin (then closed). */
  input?: string;
  /** Kill the command after this long; default 30 s. A wedged xtables lock must not hang ADD. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;
// Tools live in sbin on most distributions, which is not always on a service's PATH.
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const found = new Map<string, string | undefined>();

/** Absolute path of an executable, or undefined. Results are cached per process. */
export function findBinary(name: string): string | undefined {
  if (found.has(name)) return found.get(name);
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== ''), ...EXTRA_DIRS];
  let hit: string | undefined;
  for (const dir of dirs) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      hit = p;
      break;
    } catch {
      // not in this directory
    }
  }
  found.set(name, hit);
  return hit;
}

/** Like {@link findBinary} but throws CNI_ERR_BACKEND_UNAVAILABLE with an install hint. */
export function requireBinary(name: string, hint: string): string {
  const p = findBinary(name);
  if (p === undefined) {
    throw new RedirectError(
      'CNI_ERR_BACKEND_UNAVAILABLE',
      `required program "${name}" was not found on PATH or in sbin; ${hint}`,
    );
  }
  return p;
}

function quote(arg: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * Run `cmd args` (inside `netnsPath` when given) and collect its output. Never rejects for a
 * non-zero exit: callers decide; rejects only if the process cannot be started at all.
 */
export function runCommand(
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<CommandResult> {
  let file = cmd;
  let argv = [...args];
  if (opts.netnsPath !== undefined) {
    file = requireBinary('nsenter', 'install util-linux');
    argv = [`--net=${opts.netnsPath}`, '--', cmd, ...args];
  }
  return spawnCollect(file, argv, {
    env: { ...process.env, LC_ALL: 'C' },
    ...(opts.input !== undefined && { input: opts.input }),
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  });
}

/**
 * Spawns `file argv`, writes `input` to its stdin, collects stdout and stderr, and kills it with
 * SIGKILL after `timeoutMs`. Never rejects for a non-zero exit (callers decide); rejects only if
 * the process cannot be started at all.
 */
export function spawnCollect(
  file: string,
  argv: readonly string[],
  opts: { env: NodeJS.ProcessEnv; input?: string; timeoutMs: number },
): Promise<CommandResult> {
  const command = [file, ...argv].map(quote).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    // EPIPE when the tool exits before reading stdin: its exit status tells the story.
    child.stdin.on('error', () => undefined);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        command,
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** One-line description of how a command ended, for operator-facing messages. */
export function describeExit(r: CommandResult): string {
  if (r.timedOut) return 'timed out and was killed';
  if (r.signal !== null) return `was killed by ${r.signal}`;
  return `exited with status ${String(r.code)}`;
}

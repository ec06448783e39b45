// SPDX-License-Identifier: Apache-2.0
// Running the rule tools (iptables-*-restore/-save, nft, ip) inside a pod network namespace
// (spec ambient-protocols.md §2.1 step 3.1: "enter the pod netns and install the in-pod rules").
//
// We enter the netns with `nsenter --net=<path>` (util-linux) rather than `ip netns exec`: the
// node agent holds netns paths such as /proc/<pid>/ns/net, not names under /run/netns. Only the
// network namespace is entered; these tools need nothing else from the pod.
//
// A CommandSession enters the netns once: one `nsenter … sh -s` per session, to which batches of
// commands are written on stdin as they are needed (read everything, then write what differs).
// Each command's exit status, stdout and stderr come back separated by markers carrying a random
// nonce; a command's input is passed as a quoted here-document, so nothing is ever expanded by
// the shell. Starting a process costs a node agent several milliseconds (more on a loaded node);
// an enrolment used to start about ten, one after the other (bench/README.md, enrolment group).
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { delimiter, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
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

/** One command of a {@link CommandSession} batch. */
export interface BatchCommand {
  /** Absolute path of the program. */
  readonly cmd: string;
  readonly args: readonly string[];
  /** Written to the command's stdin (a here-document); without it stdin is /dev/null. */
  readonly input?: string;
  /**
   * A file listing what the command would print (iptables-legacy-save prints the tables named
   * in /proc/net/ip_tables_names, nothing else): when it can be read and is empty, the command
   * is not run and reports empty output and status 0, saving a process.
   */
  readonly skipWhenEmpty?: string;
}

export interface SessionOptions {
  /** Network namespace to run in (a path such as /run/netns/x or /proc/123/ns/net). */
  netnsPath?: string;
  /** Per-command timeout (default 30 s): a batch may take this long per command in it. */
  timeoutMs?: number;
  /** Output (both streams) one batch may print before the session is killed (default MAX_BATCH_OUTPUT). */
  maxOutputBytes?: number;
}

interface Pending {
  readonly tag: string;
  readonly commands: readonly BatchCommand[];
  readonly resolve: (results: (CommandResult | undefined)[]) => void;
  readonly timer: NodeJS.Timeout;
}

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
);

/**
 * A shell inside a network namespace that runs batches of commands: one process for any number
 * of commands. Batches run one after another. A batch that outlives its deadline kills the
 * session's whole process group (the shell and the command it is running); the commands it did
 * not finish are reported as timed out, and the session is dead from then on. Never rejects for
 * a command's failure (callers decide); {@link open} throws only if the shell cannot be started.
 */
export class CommandSession {
  readonly #child: ChildProcessByStdio<Writable, Readable, Readable>;
  readonly #prefix: string;
  readonly #nonce = randomBytes(12).toString('hex');
  readonly #timeoutMs: number;
  readonly #maxOutput: number;
  readonly #out = new MarkedStream();
  readonly #err = new MarkedStream();
  #batches = 0;
  #closed = false;
  #overflow = false;
  #pending: Pending | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  #spawnError: Error | undefined;
  #timedOut = false;
  readonly #exited: Promise<void>;

  private constructor(opts: SessionOptions) {
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#maxOutput = opts.maxOutputBytes ?? MAX_BATCH_OUTPUT;
    const sh = requireBinary('sh', 'install a POSIX shell (dash or bash)');
    let file = sh;
    let argv = ['-s'];
    this.#prefix = '';
    if (opts.netnsPath !== undefined) {
      file = requireBinary('nsenter', 'install util-linux');
      argv = [`--net=${opts.netnsPath}`, '--', sh, '-s'];
      this.#prefix = `${quote(file)} ${quote(`--net=${opts.netnsPath}`)} -- `;
    }
    // A process group of its own, so a timeout kills the command the shell is running too.
    this.#child = spawn(file, argv, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
      detached: true,
    });
    this.#child.stdout.setEncoding('utf8');
    this.#child.stderr.setEncoding('utf8');
    this.#child.stdout.on('data', (d: string) => {
      this.#out.push(d);
      this.#check();
    });
    this.#child.stderr.on('data', (d: string) => {
      this.#err.push(d);
      this.#check();
    });
    // EPIPE when the shell is gone: its exit tells the story.
    this.#child.stdin.on('error', () => undefined);
    this.#exited = new Promise((resolve) => {
      this.#child.on('error', (e) => {
        this.#spawnError ??= e;
        this.#exit ??= { code: null, signal: null };
        this.#finishDead();
        resolve();
      });
      this.#child.on('close', (code, signal) => {
        this.#exit = { code, signal };
        this.#finishDead();
        resolve();
      });
    });
  }

  /**
   * True once the shell is gone or was killed (timeout, output cap, exit): it runs nothing more,
   * and a caller that still has work opens a new session.
   */
  get dead(): boolean {
    return this.#exit !== undefined || this.#timedOut || this.#overflow || this.#spawnError !== undefined;
  }

  /** Starts the shell (inside `netnsPath` when given). */
  static open(opts: SessionOptions = {}): CommandSession {
    return new CommandSession(opts);
  }

  /**
   * Runs `commands` in order. With `stopOnFailure`, the first command that fails ends the batch:
   * the commands after it are not run and their entries are undefined. Rejects only if the shell
   * could not be started.
   */
  run(
    commands: readonly BatchCommand[],
    opts: { stopOnFailure?: boolean } = {},
  ): Promise<(CommandResult | undefined)[]> {
    if (this.#closed) return Promise.reject(new Error('the command session is closed'));
    const next = this.#queue.then(() => this.#runNow(commands, opts.stopOnFailure ?? false));
    this.#queue = next.catch(() => undefined);
    return next;
  }

  /** Ends the shell's input and waits for it to exit. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#queue;
    this.#child.stdin.end();
    await this.#exited;
  }

  async #runNow(
    commands: readonly BatchCommand[],
    stopOnFailure: boolean,
  ): Promise<(CommandResult | undefined)[]> {
    if (commands.length === 0) return [];
    // Give the spawn a chance to fail (ENOENT) before reporting every command as killed.
    if (this.#batches === 0) await new Promise((resolve) => setImmediate(resolve));
    if (this.#spawnError !== undefined) throw this.#spawnError;
    if (this.dead && this.#exit === undefined) {
      // Killed (timeout, output cap) but not yet reaped: wait, so the batch ends as dead.
      await this.#exited;
    }
    const tag = `@@${this.#nonce} ${++this.#batches}`;
    const delim = `AMBIENT_EOF_${this.#nonce}`;
    const lines: string[] = ['__ok=1'];
    commands.forEach((c, i) => {
      const cmdline = [c.cmd, ...c.args].map(quote).join(' ');
      lines.push('if [ "$__ok" = 1 ]; then');
      if (c.skipWhenEmpty !== undefined) {
        // `read` is a shell builtin: no process. It fails on an empty file, leaving __l empty.
        const f = quote(c.skipWhenEmpty);
        lines.push(
          `if [ -r ${f} ] && ! { IFS= read -r __l || [ -n "$__l" ]; } 2>/dev/null <${f}; then`,
          '  :',
          'else',
        );
      }
      if (c.input === undefined) {
        lines.push(`${cmdline} </dev/null`);
      } else {
        const body = c.input.endsWith('\n') || c.input === '' ? c.input : `${c.input}\n`;
        if (body.split('\n').includes(delim))
          throw new Error('command input contains the here-document delimiter');
        lines.push(`${cmdline} <<'${delim}'`, `${body}${delim}`);
      }
      if (c.skipWhenEmpty !== undefined) lines.push('fi');
      const mark = `printf '\\n%s %d %d\\n' '${tag}' ${i} "$__rc"`;
      lines.push('__rc=$?', mark, `${mark} >&2`);
      if (stopOnFailure) lines.push('[ "$__rc" -eq 0 ] || __ok=0');
      lines.push('fi');
    });
    const end = `printf '\\n%s end\\n' '${tag}'`;
    lines.push(end, `${end} >&2`, '');
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#kill('timeout'), this.#timeoutMs * commands.length);
      this.#pending = { tag, commands, resolve, timer };
      this.#out.expect(`\n${tag} end\n`);
      this.#err.expect(`\n${tag} end\n`);
      if (this.#exit !== undefined) this.#finishDead();
      else this.#child.stdin.write(lines.join('\n'));
    });
  }

  #kill(why: 'timeout' | 'overflow'): void {
    if (why === 'timeout') this.#timedOut = true;
    else this.#overflow = true;
    const pid = this.#child.pid;
    try {
      if (pid !== undefined) process.kill(-pid, 'SIGKILL');
    } catch {
      this.#child.kill('SIGKILL');
    }
  }

  /** Resolves the pending batch once both streams carry its end marker. */
  #check(): void {
    const p = this.#pending;
    if (p === undefined) return;
    if (!this.#overflow && this.#out.length + this.#err.length > this.#maxOutput) {
      // A netns whose listings are this large is hostile or broken; the batch fails (closed).
      this.#kill('overflow');
      return;
    }
    if (!this.#out.found || !this.#err.found) return;
    this.#settle(p, this.#out.take(), this.#err.take(), false);
  }

  /** The shell is gone: the pending batch ends with what it printed. */
  #finishDead(): void {
    const p = this.#pending;
    if (p === undefined) return;
    this.#settle(p, this.#out.drain(), this.#err.drain(), true);
  }

  #settle(p: Pending, out: string, err: string, dead: boolean): void {
    clearTimeout(p.timer);
    this.#pending = undefined;
    const outs = splitMarked(out, p.tag);
    const errs = splitMarked(err, p.tag);
    const results: (CommandResult | undefined)[] = [];
    let ran = true;
    p.commands.forEach((c, i) => {
      const command = this.#prefix + [c.cmd, ...c.args].map(quote).join(' ');
      const o = outs.done.get(i);
      const e = errs.done.get(i);
      if (o !== undefined && e !== undefined) {
        // sh reports a command killed by signal N as status 128 + N.
        const signal = o.code > 128 ? (SIGNAL_NAMES.get(o.code - 128) ?? null) : null;
        results.push({
          command,
          code: signal === null ? o.code : null,
          signal,
          stdout: o.text,
          stderr: e.text,
          timedOut: false,
        });
      } else if (dead && ran) {
        // The command running when the shell died (our timeout, a kill from outside), or the
        // first one, when nsenter could not enter the netns: how the process ended, and its
        // stderr, say which. Never a success: a shell that ended with status 0 ran nothing.
        ran = false;
        const signal = this.#exit?.signal ?? null;
        const code = this.#exit?.code ?? null;
        results.push({
          command,
          code: signal === null && code !== 0 ? code : null,
          signal,
          stdout: outs.rest,
          stderr:
            errs.rest +
            (this.#overflow
              ? `\n(the command session printed more than ${this.#maxOutput} bytes in one batch and was killed)`
              : ''),
          timedOut: this.#timedOut,
        });
      } else {
        ran = false;
        results.push(undefined);
      }
    });
    p.resolve(results);
  }
}

/** Bytes of output (both streams) one batch may print before the session is killed. */
export const MAX_BATCH_OUTPUT = 64 * 1024 * 1024;

/**
 * One stream of a session: chunks kept as they come and searched for the batch's end marker in
 * the new text only (plus the marker's length of what came before), so a batch costs time linear
 * in its output however it is chunked.
 */
class MarkedStream {
  #parts: string[] = [];
  #length = 0;
  #tail = '';
  #mark = '';
  #found = false;

  get length(): number {
    return this.#length;
  }

  get found(): boolean {
    return this.#found;
  }

  /** The end marker of the batch now running. */
  expect(mark: string): void {
    this.#mark = mark;
    this.#found = false;
    this.#tail = '';
  }

  push(d: string): void {
    this.#parts.push(d);
    this.#length += d.length;
    if (this.#found || this.#mark === '') return;
    const window = this.#tail + d;
    if (window.includes(this.#mark)) this.#found = true;
    else this.#tail = window.slice(-(this.#mark.length - 1));
  }

  /** The batch's text before its end marker; what follows it is kept. */
  take(): string {
    const all = this.#parts.join('');
    const at = all.indexOf(this.#mark);
    const rest = all.slice(at + this.#mark.length);
    this.#parts = rest === '' ? [] : [rest];
    this.#length = rest.length;
    this.#mark = '';
    this.#found = false;
    this.#tail = '';
    return all.slice(0, at);
  }

  /** Everything (the shell is gone). */
  drain(): string {
    const all = this.#parts.join('');
    this.#parts = [];
    this.#length = 0;
    this.#mark = '';
    this.#found = false;
    this.#tail = '';
    return all;
  }
}

/** Splits a stream's text of one batch at its per-command markers. */
function splitMarked(
  text: string,
  tag: string,
): { done: Map<number, { text: string; code: number }>; rest: string } {
  const done = new Map<number, { text: string; code: number }>();
  const marker = `\n${tag} `;
  let from = 0;
  for (;;) {
    const at = text.indexOf(marker, from);
    if (at === -1) break;
    const eol = text.indexOf('\n', at + marker.length);
    if (eol === -1) break;
    const [index = '', code = ''] = text.slice(at + marker.length, eol).split(' ');
    done.set(Number(index), { text: text.slice(from, at), code: Number(code) });
    from = eol + 1;
  }
  return { done, rest: text.slice(from) };
}

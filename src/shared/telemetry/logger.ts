// SPDX-License-Identifier: Apache-2.0
// The structured logger of every component: one JSON object per line, `{"level":"info","time":"<ISO>",
// ...bindings, ...fields, "message":"..."}`, the shape pino produced with our options, without
// pino's ~9 MB of resident memory (worker-thread transports, redaction, serializer packages).
//
// JSON.stringify does all escaping, so no value can start a second line or inject a field. A
// child's level follows its parent's until set on the child itself, so the admin endpoint's
// level change on the root logger reaches every child. Lines go to process.stdout (synchronous
// for files, TTYs and, on Linux, pipes) or to a given Writable; if that destination stops
// draining, lines are dropped (and counted) beyond a buffer cap instead of growing without bound.
import type { Writable } from 'node:stream';

export const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;
export type LevelName = keyof typeof LEVELS;
/** `silent` turns logging off. */
export type LoggerLevel = LevelName | 'silent';

export type LogFields = Readonly<Record<string, unknown>>;

type LogMethod = {
  (message: string): void;
  (fields: LogFields, message?: string): void;
};

export interface LoggerOptions {
  /** trace, debug, info (default), warn, error, fatal or silent. */
  level?: string;
  /** Where lines go (default process.stdout). */
  destination?: Writable;
  /** Bytes the destination may hold unwritten before lines are dropped (default 8 MiB). */
  maxBufferedBytes?: number;
}

const DEFAULT_MAX_BUFFERED = 8 * 1024 * 1024;

function parseLevel(level: string): LoggerLevel {
  if (level === 'silent' || Object.hasOwn(LEVELS, level)) return level as LoggerLevel;
  throw new Error(
    `unknown log level ${JSON.stringify(level)} (expected one of ${Object.keys(LEVELS).join(', ')}, silent)`,
  );
}

function threshold(level: LoggerLevel): number {
  return level === 'silent' ? Infinity : LEVELS[level];
}

/** State shared by a root logger and all its children. */
class Sink {
  dropped = 0;
  readonly #out: Writable;
  readonly #max: number;
  #broken = false;
  #watching = false;

  constructor(out: Writable, max: number) {
    this.#out = out;
    this.#max = max;
  }

  write(line: string): void {
    if (this.#broken) return;
    if (!this.#watching) {
      // A destination that fails (EPIPE when the log reader went away) must not take the proxy
      // down with an unhandled 'error' event: logging stops, traffic does not. Attached on the
      // first line, so a logger that never writes (level silent) leaves the stream alone.
      this.#watching = true;
      this.#out.on('error', () => {
        this.#broken = true;
      });
    }
    if (this.#out.writableLength > this.#max) {
      this.dropped++;
      return;
    }
    if (this.dropped > 0) {
      const n = this.dropped;
      this.dropped = 0;
      const note = { level: 'warn', time: new Date().toISOString(), scope: 'log', dropped: n };
      this.#out.write(
        `${JSON.stringify({ ...note, message: 'log destination was not draining; lines dropped' })}\n`,
      );
    }
    this.#out.write(line);
  }
}

/** Keys every line starts with; fields cannot replace them. */
const RESERVED = new Set(['level', 'time']);

export class Logger {
  readonly #sink: Sink;
  readonly #parent: Logger | undefined;
  readonly #bindings: LogFields;
  #level: LoggerLevel | undefined;

  /** A root logger. (`child` is the other way to get one; `from` is its internal route.) */
  constructor(opts: LoggerOptions = {}, from?: { parent: Logger; bindings: LogFields }) {
    if (from === undefined) {
      this.#sink = new Sink(
        opts.destination ?? process.stdout,
        opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED,
      );
      this.#parent = undefined;
      this.#bindings = {};
      this.#level = parseLevel(opts.level ?? 'info');
    } else {
      this.#sink = from.parent.#sink;
      this.#parent = from.parent;
      this.#bindings = { ...from.parent.#bindings, ...from.bindings };
      this.#level = undefined;
    }
  }

  /** The effective level: this logger's own, or its parent's if never set on this one. */
  get level(): LoggerLevel {
    return this.#level ?? this.#parent?.level ?? 'info';
  }

  /** Throws on an unknown level name. */
  set level(level: string) {
    this.#level = parseLevel(level);
  }

  isLevelEnabled(level: LevelName): boolean {
    return LEVELS[level] >= threshold(this.level);
  }

  /** A logger whose lines carry `bindings` after level and time; it shares the destination. */
  child(bindings: LogFields): Logger {
    return new Logger({}, { parent: this, bindings });
  }

  readonly trace: LogMethod = (a: LogFields | string, b?: string) => this.#log('trace', a, b);
  readonly debug: LogMethod = (a: LogFields | string, b?: string) => this.#log('debug', a, b);
  readonly info: LogMethod = (a: LogFields | string, b?: string) => this.#log('info', a, b);
  readonly warn: LogMethod = (a: LogFields | string, b?: string) => this.#log('warn', a, b);
  readonly error: LogMethod = (a: LogFields | string, b?: string) => this.#log('error', a, b);
  readonly fatal: LogMethod = (a: LogFields | string, b?: string) => this.#log('fatal', a, b);

  #log(level: LevelName, a: LogFields | string, b: string | undefined): void {
    if (LEVELS[level] < threshold(this.level)) return;
    const [fields, message] = typeof a === 'string' ? [undefined, a] : [a, b];
    const entry: Record<string, unknown> = { level, time: new Date().toISOString() };
    copyFields(entry, this.#bindings);
    if (fields !== undefined) copyFields(entry, fields);
    if (message !== undefined) {
      delete entry.message; // the call's message wins and stays last
      entry.message = message;
    }
    this.#sink.write(`${stringify(entry)}\n`);
  }
}

function copyFields(into: Record<string, unknown>, from: LogFields): void {
  for (const k of Object.keys(from)) if (!RESERVED.has(k)) into[k] = from[k];
}

/** Errors as {type, message, stack, code?} (JSON.stringify would give {}), bigints as strings. */
function replace(_key: string, v: unknown): unknown {
  if (v instanceof Error) {
    const code = (v as { code?: unknown }).code;
    return { type: v.name, message: v.message, stack: v.stack, ...(code !== undefined && { code }) };
  }
  return typeof v === 'bigint' ? v.toString() : v;
}

/** Never throws: a value JSON cannot hold (a cycle, a throwing toJSON) degrades, not the call. */
function stringify(entry: Record<string, unknown>): string {
  try {
    return JSON.stringify(entry, replace);
  } catch {
    const seen = new WeakSet<object>();
    try {
      return JSON.stringify(entry, (k, v: unknown) => {
        const r = replace(k, v);
        if (typeof r === 'object' && r !== null) {
          if (seen.has(r)) return '[Circular]';
          seen.add(r);
        }
        return r;
      });
    } catch (err) {
      return JSON.stringify({
        level: entry.level,
        time: entry.time,
        message: entry.message,
        logError: `unserializable log fields: ${String(err)}`,
      });
    }
  }
}

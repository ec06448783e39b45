// SPDX-License-Identifier: Apache-2.0
// Helpers for the bench's child processes (backend, load generator, proxies): a JSON-lines
// protocol on stdout, commands on stdin, and exit when the parent goes away (stdin closes), so
// a harness killed with SIGKILL still leaves no Node children behind.
import type { Endpoint } from './types.ts';

/** Writes one protocol line. stdout to a pipe is synchronous on Linux, so exit right after is safe. */
export function emit(value: unknown): void {
  process.stdout.write(JSON.stringify(value) + '\n');
}

/**
 * Exits when the parent closes our stdin (parent exited or killed us) and calls `onCommand` for
 * each line the parent sends.
 */
export function attachToParent(onCommand: (line: string) => void = () => undefined): void {
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) onCommand(line);
    }
  });
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

/** Reports a fatal error as a protocol line and on stderr, then exits non-zero. */
export function fail(err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  emit({ event: 'error', message });
  process.stderr.write((err instanceof Error ? (err.stack ?? message) : message) + '\n');
  process.exit(1);
}

/** Parses `host:port` (IPv6 in brackets) from a command-line argument. */
export function parseEndpoint(s: string): Endpoint {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s);
  if (!m?.[1] || !m[2]) throw new Error(`bad endpoint ${JSON.stringify(s)} (expected host:port)`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new Error(`bad port in ${s}`);
  return { host: m[1], port };
}

export function formatEndpoint(e: Endpoint): string {
  return e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
}

/**
 * Minimal JSON config reading for the tunnel children. Not zod: a tunnel process's RSS is a
 * measured result, and loading zod costs a Node process ~18 MB RSS (measured here: 61 → 79 MB).
 */
export type JsonObject = Readonly<Record<string, unknown>>;

export function asObject(v: unknown, what: string): JsonObject {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${what}: expected an object`);
  return v as JsonObject;
}

export function str(o: JsonObject, key: string): string {
  const v = o[key];
  if (typeof v !== 'string') throw new Error(`config: "${key}" must be a string`);
  return v;
}

export function int(o: JsonObject, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new Error(`config: "${key}" must be an integer`);
  return v;
}

export function strList(o: JsonObject, key: string): string[] {
  const v = o[key];
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string')) {
    throw new Error(`config: "${key}" must be a non-empty list of strings`);
  }
  return v;
}

// SPDX-License-Identifier: Apache-2.0
// Which ztunnel the `ztunnel` bench path runs: by default what ships, the tsc-emitted
// dist/ztunnel/src/main.js (rebuilt with `tsc -b ztunnel` first when dist is missing or older
// than the sources of ztunnel/ and src/shared/); MESH_BENCH_ZTUNNEL=ts runs the .ts source
// through Node's type stripping instead (costs RSS, see bench/README.md).
import { execFile } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from './procs.ts';

const run = promisify(execFile);

export const ZTUNNEL_ENTRY_ENV = 'MESH_BENCH_ZTUNNEL';
export type ZtunnelEntryKind = 'js' | 'ts';

/** The source trees compiled into dist/ that the ztunnel process loads. */
const SOURCE_DIRS = ['ztunnel/src', 'src/shared'] as const;
const TSC = join(REPO_ROOT, 'node_modules/.bin/tsc');
const BUILD_TIMEOUT_MS = 180_000;

export function entryKind(env: Readonly<Record<string, string | undefined>>): ZtunnelEntryKind {
  const v = env[ZTUNNEL_ENTRY_ENV];
  if (v === undefined || v === '' || v === 'js') return 'js';
  if (v === 'ts') return 'ts';
  throw new Error(`${ZTUNNEL_ENTRY_ENV}=${v}: expected js (dist, the default) or ts (source)`);
}

/** Repo-relative path of the emitted JS for a repo-relative .ts source (tsconfig outDirs). */
export function distPathFor(source: string): string {
  return join('dist', source.replace(/\.ts$/, '.js'));
}

export interface SourceOutput {
  readonly source: string;
  readonly sourceMtimeMs: number;
  /** undefined: the output does not exist. */
  readonly outputMtimeMs: number | undefined;
}

/** Sources whose emitted JS is missing or older than the source. */
export function staleSources(files: readonly SourceOutput[]): string[] {
  return files
    .filter((f) => f.outputMtimeMs === undefined || f.outputMtimeMs < f.sourceMtimeMs)
    .map((f) => f.source);
}

function listTs(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...listTs(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

function mtime(p: string): number | undefined {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return undefined;
  }
}

/** Every TypeScript source under `dirs` (relative to the repository) with its dist output's age. */
export function scanSources(dirs: readonly string[]): SourceOutput[] {
  return dirs.flatMap((d) =>
    listTs(join(REPO_ROOT, d)).map((abs) => {
      const source = relative(REPO_ROOT, abs);
      return {
        source,
        sourceMtimeMs: statSync(abs).mtimeMs,
        outputMtimeMs: mtime(join(REPO_ROOT, distPathFor(source))),
      };
    }),
  );
}

export interface ZtunnelEntry {
  readonly kind: ZtunnelEntryKind;
  /** Absolute path of the script node runs. */
  readonly script: string;
  /** What was done to get it, for the report. */
  readonly note: string;
}

/**
 * The ztunnel entry script to run. For `js`, rebuilds dist with `tsc -b ztunnel` (which also
 * builds its reference src/shared) when any output is missing or older than its source. tsc
 * still emits when it reports type errors (another engineer's work in progress); that is
 * accepted with a note, a missing output is not.
 */
export async function ztunnelEntry(log: (msg: string) => void): Promise<ZtunnelEntry> {
  const kind = entryKind(process.env);
  if (kind === 'ts') {
    return {
      kind,
      script: join(REPO_ROOT, 'ztunnel/src/main.ts'),
      note: `ztunnel run from source (ztunnel/src/main.ts, type stripping; ${ZTUNNEL_ENTRY_ENV}=ts)`,
    };
  }
  const script = join(REPO_ROOT, distPathFor('ztunnel/src/main.ts'));
  const stale = staleSources(scanSources(SOURCE_DIRS));
  if (stale.length === 0) {
    return { kind, script, note: 'ztunnel run from dist/ztunnel/src/main.js (tsc output, up to date)' };
  }
  log(
    `dist is missing or older than ${stale.length} source(s) (${stale.slice(0, 3).join(', ')}` +
      `${stale.length > 3 ? ', …' : ''}): running tsc -b ztunnel`,
  );
  let tscProblem = '';
  try {
    await run(TSC, ['-b', 'ztunnel'], { cwd: REPO_ROOT, timeout: BUILD_TIMEOUT_MS });
  } catch (err) {
    const e = err as { stdout?: string; message?: string };
    tscProblem = (e.stdout ?? e.message ?? String(err)).trim().split('\n').slice(0, 3).join(' | ');
  }
  const missing = scanSources(SOURCE_DIRS).filter((f) => f.outputMtimeMs === undefined);
  if (missing.length > 0) {
    throw new Error(
      `tsc -b ztunnel did not emit ${missing.map((f) => distPathFor(f.source)).join(', ')}` +
        (tscProblem ? `: ${tscProblem}` : ''),
    );
  }
  return {
    kind,
    script,
    note:
      `ztunnel run from dist/ztunnel/src/main.js (dist was older than ${stale.length} source(s): ` +
      'brought up to date by the bench with tsc -b ztunnel' +
      (tscProblem ? `; tsc reported errors but emitted: ${tscProblem})` : ')'),
  };
}

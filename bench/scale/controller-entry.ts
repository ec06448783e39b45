// SPDX-License-Identifier: Apache-2.0
// Which controller the scale benchmark runs: by default what ships, the tsc-emitted
// dist/src/controller/main.js (rebuilt with `tsc -b src/controller` first when any output is
// missing or older than its source in src/controller/ or src/shared/), because Node's type
// stripping costs resident memory and the controller's RSS is a measured figure;
// MESH_BENCH_CONTROLLER=ts runs src/controller/main.ts from source instead. The same policy as
// the ztunnel path's (bench/ztunnel-build.ts), whose pure helpers it reuses.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../procs.ts';
import { distPathFor, scanSources, staleSources } from '../ztunnel-build.ts';

const run = promisify(execFile);

export const CONTROLLER_ENTRY_ENV = 'MESH_BENCH_CONTROLLER';
const ENTRY_SOURCE = 'src/controller/main.ts';
/** The source trees compiled into dist/ that the controller process loads. */
const SOURCE_DIRS = ['src/controller', 'src/shared'] as const;
const TSC = join(REPO_ROOT, 'node_modules/.bin/tsc');
const BUILD_TIMEOUT_MS = 180_000;

export interface ControllerEntry {
  /** Absolute path of the script node runs. */
  readonly script: string;
  /** What was run and how it was obtained, for the report's notes. */
  readonly note: string;
}

/**
 * The controller entry script. For dist, tsc may report type errors in another engineer's work
 * in progress and still emit; that is accepted with a note, a missing output is not.
 */
export async function controllerEntry(log: (msg: string) => void): Promise<ControllerEntry> {
  const choice = process.env[CONTROLLER_ENTRY_ENV] ?? '';
  if (choice === 'ts') {
    return {
      script: join(REPO_ROOT, ENTRY_SOURCE),
      note: `controller run from source (${ENTRY_SOURCE}, type stripping; ${CONTROLLER_ENTRY_ENV}=ts)`,
    };
  }
  if (choice !== '' && choice !== 'js') {
    throw new Error(`${CONTROLLER_ENTRY_ENV}=${choice}: expected js (dist, the default) or ts (source)`);
  }
  const script = join(REPO_ROOT, distPathFor(ENTRY_SOURCE));
  const stale = staleSources(scanSources(SOURCE_DIRS));
  if (stale.length === 0) {
    return { script, note: `controller run from ${distPathFor(ENTRY_SOURCE)} (tsc output, up to date)` };
  }
  log(
    `dist is missing or older than ${stale.length} controller source(s) (${stale.slice(0, 3).join(', ')}` +
      `${stale.length > 3 ? ', …' : ''}): running tsc -b src/controller`,
  );
  let tscProblem = '';
  try {
    await run(TSC, ['-b', 'src/controller'], { cwd: REPO_ROOT, timeout: BUILD_TIMEOUT_MS });
  } catch (err) {
    const e = err as { stdout?: string; message?: string };
    tscProblem = (e.stdout ?? e.message ?? String(err)).trim().split('\n').slice(0, 3).join(' | ');
  }
  const missing = scanSources(SOURCE_DIRS).filter((f) => f.outputMtimeMs === undefined);
  if (missing.length > 0) {
    throw new Error(
      `tsc -b src/controller did not emit ${missing.map((f) => distPathFor(f.source)).join(', ')}` +
        (tscProblem ? `: ${tscProblem}` : ''),
    );
  }
  return {
    script,
    note:
      `controller run from ${distPathFor(ENTRY_SOURCE)} (dist was older than ${stale.length} source(s): ` +
      'brought up to date by the bench with tsc -b src/controller' +
      (tscProblem ? `; tsc reported errors but emitted: ${tscProblem})` : ')'),
  };
}

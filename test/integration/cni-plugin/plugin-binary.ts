// SPDX-License-Identifier: Apache-2.0
// Test helpers for the built CNI plugin: build it (scripts/build-cni-plugin.ts, a no-op when up
// to date) and run it the way a container runtime does — CNI_* in a minimal environment, the
// network configuration on stdin, stdout and stderr collected, bounded in time. Shared by the
// integration and netns suites of the plugin.
import { join } from 'node:path';
import { spawnCollect } from '../../../cni-plugin/src/redirect/exec.ts';
import { NODE_BIN } from '../../helpers/testbed-apps.ts';

const root = join(import.meta.dirname, '../../..');

/** The single executable (what nodes run). */
export const PLUGIN_EXE = join(root, 'build/cni/ambient-cni');
/** The same code as one CommonJS file, run with Node. */
export const PLUGIN_BUNDLE = join(root, 'build/cni/ambient-cni.cjs');
/** The TypeScript entry, run with Node's type stripping. */
export const PLUGIN_ENTRY = join(root, 'cni-plugin/src/plugin/main.ts');

/** Builds the plugin unless up to date; returns the executable's path. */
export async function buildPlugin(): Promise<string> {
  const r = await spawnCollect(NODE_BIN, [join(root, 'scripts/build-cni-plugin.ts')], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    timeoutMs: 300_000,
  });
  if (r.code !== 0) throw new Error(`building the CNI plugin failed: ${r.stderr.trim() || r.stdout.trim()}`);
  return PLUGIN_EXE;
}

export interface PluginRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Wall time of the call. */
  ms: number;
}

/** How to start the plugin: the executable, or Node with the bundle or the TypeScript entry. */
export type PluginForm = 'exe' | 'bundle' | 'entry';

/**
 * Runs the plugin once. Only `env` (plus PATH) is passed: a runtime's environment, not the test
 * runner's (tap sets NODE_OPTIONS, which must not reach the plugin).
 */
export async function runPlugin(
  form: PluginForm,
  env: Record<string, string>,
  stdin: string,
  timeoutMs = 20_000,
): Promise<PluginRun> {
  const [file, args] =
    form === 'exe' ? [PLUGIN_EXE, []] : [NODE_BIN, [form === 'bundle' ? PLUGIN_BUNDLE : PLUGIN_ENTRY]];
  const started = process.hrtime.bigint();
  const r = await spawnCollect(file, args, {
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
    input: stdin,
    timeoutMs,
  });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (r.timedOut) throw new Error(`the plugin (${form}) did not exit within ${timeoutMs} ms: ${r.stderr}`);
  return { code: r.code, stdout: r.stdout, stderr: r.stderr, ms };
}

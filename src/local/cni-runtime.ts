// SPDX-License-Identifier: Apache-2.0
// A tiny CNI runtime for the test bed (DESIGN.md §4): executes the plugins of a network
// configuration list the way containerd/CRI-O do, per the CNI 1.0.0 specification
// (containernetworking/cni SPEC.md, "Execution of Network Configurations"):
//
// - ADD runs the plugins in order. Each gets CNI_COMMAND/CNI_CONTAINERID/CNI_NETNS/CNI_IFNAME/
//   CNI_ARGS/CNI_PATH in its environment and, on stdin, its plugin object with `name` and
//   `cniVersion` copied from the list and, from the second plugin on, `prevResult` = the result
//   printed by the previous plugin. The last result is the result of the ADD.
// - DEL runs the plugins in reverse order, each with `prevResult` = the cached ADD result.
//   Like a runtime, we carry on after a failing DEL and report all failures.
//
// The plugins run with the *node's* netns as their current netns (they create the bridge and
// host-side veth there) via an exec prefix, e.g. `ip netns exec <node>`. Extra chained plugins
// (our own CNI plugin, issue 4) are just more entries in `plugins` plus directories in `cniPath`.
import { accessSync, constants, existsSync } from 'node:fs';
import { join } from 'node:path';
import { MeshError } from '../shared/errors.ts';
import { run } from './exec.ts';

export const CNI_VERSION = '1.0.0';

/** Directories where distributions install the reference plugins. */
export const CNI_BIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin', '/usr/libexec/cni', '/usr/local/lib/cni'];

/** One plugin entry of a conflist (`type` names the binary). */
export interface CniPluginConf {
  type: string;
  [key: string]: unknown;
}

/** A CNI network configuration list. */
export interface CniConflist {
  cniVersion: string;
  name: string;
  plugins: CniPluginConf[];
  disableCheck?: boolean;
}

/** The parts of a CNI result the test bed reads (SPEC.md "Success"). */
export interface CniResult {
  cniVersion: string;
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips?: { address: string; gateway?: string; interface?: number }[];
  routes?: { dst: string; gw?: string }[];
  dns?: unknown;
  [key: string]: unknown;
}

export interface CniRuntimeConfig {
  containerId: string;
  /** Path of the pod netns (e.g. /run/netns/<name>). */
  netnsPath: string;
  ifName: string;
  /** CNI_ARGS as key/values (joined with ';'); IgnoreUnknown=1 is added. */
  args?: Record<string, string>;
  /** Directories searched for plugin binaries (CNI_PATH). Default: the first of CNI_BIN_DIRS that exists. */
  cniPath?: string[];
  /** netns whose context the plugins run in (the node); undefined = the current one. */
  runInNetns?: string;
  /** Per-plugin timeout, default 20 s. */
  timeoutMs?: number;
}

/** A plugin failed (its CNI error object, if it printed one, is in `cniError`). */
export class CniError extends MeshError {
  readonly plugin: string;
  readonly cniError: { code?: number; msg?: string; details?: string } | undefined;

  constructor(plugin: string, message: string, cniError?: { code?: number; msg?: string; details?: string }) {
    super('TESTBED_ERR_CNI', message);
    this.plugin = plugin;
    this.cniError = cniError;
  }
}

/** The directory holding the reference plugins, or an error telling how to install them. */
export function findCniBinDir(): string {
  for (const dir of CNI_BIN_DIRS) {
    if (
      existsSync(join(dir, 'bridge')) &&
      existsSync(join(dir, 'host-local')) &&
      existsSync(join(dir, 'loopback'))
    ) {
      return dir;
    }
  }
  throw new MeshError(
    'TESTBED_ERR_NO_CNI_PLUGINS',
    `the CNI reference plugins (bridge, host-local, loopback) were not found in ${CNI_BIN_DIRS.join(', ')}: ` +
      'apt-get install containernetworking-plugins',
  );
}

function findPlugin(type: string, cniPath: readonly string[]): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(type))
    throw new CniError(type, `invalid plugin type ${JSON.stringify(type)}`);
  for (const dir of cniPath) {
    const p = join(dir, type);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next directory
    }
  }
  throw new CniError(type, `CNI plugin "${type}" not found in CNI_PATH ${cniPath.join(':')}`);
}

function cniArgs(args: Record<string, string> | undefined): string {
  return Object.entries({ IgnoreUnknown: '1', ...(args ?? {}) })
    .map(([k, v]) => `${k}=${v}`)
    .join(';');
}

async function invoke(
  command: 'ADD' | 'DEL' | 'CHECK',
  conflist: CniConflist,
  plugin: CniPluginConf,
  prevResult: CniResult | undefined,
  rt: CniRuntimeConfig,
  cniPath: readonly string[],
): Promise<CniResult | undefined> {
  const bin = findPlugin(plugin.type, cniPath);
  const conf: Record<string, unknown> = { ...plugin, cniVersion: conflist.cniVersion, name: conflist.name };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  const r = await run(rt.runInNetns, bin, [], {
    input: JSON.stringify(conf),
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: rt.containerId,
      CNI_NETNS: rt.netnsPath,
      CNI_IFNAME: rt.ifName,
      CNI_ARGS: cniArgs(rt.args),
      CNI_PATH: cniPath.join(':'),
    },
    timeoutMs: rt.timeoutMs ?? 20_000,
  });
  let parsed: unknown;
  try {
    parsed = r.stdout.trim() === '' ? undefined : JSON.parse(r.stdout);
  } catch {
    parsed = undefined;
  }
  if (r.code !== 0) {
    const e = parsed as { code?: number; msg?: string; details?: string } | undefined;
    const why =
      e?.msg !== undefined
        ? `${e.msg}${e.details ? ` (${e.details})` : ''}`
        : r.stderr.trim() || r.stdout.trim();
    throw new CniError(
      plugin.type,
      `CNI ${command} of plugin "${plugin.type}" for container ${rt.containerId} failed` +
        `${r.timedOut ? ' (timed out)' : ` with exit ${String(r.code)}`}: ${why}`,
      e,
    );
  }
  return command === 'ADD' ? (parsed as CniResult | undefined) : undefined;
}

function resolveCniPath(rt: CniRuntimeConfig): string[] {
  return rt.cniPath && rt.cniPath.length > 0 ? rt.cniPath : [findCniBinDir()];
}

/**
 * CNI ADD of the whole list. Returns the final result (what a runtime caches for DEL). If a
 * plugin fails, the plugins already added are deleted again (as containerd does) and the error
 * is thrown.
 */
export async function cniAdd(conflist: CniConflist, rt: CniRuntimeConfig): Promise<CniResult> {
  const cniPath = resolveCniPath(rt);
  let prev: CniResult | undefined;
  const done: CniPluginConf[] = [];
  for (const plugin of conflist.plugins) {
    try {
      const res = await invoke('ADD', conflist, plugin, prev, rt, cniPath);
      if (res === undefined)
        throw new CniError(plugin.type, `CNI ADD of plugin "${plugin.type}" printed no result`);
      prev = res;
      done.push(plugin);
    } catch (e) {
      // Undo the partial ADD so no addresses or interfaces leak.
      for (const p of done.reverse()) {
        await invoke('DEL', conflist, p, prev, rt, cniPath).catch(() => undefined);
      }
      throw e;
    }
  }
  if (prev === undefined) throw new CniError('-', `conflist "${conflist.name}" has no plugins`);
  return prev;
}

/** CNI DEL of the whole list in reverse order; every plugin is called even if one fails. */
export async function cniDel(
  conflist: CniConflist,
  rt: CniRuntimeConfig,
  cachedResult?: CniResult,
): Promise<void> {
  const cniPath = resolveCniPath(rt);
  const failures: string[] = [];
  for (const plugin of [...conflist.plugins].reverse()) {
    try {
      await invoke('DEL', conflist, plugin, cachedResult, rt, cniPath);
    } catch (e) {
      failures.push(e instanceof Error ? e.message : String(e));
    }
  }
  if (failures.length > 0) throw new CniError('-', failures.join('; '));
}

/** CNI CHECK of the whole list in order, with the cached ADD result. */
export async function cniCheck(
  conflist: CniConflist,
  rt: CniRuntimeConfig,
  cachedResult: CniResult,
): Promise<void> {
  const cniPath = resolveCniPath(rt);
  for (const plugin of conflist.plugins) await invoke('CHECK', conflist, plugin, cachedResult, rt, cniPath);
}

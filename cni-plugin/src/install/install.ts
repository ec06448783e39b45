// SPDX-License-Identifier: Apache-2.0
// Installing the ambient CNI plugin on a node, and removing it (DESIGN.md §2: the node agent
// "installs the plugin and its config on the host").
//
// installPlugin: the binary first (so the runtime never finds our entry without the binary),
// copied to `<cniBinDir>/<type>` by temporary file + rename, mode 0755; then our entry goes into
// the node's primary network configuration, the file the runtime uses: the lexicographically
// first *.conflist, *.conf or *.json in cniConfDir that holds at least one plugin (libcni
// ConfFiles order, as containerd and CRI-O load it). Edits are ./conflist.ts's; files are
// replaced atomically, keeping their mode. Idempotent: an unchanged entry is not rewritten.
//
// uninstallPlugin: the reverse order: our entries out of every config file holding one (a list
// we converted from a .conf goes back to the original file), then the binary. A config the node
// had is left byte-for-byte as before install unless something else changed it meanwhile.
import { constants } from 'node:fs';
import { access, chmod, copyFile, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { CniPluginError } from '../plugin/cni.ts';
import { parseNetConf } from '../plugin/config.ts';
import {
  CNI_CONFIG_EXTENSIONS,
  checkChainable,
  convertedFrom,
  convertToList,
  conflistName,
  entryIndexes,
  originalToRestore,
  parseCniConfig,
  withEntry,
  withoutConversionRecord,
  withoutEntry,
} from './conflist.ts';
import type { CniConfigText } from './conflist.ts';
import { InstallError } from './errors.ts';

/** The plugin's binary name and its entries' `type`. */
export const DEFAULT_PLUGIN_TYPE = 'ambient-cni';

export interface PluginConfigOptions {
  /** The runtime's CNI configuration directory, e.g. /etc/cni/net.d. */
  cniConfDir: string;
  /** Our keys for the entry: cni_agent_run_dir, exclude_namespaces, log_level (see plugin/config.ts). */
  pluginConfig: Readonly<Record<string, unknown>>;
  /** Binary name and entry `type` (default "ambient-cni"). */
  pluginType?: string;
}

export interface InstallOptions extends PluginConfigOptions {
  /** The runtime's CNI binary directory, e.g. /opt/cni/bin. */
  cniBinDir: string;
  /** The plugin executable to install (build/cni/ambient-cni in this repository). */
  binarySource: string;
}

export interface UninstallOptions {
  cniBinDir: string;
  cniConfDir: string;
  pluginType?: string;
}

export interface ConfigResult {
  /** The config file holding our entry. */
  configPath: string;
  /** False when the entry was already there as wanted (nothing written). */
  changed: boolean;
}

export interface InstallResult extends ConfigResult {
  binaryPath: string;
}

export interface UninstallResult {
  /** Config files our entry was removed from (a restored original is listed under `restored`). */
  changed: string[];
  /** Original single-plugin files put back in place of the list we had made of them. */
  restored: string[];
  binaryRemoved: boolean;
}

/** A config file of the directory, read and parsed. */
export interface NodeCniConfig extends CniConfigText {
  path: string;
  mode: number;
}

/** Writes `data` to `path` through a temporary file in the same directory, fsynced, then renamed. */
async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.ambient-cni-tmp-${process.pid}`;
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

function isConfigName(name: string): boolean {
  return CNI_CONFIG_EXTENSIONS.some((ext) => name.endsWith(ext));
}

/** The directory's config files in the order runtimes consider them (regular files only). */
async function configFiles(cniConfDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(cniConfDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  // Runtimes sort by byte order (Go sort.Strings); for the ASCII names used here that is
  // JavaScript's default code-unit order.
  const out: string[] = [];
  for (const name of names.filter(isConfigName).sort()) {
    const st = await stat(join(cniConfDir, name)).catch(() => undefined);
    if (st?.isFile() === true) out.push(name);
  }
  return out;
}

async function readConfig(cniConfDir: string, name: string): Promise<NodeCniConfig> {
  const path = join(cniConfDir, name);
  const [text, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
  return { ...parseCniConfig(name, text), path, mode: st.mode & 0o7777 };
}

/**
 * The node's primary network configuration: the first config file that holds a plugin. A
 * malformed first file is an error (the runtime fails on it as well), not skipped.
 */
export async function findPrimaryConfig(cniConfDir: string): Promise<NodeCniConfig> {
  for (const name of await configFiles(cniConfDir)) {
    const cfg = await readConfig(cniConfDir, name);
    if (cfg.form === 'single' || cfg.pluginValues.length > 0) return cfg;
  }
  throw new InstallError(
    'CNI_ERR_INSTALL_NO_CONFIG',
    `no CNI network configuration in ${cniConfDir} yet: the primary CNI plugin writes one when it starts; ` +
      'the ambient plugin is inserted once it is there',
  );
}

/** Our entry: `type` plus the caller's keys, checked with the plugin's own config parser. */
function ourEntry(opts: PluginConfigOptions, cfg: CniConfigText): Record<string, unknown> & { type: string } {
  const type = opts.pluginType ?? DEFAULT_PLUGIN_TYPE;
  for (const key of ['type', 'name', 'cniVersion', 'prevResult']) {
    if (Object.hasOwn(opts.pluginConfig, key)) {
      throw new InstallError(
        'CNI_ERR_INSTALL_PLUGIN_CONFIG',
        `pluginConfig must not set "${key}": the installer (type) and the runtime (name, cniVersion, prevResult) do`,
      );
    }
  }
  const entry = { type, ...opts.pluginConfig };
  try {
    parseNetConf(JSON.stringify({ cniVersion: cfg.doc.cniVersion, name: cfg.doc.name, ...entry }));
  } catch (e) {
    if (!(e instanceof CniPluginError)) throw e;
    throw new InstallError(
      'CNI_ERR_INSTALL_PLUGIN_CONFIG',
      `the plugin would refuse this configuration: ${e.message}`,
      { cause: e },
    );
  }
  return entry;
}

/** Puts our entry into the node's primary config (converting a single-plugin file to a list). */
export async function insertPluginConfig(opts: PluginConfigOptions): Promise<ConfigResult> {
  const primary = await findPrimaryConfig(opts.cniConfDir);
  checkChainable(primary);
  const entry = ourEntry(opts, primary);
  if (primary.form === 'list') {
    const text = withEntry(primary, entry);
    if (text !== undefined) await writeAtomic(primary.path, text, primary.mode);
    return { configPath: primary.path, changed: text !== undefined };
  }
  const list = convertToList(primary, entry);
  const target = join(opts.cniConfDir, list.fileName);
  const existing = await readConfig(opts.cniConfDir, list.fileName).catch((e: unknown) => {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  });
  if (existing !== undefined && convertedFrom(existing) === undefined) {
    throw new InstallError(
      'CNI_ERR_INSTALL_MALFORMED',
      `cannot turn ${primary.fileName} into a configuration list: ${list.fileName} exists and is not ours; ` +
        'remove one of the two (the runtime uses the first by name)',
    );
  }
  // The list first, then the original goes: the node always has a config. A pod created in
  // between runs with the original, like the pods that started before the agent; the agent's
  // reconciliation of running pods enrols those.
  await writeAtomic(target, list.text, primary.mode);
  await unlink(primary.path);
  return { configPath: target, changed: true };
}

/** Copies the plugin binary into the runtime's CNI binary directory (0755, atomic). */
export async function installBinary(
  opts: Pick<InstallOptions, 'cniBinDir' | 'binarySource' | 'pluginType'>,
): Promise<string> {
  const dest = join(opts.cniBinDir, opts.pluginType ?? DEFAULT_PLUGIN_TYPE);
  try {
    const st = await stat(opts.binarySource);
    if (!st.isFile()) throw new Error('not a regular file');
    await access(opts.binarySource, constants.R_OK);
  } catch (e) {
    throw new InstallError(
      'CNI_ERR_INSTALL_BINARY',
      `plugin binary ${opts.binarySource} cannot be installed: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const tmp = join(opts.cniBinDir, `.${opts.pluginType ?? DEFAULT_PLUGIN_TYPE}.tmp-${process.pid}`);
  try {
    await copyFile(opts.binarySource, tmp);
    await chmod(tmp, 0o755);
    const fh = await open(tmp, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, dest);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return dest;
}

/** installBinary, then insertPluginConfig. */
export async function installPlugin(opts: InstallOptions): Promise<InstallResult> {
  const binaryPath = await installBinary(opts);
  return { binaryPath, ...(await insertPluginConfig(opts)) };
}

/** Takes our entries out of every config file that holds one, then removes the binary. */
export async function uninstallPlugin(opts: UninstallOptions): Promise<UninstallResult> {
  const type = opts.pluginType ?? DEFAULT_PLUGIN_TYPE;
  const result: UninstallResult = { changed: [], restored: [], binaryRemoved: false };
  for (const name of await configFiles(opts.cniConfDir)) {
    const path = join(opts.cniConfDir, name);
    const text = await readFile(path, 'utf8');
    // Files without our type anywhere are not ours to judge, malformed or not.
    if (!text.includes(JSON.stringify(type))) continue;
    const cfg = await readConfig(opts.cniConfDir, name);
    if (entryIndexes(cfg, type).length === 0) continue;
    const without = parseCniConfig(name, withoutEntry(cfg, type) ?? cfg.text);
    const original = originalToRestore(without);
    if (original !== undefined) {
      await restoreOriginal(opts.cniConfDir, original, name, cfg.mode);
      result.restored.push(join(opts.cniConfDir, original.file));
      continue;
    }
    await writeAtomic(path, withoutConversionRecord(without) ?? without.text, cfg.mode);
    result.changed.push(path);
  }
  try {
    const dest = join(opts.cniBinDir, type);
    if ((await stat(dest)).isFile()) {
      await unlink(dest);
      result.binaryRemoved = true;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  return result;
}

/** Puts a converted file back (unless the primary plugin has written it again) and drops our list. */
async function restoreOriginal(
  cniConfDir: string,
  original: { file: string; content: string },
  listName: string,
  mode: number,
): Promise<void> {
  const listPath = join(cniConfDir, listName);
  if (!/^[^/]+\.(conf|json)$/.test(original.file) || conflistName(original.file) !== listName) {
    throw new InstallError(
      'CNI_ERR_INSTALL_MALFORMED',
      `${listPath} records a conversion from ${JSON.stringify(original.file)}, which it was not made from; ` +
        'remove the ambient entry by hand',
    );
  }
  const originalPath = join(cniConfDir, original.file);
  const present = await stat(originalPath).then(
    () => true,
    () => false,
  );
  if (!present) await writeAtomic(originalPath, original.content, mode);
  await unlink(listPath);
}

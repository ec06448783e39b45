// SPDX-License-Identifier: Apache-2.0
// Adding our plugin to a node's CNI network configuration, and taking it out again, as text
// edits (pure: text in, text out).
//
// The runtime uses the node's first configuration file (./install.ts picks it). When it is a
// network configuration list, our entry `{"type": "ambient-cni", ...}` is appended to its
// `plugins`, so we run last, after the primary plugin has created the interface (CNI SPEC.md
// "Network Configuration Lists"; spec ambient-protocols.md §2.1 step 2). When it is a single
// plugin's configuration (a `.conf`), it becomes a list: `{cniVersion, name, plugins: [<the
// original>, <ours>]}`, written as `<base>.conflist`, and the original text is kept in the list
// under CONVERTED_FROM_KEY (runtimes ignore unknown top-level keys) so uninstall can put the
// original file back byte for byte.
//
// Edits touch only our bytes (./json-text.ts): installing then uninstalling gives back the
// original text exactly, whatever its layout. Anything that is not a well-formed CNI config is
// refused with the file named, never rewritten.
import { SUPPORTED_CNI_VERSIONS } from '../plugin/cni.ts';
import { InstallError } from './errors.ts';
import { appendElement, removeElement, replaceValue, scanJson } from './json-text.ts';
import type { JsonNode } from './json-text.ts';

/** The conflist key that holds the original single-plugin file we converted. */
export const CONVERTED_FROM_KEY = 'ambientCniConvertedFrom';

/** File extensions runtimes load network configurations from (libcni ConfFiles). */
export const CNI_CONFIG_EXTENSIONS = ['.conflist', '.conf', '.json'] as const;

export interface ConvertedFrom {
  file: string;
  content: string;
}

/** One CNI configuration file, parsed with positions. */
export interface CniConfigText {
  fileName: string;
  text: string;
  doc: Record<string, unknown>;
  root: JsonNode & { kind: 'object' };
  /** A list (`plugins`) or a single plugin's configuration (`type`). */
  form: 'list' | 'single';
  /** The `plugins` array of a list. */
  plugins: (JsonNode & { kind: 'array' }) | undefined;
  pluginValues: Record<string, unknown>[];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function malformed(fileName: string, why: string): InstallError {
  return new InstallError(
    'CNI_ERR_INSTALL_MALFORMED',
    `CNI config ${fileName} ${why}; it was left untouched: fix or remove it (the runtime cannot use it either)`,
  );
}

/** Parses a CNI configuration file's text; refuses anything that is not a usable CNI config. */
export function parseCniConfig(fileName: string, text: string): CniConfigText {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw malformed(fileName, `is not valid JSON (${(e as Error).message})`);
  }
  if (!isRecord(doc)) throw malformed(fileName, 'is not a JSON object');
  const root = scanJson(text);
  if (root.kind !== 'object') throw malformed(fileName, 'is not a JSON object');
  const keys = root.members.map((m) => m.key);
  const dup = keys.find((k, i) => keys.indexOf(k) !== i);
  if (dup !== undefined) throw malformed(fileName, `has the key "${dup}" twice`);
  if (typeof doc.cniVersion !== 'string') throw malformed(fileName, 'has no cniVersion');
  if (typeof doc.name !== 'string' || doc.name === '') throw malformed(fileName, 'has no network name');
  if (doc.plugins !== undefined) {
    const node = root.members.find((m) => m.key === 'plugins')?.value;
    if (!Array.isArray(doc.plugins) || node?.kind !== 'array')
      throw malformed(fileName, 'has a "plugins" that is not a list');
    const pluginValues: Record<string, unknown>[] = [];
    for (const [i, p] of (doc.plugins as unknown[]).entries()) {
      if (!isRecord(p) || typeof p.type !== 'string' || p.type === '') {
        throw malformed(fileName, `has plugins[${i}] without a "type"`);
      }
      pluginValues.push(p);
    }
    return { fileName, text, doc, root, form: 'list', plugins: node, pluginValues };
  }
  if (fileName.endsWith('.conflist')) throw malformed(fileName, 'has no "plugins" list');
  if (typeof doc.type !== 'string' || doc.type === '') {
    throw malformed(
      fileName,
      'is neither a network configuration list ("plugins") nor a plugin configuration ("type")',
    );
  }
  return { fileName, text, doc, root, form: 'single', plugins: undefined, pluginValues: [] };
}

/** Refuses a config whose CNI version(s) our plugin cannot be called with. */
export function checkChainable(cfg: CniConfigText): void {
  const listed: unknown = cfg.doc.cniVersions;
  const versions: unknown[] = [cfg.doc.cniVersion, ...(Array.isArray(listed) ? (listed as unknown[]) : [])];
  const bad = versions.find((v) => !(SUPPORTED_CNI_VERSIONS as readonly unknown[]).includes(v));
  if (bad !== undefined) {
    throw new InstallError(
      'CNI_ERR_INSTALL_UNSUPPORTED',
      `CNI config ${cfg.fileName} uses cniVersion ${JSON.stringify(bad)}; the ambient CNI plugin supports ` +
        `${SUPPORTED_CNI_VERSIONS.join(', ')} and cannot be chained into it`,
    );
  }
}

/** Indexes in `plugins` of the entries of type `pluginType`. */
export function entryIndexes(cfg: CniConfigText, pluginType: string): number[] {
  return cfg.pluginValues.flatMap((p, i) => (p.type === pluginType ? [i] : []));
}

/** Key-order-independent JSON, for comparing an entry with the one we want. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isRecord(v)) {
    const keys = Object.keys(v).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

export function sameJson(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

/**
 * The text of list `cfg` with exactly one entry of `entry.type`, equal to `entry`: appended if
 * absent, replaced in place if different, extra copies removed. Undefined when already so.
 */
export function withEntry(
  cfg: CniConfigText,
  entry: Record<string, unknown> & { type: string },
): string | undefined {
  let cur = cfg;
  for (;;) {
    if (cur.plugins === undefined)
      throw new RangeError(`${cfg.fileName} is not a network configuration list`);
    const idx = entryIndexes(cur, entry.type);
    const first = idx[0];
    const extra = idx[idx.length - 1];
    let text: string;
    if (first === undefined) text = appendElement(cur.text, cur.plugins, entry);
    else if (extra !== undefined && extra !== first) text = removeElement(cur.text, cur.plugins, extra);
    else if (!sameJson(cur.pluginValues[first], entry)) {
      text = replaceValue(cur.text, cur.plugins.items[first] as JsonNode, entry);
    } else return cur.text === cfg.text ? undefined : cur.text;
    cur = parseCniConfig(cfg.fileName, text);
  }
}

/** The text of list `cfg` without any entry of `pluginType`; undefined when it has none. */
export function withoutEntry(cfg: CniConfigText, pluginType: string): string | undefined {
  let cur = cfg;
  for (;;) {
    const last = entryIndexes(cur, pluginType).pop();
    if (last === undefined || cur.plugins === undefined) return cur.text === cfg.text ? undefined : cur.text;
    cur = parseCniConfig(cfg.fileName, removeElement(cur.text, cur.plugins, last));
  }
}

/** `<base>.conflist` for a single-plugin file `<base>.conf` or `<base>.json`. */
export function conflistName(fileName: string): string {
  return `${fileName.replace(/\.(conf|json)$/, '')}.conflist`;
}

/** A list made from single-plugin config `cfg` with `entry` chained after it. */
export function convertToList(
  cfg: CniConfigText,
  entry: Record<string, unknown>,
): { fileName: string; text: string } {
  const converted: ConvertedFrom = { file: cfg.fileName, content: cfg.text };
  const list = {
    cniVersion: cfg.doc.cniVersion,
    name: cfg.doc.name,
    plugins: [cfg.doc, entry],
    [CONVERTED_FROM_KEY]: converted,
  };
  return { fileName: conflistName(cfg.fileName), text: `${JSON.stringify(list, null, 2)}\n` };
}

/** The record of a conversion we made, if `cfg` is such a list. */
export function convertedFrom(cfg: CniConfigText): ConvertedFrom | undefined {
  const v = cfg.doc[CONVERTED_FROM_KEY];
  if (isRecord(v) && typeof v.file === 'string' && typeof v.content === 'string') {
    return { file: v.file, content: v.content };
  }
  return undefined;
}

/**
 * For a list we converted and that no longer holds our entry: the original file to put back, if
 * the list is still exactly what the conversion made of it; otherwise undefined (someone else has
 * changed the list since, so it stays a list).
 */
export function originalToRestore(cfg: CniConfigText): ConvertedFrom | undefined {
  const from = convertedFrom(cfg);
  if (from === undefined) return undefined;
  let original: unknown;
  try {
    original = JSON.parse(from.content);
  } catch {
    return undefined;
  }
  if (!isRecord(original)) return undefined;
  const { [CONVERTED_FROM_KEY]: _, ...rest } = cfg.doc;
  const expected = { cniVersion: original.cniVersion, name: original.name, plugins: [original] };
  return sameJson(rest, expected) ? from : undefined;
}

/** The text of `cfg` without the CONVERTED_FROM_KEY member (undefined when it has none). */
export function withoutConversionRecord(cfg: CniConfigText): string | undefined {
  const i = cfg.root.members.findIndex((m) => m.key === CONVERTED_FROM_KEY);
  return i === -1 ? undefined : removeElement(cfg.text, cfg.root, i);
}

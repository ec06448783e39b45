// SPDX-License-Identifier: Apache-2.0
// Kubernetes YAML manifests read from directories: local mode's stand-in for the API server.
//
// Every `*.yaml`/`*.yml` file under each directory (recursively, in sorted path order; entries
// whose name starts with '.' are skipped, which also skips the `..data` and `..<timestamp>`
// entries of a mounted ConfigMap; file symlinks are followed, directory symlinks are not) is
// parsed as a multi-document YAML stream with the `yaml` package. Each document is validated the
// way the API server would refuse it: apiVersion and kind of an accepted resource type,
// metadata.name following the type's name rule, metadata.namespace (default `default`) on
// namespaced kinds only, labels and annotations as strings. Errors name the file, the
// document's position and line, and what to change.
//
// Objects are keyed by kind + namespace + name. A later directory overrides an earlier one by
// key, whole object (local mode overlays runtime Pod objects, with uid, nodeName and podIP, on the
// user's Pod specs); two definitions in the same directory are reported and the later wins.
// What the API server fills is filled here: metadata.uid when absent (a UUIDv5 of kind,
// namespace and name, so it survives restarts), metadata.resourceVersion (a hash of the document,
// so it changes exactly when the document does) and metadata.creationTimestamp when absent (the
// time the object was first seen, kept across re-reads).
//
// ManifestWatcher re-reads on change (fs.watch on the directories, debounced) and emits the
// difference. A file that fails to read or parse keeps its last good objects and produces a
// warning: a half-written file never deletes objects. For the same reason a file that becomes
// empty keeps its objects (delete the file to delete them). Writers should still replace files
// atomically (write elsewhere, rename into place): a truncated write that happens to be valid
// YAML cannot be told from an edit.
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import type { KubernetesObject, V1ObjectMeta } from '@kubernetes/client-node';
import { EventEmitter } from 'eventemitter3';
import { LineCounter, parseAllDocuments } from 'yaml';
import { errorMessage } from '../errors.ts';
import { KubeError } from './errors.ts';
import { acceptedApiVersions, apiVersionOf, nameProblem, type ResourceType } from './resources.ts';

/** Files above this size are refused (the API server's object limit is ~1.5 MiB; this is generous). */
export const MAX_MANIFEST_FILE_BYTES = 8 * 1024 * 1024;
/** Quiet time after the last file-system event before re-reading (editors write in bursts). */
export const DEFAULT_MANIFEST_DEBOUNCE_MS = 75;

/**
 * An object as the API server would return it. Timestamps are RFC 3339 strings, as in the API's
 * JSON, although client-node's V1ObjectMeta types them as Date.
 */
export interface ManifestObject extends KubernetesObject {
  apiVersion: string;
  kind: string;
  metadata: V1ObjectMeta & { name: string; uid: string; resourceVersion: string };
}

/** One validated document of a file, before the server-filled fields are added. */
export interface ManifestDocument {
  /** Position of the document in its file, from 1. */
  readonly index: number;
  /** Line of the document's first content, from 1. */
  readonly line: number;
  readonly type: ResourceType;
  /** `kind/namespace/name`, or `kind/name` for cluster-scoped kinds. */
  readonly key: string;
  /** The document with apiVersion normalised to the type's version and the namespace defaulted. */
  readonly object: Readonly<Record<string, unknown>>;
}

/** The key objects are merged and diffed by. */
export function manifestKey(kind: string, namespace: string | undefined, name: string): string {
  return namespace === undefined || namespace === '' ? `${kind}/${name}` : `${kind}/${namespace}/${name}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'a mapping' : `${typeof v} ${JSON.stringify(v)}`;
}

function checkStringMap(meta: Record<string, unknown>, field: 'labels' | 'annotations'): string | undefined {
  const m = meta[field];
  if (m === undefined || m === null) return undefined;
  if (!isPlainObject(m)) return `metadata.${field} must be a mapping of strings, got ${describe(m)}`;
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== 'string') {
      return `metadata.${field}.${k} must be a string, got ${describe(v)} (quote the value in YAML)`;
    }
  }
  return undefined;
}

/** Why a document is not an acceptable object, or its normalised form. */
function validateDocument(
  value: unknown,
  types: ReadonlyMap<string, ResourceType>,
): { problem: string } | { type: ResourceType; object: Record<string, unknown>; key: string } {
  if (!isPlainObject(value))
    return { problem: `a document must be a mapping (an object), got ${describe(value)}` };
  const { apiVersion, kind } = value;
  if (typeof kind !== 'string' || kind === '') return { problem: 'kind is missing' };
  const type = types.get(kind);
  if (!type) {
    return { problem: `kind ${kind} is not accepted here (accepted: ${[...types.keys()].join(', ')})` };
  }
  const versions = acceptedApiVersions(type);
  if (typeof apiVersion !== 'string' || !versions.includes(apiVersion)) {
    return {
      problem: `apiVersion ${apiVersion === undefined ? '(missing)' : JSON.stringify(apiVersion)} is not served for kind ${kind} (use ${versions.join(' or ')})`,
    };
  }
  const meta = value.metadata;
  if (!isPlainObject(meta)) return { problem: 'metadata is missing or not a mapping' };
  if (meta.generateName !== undefined && meta.name === undefined) {
    return { problem: 'metadata.generateName is not supported in manifests; set metadata.name' };
  }
  const name = meta.name;
  if (typeof name !== 'string' || name === '') return { problem: 'metadata.name is missing' };
  const bad = nameProblem(name, type.nameRule);
  if (bad !== undefined) return { problem: `metadata.name ${JSON.stringify(name)} ${bad}` };
  let namespace: string | undefined;
  if (type.namespaced) {
    const ns = meta.namespace ?? 'default';
    if (typeof ns !== 'string' || ns === '')
      return { problem: 'metadata.namespace must be a non-empty string' };
    const nsBad = nameProblem(ns, 'dns1123-label');
    if (nsBad !== undefined) return { problem: `metadata.namespace ${JSON.stringify(ns)} ${nsBad}` };
    namespace = ns;
  } else if (meta.namespace !== undefined) {
    return { problem: `${kind} is cluster-scoped: remove metadata.namespace` };
  }
  const mapProblem = checkStringMap(meta, 'labels') ?? checkStringMap(meta, 'annotations');
  if (mapProblem !== undefined) return { problem: mapProblem };
  const object: Record<string, unknown> = {
    ...value,
    apiVersion: apiVersionOf(type),
    metadata: namespace === undefined ? { ...meta } : { ...meta, namespace },
  };
  return { type, object, key: manifestKey(kind, namespace, name) };
}

/**
 * Parses and validates one file's text. Empty documents (a trailing `---`, comments only) are
 * skipped. Throws a KubeError (KUBE_ERR_MANIFEST) naming `file`, the document and its line.
 */
export function parseManifestText(
  text: string,
  file: string,
  kinds: readonly ResourceType[],
): ManifestDocument[] {
  const types = new Map(kinds.map((k) => [k.kind, k]));
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  const out: ManifestDocument[] = [];
  let index = 0;
  for (const doc of docs) {
    index++;
    const line = lineCounter.linePos(doc.contents?.range[0] ?? doc.range[0]).line;
    const where = `${file}: document ${index} (line ${line})`;
    const yamlError = doc.errors[0];
    if (yamlError) {
      // The first line says what and where ("... at line 4, column 1:"); the rest is a code frame.
      const what = (yamlError.message.split('\n')[0] ?? '').replace(/:$/, '');
      throw new KubeError('KUBE_ERR_MANIFEST', `${where}: invalid YAML: ${what}`, { cause: yamlError });
    }
    if (doc.contents === null) continue;
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      throw new KubeError('KUBE_ERR_MANIFEST', `${where}: ${errorMessage(err)}`, { cause: err });
    }
    if (value === null || value === undefined) continue;
    const v = validateDocument(value, types);
    if ('problem' in v) throw new KubeError('KUBE_ERR_MANIFEST', `${where}: ${v.problem}`);
    out.push({ index, line, ...v });
  }
  return out;
}

const UUID_NAMESPACE = Buffer.from('5b3c7c52e2d44f0e9d3a0b8f6f1c2a71', 'hex');

/** A UUIDv5 (RFC 9562 §5.5) of kind, namespace and name: the same object gets the same uid on every start. */
export function stableUid(kind: string, namespace: string | undefined, name: string): string {
  const h = createHash('sha1')
    .update(UUID_NAMESPACE)
    .update(`${kind}/${namespace ?? ''}/${name}`)
    .digest();
  h.writeUInt8((h.readUInt8(6) & 0x0f) | 0x50, 6); // version 5
  h.writeUInt8((h.readUInt8(8) & 0x3f) | 0x80, 8); // RFC 9562 variant
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function rfc3339Seconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The object with uid, resourceVersion and creationTimestamp filled as the API server would. */
function completeObject(
  doc: ManifestDocument,
  previous: ManifestObject | undefined,
  now: Date,
): ManifestObject {
  const object = structuredClone(doc.object) as Record<string, unknown> & {
    metadata: Record<string, unknown>;
  };
  const meta = object.metadata;
  delete meta.resourceVersion;
  // The version is a hash of the document as written: equal exactly when the document is.
  const version = createHash('sha256').update(JSON.stringify(object)).digest('hex').slice(0, 16);
  const name = meta.name as string;
  const namespace = meta.namespace as string | undefined;
  if (typeof meta.uid !== 'string' || meta.uid === '') meta.uid = stableUid(doc.type.kind, namespace, name);
  meta.resourceVersion = version;
  if (meta.creationTimestamp === undefined || meta.creationTimestamp === null) {
    const kept =
      previous !== undefined && previous.metadata.uid === meta.uid
        ? previous.metadata.creationTimestamp
        : undefined;
    meta.creationTimestamp = kept ?? rfc3339Seconds(now);
  }
  // Validated above: apiVersion, kind, metadata.name are strings; uid and resourceVersion set here.
  return object as unknown as ManifestObject;
}

/** Every directory under `dir` (not `dir` itself), skipping hidden ones, as listManifestFiles walks them. */
async function listSubdirectories(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.name.startsWith('.') || !e.isDirectory()) continue;
      const p = join(d, e.name);
      out.push(p);
      await walk(p);
    }
  };
  await walk(dir);
  return out;
}

/** Every manifest file under `dir`, recursively, in sorted path order (see the header for the rules). */
export async function listManifestFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) {
        await walk(p);
        continue;
      }
      if (!/\.ya?ml$/.test(e.name)) continue;
      if (e.isFile()) out.push(p);
      else if (e.isSymbolicLink()) {
        // A ConfigMap mount's files are symlinks into `..data`; a dangling link is skipped.
        const s = await stat(p).catch(() => undefined);
        if (s?.isFile() === true) out.push(p);
      }
    }
  };
  await walk(dir);
  return out.sort();
}

async function readManifestFile(file: string): Promise<string> {
  const s = await stat(file);
  if (s.size > MAX_MANIFEST_FILE_BYTES) {
    throw new KubeError(
      'KUBE_ERR_MANIFEST',
      `${file}: ${s.size} bytes is more than the ${MAX_MANIFEST_FILE_BYTES}-byte limit for a manifest file; split it`,
    );
  }
  return readFile(file, 'utf8');
}

interface FileEntry {
  readonly dirIndex: number;
  readonly text: string;
  readonly docs: readonly ManifestDocument[];
}

function isNotFound(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'ENOENT';
}

function asManifestError(err: unknown, file: string): KubeError {
  if (err instanceof KubeError) return err;
  return new KubeError('KUBE_ERR_MANIFEST', `${file}: cannot read: ${errorMessage(err)}`, { cause: err });
}

/**
 * Reads every directory. With `warn` undefined any problem throws (a first load must be complete:
 * a policy silently missing is a hole). With `warn`, a problem is reported and the affected
 * file, or directory, keeps its entry from `previous`.
 */
async function scanDirs(
  dirs: readonly string[],
  kinds: readonly ResourceType[],
  previous: ReadonlyMap<string, FileEntry>,
  warn?: (message: string) => void,
): Promise<Map<string, FileEntry>> {
  const next = new Map<string, FileEntry>();
  for (const [dirIndex, dir] of dirs.entries()) {
    let files: string[];
    try {
      files = await listManifestFiles(dir);
    } catch (err) {
      const e = new KubeError(
        'KUBE_ERR_MANIFEST_DIR',
        `cannot read manifest directory ${dir}: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
      if (!warn) throw e;
      warn(`${e.message}; keeping the objects last read from it`);
      for (const [f, entry] of previous) if (entry.dirIndex === dirIndex) next.set(f, entry);
      continue;
    }
    for (const file of files) {
      const prev = previous.get(file);
      const keep = (problem: string): void => {
        if (!warn) return;
        warn(
          prev
            ? `${problem}; keeping the objects last read from this file`
            : `${problem}; the file contributes no objects until it is fixed`,
        );
        if (prev) next.set(file, prev);
      };
      let text: string;
      try {
        text = await readManifestFile(file);
      } catch (err) {
        if (isNotFound(err)) continue; // removed between the listing and the read
        if (!warn) throw asManifestError(err, file);
        keep(asManifestError(err, file).message);
        continue;
      }
      if (prev?.text === text) {
        next.set(file, prev);
        continue;
      }
      let docs: ManifestDocument[];
      try {
        docs = parseManifestText(text, file, kinds);
      } catch (err) {
        if (!warn) throw asManifestError(err, file);
        keep(asManifestError(err, file).message);
        continue;
      }
      if (warn && docs.length === 0 && prev !== undefined && prev.docs.length > 0) {
        keep(`${file} holds no objects any more (a partial write?); delete the file to delete its objects`);
        continue;
      }
      next.set(file, { dirIndex, text, docs });
    }
  }
  return next;
}

/** Later directories override earlier ones by key; a key defined twice in one directory is reported. */
function mergeEntries(files: ReadonlyMap<string, FileEntry>): {
  docs: Map<string, ManifestDocument & { file: string; dirIndex: number }>;
  warnings: string[];
} {
  const docs = new Map<string, ManifestDocument & { file: string; dirIndex: number }>();
  const warnings: string[] = [];
  for (const [file, entry] of files) {
    for (const doc of entry.docs) {
      const earlier = docs.get(doc.key);
      if (earlier?.dirIndex === entry.dirIndex) {
        warnings.push(
          `${doc.key} is defined in both ${earlier.file} (document ${earlier.index}) and ${file} (document ${doc.index}); the later one is used`,
        );
      }
      // Delete first so the merged order follows the definition that won.
      docs.delete(doc.key);
      docs.set(doc.key, { ...doc, file, dirIndex: entry.dirIndex });
    }
  }
  return { docs, warnings };
}

function completeAll(
  docs: ReadonlyMap<string, ManifestDocument>,
  previous: ReadonlyMap<string, ManifestObject>,
  now: Date,
): Map<string, ManifestObject> {
  const out = new Map<string, ManifestObject>();
  for (const [key, doc] of docs) out.set(key, completeObject(doc, previous.get(key), now));
  return out;
}

function checkDirs(dirs: readonly string[]): string[] {
  if (dirs.length === 0) throw new KubeError('KUBE_ERR_MANIFEST_DIR', 'no manifest directory given');
  const abs = dirs.map((d) => resolve(d));
  for (const a of abs) {
    for (const b of abs) {
      if (a !== b && b.startsWith(a + sep)) {
        throw new KubeError(
          'KUBE_ERR_MANIFEST_DIR',
          `manifest directory ${b} is inside ${a}; give directories that do not nest (each file must belong to one layer)`,
        );
      }
    }
  }
  return abs;
}

export interface ManifestSet {
  /** By manifestKey, in merged order (directory, then file path, then document). */
  readonly objects: ReadonlyMap<string, ManifestObject>;
  /** Non-fatal findings (the same key twice in one directory). */
  readonly warnings: readonly string[];
}

/** Reads and merges the directories once. Throws on the first unreadable or invalid file. */
export async function readManifests(
  dirs: readonly string[],
  kinds: readonly ResourceType[],
  opts: { now?: () => Date } = {},
): Promise<ManifestSet> {
  const files = await scanDirs(checkDirs(dirs), kinds, new Map());
  const { docs, warnings } = mergeEntries(files);
  return { objects: completeAll(docs, new Map(), (opts.now ?? (() => new Date()))()), warnings };
}

export interface ManifestChange {
  readonly upserted: readonly ManifestObject[];
  /** The last state of each deleted object. */
  readonly deleted: readonly ManifestObject[];
}

export interface ManifestWatcherEvents {
  change: (change: ManifestChange) => void;
  warning: (message: string) => void;
}

export interface ManifestWatcherOptions {
  debounceMs?: number;
  now?: () => Date;
}

/** Watches manifest directories; see the file header for the rules. */
export class ManifestWatcher extends EventEmitter<ManifestWatcherEvents> {
  readonly #dirs: readonly string[];
  readonly #kinds: readonly ResourceType[];
  readonly #debounceMs: number;
  readonly #now: () => Date;
  #files: ReadonlyMap<string, FileEntry> = new Map();
  #objects: ReadonlyMap<string, ManifestObject> = new Map();
  /** One non-recursive watch per directory of the trees (see #syncWatchers). */
  readonly #watchers = new Map<string, FSWatcher>();
  #timer: NodeJS.Timeout | undefined;
  // Flags in an object so that narrowing in one method does not assume another cannot change them.
  readonly #st = { started: false, loaded: false, closed: false, again: false };
  #running: Promise<void> | undefined;

  constructor(dirs: readonly string[], kinds: readonly ResourceType[], opts: ManifestWatcherOptions = {}) {
    super();
    this.#dirs = checkDirs(dirs);
    this.#kinds = kinds;
    this.#debounceMs = opts.debounceMs ?? DEFAULT_MANIFEST_DEBOUNCE_MS;
    this.#now = opts.now ?? (() => new Date());
  }

  /** The current objects by manifestKey, in merged order. */
  get objects(): ReadonlyMap<string, ManifestObject> {
    return this.#objects;
  }

  /**
   * Starts watching and reads everything once. Rejects (and stops) if a directory cannot be
   * watched or read, or any file is invalid: there is no last good state to fall back on yet.
   */
  async start(): Promise<ReadonlyMap<string, ManifestObject>> {
    if (this.#st.started) throw new Error('ManifestWatcher.start() called twice');
    this.#st.started = true;
    try {
      // Watch first, so a change made during the initial read is not missed.
      await this.#syncWatchers(true);
      const files = await scanDirs(this.#dirs, this.#kinds, new Map());
      const { docs, warnings } = mergeEntries(files);
      this.#files = files;
      this.#objects = completeAll(docs, new Map(), this.#now());
      this.#st.loaded = true;
      for (const w of warnings) this.#warn(w);
      // Changes seen during the initial read are read again now that there is a state to diff.
      if (this.#queued()) this.#schedule();
      return this.#objects;
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Stops watching; a re-read in progress finishes without emitting. */
  async close(): Promise<void> {
    this.#st.closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
    await this.#running;
  }

  #warn(message: string): void {
    if (!this.#st.closed) this.emit('warning', message);
  }

  #schedule(): void {
    if (this.#st.closed) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#running || !this.#st.loaded) {
        this.#st.again = true;
        return;
      }
      this.#running = this.#rescanLoop().finally(() => {
        this.#running = undefined;
      });
    }, this.#debounceMs);
  }

  /** One re-read at a time; events during it queue exactly one more. */
  async #rescanLoop(): Promise<void> {
    do {
      this.#st.again = false;
      try {
        await this.#rescan();
      } catch (err) {
        this.#warn(`re-reading manifests failed: ${errorMessage(err)}; keeping the current objects`);
      }
    } while (this.#queued());
  }

  // A method, so TypeScript does not narrow `again` to the false assigned in the loop above
  // while a file-system event may have set it during the await.
  #queued(): boolean {
    return this.#st.again && !this.#st.closed;
  }

  /**
   * Watches every directory of the trees, each with its own non-recursive watch, and follows
   * directories appearing and disappearing. Not `fs.watch(…, {recursive: true})`: on Linux that
   * one tracks files by inode and misses the deletion of a file that was replaced by a rename
   * (how the local runtime and editors write), so a deleted object would never be reported.
   * `strict` (start-up): a root directory that cannot be watched is an error.
   */
  async #syncWatchers(strict = false): Promise<void> {
    const wanted = new Set<string>();
    for (const root of this.#dirs) {
      wanted.add(root);
      for (const d of await listSubdirectories(root).catch(() => [])) wanted.add(d);
    }
    for (const [dir, w] of this.#watchers) {
      if (!wanted.has(dir)) {
        w.close();
        this.#watchers.delete(dir);
      }
    }
    for (const dir of wanted) {
      if (this.#watchers.has(dir) || this.#st.closed) continue;
      let w: FSWatcher;
      try {
        w = watch(dir, { persistent: false }, () => this.#schedule());
      } catch (err) {
        if (strict && this.#dirs.includes(dir)) {
          throw new KubeError(
            'KUBE_ERR_MANIFEST_DIR',
            `cannot watch manifest directory ${dir}: ${errorMessage(err)}`,
            {
              cause: err,
            },
          );
        }
        this.#warn(
          `cannot watch ${dir}: ${errorMessage(err)}; changes under it are seen at the next change elsewhere`,
        );
        continue;
      }
      w.on('error', (err) => {
        // A watched directory that was deleted: forget the watch; #syncWatchers re-adds it if it returns.
        w.close();
        this.#watchers.delete(dir);
        if (this.#dirs.includes(dir)) {
          this.#warn(
            `watching manifest directory ${dir} failed: ${err.message}; later changes under it are not seen until restart`,
          );
        }
      });
      this.#watchers.set(dir, w);
    }
  }

  async #rescan(): Promise<void> {
    await this.#syncWatchers();
    const warnings: string[] = [];
    const files = await scanDirs(this.#dirs, this.#kinds, this.#files, (m) => warnings.push(m));
    if (this.#st.closed) return;
    const merged = mergeEntries(files);
    const next = completeAll(merged.docs, this.#objects, this.#now());
    const deleted: ManifestObject[] = [];
    const upserted: ManifestObject[] = [];
    for (const [key, old] of this.#objects) if (!next.has(key)) deleted.push(old);
    for (const [key, obj] of next) {
      if (this.#objects.get(key)?.metadata.resourceVersion !== obj.metadata.resourceVersion)
        upserted.push(obj);
    }
    this.#files = files;
    this.#objects = next;
    for (const w of [...warnings, ...merged.warnings]) this.#warn(w);
    if (upserted.length > 0 || deleted.length > 0) this.emit('change', { upserted, deleted });
  }
}

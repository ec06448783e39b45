// SPDX-License-Identifier: Apache-2.0
// The controller's xDS resource store: for each type URL, the current resources by name, each
// already encoded once as an envoy `Resource` message (name, version, Any, aliases) that every
// client stream sends as-is, so 100 ztunnels cost 100 memcpys of the bytes, not 100 protobuf
// encodings or copies of the objects (PERFORMANCE.md: 10k pods, 1k services, 100 clients).
//
// Versions are content hashes of the encoded body and the aliases: re-upserting identical
// content is a no-op (no revision, no push), and they survive a controller restart, so a
// ztunnel reconnecting with `initial_resource_versions` is sent only what really changed
// (spec ambient-protocols §3.3; checklist E.67: a restart must not look like mass deletion).
//
// Every effective change takes the next per-type revision and is appended to a change log
// (revision, name). A client stream remembers only the revision it has been brought up to and
// asks `changesSince` for the names changed after it, so a wildcard subscriber costs O(1)
// memory however many resources exist. The log is trimmed to about twice the number of
// resources; a client that fell further behind than that (it stopped ACKing while the mesh
// churned) gets `undefined` and must resynchronise by reconnecting (checklist E.74).
import { createHash } from 'node:crypto';
import { EventEmitter } from 'eventemitter3';
import { Resource } from '../../shared/gen/envoy/service/discovery/v3/discovery.ts';
import { XdsError, XdsErrorCode } from './errors.ts';

/** What a producer hands to `apply` for one resource. */
export interface ResourceUpsert {
  /** The encoded resource message (e.g. an `istio.workload.Address`). */
  readonly body: Uint8Array;
  /** Other names the resource answers to in on-demand lookups (spec §3.2, §3.4). */
  readonly aliases?: readonly string[];
}

/** A resource as stored: immutable and shared by every stream. */
export interface StoredResource {
  readonly name: string;
  /** Content hash of body and aliases. */
  readonly version: string;
  readonly aliases: readonly string[];
  /** The envoy `Resource` message, encoded: the bytes a DeltaDiscoveryResponse carries. */
  readonly encoded: Uint8Array;
  /** Per-type revision of the change that produced this version. */
  readonly revision: number;
}

/** The effective changes of one `apply` (identical re-upserts and unknown removals left out). */
export interface ApplyResult {
  readonly upserted: readonly string[];
  readonly removed: readonly string[];
  /** The type's revision after the apply. */
  readonly revision: number;
}

export interface XdsResourceStoreEvents {
  /** Emitted synchronously after an apply that changed something. */
  change: [typeUrl: string, revision: number];
}

export interface XdsResourceStoreOptions {
  /**
   * Minimum number of changes the log keeps per type (default 10 000); the log holds at least
   * twice the number of resources of the type. Clients further behind must reconnect.
   */
  readonly minChangeLog?: number;
}

const DEFAULT_MIN_CHANGE_LOG = 10_000;
/** Longest resource name or alias accepted; istiod's longest (ServiceEntry endpoint uids) are far below. */
const MAX_NAME_LENGTH = 4096;

class TypeTable {
  readonly resources = new Map<string, StoredResource>();
  /** alias → names of the resources that carry it. */
  readonly byAlias = new Map<string, Set<string>>();
  revision = 0;
  /** Change log, sorted by strictly increasing revision. */
  log: { readonly revision: number; readonly name: string }[] = [];
  /** `changesSince(from)` can answer only for from ≥ floor (older entries were trimmed). */
  floor = 0;
}

function checkName(typeUrl: string, what: string, name: string): void {
  if (name === '' || name === '*' || name.length > MAX_NAME_LENGTH) {
    throw new XdsError(
      XdsErrorCode.RESOURCE,
      `${typeUrl}: ${what} ${JSON.stringify(name.slice(0, 80))} is not usable; expected a non-empty name other than "*" of at most ${MAX_NAME_LENGTH} characters`,
    );
  }
}

function contentVersion(body: Uint8Array, aliases: readonly string[]): string {
  const h = createHash('sha256').update(body);
  for (const a of aliases) h.update('\0').update(a);
  // 128 bits: collisions are not a practical concern, and the string stays short on the wire.
  return h.digest('base64url').slice(0, 22);
}

export class XdsResourceStore extends EventEmitter<XdsResourceStoreEvents> {
  readonly #tables = new Map<string, TypeTable>();
  readonly #minChangeLog: number;

  /** `typeUrls`: the resource types this store serves; any other type is refused. */
  constructor(typeUrls: readonly string[], opts: XdsResourceStoreOptions = {}) {
    super();
    if (typeUrls.length === 0) {
      throw new XdsError(XdsErrorCode.OPTIONS, 'XdsResourceStore needs at least one type URL to serve');
    }
    for (const t of typeUrls) this.#tables.set(t, new TypeTable());
    this.#minChangeLog = opts.minChangeLog ?? DEFAULT_MIN_CHANGE_LOG;
    if (!Number.isSafeInteger(this.#minChangeLog) || this.#minChangeLog < 1) {
      throw new XdsError(
        XdsErrorCode.OPTIONS,
        `minChangeLog must be a positive integer, got ${this.#minChangeLog}`,
      );
    }
  }

  get typeUrls(): readonly string[] {
    return [...this.#tables.keys()];
  }

  serves(typeUrl: string): boolean {
    return this.#tables.has(typeUrl);
  }

  #table(typeUrl: string): TypeTable {
    const t = this.#tables.get(typeUrl);
    if (t === undefined) {
      throw new XdsError(
        XdsErrorCode.RESOURCE,
        `type URL ${typeUrl} is not served by this store (served: ${this.typeUrls.join(', ')})`,
      );
    }
    return t;
  }

  /**
   * Upserts and removes resources of one type atomically: everything is validated first, and
   * nothing changes if anything is refused (XdsError CTL_ERR_XDS_RESOURCE). Emits one `change`
   * event when something actually changed.
   */
  apply(
    typeUrl: string,
    upserted: ReadonlyMap<string, ResourceUpsert>,
    removed: Iterable<string> = [],
  ): ApplyResult {
    const t = this.#table(typeUrl);
    const removals = [...new Set(removed)];
    for (const [name, u] of upserted) {
      checkName(typeUrl, 'resource name', name);
      for (const a of u.aliases ?? []) checkName(typeUrl, `alias of ${name}:`, a);
    }
    for (const name of removals) {
      if (upserted.has(name)) {
        throw new XdsError(
          XdsErrorCode.RESOURCE,
          `${typeUrl}: ${JSON.stringify(name)} is both upserted and removed in one apply; send one or the other`,
        );
      }
    }

    const done: { upserted: string[]; removed: string[] } = { upserted: [], removed: [] };
    for (const [name, u] of upserted) {
      const aliases = [...new Set(u.aliases ?? [])];
      const version = contentVersion(u.body, aliases);
      const old = t.resources.get(name);
      if (old?.version === version) continue;
      const revision = ++t.revision;
      const encoded = Resource.encode({
        name,
        version,
        aliases,
        resource: { typeUrl, value: u.body },
      }).finish();
      if (old !== undefined) this.#unindexAliases(t, old);
      const stored: StoredResource = { name, version, aliases, encoded, revision };
      t.resources.set(name, stored);
      for (const a of aliases) {
        let names = t.byAlias.get(a);
        if (names === undefined) t.byAlias.set(a, (names = new Set()));
        names.add(name);
      }
      this.#log(t, revision, name);
      done.upserted.push(name);
    }
    for (const name of removals) {
      const old = t.resources.get(name);
      if (old === undefined) continue;
      this.#unindexAliases(t, old);
      t.resources.delete(name);
      this.#log(t, ++t.revision, name);
      done.removed.push(name);
    }
    if (done.upserted.length > 0 || done.removed.length > 0) this.emit('change', typeUrl, t.revision);
    return { ...done, revision: t.revision };
  }

  #unindexAliases(t: TypeTable, r: StoredResource): void {
    for (const a of r.aliases) {
      const names = t.byAlias.get(a);
      names?.delete(r.name);
      if (names?.size === 0) t.byAlias.delete(a);
    }
  }

  #log(t: TypeTable, revision: number, name: string): void {
    t.log.push({ revision, name });
    const cap = Math.max(this.#minChangeLog, 2 * t.resources.size);
    if (t.log.length > cap) {
      // Trim to half the cap at once, so trimming costs O(1) amortised per change.
      const dropped = t.log.splice(0, t.log.length - Math.floor(cap / 2));
      t.floor = dropped.at(-1)?.revision ?? t.floor;
    }
  }

  /** The current revision of a type (0 before its first change). */
  revision(typeUrl: string): number {
    return this.#table(typeUrl).revision;
  }

  get(typeUrl: string, name: string): StoredResource | undefined {
    return this.#table(typeUrl).resources.get(name);
  }

  size(typeUrl: string): number {
    return this.#table(typeUrl).resources.size;
  }

  /** Every resource of the type, in no particular order. */
  all(typeUrl: string): IterableIterator<StoredResource> {
    return this.#table(typeUrl).resources.values();
  }

  /** The resources a subscription key names: the one called `key`, and those aliased `key`. */
  resolve(typeUrl: string, key: string): StoredResource[] {
    const t = this.#table(typeUrl);
    const out: StoredResource[] = [];
    const own = t.resources.get(key);
    if (own !== undefined) out.push(own);
    for (const name of t.byAlias.get(key) ?? []) {
      const r = t.resources.get(name);
      if (r !== undefined && r !== own) out.push(r);
    }
    return out;
  }

  /**
   * Names changed (upserted or removed) in revisions (from, to], each once; undefined when the
   * log no longer reaches back to `from` (the caller must resynchronise from scratch).
   */
  changesSince(typeUrl: string, from: number, to: number): ReadonlySet<string> | undefined {
    const t = this.#table(typeUrl);
    if (from < t.floor) return undefined;
    const out = new Set<string>();
    // First entry with revision > from (binary search; the log is sorted by revision).
    let lo = 0;
    let hi = t.log.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((t.log[mid]?.revision ?? Infinity) <= from) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < t.log.length; i++) {
      const entry = t.log[i];
      if (entry === undefined || entry.revision > to) break;
      out.add(entry.name);
    }
    return out;
  }
}

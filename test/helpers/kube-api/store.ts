// SPDX-License-Identifier: Apache-2.0
// The stand-in's storage, with etcd's versioning: one global resourceVersion counter bumped by
// every write, each stored object stamped with the version of its last write (a deleted object
// with the version of its deletion), and a bounded history of events per resource type from
// which watches resume. A watch from a version older than what the history still holds (it
// overflowed, or compact() dropped it) is told `410 Gone` and must relist.
//
// Writes follow the API server's rules where clients depend on them: create fills uid,
// resourceVersion, creationTimestamp and generation, drops status where the type has a status
// subresource, and refuses a duplicate (409 AlreadyExists) or
// a namespace that does not exist (404); update and patch are optimistic (a stale
// metadata.resourceVersion is 409 Conflict), keep the server-owned metadata, bump generation when
// the spec changes, keep status out of the main resource when the type has a status subresource,
// and write nothing (no new version, no event) when nothing changed; deleting a namespace deletes
// what is in it first. Everything is synchronous, so a watch that replays history and then
// subscribes cannot miss an event in between.
import { randomUUID } from 'node:crypto';
import { alreadyExists, ApiError, badRequest, conflict, invalid, notFound } from './status.ts';
import { applyPatch, type PatchType } from './patch.ts';
import { API_RESOURCES, groupVersion, type ApiResource, type JsonObject } from './resources.ts';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  readonly rv: number;
  readonly resource: ApiResource;
  readonly type: EventType;
  /** The new state; for DELETED the last state, stamped with the deletion's version. */
  readonly object: JsonObject;
  /** The state before a MODIFIED or DELETED. */
  readonly previous: JsonObject | undefined;
}

export const DEFAULT_HISTORY_LIMIT = 1000;

interface Meta extends JsonObject {
  name?: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
}

function metaOf(o: JsonObject): Meta {
  const m = o.metadata;
  return typeof m === 'object' && m !== null && !Array.isArray(m) ? (m as Meta) : {};
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function nowSeconds(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** JSON with object keys sorted: clients re-serialise objects in their own field order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    const entries = Object.entries(v as JsonObject)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonical(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/** Everything but metadata and status: what `generation` counts changes of. */
function specPart(o: JsonObject): string {
  const { metadata: _m, status: _s, ...rest } = o;
  return canonical(rest);
}

function withoutVersion(o: JsonObject): string {
  const meta = { ...metaOf(o) };
  delete meta.resourceVersion;
  return canonical({ ...o, metadata: meta });
}

export class Store {
  #rv = 0;
  readonly #objects = new Map<ApiResource, Map<string, JsonObject>>();
  readonly #history = new Map<ApiResource, { events: StoreEvent[]; compactedRv: number }>();
  readonly #listeners = new Set<(e: StoreEvent) => void>();
  readonly #historyLimit: number;

  constructor(historyLimit = DEFAULT_HISTORY_LIMIT) {
    this.#historyLimit = historyLimit;
    for (const r of API_RESOURCES) {
      this.#objects.set(r, new Map());
      this.#history.set(r, { events: [], compactedRv: 0 });
    }
  }

  /** The current global resourceVersion (that of the last write). */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** Calls `fn` synchronously for every write, after it is stored. Returns the unsubscribe. */
  subscribe(fn: (e: StoreEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Forgets every type's history: a watch from any version before now gets 410 Gone. */
  compact(): void {
    for (const h of this.#history.values()) {
      h.events = [];
      h.compactedRv = this.#rv;
    }
  }

  /** Events of `r` after version `rv`, or 'expired' when some of them are no longer kept. */
  eventsSince(r: ApiResource, rv: number): readonly StoreEvent[] | 'expired' {
    const h = this.#history.get(r)!;
    if (rv < h.compactedRv) return 'expired';
    return h.events.filter((e) => e.rv > rv);
  }

  /** The oldest version a watch of `r` may still resume from. */
  oldestResumable(r: ApiResource): number {
    return this.#history.get(r)!.compactedRv;
  }

  /** Objects of `r` (in `namespace`, or all), in key order like etcd; copies. */
  list(r: ApiResource, namespace?: string): JsonObject[] {
    return [...this.#objects.get(r)!.entries()]
      .filter(([, o]) => namespace === undefined || metaOf(o).namespace === namespace)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => structuredClone(o));
  }

  get(r: ApiResource, namespace: string | undefined, name: string): JsonObject {
    return structuredClone(this.#require(r, namespace, name));
  }

  create(r: ApiResource, namespace: string | undefined, body: JsonObject): JsonObject {
    const obj = structuredClone(body);
    this.#checkKind(r, obj);
    const meta: Meta = { ...metaOf(obj) };
    if (r.namespaced) {
      if (meta.namespace !== undefined && meta.namespace !== namespace) {
        throw badRequest(
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      }
      meta.namespace = namespace;
      if (!this.#objects.get(this.#namespaceResource())!.has(namespace!)) {
        throw new ApiError(404, `namespaces "${namespace!}" not found`, {
          details: { name: namespace, kind: 'namespaces' },
        });
      }
    } else delete meta.namespace;
    if ((meta.name === undefined || meta.name === '') && typeof meta.generateName === 'string') {
      meta.name = meta.generateName + randomUUID().replaceAll('-', '').slice(0, 5);
    }
    const name = meta.name;
    if (typeof name !== 'string' || name === '') {
      throw invalid(r, '', 'metadata.name', 'Required value: name or generateName is required');
    }
    if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) {
      throw invalid(
        r,
        name,
        'metadata.name',
        `Invalid value: "${name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'`,
      );
    }
    const key = this.#key(r, meta.namespace, name);
    if (this.#objects.get(r)!.has(key)) throw alreadyExists(r, name);
    meta.uid = randomUUID();
    meta.creationTimestamp = nowSeconds();
    meta.generation = 1;
    // With a status subresource, status is the controllers' to write, never the creator's.
    if (r.statusSubresource) delete obj.status;
    if (r.kind === 'Namespace') obj.status = { phase: 'Active' };
    obj.apiVersion = groupVersion(r);
    obj.kind = r.kind;
    obj.metadata = meta;
    return this.#write(r, 'ADDED', key, obj, undefined);
  }

  /** PUT of the resource (or, with `status`, of its status subresource). */
  update(
    r: ApiResource,
    namespace: string | undefined,
    name: string,
    body: JsonObject,
    status = false,
  ): JsonObject {
    const existing = this.#require(r, namespace, name);
    const obj = structuredClone(body);
    this.#checkKind(r, obj);
    const meta = metaOf(obj);
    if (meta.name !== undefined && meta.name !== name) {
      throw badRequest(`the name of the object (${meta.name}) does not match the name on the URL (${name})`);
    }
    if (r.namespaced && meta.namespace !== undefined && meta.namespace !== namespace) {
      throw badRequest(
        'the namespace of the provided object does not match the namespace sent on the request',
      );
    }
    return this.#replace(r, existing, obj, status);
  }

  patch(
    r: ApiResource,
    namespace: string | undefined,
    name: string,
    type: PatchType,
    patch: unknown,
    status = false,
  ): JsonObject {
    const existing = this.#require(r, namespace, name);
    const patched = applyPatch(existing, type, patch);
    const meta = metaOf(patched);
    if (meta.name !== name || (r.namespaced && meta.namespace !== namespace)) {
      throw badRequest('a patch cannot change metadata.name or metadata.namespace');
    }
    return this.#replace(r, existing, patched, status);
  }

  /** Deletes at once (no graceful deletion or finalizers); `preconditions` as in DeleteOptions. */
  delete(
    r: ApiResource,
    namespace: string | undefined,
    name: string,
    preconditions: { resourceVersion?: unknown; uid?: unknown } = {},
  ): JsonObject {
    const existing = this.#require(r, namespace, name);
    const meta = metaOf(existing);
    if (preconditions.uid !== undefined && preconditions.uid !== meta.uid) {
      throw conflict(
        r,
        name,
        `Precondition failed: UID in precondition: ${str(preconditions.uid)}, UID in object meta: ${str(meta.uid)}`,
      );
    }
    if (
      preconditions.resourceVersion !== undefined &&
      preconditions.resourceVersion !== meta.resourceVersion
    ) {
      throw conflict(
        r,
        name,
        'the object has been modified; please apply your changes to the latest version and try again',
      );
    }
    if (r.kind === 'Namespace') {
      for (const nr of API_RESOURCES.filter((x) => x.namespaced)) {
        for (const o of this.list(nr, name)) this.delete(nr, name, metaOf(o).name!);
      }
    }
    const key = this.#key(r, namespace, name);
    this.#objects.get(r)!.delete(key);
    const gone = structuredClone(existing);
    return this.#write(r, 'DELETED', key, gone, existing, true);
  }

  #replace(r: ApiResource, existing: JsonObject, incoming: JsonObject, statusOnly: boolean): JsonObject {
    const old = metaOf(existing);
    const name = old.name!;
    const given = metaOf(incoming);
    if (
      given.resourceVersion !== undefined &&
      given.resourceVersion !== '' &&
      given.resourceVersion !== old.resourceVersion
    ) {
      throw conflict(
        r,
        name,
        'the object has been modified; please apply your changes to the latest version and try again',
      );
    }
    if (given.uid !== undefined && given.uid !== old.uid) {
      throw conflict(
        r,
        name,
        `Precondition failed: UID in precondition: ${str(given.uid)}, UID in object meta: ${str(old.uid)}`,
      );
    }
    let next: JsonObject;
    if (statusOnly) {
      next = { ...structuredClone(existing), status: incoming.status };
    } else {
      next = {
        ...incoming,
        apiVersion: groupVersion(r),
        kind: r.kind,
        metadata: {
          ...given,
          name,
          ...(r.namespaced ? { namespace: old.namespace } : {}),
          uid: old.uid,
          creationTimestamp: old.creationTimestamp,
          generation: old.generation,
          resourceVersion: old.resourceVersion,
        },
      };
      if (r.statusSubresource) {
        if (existing.status === undefined) delete next.status;
        else next.status = existing.status;
      }
      if (specPart(next) !== specPart(existing)) metaOf(next).generation = Number(old.generation ?? 0) + 1;
    }
    if (withoutVersion(next) === withoutVersion(existing)) return structuredClone(existing);
    return this.#write(r, 'MODIFIED', this.#key(r, old.namespace, name), next, existing);
  }

  #write(
    r: ApiResource,
    type: EventType,
    key: string,
    obj: JsonObject,
    previous: JsonObject | undefined,
    deleted = false,
  ): JsonObject {
    this.#rv++;
    metaOf(obj).resourceVersion = String(this.#rv);
    if (!deleted) this.#objects.get(r)!.set(key, obj);
    const event: StoreEvent = { rv: this.#rv, resource: r, type, object: obj, previous };
    const h = this.#history.get(r)!;
    h.events.push(event);
    while (h.events.length > this.#historyLimit) h.compactedRv = h.events.shift()!.rv;
    for (const fn of [...this.#listeners]) fn(event);
    return structuredClone(obj);
  }

  #require(r: ApiResource, namespace: string | undefined, name: string): JsonObject {
    const o = this.#objects.get(r)!.get(this.#key(r, namespace, name));
    if (!o) throw notFound(r, name);
    return o;
  }

  #key(r: ApiResource, namespace: string | undefined, name: string): string {
    return r.namespaced ? `${namespace ?? ''}/${name}` : name;
  }

  #checkKind(r: ApiResource, obj: JsonObject): void {
    if (obj.kind !== undefined && obj.kind !== r.kind) {
      throw badRequest(`the kind of the object (${str(obj.kind)}) does not match the resource (${r.kind})`);
    }
    if (obj.apiVersion !== undefined && obj.apiVersion !== groupVersion(r)) {
      throw badRequest(
        `the apiVersion of the object (${str(obj.apiVersion)}) does not match the resource (${groupVersion(r)})`,
      );
    }
  }

  #namespaceResource(): ApiResource {
    return API_RESOURCES.find((r) => r.kind === 'Namespace')!;
  }
}

// SPDX-License-Identifier: Apache-2.0
// Response bodies shared between wildcard streams (a body is a response without its nonce;
// delta-response.ts). What a wildcard client is sent depends only on the store and on the
// revision the client has reached, never on the client itself:
// - a client that holds nothing (a ztunnel starting, or subscribing without
//   initial_resource_versions) gets every resource of the type, at the store's revision;
// - a client brought from revision A to B gets the names the change log lists in (A, B], each
//   as an upsert of its current content or as a removal.
// So each such body is encoded once and the same bytes go to every client it fits: 100
// ztunnels syncing at once cost one encoding of the full state (~2.8 MB at 10k pods and 1k
// services), not 100, and a debounced push to 100 ztunnels costs one encoding of the change.
//
// A body is valid for the store revision of its type it was built at: the first request after
// a change finds the entries stale and starts afresh, so what is cached is the full state and
// at most MAX_CHANGE_BODIES change sets of the current revision. Streams still writing an older
// body keep it alive until they are done with it.
import { encodeResponseBody, type ResponseBody } from './delta-response.ts';
import type { StoredResource, XdsResourceStore } from './resource-store.ts';

/**
 * Change sets cached per type and revision. Streams at different revisions ask for different
 * ones; in steady state every stream is at the last published revision and one set serves all.
 */
const MAX_CHANGE_BODIES = 8;

interface TypeBodies {
  /** The store revision of the type these bodies were built at. */
  readonly revision: number;
  full: ResponseBody | undefined;
  /** `from:to` → body, oldest first. */
  readonly changes: Map<string, ResponseBody>;
}

export class SharedBodies {
  readonly #store: XdsResourceStore;
  readonly #types = new Map<string, TypeBodies>();

  constructor(store: XdsResourceStore) {
    this.#store = store;
  }

  #current(typeUrl: string): TypeBodies {
    const revision = this.#store.revision(typeUrl);
    let t = this.#types.get(typeUrl);
    if (t?.revision !== revision) {
      t = { revision, full: undefined, changes: new Map() };
      this.#types.set(typeUrl, t);
    }
    return t;
  }

  /**
   * Every resource of the type, for a wildcard client that holds nothing; it brings the client
   * to the store's current revision (`systemVersionInfo`).
   */
  full(typeUrl: string): ResponseBody {
    const t = this.#current(typeUrl);
    t.full ??= encodeResponseBody({
      typeUrl,
      systemVersionInfo: String(t.revision),
      resources: [...this.#store.all(typeUrl)],
      removed: [],
    });
    return t.full;
  }

  /**
   * The changes of revisions (from, to] for a wildcard client; undefined when the store's change
   * log no longer reaches back to `from` (the client must resynchronise).
   */
  changes(typeUrl: string, from: number, to: number): ResponseBody | undefined {
    const t = this.#current(typeUrl);
    const key = `${from}:${to}`;
    const cached = t.changes.get(key);
    if (cached !== undefined) return cached;
    const changed = this.#store.changesSince(typeUrl, from, to);
    if (changed === undefined) return undefined;
    const resources: StoredResource[] = [];
    const removed: string[] = [];
    for (const name of changed) {
      const r = this.#store.get(typeUrl, name);
      if (r !== undefined) resources.push(r);
      else removed.push(name);
    }
    const body = encodeResponseBody({ typeUrl, systemVersionInfo: String(to), resources, removed });
    if (t.changes.size >= MAX_CHANGE_BODIES) {
      const oldest = t.changes.keys().next().value;
      if (oldest !== undefined) t.changes.delete(oldest);
    }
    t.changes.set(key, body);
    return body;
  }
}

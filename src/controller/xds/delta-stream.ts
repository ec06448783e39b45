// SPDX-License-Identifier: Apache-2.0
// The server side of one delta xDS stream (spec ambient-protocols §3.3, §3.4; the envoy xDS
// protocol's incremental variant): subscriptions per type, ACK/NACK by nonce, flow control, and
// which resources each response carries. It knows nothing about gRPC beyond a status code; the
// service (ads-server.ts) feeds it requests and debounced pushes and writes what it emits.
//
// Per type, a stream is in one of two modes:
// - wildcard (the first request subscribes nothing, or `*`): the client gets every resource.
//   The stream keeps no per-resource state, only `syncedTo`, the store revision it has been
//   sent everything up to; a push sends the names the store's change log lists after it. At
//   10k resources × 100 clients this is what keeps memory flat. What such a stream is sent
//   depends only on revisions, so unless it also has keys to answer or brought
//   initial_resource_versions, its response body is the one shared by every wildcard stream
//   at the same revisions (shared-bodies.ts), and only the nonce is its own.
// - explicit (on-demand, §3.4: subscribe `*` and unsubscribe `*`, then subscribe keys): the
//   client gets resources whose name or an alias is subscribed; `held` records what it holds,
//   so a resource that stops matching or disappears is sent as a removal.
//
// The first request of a type brings `initial_resource_versions`: resources the client holds at
// the current version are not re-sent, and held names that no longer exist (or, explicit, no
// longer match) are removed. Every (re)subscribed key is answered: with the resources it names,
// or, when there are none, with the key in `removed_resources` ("does not exist"), so an
// on-demand lookup never waits for nothing.
//
// Flow control, as istiod does it: at most one response per type is in flight; changes that
// arrive meanwhile are coalesced into one push after the ACK. A NACK is logged and counted and
// otherwise treated like an ACK for flow control: the rejected resources are not re-sent until
// they change (sending the same bytes again would be rejected again) and, in explicit mode, are
// forgotten from `held`, so a resubscription re-sends them. A client that ACKs nothing while the
// store's change log moves on past it is told to reconnect (RESOURCE_EXHAUSTED); its reconnect
// with initial_resource_versions resynchronises it exactly.
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { DeltaDiscoveryRequest } from '../../shared/gen/envoy/service/discovery/v3/discovery.ts';
import type { Logger } from '../../shared/telemetry/logger.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Caller } from '../auth/types.ts';
import { encodeResponseBody, type DeltaResponse, type ResponseBody } from './delta-response.ts';
import { parseNode, type XdsNodeInfo } from './node-id.ts';
import type { StoredResource, XdsResourceStore } from './resource-store.ts';
import type { SharedBodies } from './shared-bodies.ts';

/** Server-wide counters; the streams increment them. */
export interface WdsCounters {
  /** Responses sent. */
  pushes: number;
  /** Resources carried by those responses. */
  resourcesSent: number;
  /** Names carried in removed_resources. */
  removalsSent: number;
  acks: number;
  nacks: number;
}

export interface DeltaStreamContext {
  /** The stream's number on the server: nonces are `<id>.<n>` (base 36), unique server-wide. */
  readonly id: number;
  readonly store: XdsResourceStore;
  /** Bodies shared by the wildcard streams of the server, over `store`. */
  readonly bodies: SharedBodies;
  /** The revision of a type that pushes may bring clients up to (the last debounced one). */
  published(typeUrl: string): number;
  /** Sends one response; the body may be shared with other streams and must not be modified. */
  write(response: DeltaResponse): void;
  /** Ends the stream with this status (the stream calls it at most once). */
  end(code: GrpcStatus, details: string): void;
  readonly counters: WdsCounters;
  readonly logger: Logger;
  /** Most explicit subscription keys a stream may hold per type. */
  readonly maxSubscriptions: number;
}

/** What /debug-style status shows about one type on one stream. */
export interface TypeStatus {
  readonly typeUrl: string;
  readonly wildcard: boolean;
  readonly subscriptions: number;
  readonly syncedTo: number;
  readonly inFlightNonce: string | undefined;
  readonly acks: number;
  readonly nacks: number;
  readonly lastNack: { readonly nonce: string; readonly message: string; readonly at: string } | undefined;
}

export interface StreamStatus {
  readonly node: XdsNodeInfo | undefined;
  readonly caller: string;
  readonly peer: string;
  readonly connectedAt: string;
  readonly types: readonly TypeStatus[];
}

/** Longest NACK message kept and logged; a client controls it. */
const MAX_NACK_MESSAGE = 2048;

interface TypeState {
  wildcard: boolean;
  /** Explicit subscription keys (resource names or aliases). */
  readonly names: Set<string>;
  /** Explicit mode: name → version the client holds ('' = unknown). Undefined in wildcard mode. */
  held: Map<string, string> | undefined;
  /** The client has been sent every change of the type up to this revision. */
  syncedTo: number;
  /** The next response is computed against the whole store, given what the client holds. */
  fullSync: ReadonlyMap<string, string> | undefined;
  /** Keys (re)subscribed since the last response, each answered by the next one. */
  readonly resolve: Set<string>;
  /** The first response of a type goes out even when empty, so the client can ACK and be ready. */
  mustRespond: boolean;
  inFlight: { readonly nonce: string; readonly names: readonly string[] } | undefined;
  acks: number;
  nacks: number;
  lastNack: TypeStatus['lastNack'];
}

/** A response about to be sent, and the names it carries that an explicit stream now holds. */
interface Outgoing {
  readonly body: ResponseBody;
  readonly names: readonly string[];
}

export class DeltaStream {
  readonly #ctx: DeltaStreamContext;
  readonly #caller: Caller;
  readonly #peer: string;
  readonly #connectedAt = new Date();
  readonly #types = new Map<string, TypeState>();
  #node: XdsNodeInfo | undefined;
  #log: Logger;
  #nonce = 0;
  #closed = false;

  constructor(ctx: DeltaStreamContext, caller: Caller, peer: string) {
    this.#ctx = ctx;
    this.#caller = caller;
    this.#peer = peer;
    this.#log = ctx.logger.child({ peer, caller: caller.subject });
  }

  get node(): XdsNodeInfo | undefined {
    return this.#node;
  }

  /** Stops all output; the service calls it when the call ends for any reason. */
  dispose(): void {
    this.#closed = true;
  }

  #fail(code: GrpcStatus, details: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#log.warn({ code: GrpcStatus[code], details }, 'closing xDS stream');
    this.#ctx.end(code, details);
  }

  /** One DeltaDiscoveryRequest from the client. */
  handle(req: DeltaDiscoveryRequest): void {
    if (this.#closed) return;
    if (this.#node === undefined && !this.#identify(req)) return;
    const typeUrl = req.typeUrl;
    if (!this.#ctx.store.serves(typeUrl)) {
      this.#fail(
        GrpcStatus.INVALID_ARGUMENT,
        `type URL ${JSON.stringify(typeUrl)} is not served here; served: ${this.#ctx.store.typeUrls.join(', ')}`,
      );
      return;
    }
    const st = this.#types.get(typeUrl);
    if (st === undefined) this.#subscribeFirst(typeUrl, req);
    else {
      if (req.responseNonce !== '') this.#acknowledge(typeUrl, st, req);
      this.#changeSubscriptions(typeUrl, st, req);
    }
    this.#maybeSend(typeUrl);
  }

  /** The store published new revisions of `typeUrl`: push unless a response is in flight. */
  push(typeUrl: string): void {
    if (!this.#closed) this.#maybeSend(typeUrl);
  }

  /** The first request of the stream carries the node; parse it and check it against the caller. */
  #identify(req: DeltaDiscoveryRequest): boolean {
    let node: XdsNodeInfo;
    try {
      node = parseNode(req.node);
    } catch (err) {
      this.#fail(GrpcStatus.INVALID_ARGUMENT, errorMessage(err));
      return false;
    }
    const claimed = node.metadata.NODE_NAME;
    if (this.#caller.kind === 'node' && claimed !== undefined && claimed !== this.#caller.node) {
      this.#fail(
        GrpcStatus.PERMISSION_DENIED,
        `node metadata NODE_NAME=${claimed} does not match the credential, which is for node ${this.#caller.node}`,
      );
      return false;
    }
    this.#node = node;
    this.#log = this.#log.child({ node: node.id });
    this.#log.info({ metadata: node.metadata }, 'xDS client connected');
    return true;
  }

  #subscribeFirst(typeUrl: string, req: DeltaDiscoveryRequest): void {
    const st: TypeState = {
      // An empty first subscribe list is the legacy wildcard; `*` is the explicit one.
      wildcard: req.resourceNamesSubscribe.length === 0,
      names: new Set(),
      held: undefined,
      syncedTo: 0,
      fullSync: req.initialResourceVersions,
      resolve: new Set(),
      mustRespond: true,
      inFlight: undefined,
      acks: 0,
      nacks: 0,
      lastNack: undefined,
    };
    this.#types.set(typeUrl, st);
    for (const key of req.resourceNamesSubscribe) {
      if (key === '*') st.wildcard = true;
      else if (!this.#addName(typeUrl, st, key)) return;
    }
    for (const key of req.resourceNamesUnsubscribe) {
      if (key === '*') st.wildcard = false;
      else {
        st.names.delete(key);
        st.resolve.delete(key);
      }
    }
    if (!st.wildcard) st.held = new Map();
    this.#log.debug(
      {
        typeUrl,
        wildcard: st.wildcard,
        names: st.names.size,
        initialResourceVersions: req.initialResourceVersions.size,
      },
      'subscribed',
    );
  }

  #addName(typeUrl: string, st: TypeState, key: string): boolean {
    if (!st.names.has(key)) {
      if (st.names.size >= this.#ctx.maxSubscriptions) {
        this.#fail(
          GrpcStatus.RESOURCE_EXHAUSTED,
          `more than ${this.#ctx.maxSubscriptions} subscriptions to ${typeUrl} on one stream; unsubscribe keys no longer needed`,
        );
        return false;
      }
      st.names.add(key);
    }
    st.resolve.add(key);
    return true;
  }

  #acknowledge(typeUrl: string, st: TypeState, req: DeltaDiscoveryRequest): void {
    // A nonce other than the one in flight answers a response already superseded: ignore it.
    if (st.inFlight?.nonce !== req.responseNonce) {
      this.#log.debug({ typeUrl, nonce: req.responseNonce }, 'stale nonce ignored');
      return;
    }
    const sent = st.inFlight;
    st.inFlight = undefined;
    if (req.errorDetail === undefined) {
      st.acks++;
      this.#ctx.counters.acks++;
      return;
    }
    st.nacks++;
    this.#ctx.counters.nacks++;
    const message = req.errorDetail.message.slice(0, MAX_NACK_MESSAGE);
    st.lastNack = { nonce: sent.nonce, message, at: new Date().toISOString() };
    // Explicit mode: forget what was in the rejected response so a resubscription re-sends it.
    for (const name of sent.names) st.held?.delete(name);
    this.#log.warn(
      { typeUrl, nonce: sent.nonce, code: req.errorDetail.code, detail: message },
      'client rejected resources (NACK); it keeps its last good version of them',
    );
  }

  #changeSubscriptions(typeUrl: string, st: TypeState, req: DeltaDiscoveryRequest): void {
    for (const key of req.resourceNamesSubscribe) {
      if (key !== '*') {
        if (!this.#addName(typeUrl, st, key)) return;
      } else if (!st.wildcard) {
        // Becoming wildcard: send everything the client does not hold at the current version.
        st.wildcard = true;
        st.fullSync = st.held ?? new Map();
        st.held = undefined;
      }
    }
    for (const key of req.resourceNamesUnsubscribe) {
      if (key === '*') {
        if (st.wildcard) {
          // Leaving wildcard: the client keeps what its explicit keys name; track those so
          // their removal reaches it (versions unknown, so a resubscription re-sends them).
          st.wildcard = false;
          st.fullSync = undefined;
          st.held = new Map();
          for (const k of st.names) {
            for (const r of this.#ctx.store.resolve(typeUrl, k)) st.held.set(r.name, '');
          }
        }
        continue;
      }
      st.names.delete(key);
      st.resolve.delete(key);
      const held = st.held;
      if (held === undefined) continue;
      // The client drops what only this key named (xDS: unsubscribing is client-side).
      for (const r of this.#ctx.store.resolve(typeUrl, key)) {
        if (!this.#matches(st, r)) held.delete(r.name);
      }
      if (!st.names.has(key)) held.delete(key);
    }
  }

  #matches(st: TypeState, r: StoredResource): boolean {
    return st.wildcard || st.names.has(r.name) || r.aliases.some((a) => st.names.has(a));
  }

  #maybeSend(typeUrl: string): void {
    const st = this.#types.get(typeUrl);
    if (st === undefined || st.inFlight !== undefined || this.#closed) return;
    const out = this.#sharesBody(st) ? this.#sharedBody(typeUrl, st) : this.#ownBody(typeUrl, st);
    if (out === undefined) return;
    st.mustRespond = false;
    const { body, names } = out;
    const nonce = `${this.#ctx.id.toString(36)}.${(++this.#nonce).toString(36)}`;
    st.inFlight = { nonce, names };
    this.#ctx.counters.pushes++;
    this.#ctx.counters.resourcesSent += body.resources;
    this.#ctx.counters.removalsSent += body.removed;
    this.#log.debug({ typeUrl, nonce, resources: body.resources, removed: body.removed }, 'push');
    this.#ctx.write({ body, nonce });
  }

  /**
   * A wildcard stream with no key to answer and nothing held that the store must be compared
   * with gets what every such stream at its revision gets (shared-bodies.ts).
   */
  #sharesBody(st: TypeState): boolean {
    return st.wildcard && st.resolve.size === 0 && (st.fullSync === undefined || st.fullSync.size === 0);
  }

  #sharedBody(typeUrl: string, st: TypeState): Outgoing | undefined {
    const bodies = this.#ctx.bodies;
    if (st.fullSync !== undefined) {
      st.fullSync = undefined;
      st.syncedTo = this.#ctx.store.revision(typeUrl);
      const full = bodies.full(typeUrl);
      return full.resources > 0 || st.mustRespond ? { body: full, names: [] } : undefined;
    }
    const target = this.#ctx.published(typeUrl);
    if (target <= st.syncedTo) return undefined;
    const body = bodies.changes(typeUrl, st.syncedTo, target);
    if (body === undefined) {
      this.#fellBehind(typeUrl);
      return undefined;
    }
    st.syncedTo = target;
    return { body, names: [] };
  }

  /** A response computed for this stream alone: explicit subscriptions, or what it already holds. */
  #ownBody(typeUrl: string, st: TypeState): Outgoing | undefined {
    const store = this.#ctx.store;
    const upserts = new Map<string, StoredResource>();
    const removals = new Set<string>();

    if (st.fullSync !== undefined) {
      this.#collectFullSync(typeUrl, st, st.fullSync, upserts, removals);
      st.fullSync = undefined;
      st.syncedTo = store.revision(typeUrl);
    } else {
      const target = this.#ctx.published(typeUrl);
      if (target > st.syncedTo) {
        const changed = store.changesSince(typeUrl, st.syncedTo, target);
        if (changed === undefined) {
          this.#fellBehind(typeUrl);
          return undefined;
        }
        for (const name of changed) {
          const r = store.get(typeUrl, name);
          if (r !== undefined && this.#matches(st, r)) upserts.set(name, r);
          else if (st.held === undefined || st.held.has(name)) removals.add(name);
        }
        st.syncedTo = target;
      }
    }

    for (const key of st.resolve) {
      const found = store.resolve(typeUrl, key);
      if (found.length === 0 && !upserts.has(key)) removals.add(key);
      for (const r of found) {
        if (st.held?.get(r.name) !== r.version) upserts.set(r.name, r);
      }
    }
    st.resolve.clear();
    for (const name of upserts.keys()) removals.delete(name);

    if (upserts.size === 0 && removals.size === 0 && !st.mustRespond) return undefined;
    const resources = [...upserts.values()];
    const removed = [...removals];
    if (st.held !== undefined) {
      for (const r of resources) st.held.set(r.name, r.version);
      for (const name of removed) st.held.delete(name);
    }
    return {
      body: encodeResponseBody({ typeUrl, systemVersionInfo: String(st.syncedTo), resources, removed }),
      names: st.held === undefined ? [] : resources.map((r) => r.name),
    };
  }

  #fellBehind(typeUrl: string): void {
    this.#fail(
      GrpcStatus.RESOURCE_EXHAUSTED,
      `this client fell too far behind on ${typeUrl} (it has not ACKed while the store changed); reconnect to resynchronise`,
    );
  }

  /** Everything the client lacks given `known` (name → version it holds), and what it holds in vain. */
  #collectFullSync(
    typeUrl: string,
    st: TypeState,
    known: ReadonlyMap<string, string>,
    upserts: Map<string, StoredResource>,
    removals: Set<string>,
  ): void {
    const store = this.#ctx.store;
    if (st.wildcard) {
      for (const r of store.all(typeUrl)) if (known.get(r.name) !== r.version) upserts.set(r.name, r);
      for (const name of known.keys()) if (store.get(typeUrl, name) === undefined) removals.add(name);
      return;
    }
    // Explicit: keep what still matches at the same version (the resolve pass then skips it),
    // remove the rest; the resolve pass sends what the subscribed keys name.
    for (const [name, version] of known) {
      const r = store.get(typeUrl, name);
      if (r !== undefined && this.#matches(st, r)) {
        if (r.version === version) st.held?.set(name, version);
        else upserts.set(name, r);
      } else removals.add(name);
    }
  }

  status(): StreamStatus {
    return {
      node: this.#node,
      caller: this.#caller.subject,
      peer: this.#peer,
      connectedAt: this.#connectedAt.toISOString(),
      types: [...this.#types].map(([typeUrl, st]) => ({
        typeUrl,
        wildcard: st.wildcard,
        subscriptions: st.names.size,
        syncedTo: st.syncedTo,
        inFlightNonce: st.inFlight?.nonce,
        acks: st.acks,
        nacks: st.nacks,
        lastNack: st.lastNack,
      })),
    };
  }
}

// SPDX-License-Identifier: Apache-2.0
// A Kubernetes API stand-in for tests (DESIGN.md decision 6): enough of the API server, over
// HTTP or HTTPS on 127.0.0.1, for the real @kubernetes/client-node to run its informers and typed
// clients against it, so relists, re-watches and error paths are exercised with the library's
// own code.
//
// Served (see resources.ts for the types):
//   GET    collection            list (labelSelector, fieldSelector; list metadata.resourceVersion)
//   GET    collection?watch=true watch: JSON lines {type, object}; resourceVersion (absent or "0": the
//                                current objects as ADDED first), allowWatchBookmarks, timeoutSeconds;
//                                objects entering or leaving a selector arrive as ADDED/DELETED;
//                                an expired resourceVersion gets an ERROR event with a 410 Status
//                                (or HTTP 410 with `goneAsHttpStatus`)
//   GET    item[/status]         get
//   POST   collection            create (namespace from the path)
//   PUT    item[/status]         update, optimistic on metadata.resourceVersion
//   PATCH  item[/status]         json-patch, merge-patch, strategic-merge-patch (as merge patch)
//   DELETE item                  delete, with DeleteOptions preconditions
//   POST   /apis/authentication.k8s.io/v1/tokenreviews   from tokens the test registers
//   GET    /api, /apis, /api/v1, /apis/<group>[/<version>], /version   discovery
// Not served: deletecollection, server-side apply, list pagination and list resourceVersion
// semantics (a list is always the latest state), graceful deletion and finalizers, admission
// beyond the namespace-exists check, RBAC (one optional bearer token guards everything).
//
// Test controls: compact(), closeWatches(), holdWatches()/releaseWatches(), sendBookmarks(),
// failNext(), the request log with nextRequest(), untilWatches(), registerToken(), and direct object access
// (create/replace/remove/get) without going through HTTP.
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { ApiError, badRequest, reasonFor, statusObject } from './status.ts';
import { PATCH_TYPES, type PatchType } from './patch.ts';
import { parseFieldSelector, parseLabelSelector, type Selector } from './selectors.ts';
import {
  API_RESOURCES,
  findResource,
  groupVersion,
  resourceForKind,
  type ApiResource,
  type JsonObject,
} from './resources.ts';
import { Store, type StoreEvent } from './store.ts';
import { mintServingCertificate } from './tls.ts';

/** The audience of tokens the API server accepts for itself (kube-apiserver --api-audiences default). */
export const API_SERVER_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';
/** kube-apiserver's --min-request-timeout: watches without timeoutSeconds end after 30–60 min. */
const DEFAULT_WATCH_TIMEOUT_MS = 30 * 60_000;
const DEFAULT_BOOKMARK_INTERVAL_MS = 60_000;
const MAX_BODY_BYTES = 3 * 1024 * 1024;

export type Verb =
  | 'list'
  | 'watch'
  | 'get'
  | 'create'
  | 'update'
  | 'patch'
  | 'delete'
  | 'tokenreview'
  | 'discovery'
  | 'unknown';

export interface RequestRecord {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly verb: Verb;
  /** Plural of the resource (`pods`), when the path names one. */
  readonly resource: string | undefined;
  readonly namespace: string | undefined;
  readonly name: string | undefined;
  readonly subresource: string | undefined;
  /** The HTTP status answered (for a watch, that of its headers); undefined while pending. */
  status: number | undefined;
}

export interface TokenUser {
  readonly username: string;
  readonly uid?: string;
  readonly groups?: readonly string[];
  readonly extra?: Readonly<Record<string, readonly string[]>>;
}

export interface KubeApiOptions {
  /** Serve HTTPS with a fresh test CA (`caPem`); default plain HTTP. */
  readonly tls?: boolean;
  /** When set, every request must carry `Authorization: Bearer <token>` (else 401). */
  readonly token?: string;
  /** Events kept per resource type for watches to resume from (default 1000). */
  readonly historyLimit?: number;
  /** Bookmark period of watches that allow them (default 60 s, like the API server). */
  readonly bookmarkIntervalMs?: number;
  /** How long a watch without timeoutSeconds lasts (default 30 min). */
  readonly watchTimeoutMs?: number;
  /** Answer a watch from an expired resourceVersion with HTTP 410 instead of an ERROR event. */
  readonly goneAsHttpStatus?: boolean;
}

interface OpenWatch {
  readonly record: RequestRecord;
  readonly res: ServerResponse;
  readonly resource: ApiResource;
  readonly bookmarks: boolean;
  close(graceful: boolean): void;
}

interface Fault {
  remaining: number;
  readonly code: number;
  readonly match: (r: RequestRecord) => boolean;
}

interface Route {
  readonly resource: ApiResource;
  readonly namespace: string | undefined;
  readonly name: string | undefined;
  readonly subresource: string | undefined;
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function metaOf(o: JsonObject): JsonObject {
  return isObject(o.metadata) ? o.metadata : {};
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** The namespace of an object given to the direct-access methods (default `default`, as kubectl). */
function namespaceOf(o: JsonObject): string {
  const ns = metaOf(o).namespace;
  return typeof ns === 'string' ? ns : 'default';
}

/** Resolves `rest` (the segments after /api/v1 or /apis/g/v) to a resource route. */
function route(group: string, version: string, rest: readonly string[]): Route | undefined {
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    const r = findResource(group, version, rest[2]!);
    if (r?.namespaced === true && rest.length <= 5) {
      return { resource: r, namespace: rest[1], name: rest[3], subresource: rest[4] };
    }
  }
  const r = findResource(group, version, rest[0]!);
  if (!r || rest.length > 3) return undefined;
  return { resource: r, namespace: undefined, name: rest[1], subresource: rest[2] };
}

function verbOf(method: string, r: Route | undefined, watching: boolean): Verb {
  if (!r) return 'unknown';
  if (r.name === undefined) {
    if (method === 'GET') return watching ? 'watch' : 'list';
    return method === 'POST' ? 'create' : 'unknown';
  }
  switch (method) {
    case 'GET':
      return 'get';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return 'delete';
    default:
      return 'unknown';
  }
}

function discoveryResources(group: string, version: string): JsonObject[] {
  return API_RESOURCES.filter((r) => r.group === group && r.version === version).flatMap((r) => {
    const main = {
      name: r.plural,
      singularName: r.singular,
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    };
    const status = {
      name: `${r.plural}/status`,
      singularName: '',
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: ['get', 'patch', 'update'],
    };
    return r.statusSubresource ? [main, status] : [main];
  });
}

export class KubeApiServer {
  readonly store: Store;
  /** Every request, in arrival order. */
  readonly requests: RequestRecord[] = [];
  readonly #opts: KubeApiOptions;
  readonly #server: Server;
  readonly #watches = new Set<OpenWatch>();
  readonly #held: (() => void)[] = [];
  #holding = false;
  readonly #faults: Fault[] = [];
  readonly #waiters = new Set<{
    match: (r: RequestRecord) => boolean;
    resolve: (r: RequestRecord) => void;
  }>();
  readonly #watchWaiters = new Set<() => boolean>();
  readonly #tokens = new Map<string, { user: TokenUser; audiences: readonly string[] }>();
  #url = '';
  readonly caPem: string | undefined;

  /** Use startKubeApi(). */
  constructor(opts: KubeApiOptions, server: Server, caPem: string | undefined) {
    this.#opts = opts;
    this.store = new Store(opts.historyLimit);
    this.#server = server;
    this.caPem = caPem;
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#handle(req, res));
  }

  /** `http://127.0.0.1:<port>` or `https://…`. */
  get url(): string {
    return this.#url;
  }

  /** @internal */
  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, '127.0.0.1', () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    const port = (this.#server.address() as AddressInfo).port;
    this.#url = `${this.#opts.tls === true ? 'https' : 'http'}://127.0.0.1:${port}`;
  }

  /** Ends every watch and connection and stops listening. */
  async close(): Promise<void> {
    this.closeWatches();
    this.#held.length = 0; // their connections are destroyed below
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  // ---- test controls ----

  /** Forgets all watch history: a watch from any version before now is answered 410 Gone. */
  compact(): void {
    this.store.compact();
  }

  /**
   * Ends every open watch: by default abruptly (the connection is destroyed, which client-node's
   * ListWatch reports as an error), with `graceful` as a normal end of the stream (the client
   * simply watches again). Returns how many were closed.
   */
  closeWatches(opts: { graceful?: boolean } = {}): number {
    const n = this.#watches.size;
    for (const w of [...this.#watches]) w.close(opts.graceful === true);
    return n;
  }

  /** Open watches, optionally of one resource (plural). */
  openWatches(resource?: string): number {
    return [...this.#watches].filter((w) => resource === undefined || w.resource.plural === resource).length;
  }

  /** Resolves once exactly `n` watches (of `resource`, a plural, if given) are open. */
  untilWatches(n: number, resource?: string, timeoutMs = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const waiter = (): boolean => {
        if (this.openWatches(resource) !== n) return false;
        this.#watchWaiters.delete(waiter);
        clearTimeout(timer);
        resolve();
        return true;
      };
      const timer = setTimeout(() => {
        this.#watchWaiters.delete(waiter);
        reject(new Error(`${this.openWatches(resource)} watches open after ${timeoutMs} ms, expected ${n}`));
      }, timeoutMs);
      this.#watchWaiters.add(waiter);
      waiter();
    });
  }

  /** New watch requests get no answer (not even headers) until releaseWatches(): a partition. */
  holdWatches(): void {
    this.#holding = true;
  }

  /** Answers the held watch requests now, from the store's current state. */
  releaseWatches(): void {
    this.#holding = false;
    for (const start of this.#held.splice(0)) start();
  }

  /** Sends a BOOKMARK with the current resourceVersion on every watch that allows them. */
  sendBookmarks(): void {
    for (const w of this.#watches) if (w.bookmarks) this.#writeBookmark(w);
  }

  /** The next `n` requests matching `match` (default: any) are answered with an error Status of `code`. */
  failNext(n: number, code: number, match: (r: RequestRecord) => boolean = () => true): void {
    this.#faults.push({ remaining: n, code, match });
  }

  /** Resolves with the next request (arriving after this call) that matches. */
  nextRequest(match: (r: RequestRecord) => boolean, timeoutMs = 30_000): Promise<RequestRecord> {
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (r: RequestRecord) => {
          clearTimeout(timer);
          resolve(r);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        const recent = this.requests
          .slice(-10)
          .map((r) => `${r.method} ${r.path}?${new URLSearchParams(r.query).toString()}`);
        reject(new Error(`no matching request within ${timeoutMs} ms; last requests: ${recent.join(' | ')}`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  /** TokenReviews of `token` authenticate `user` for `audiences` (default the API server's own). */
  registerToken(token: string, user: TokenUser, audiences: readonly string[] = [API_SERVER_AUDIENCE]): void {
    this.#tokens.set(token, { user, audiences });
  }

  /** A bound ServiceAccount token, with the user and extras the API server reports for one. */
  registerServiceAccountToken(
    token: string,
    sa: { namespace: string; name: string; podName?: string; podUid?: string; nodeName?: string },
    audiences: readonly string[] = [API_SERVER_AUDIENCE],
  ): void {
    const extra: Record<string, string[]> = {};
    if (sa.podName !== undefined) extra['authentication.kubernetes.io/pod-name'] = [sa.podName];
    if (sa.podUid !== undefined) extra['authentication.kubernetes.io/pod-uid'] = [sa.podUid];
    if (sa.nodeName !== undefined) extra['authentication.kubernetes.io/node-name'] = [sa.nodeName];
    this.registerToken(
      token,
      {
        username: `system:serviceaccount:${sa.namespace}:${sa.name}`,
        uid: `sa-${sa.namespace}-${sa.name}`,
        groups: ['system:serviceaccounts', `system:serviceaccounts:${sa.namespace}`, 'system:authenticated'],
        extra,
      },
      audiences,
    );
  }

  unregisterToken(token: string): void {
    this.#tokens.delete(token);
  }

  // ---- direct object access (no HTTP, no request log) ----

  #resourceOf(o: JsonObject): ApiResource {
    const r = resourceForKind(str(o.apiVersion), str(o.kind));
    if (!r) throw new Error(`the stand-in does not serve ${str(o.apiVersion)} ${str(o.kind)}`);
    return r;
  }

  /** Creates `o` (namespace from its metadata, default `default`) as a POST would. */
  create(o: JsonObject): JsonObject {
    const r = this.#resourceOf(o);
    const ns = r.namespaced ? namespaceOf(o) : undefined;
    return this.store.create(r, ns, o);
  }

  /** Replaces `o` whatever its current resourceVersion (an unconditional PUT). */
  replace(o: JsonObject): JsonObject {
    const r = this.#resourceOf(o);
    const meta = metaOf(o);
    const { resourceVersion: _rv, ...rest } = meta;
    return this.store.update(r, r.namespaced ? namespaceOf(o) : undefined, str(meta.name), {
      ...o,
      metadata: rest,
    });
  }

  remove(apiVersion: string, kind: string, namespace: string | undefined, name: string): JsonObject {
    return this.store.delete(this.#resourceOf({ apiVersion, kind }), namespace, name);
  }

  get(apiVersion: string, kind: string, namespace: string | undefined, name: string): JsonObject {
    return this.store.get(this.#resourceOf({ apiVersion, kind }), namespace, name);
  }

  // ---- HTTP ----

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    let segments: string[];
    try {
      segments = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    } catch {
      segments = ['(malformed path)'];
    }
    const query = Object.fromEntries(url.searchParams);
    let r: Route | undefined;
    let discovery: JsonObject | undefined;
    let tokenReview = false;
    if (segments[0] === 'api' && segments[1] === 'v1' && segments.length > 2)
      r = route('', 'v1', segments.slice(2));
    else if (segments[0] === 'apis' && segments.length > 3) {
      tokenReview =
        segments.length === 4 &&
        segments[1] === 'authentication.k8s.io' &&
        segments[2] === 'v1' &&
        segments[3] === 'tokenreviews';
      r = route(segments[1]!, segments[2]!, segments.slice(3));
    } else discovery = this.#discovery(segments);
    const watching = query.watch === 'true' || query.watch === '1';
    const verb: Verb = tokenReview
      ? 'tokenreview'
      : discovery
        ? 'discovery'
        : verbOf(req.method ?? '', r, watching);
    const record: RequestRecord = {
      method: req.method ?? '',
      path: url.pathname,
      query,
      verb,
      resource: r?.resource.plural ?? (tokenReview ? 'tokenreviews' : undefined),
      namespace: r?.namespace,
      name: r?.name,
      subresource: r?.subresource,
      status: undefined,
    };
    this.requests.push(record);
    for (const w of [...this.#waiters]) {
      if (w.match(record)) {
        this.#waiters.delete(w);
        w.resolve(record);
      }
    }
    res.on('error', () => undefined);
    req.on('error', () => undefined);

    if (this.#opts.token !== undefined && req.headers.authorization !== `Bearer ${this.#opts.token}`) {
      this.#send(res, record, 401, statusObject(401, 'Unauthorized'));
      return;
    }
    const fault = this.#faults.find((f) => f.remaining > 0 && f.match(record));
    if (fault) {
      fault.remaining--;
      this.#send(
        res,
        record,
        fault.code,
        statusObject(fault.code, `injected failure (${reasonFor(fault.code)})`),
      );
      return;
    }
    if (discovery) {
      this.#send(res, record, 200, discovery);
      return;
    }
    this.#serve(req, res, record, r, tokenReview, watching).catch((err: unknown) => {
      const e =
        err instanceof ApiError ? err : new ApiError(500, err instanceof Error ? err.message : String(err));
      if (!res.headersSent) this.#send(res, record, e.code, e.toStatus());
      else res.destroy();
    });
  }

  async #serve(
    req: IncomingMessage,
    res: ServerResponse,
    record: RequestRecord,
    r: Route | undefined,
    tokenReview: boolean,
    watching: boolean,
  ): Promise<void> {
    if (tokenReview) {
      if (req.method !== 'POST')
        throw new ApiError(405, `the server does not allow this method on the requested resource`);
      this.#send(res, record, 201, this.#tokenReview(await this.#body(req)));
      return;
    }
    if (!r) throw new ApiError(404, 'the server could not find the requested resource');
    const { resource, namespace, name, subresource } = r;
    if (subresource !== undefined && !(subresource === 'status' && resource.statusSubresource)) {
      throw new ApiError(404, 'the server could not find the requested resource');
    }
    const status = subresource === 'status';
    if (name === undefined) {
      if (req.method === 'GET') {
        const labels = parseLabelSelector(record.query.labelSelector ?? null);
        const fields = parseFieldSelector(resource, record.query.fieldSelector ?? null);
        const match: Selector = (o) => labels(o) && fields(o);
        if (watching) this.#watch(req, res, record, resource, namespace, match);
        else this.#list(res, record, resource, namespace, match);
        return;
      }
      if (req.method === 'POST') {
        if (resource.namespaced && namespace === undefined)
          throw new ApiError(405, 'the server does not allow this method on the requested resource');
        this.#send(
          res,
          record,
          201,
          this.store.create(resource, namespace, this.#objectBody(await this.#body(req))),
        );
        return;
      }
      throw new ApiError(405, 'the server does not allow this method on the requested resource');
    }
    if (resource.namespaced && namespace === undefined)
      throw new ApiError(404, 'the server could not find the requested resource');
    switch (req.method ?? '') {
      case 'GET':
        this.#send(res, record, 200, this.store.get(resource, namespace, name));
        return;
      case 'PUT':
        this.#send(
          res,
          record,
          200,
          this.store.update(resource, namespace, name, this.#objectBody(await this.#body(req)), status),
        );
        return;
      case 'PATCH': {
        const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim() as PatchType;
        if (!PATCH_TYPES.includes(type)) {
          throw new ApiError(
            415,
            `the body of the request was in an unknown format - accepted media types include: ${PATCH_TYPES.join(', ')}`,
          );
        }
        this.#send(
          res,
          record,
          200,
          this.store.patch(resource, namespace, name, type, await this.#body(req, true), status),
        );
        return;
      }
      case 'DELETE': {
        const body = await this.#body(req, true);
        const pre = isObject(body) && isObject(body.preconditions) ? body.preconditions : {};
        this.#send(res, record, 200, this.store.delete(resource, namespace, name, pre));
        return;
      }
      default:
        throw new ApiError(405, 'the server does not allow this method on the requested resource');
    }
  }

  #send(res: ServerResponse, record: RequestRecord, code: number, body: JsonObject): void {
    record.status = code;
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  async #body(req: IncomingMessage, anyContentType = false): Promise<unknown> {
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      const chunk = c as Buffer;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) throw new ApiError(413, 'the request body is too large');
      chunks.push(chunk);
    }
    if (size === 0) return undefined;
    if (!anyContentType && type !== 'application/json') {
      throw new ApiError(
        415,
        `the body of the request was in an unknown format - accepted media types include: application/json`,
      );
    }
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    } catch {
      throw badRequest('the request body is not valid JSON');
    }
  }

  #objectBody(body: unknown): JsonObject {
    if (!isObject(body)) throw badRequest('the request body must be a JSON object');
    return body;
  }

  #list(
    res: ServerResponse,
    record: RequestRecord,
    r: ApiResource,
    namespace: string | undefined,
    match: Selector,
  ): void {
    const items = this.store
      .list(r, namespace)
      .filter(match)
      .map((o) => {
        if (!r.builtin) return o;
        const { apiVersion: _a, kind: _k, ...rest } = o;
        return rest;
      });
    this.#send(res, record, 200, {
      kind: r.listKind,
      apiVersion: groupVersion(r),
      metadata: { resourceVersion: String(this.store.resourceVersion) },
      items,
    });
  }

  #watch(
    req: IncomingMessage,
    res: ServerResponse,
    record: RequestRecord,
    r: ApiResource,
    namespace: string | undefined,
    match: Selector,
  ): void {
    const rvParam = record.query.resourceVersion ?? '';
    let from: number | undefined;
    if (rvParam !== '' && rvParam !== '0') {
      if (!/^[0-9]+$/.test(rvParam)) throw badRequest(`invalid resource version: ${rvParam}`);
      from = Number(rvParam);
    }
    const timeoutParam = record.query.timeoutSeconds;
    if (timeoutParam !== undefined && !/^[0-9]+$/.test(timeoutParam))
      throw badRequest(`invalid timeoutSeconds: ${timeoutParam}`);
    const start = (): void => {
      if (res.destroyed) return; // the client gave up while held
      this.#startWatch(
        res,
        record,
        r,
        namespace,
        match,
        from,
        timeoutParam === undefined ? undefined : Number(timeoutParam) * 1000,
      );
    };
    if (this.#holding) {
      this.#held.push(start);
      return;
    }
    start();
  }

  #startWatch(
    res: ServerResponse,
    record: RequestRecord,
    r: ApiResource,
    namespace: string | undefined,
    match: Selector,
    from: number | undefined,
    timeoutMs: number | undefined,
  ): void {
    const inScope = (o: JsonObject | undefined): boolean =>
      o !== undefined && (namespace === undefined || metaOf(o).namespace === namespace) && match(o);
    // What a watcher with this scope sees of an event: objects entering the scope are ADDED,
    // objects leaving it DELETED (with their new state), as the API server's watch filter does.
    const visible = (e: StoreEvent): { type: string; object: JsonObject } | undefined => {
      if (e.resource !== r) return undefined;
      const now = e.type !== 'DELETED' && inScope(e.object);
      const before = e.type === 'ADDED' ? false : inScope(e.previous);
      if (e.type === 'DELETED') return before ? { type: 'DELETED', object: e.object } : undefined;
      if (now) return { type: before ? 'MODIFIED' : 'ADDED', object: e.object };
      return before ? { type: 'DELETED', object: e.object } : undefined;
    };

    let replay: readonly StoreEvent[] = [];
    if (from !== undefined) {
      const events = this.store.eventsSince(r, from);
      if (events === 'expired') {
        const message = `too old resource version: ${from} (${this.store.oldestResumable(r)})`;
        if (this.#opts.goneAsHttpStatus === true) {
          this.#send(res, record, 410, statusObject(410, message, 'Expired'));
          return;
        }
        record.status = 200;
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(`${JSON.stringify({ type: 'ERROR', object: statusObject(410, message, 'Expired') })}\n`);
        return;
      }
      replay = events;
    }

    record.status = 200;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const write = (type: string, object: JsonObject): void => {
      res.write(`${JSON.stringify({ type, object })}\n`);
    };
    if (from === undefined) {
      for (const o of this.store.list(r, namespace)) if (match(o)) write('ADDED', o);
    }
    for (const e of replay) {
      const v = visible(e);
      if (v) write(v.type, v.object);
    }
    const unsubscribe = this.store.subscribe((e) => {
      const v = visible(e);
      if (v) write(v.type, structuredClone(v.object));
    });

    const bookmarks = record.query.allowWatchBookmarks === 'true';
    const w: OpenWatch = {
      record,
      res,
      resource: r,
      bookmarks,
      close: (graceful) => {
        cleanup();
        if (graceful) res.end();
        else res.destroy();
      },
    };
    const interval = bookmarks
      ? setInterval(
          () => this.#writeBookmark(w),
          this.#opts.bookmarkIntervalMs ?? DEFAULT_BOOKMARK_INTERVAL_MS,
        )
      : undefined;
    const timeout = setTimeout(
      () => {
        // The API server sends a last bookmark before it times a watch out, so the client
        // resumes from the newest version.
        if (bookmarks) this.#writeBookmark(w);
        w.close(true);
      },
      Math.min(timeoutMs ?? Infinity, this.#opts.watchTimeoutMs ?? DEFAULT_WATCH_TIMEOUT_MS),
    );
    const cleanup = (): void => {
      unsubscribe();
      clearInterval(interval);
      clearTimeout(timeout);
      if (this.#watches.delete(w)) this.#watchesChanged();
    };
    res.on('close', cleanup);
    this.#watches.add(w);
    this.#watchesChanged();
  }

  #watchesChanged(): void {
    for (const w of [...this.#watchWaiters]) w();
  }

  #writeBookmark(w: OpenWatch): void {
    w.res.write(
      `${JSON.stringify({
        type: 'BOOKMARK',
        object: {
          kind: w.resource.kind,
          apiVersion: groupVersion(w.resource),
          metadata: { resourceVersion: String(this.store.resourceVersion) },
        },
      })}\n`,
    );
  }

  #tokenReview(body: unknown): JsonObject {
    if (!isObject(body) || !isObject(body.spec) || typeof body.spec.token !== 'string') {
      throw badRequest('TokenReview.spec.token: Required value');
    }
    const spec = body.spec;
    const wanted =
      Array.isArray(spec.audiences) && spec.audiences.length > 0
        ? (spec.audiences as string[])
        : [API_SERVER_AUDIENCE];
    const entry = this.#tokens.get(spec.token as string);
    let status: JsonObject;
    if (!entry)
      status = { authenticated: false, user: {}, error: '[invalid bearer token, token lookup failed]' };
    else {
      const audiences = entry.audiences.filter((a) => wanted.includes(a));
      status =
        audiences.length === 0
          ? {
              authenticated: false,
              user: {},
              error: `[invalid bearer token, token audiences ${JSON.stringify(entry.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]`,
            }
          : {
              authenticated: true,
              user: {
                username: entry.user.username,
                ...(entry.user.uid !== undefined ? { uid: entry.user.uid } : {}),
                groups: entry.user.groups ?? [],
                ...(entry.user.extra !== undefined ? { extra: entry.user.extra } : {}),
              },
              audiences,
            };
    }
    return {
      kind: 'TokenReview',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { creationTimestamp: null },
      spec,
      status,
    };
  }

  #discovery(segments: readonly string[]): JsonObject | undefined {
    const groups = [
      ...new Set(API_RESOURCES.filter((r) => r.group !== '').map((r) => r.group)),
      'authentication.k8s.io',
    ];
    const groupDoc = (g: string): JsonObject => ({
      name: g,
      versions: [{ groupVersion: `${g}/v1`, version: 'v1' }],
      preferredVersion: { groupVersion: `${g}/v1`, version: 'v1' },
    });
    const [a, b, c] = segments;
    if (a === 'version' && segments.length === 1)
      return { major: '1', minor: '33', gitVersion: 'v1.33.0-test-stand-in', platform: 'linux/amd64' };
    if (a === 'api' && segments.length === 1)
      return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] };
    if (a === 'api' && b === 'v1' && segments.length === 2) {
      return {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: 'v1',
        resources: discoveryResources('', 'v1'),
      };
    }
    if (a === 'apis' && segments.length === 1)
      return { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map(groupDoc) };
    if (a === 'apis' && b !== undefined && groups.includes(b) && segments.length === 2)
      return { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(b) };
    if (a === 'apis' && b !== undefined && c === 'v1' && groups.includes(b) && segments.length === 3) {
      const resources =
        b === 'authentication.k8s.io'
          ? [
              {
                name: 'tokenreviews',
                singularName: 'tokenreview',
                namespaced: false,
                kind: 'TokenReview',
                verbs: ['create'],
              },
            ]
          : discoveryResources(b, 'v1');
      return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: `${b}/v1`, resources };
    }
    return undefined;
  }
}

/** Starts a stand-in API server on 127.0.0.1 with an ephemeral port. Close it in t.teardown. */
export async function startKubeApi(opts: KubeApiOptions = {}): Promise<KubeApiServer> {
  let server: Server;
  let caPem: string | undefined;
  if (opts.tls === true) {
    const cert = await mintServingCertificate();
    server = createHttpsServer({ key: cert.keyPem, cert: cert.certPem });
    caPem = cert.caPem;
  } else server = createHttpServer();
  // Watches are long-lived: no per-request or headers timeout may cut them.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 5_000;
  const api = new KubeApiServer(opts, server, caPem);
  await api.listen();
  return api;
}

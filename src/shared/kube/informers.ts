// SPDX-License-Identifier: Apache-2.0
// A set of Kubernetes informers over @kubernetes/client-node's ListWatch, shared by the
// controller (every watched kind) and the node agent (its node's Pods, Namespaces).
//
// For each resource a ListWatch lists, then watches from the list's resourceVersion and keeps a
// cache; this class turns its callbacks into one stream of add/update/delete events (in the
// server's order within a resource; resources arrive on separate streams, so across resources
// in arrival order) and resolves `start()` once every resource has been listed. What it adds to
// the client library:
//
// - Restarts. ListWatch re-watches by itself after a clean end of a watch, a client-side timeout
//   and a `410 Gone` (the latter with a relist, whose deletions it reports), but after any other
//   failure (list error, watch answered with an error status, connection dropped mid-stream) it
//   calls its error callbacks and stops for good. Here every such error becomes a warning and a
//   restart after a jittered exponential backoff (500 ms doubling to 30 s by default, ±20 %),
//   resuming from the last resourceVersion so nothing is relisted unless the server says 410.
// - Watch parameters the library does not send: `allowWatchBookmarks=true`, so a quiet
//   resource's resourceVersion stays fresh (a restart then resumes instead of relisting), and a
//   server-side `timeoutSeconds`, randomised per watch like client-go (5–10 min), so watches are
//   renewed regularly.
// - The list request itself, made with the kubeconfig's credentials and TLS settings through the
//   library's HTTP layer but without its model deserialisation: listed objects and watched
//   objects are the same plain JSON (timestamps as strings), and list items get the
//   apiVersion/kind the API server leaves out of built-in lists.
// - A clean stop: no callback, restart, delayed reconnect or late watch survives stop().
import { setTimeout as delay } from 'node:timers/promises';
import {
  HttpMethod,
  IsomorphicFetchHttpLibrary,
  ListWatch,
  RequestContext,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { EventEmitter } from 'eventemitter3';
import { jitteredBackoffMs } from '../backoff.ts';
import { errorMessage } from '../errors.ts';
import { KubeError } from './errors.ts';
import { apiVersionOf, collectionPath, qualifiedName, type ResourceType } from './resources.ts';

export const DEFAULT_INITIAL_BACKOFF_MS = 500;
export const DEFAULT_MAX_BACKOFF_MS = 30_000;
export const DEFAULT_LIST_TIMEOUT_MS = 60_000;
/** client-go's reflector: watch timeouts uniformly in [5, 10) minutes. */
const MIN_WATCH_TIMEOUT_SECONDS = 300;

/** A resource to watch: its type, optionally narrowed by selectors (`spec.nodeName=node-1`). */
export interface WatchedResource extends ResourceType {
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
}

export interface InformerEvent {
  readonly type: 'add' | 'update' | 'delete';
  /** The WatchedResource given to the constructor (the same object). */
  readonly resource: WatchedResource;
  /** The object as the API served it; for a delete, its last known state. Shared with the cache: do not mutate. */
  readonly object: KubernetesObject;
}

export interface KubeInformersEvents {
  event: (e: InformerEvent) => void;
  /** A failure the informers recover from by themselves (they retry); for logs. */
  warning: (message: string) => void;
}

export interface KubeInformersOptions {
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** The `timeoutSeconds` of each watch request; default a random value in [300, 600). */
  watchTimeoutSeconds?: number;
  listTimeoutMs?: number;
  /** Uniform [0, 1) source for jitter and watch timeouts. */
  random?: () => number;
}

/** A Watch that adds bookmarks and a server-side timeout, and never opens a watch once stopped. */
class InformerWatch extends Watch {
  readonly #signal: AbortSignal;
  readonly #timeoutSeconds: () => number;

  constructor(kc: KubeConfig, signal: AbortSignal, timeoutSeconds: () => number) {
    super(kc);
    this.#signal = signal;
    this.#timeoutSeconds = timeoutSeconds;
  }

  override async watch(...args: Parameters<Watch['watch']>): Promise<AbortController> {
    const [path, query, callback, done] = args;
    if (this.#stopped()) {
      // ListWatch keeps the controller to abort later; there is nothing to abort.
      const idle = new AbortController();
      idle.abort();
      return idle;
    }
    let controller: AbortController;
    try {
      controller = await super.watch(
        path,
        { ...query, allowWatchBookmarks: true, timeoutSeconds: this.#timeoutSeconds() },
        callback,
        done,
      );
    } catch (err) {
      // Watch throws, without calling done, when it cannot build the request (credentials
      // plugin failing, no current cluster). ListWatch would leave that rejection unhandled;
      // reported through done it becomes an error callback, and a retry.
      done(err);
      const idle = new AbortController();
      idle.abort();
      return idle;
    }
    // stop() ran while the request was being answered: ListWatch had nothing to abort yet.
    if (this.#stopped()) controller.abort();
    return controller;
  }

  // A method, so TypeScript does not carry the first check's narrowing across the await.
  #stopped(): boolean {
    return this.#signal.aborted;
  }
}

interface Informer {
  readonly resource: WatchedResource;
  /** For messages: `pods`, `pods (fieldSelector spec.nodeName=n1)`. */
  readonly name: string;
  readonly lw: ListWatch<KubernetesObject>;
  /** A list has succeeded at least once (the cache holds a full state). */
  listed: boolean;
  synced: boolean;
  /** Errors since the last successful (re)start; drives the backoff. */
  failures: number;
  /** Errors ever seen; tells whether a start() attempt hit one. */
  errors: number;
  restart: NodeJS.Timeout | undefined;
}

function describeResource(r: WatchedResource): string {
  const sel = [
    r.labelSelector !== undefined ? `labelSelector ${r.labelSelector}` : '',
    r.fieldSelector !== undefined ? `fieldSelector ${r.fieldSelector}` : '',
  ].filter(Boolean);
  return sel.length > 0 ? `${qualifiedName(r)} (${sel.join(', ')})` : qualifiedName(r);
}

/** The message of an error, its HTTP status if any, and its causes (fetch failures hide the reason there). */
function explain(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 4; depth++) {
    const status = (cur as { statusCode?: unknown }).statusCode;
    const message = errorMessage(cur);
    // client-node's watch errors carry the status text only ("Service Unavailable").
    parts.push(
      typeof status === 'number' && !message.includes(`HTTP ${status}`)
        ? `${message} (HTTP ${status})`
        : message,
    );
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return parts.join(': ');
}

/** The `message` of a Kubernetes Status body, or the start of the body. */
function statusMessage(body: string): string {
  try {
    const parsed: unknown = JSON.parse(body);
    const message = (parsed as { message?: unknown } | null)?.message;
    if (typeof message === 'string') return message;
  } catch {
    // not JSON: fall through to the raw text
  }
  return body.slice(0, 200);
}

function positive(name: string, v: number | undefined, def: number): number {
  const n = v ?? def;
  if (!Number.isFinite(n) || n <= 0)
    throw new Error(`KubeInformers: ${name} must be a positive number (got ${String(v)})`);
  return n;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export class KubeInformers extends EventEmitter<KubeInformersEvents> {
  readonly #kc: KubeConfig;
  readonly #informers = new Map<WatchedResource, Informer>();
  readonly #abort = new AbortController();
  readonly #http = new IsomorphicFetchHttpLibrary();
  readonly #initialBackoff: number;
  readonly #maxBackoff: number;
  readonly #listTimeout: number;
  readonly #random: () => number;
  #started = false;
  readonly #synced: PromiseWithResolvers<void> = Promise.withResolvers();

  constructor(kc: KubeConfig, resources: readonly WatchedResource[], opts: KubeInformersOptions = {}) {
    super();
    if (resources.length === 0) throw new Error('KubeInformers needs at least one resource');
    this.#kc = kc;
    this.#initialBackoff = positive('initialBackoffMs', opts.initialBackoffMs, DEFAULT_INITIAL_BACKOFF_MS);
    this.#maxBackoff = positive('maxBackoffMs', opts.maxBackoffMs, DEFAULT_MAX_BACKOFF_MS);
    this.#listTimeout = positive('listTimeoutMs', opts.listTimeoutMs, DEFAULT_LIST_TIMEOUT_MS);
    if (opts.watchTimeoutSeconds !== undefined) positive('watchTimeoutSeconds', opts.watchTimeoutSeconds, 0);
    this.#random = opts.random ?? Math.random;
    const fixedTimeout = opts.watchTimeoutSeconds;
    const timeoutSeconds = (): number =>
      fixedTimeout ?? Math.floor(MIN_WATCH_TIMEOUT_SECONDS * (1 + this.#random()));
    // The promise is observed through start(); this keeps a rejection from stop() before
    // anyone awaited it from being reported as unhandled.
    this.#synced.promise.catch(() => undefined);
    for (const resource of resources) {
      if (this.#informers.has(resource)) throw new Error(`${describeResource(resource)} is listed twice`);
      const watch = new InformerWatch(kc, this.#abort.signal, timeoutSeconds);
      const lw = new ListWatch<KubernetesObject>(
        collectionPath(resource),
        watch,
        () => this.#list(inf),
        false,
        resource.labelSelector,
        resource.fieldSelector,
        // ListWatch's own reconnect delay (after a watch ended with no event) ends early on stop().
        { delayFn: (ms) => delay(ms, undefined, { signal: this.#abort.signal }).catch(() => undefined) },
      );
      const inf: Informer = {
        resource,
        name: describeResource(resource),
        lw,
        listed: false,
        synced: false,
        failures: 0,
        errors: 0,
        restart: undefined,
      };
      lw.on('add', (o) => this.#emit('add', inf, o));
      lw.on('update', (o) => this.#emit('update', inf, o));
      lw.on('delete', (o) => this.#emit('delete', inf, o));
      lw.on('error', (err) => this.#onError(inf, err));
      this.#informers.set(resource, inf);
    }
  }

  /** Lists and watches every resource; resolves once each has been listed (its 'add' events emitted). */
  start(): Promise<void> {
    if (this.#started) throw new Error('KubeInformers.start() called twice');
    this.#started = true;
    for (const inf of this.#informers.values()) void this.#run(inf);
    return this.#synced.promise;
  }

  /** Stops every informer. A start() still waiting for the initial lists rejects (KUBE_ERR_STOPPED). */
  async stop(): Promise<void> {
    if (this.#abort.signal.aborted) return;
    this.#abort.abort();
    for (const inf of this.#informers.values()) {
      if (inf.restart !== undefined) clearTimeout(inf.restart);
      inf.restart = undefined;
    }
    await Promise.all([...this.#informers.values()].map((inf) => inf.lw.stop()));
    this.#synced.reject(
      new KubeError('KUBE_ERR_STOPPED', 'the informers were stopped before every resource was listed'),
    );
  }

  /** The cached objects of a resource given to the constructor. */
  list(resource: WatchedResource, namespace?: string): readonly KubernetesObject[] {
    return this.#informer(resource).lw.list(namespace);
  }

  get(resource: WatchedResource, name: string, namespace?: string): KubernetesObject | undefined {
    return this.#informer(resource).lw.get(name, namespace);
  }

  #informer(resource: WatchedResource): Informer {
    const inf = this.#informers.get(resource);
    if (!inf) throw new Error(`${describeResource(resource)} is not one of the watched resources`);
    return inf;
  }

  get #stopped(): boolean {
    return this.#abort.signal.aborted;
  }

  #emit(type: InformerEvent['type'], inf: Informer, object: KubernetesObject): void {
    if (this.#stopped) return;
    // Built-in list items come without apiVersion and kind; every consumer wants them.
    object.apiVersion ??= apiVersionOf(inf.resource);
    object.kind ??= inf.resource.kind;
    try {
      this.emit('event', { type, resource: inf.resource, object });
    } catch (err) {
      // client-node calls us from a handler that swallows exceptions; say what happened.
      this.emit(
        'warning',
        `a listener failed on ${type} of ${inf.name} ${object.metadata?.name ?? ''}: ${explain(err)}`,
      );
    }
  }

  /** One (re)start of an informer: list if it has no resourceVersion, then watch. */
  async #run(inf: Informer): Promise<void> {
    const errorsBefore = inf.errors;
    try {
      await inf.lw.start();
    } catch (err) {
      // start() rejects only before any request (credentials plugin, no current cluster).
      this.#onError(inf, err);
      return;
    }
    if (this.#stopped) return;
    if (inf.errors === errorsBefore) inf.failures = 0;
    if (inf.listed && !inf.synced) {
      inf.synced = true;
      if ([...this.#informers.values()].every((i) => i.synced)) this.#synced.resolve();
    }
  }

  #onError(inf: Informer, err: unknown): void {
    // Stopping aborts the watch, which ListWatch reports as an error.
    if (this.#stopped) return;
    inf.errors++;
    // One restart at a time; a second report of the same failure changes nothing.
    if (inf.restart !== undefined) return;
    const wait = jitteredBackoffMs(inf.failures, this.#initialBackoff, this.#maxBackoff, this.#random);
    inf.failures++;
    // List failures are KubeErrors that say so; anything else came from the watch.
    const what = err instanceof KubeError ? explain(err) : `watch failed: ${explain(err)}`;
    this.emit('warning', `${inf.name}: ${what}; retrying in ${wait} ms`);
    inf.restart = setTimeout(() => {
      inf.restart = undefined;
      void this.#run(inf);
    }, wait);
  }

  /** The list request of one informer (ListWatch calls it on start and after a 410). */
  async #list(inf: Informer): Promise<KubernetesListObject<KubernetesObject>> {
    let list: KubernetesListObject<KubernetesObject>;
    try {
      list = await this.#fetchList(inf.resource);
    } catch (err) {
      if (err instanceof KubeError) throw err;
      throw new KubeError('KUBE_ERR_API', 'list failed', { cause: err });
    }
    // ListWatch would go on to open a watch that nobody aborts any more.
    if (this.#stopped) throw new KubeError('KUBE_ERR_STOPPED', 'stopped while listing');
    if (inf.listed) {
      this.emit('warning', `${inf.name}: the watch's resourceVersion expired (410 Gone); relisted`);
    }
    inf.listed = true;
    return list;
  }

  async #fetchList(r: WatchedResource): Promise<KubernetesListObject<KubernetesObject>> {
    const fail = (message: string, opts?: { cause?: unknown; statusCode?: number }): KubeError =>
      new KubeError('KUBE_ERR_API', `list failed: ${message}`, opts);
    const cluster = this.#kc.getCurrentCluster();
    if (!cluster) throw fail('the kubeconfig has no current cluster; set current-context');
    const url = new URL(cluster.server + collectionPath(r));
    if (r.labelSelector !== undefined) url.searchParams.set('labelSelector', r.labelSelector);
    if (r.fieldSelector !== undefined) url.searchParams.set('fieldSelector', r.fieldSelector);
    const ctx = new RequestContext(url.toString(), HttpMethod.GET);
    ctx.setHeaderParam('Accept', 'application/json');
    await this.#kc.applySecurityAuthentication(ctx);
    ctx.setSignal(AbortSignal.any([AbortSignal.timeout(this.#listTimeout), this.#abort.signal]));
    const res = await this.#http.send(ctx).toPromise();
    const body = await res.body.text();
    if (res.httpStatusCode !== 200) {
      throw fail(`HTTP ${res.httpStatusCode}: ${statusMessage(body)}`, { statusCode: res.httpStatusCode });
    }
    let list: unknown;
    try {
      list = JSON.parse(body);
    } catch (err) {
      throw fail('the answer is not JSON', { cause: err });
    }
    if (!isObject(list) || !Array.isArray(list.items) || !list.items.every(isObject)) {
      throw fail('the answer is not a list (no items array of objects)');
    }
    return list as unknown as KubernetesListObject<KubernetesObject>;
  }
}

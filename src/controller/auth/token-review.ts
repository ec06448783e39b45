// SPDX-License-Identifier: Apache-2.0
// Cluster-mode authentication of gRPC callers: the bearer token is a projected ServiceAccount
// token, checked with a Kubernetes TokenReview (authentication.k8s.io/v1) for the audience
// istio-ca (ambient-protocols.md §4 "Authentication at istiod"; istio/istio:
// security/pkg/server/ca/authenticate/kubeauth and security/pkg/k8s/tokenreview).
//
// A token of a trusted node-agent ServiceAccount becomes a NodeCaller: the controller passes
// CA_TRUSTED_NODE_ACCOUNTS, by default `<root namespace>/ztunnel` (src/controller/config.ts);
// without the option, istio-system/ztunnel. Its node comes from the bound token itself: the
// `authentication.kubernetes.io/node-name` extra (Kubernetes ≥ 1.30), or else the pod in the
// `pod-name`/`pod-uid` extras, looked up in the controller's model — a pod deleted and
// recreated under the same name has another UID, so a token of the old pod is refused
// (checklist B.35, istio/istio:security/pkg/server/ca/node_auth.go). Any other ServiceAccount
// becomes a WorkloadCaller; anything else is refused.
//
// Positive results are cached briefly (bounded in time, in entries, and by the token's own
// expiry) and concurrent reviews of one token share one request, so 500 pods starting on a node
// cost one review, not 500. The price: a token revoked, or a pod deleted, is noticed up to one
// cache TTL (default 1 min) late. Failures are never cached: a TokenReview API that is down,
// slow or answering garbage means "not authenticated" now, and the next call asks again.
import { createHash } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import {
  AuthenticationV1Api,
  Observable,
  type KubeConfig,
  type ObservableMiddleware,
  type V1TokenReview,
  type V1UserInfo,
} from '@kubernetes/client-node';
import { errorMessage } from '../../shared/errors.ts';
import { bearerToken } from './bearer.ts';
import { AuthenticationError } from './errors.ts';
import type { Authenticator, Caller } from './types.ts';

/** The audience ztunnel's projected token is minted for (Istio TOKEN_AUDIENCES default). */
export const CA_AUDIENCE = 'istio-ca';
/** Istio CA_TRUSTED_NODE_ACCOUNTS chart default: the ztunnel DaemonSet's ServiceAccount. */
export const DEFAULT_NODE_SERVICE_ACCOUNTS: readonly string[] = [
  'system:serviceaccount:istio-system:ztunnel',
];
/** ztunnel's CLUSTER_ID default, sent as the `clusterid` metadata. */
export const DEFAULT_CLUSTER_ID = 'Kubernetes';
export const DEFAULT_CACHE_TTL_MS = 60_000;
export const DEFAULT_MAX_CACHE_ENTRIES = 10_000;
export const DEFAULT_REVIEW_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_CONCURRENT_REVIEWS = 64;

/** TokenReview `user.extra` keys of a bound ServiceAccount token. */
export const EXTRA = {
  podName: 'authentication.kubernetes.io/pod-name',
  podUid: 'authentication.kubernetes.io/pod-uid',
  nodeName: 'authentication.kubernetes.io/node-name',
} as const;

const SERVICE_ACCOUNT_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;
const SERVICE_ACCOUNTS_GROUP = 'system:serviceaccounts';

/**
 * The node a pod is scheduled on, if the model has a pod `namespace/name` whose UID is `uid`;
 * undefined when there is no such pod, it has another UID, or it is not scheduled yet.
 */
export type PodNodeLookup = (namespace: string, name: string, uid: string) => string | undefined;

export interface TokenReviewAuthenticatorOptions {
  /** Credentials of the controller itself; it needs `create` on tokenreviews. */
  readonly kubeConfig: KubeConfig;
  readonly podNode: PodNodeLookup;
  /** Usernames authenticated as node agents (`system:serviceaccount:<ns>:<name>`). */
  readonly nodeServiceAccounts?: readonly string[];
  /** Default [istio-ca]. The review must report at least one of them. */
  readonly audiences?: readonly string[];
  /** The cluster this controller serves; a `clusterid` metadata naming another is refused. */
  readonly clusterId?: string;
  readonly cacheTtlMs?: number;
  readonly maxCacheEntries?: number;
  readonly reviewTimeoutMs?: number;
  /** TokenReviews in flight at once; beyond, callers are refused (review-unavailable). */
  readonly maxConcurrentReviews?: number;
  /** Clock (epoch ms) for the cache. */
  readonly now?: () => number;
}

interface CacheEntry {
  readonly caller: Caller;
  readonly expiresAt: number;
}

function positive(name: string, v: number | undefined, def: number): number {
  const n = v ?? def;
  if (!Number.isFinite(n) || n <= 0) {
    throw new Error(`TokenReviewAuthenticator: ${name} must be a positive number (got ${String(v)})`);
  }
  return n;
}

export class TokenReviewAuthenticator implements Authenticator {
  readonly #api: AuthenticationV1Api;
  readonly #podNode: PodNodeLookup;
  readonly #nodeAccounts: ReadonlySet<string>;
  readonly #audiences: readonly string[];
  readonly #clusterId: string;
  readonly #cacheTtl: number;
  readonly #maxEntries: number;
  readonly #timeout: number;
  readonly #maxConcurrent: number;
  readonly #now: () => number;
  readonly #cache = new Map<string, CacheEntry>();
  readonly #inflight = new Map<string, Promise<Caller>>();

  constructor(opts: TokenReviewAuthenticatorOptions) {
    const accounts = opts.nodeServiceAccounts ?? DEFAULT_NODE_SERVICE_ACCOUNTS;
    for (const a of accounts) {
      if (!SERVICE_ACCOUNT_USER.test(a)) {
        throw new Error(
          `TokenReviewAuthenticator: node service account ${JSON.stringify(a)} is not of the form system:serviceaccount:<namespace>:<name>`,
        );
      }
    }
    this.#api = opts.kubeConfig.makeApiClient(AuthenticationV1Api);
    this.#podNode = opts.podNode;
    this.#nodeAccounts = new Set(accounts);
    this.#audiences = [...(opts.audiences ?? [CA_AUDIENCE])];
    this.#clusterId = opts.clusterId ?? DEFAULT_CLUSTER_ID;
    this.#cacheTtl = positive('cacheTtlMs', opts.cacheTtlMs, DEFAULT_CACHE_TTL_MS);
    this.#maxEntries = positive('maxCacheEntries', opts.maxCacheEntries, DEFAULT_MAX_CACHE_ENTRIES);
    this.#timeout = positive('reviewTimeoutMs', opts.reviewTimeoutMs, DEFAULT_REVIEW_TIMEOUT_MS);
    this.#maxConcurrent = positive(
      'maxConcurrentReviews',
      opts.maxConcurrentReviews,
      DEFAULT_MAX_CONCURRENT_REVIEWS,
    );
    this.#now = opts.now ?? Date.now;
  }

  async authenticate(metadata: Metadata): Promise<Caller> {
    this.#checkCluster(metadata);
    const token = bearerToken(metadata);
    const key = createHash('sha256').update(token).digest('base64');
    const now = this.#now();
    const cached = this.#cache.get(key);
    if (cached) {
      if (cached.expiresAt > now) return cached.caller;
      this.#cache.delete(key);
    }
    const pending = this.#inflight.get(key);
    if (pending) return pending;
    if (this.#inflight.size >= this.#maxConcurrent) {
      throw new AuthenticationError(
        'review-unavailable',
        `${this.#inflight.size} TokenReviews are already in flight (maxConcurrentReviews); refusing instead of queueing`,
      );
    }
    const review = this.#review(token).then((caller) => {
      this.#remember(key, caller, token);
      return caller;
    });
    this.#inflight.set(key, review);
    try {
      return await review;
    } finally {
      this.#inflight.delete(key);
    }
  }

  #checkCluster(metadata: Metadata): void {
    const values = metadata.get('clusterid');
    if (values.length === 0) return; // absent: the local cluster, as istiod does
    if (values.length > 1 || values[0] !== this.#clusterId) {
      const shown = values.map((v) => (typeof v === 'string' ? v.slice(0, 64) : '<binary>')).join(', ');
      throw new AuthenticationError(
        'wrong-cluster',
        `clusterid ${JSON.stringify(shown)} is not this controller's cluster ${JSON.stringify(this.#clusterId)}`,
      );
    }
  }

  async #review(token: string): Promise<Caller> {
    let review: V1TokenReview;
    try {
      review = await this.#api.createTokenReview(
        {
          body: {
            apiVersion: 'authentication.k8s.io/v1',
            kind: 'TokenReview',
            spec: { token, audiences: [...this.#audiences] },
          },
        },
        { middleware: [abortAfter(this.#timeout)], middlewareMergeStrategy: 'append' },
      );
    } catch (err) {
      throw new AuthenticationError(
        'review-unavailable',
        `the TokenReview request failed: ${describeApiError(err)}; check the controller can reach the API server and may create tokenreviews`,
        { cause: err },
      );
    }
    const status = review.status;
    if (status === undefined) {
      throw new AuthenticationError('review-unavailable', 'the TokenReview answer has no status');
    }
    if (status.authenticated !== true) {
      const why = status.error !== undefined && status.error !== '' ? `: ${status.error}` : '';
      throw new AuthenticationError('bad-token', `TokenReview: the token is not authenticated${why}`);
    }
    const granted = status.audiences ?? [];
    if (this.#audiences.length > 0 && !granted.some((a) => this.#audiences.includes(a))) {
      // An empty list means "valid for the API server's own audience", which is not ours.
      throw new AuthenticationError(
        'wrong-audience',
        `TokenReview: the token's audiences [${granted.join(', ')}] do not include ${this.#audiences.join(' or ')}`,
      );
    }
    return this.#caller(status.user ?? {});
  }

  #caller(user: V1UserInfo): Caller {
    const username = user.username ?? '';
    const m = SERVICE_ACCOUNT_USER.exec(username);
    if (!m || !(user.groups ?? []).includes(SERVICE_ACCOUNTS_GROUP)) {
      throw new AuthenticationError(
        'not-service-account',
        `TokenReview: user ${JSON.stringify(username.slice(0, 256))} is not a ServiceAccount (system:serviceaccount:<ns>:<name> in group ${SERVICE_ACCOUNTS_GROUP})`,
      );
    }
    const namespace = m[1] ?? '';
    const serviceAccount = m[2] ?? '';
    if (!this.#nodeAccounts.has(username)) {
      return { kind: 'workload', namespace, serviceAccount, subject: username };
    }
    const extra = user.extra ?? {};
    const nodeName = singleExtra(extra, EXTRA.nodeName, username);
    const podName = singleExtra(extra, EXTRA.podName, username);
    if (nodeName !== undefined) {
      return { kind: 'node', node: nodeName, subject: describeNodeSubject(username, podName) };
    }
    const podUid = singleExtra(extra, EXTRA.podUid, username);
    if (podName === undefined || podUid === undefined) {
      throw new AuthenticationError(
        'unbound-token',
        `${username}: the token is not bound to a pod (no ${EXTRA.nodeName}, ${EXTRA.podName} or ${EXTRA.podUid}); mount a projected ServiceAccount token with audience ${CA_AUDIENCE}`,
      );
    }
    let node: string | undefined;
    try {
      node = this.#podNode(namespace, podName, podUid);
    } catch (err) {
      throw new AuthenticationError(
        'review-unavailable',
        `${username}: looking up pod ${namespace}/${podName} failed: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    if (node === undefined || node === '') {
      throw new AuthenticationError(
        'unknown-pod',
        `${username}: the token is bound to pod ${namespace}/${podName} uid ${podUid}, which the controller does not know, has another uid (deleted and recreated), or is not scheduled`,
      );
    }
    return { kind: 'node', node, subject: describeNodeSubject(username, podName) };
  }

  /** Caches a positive result until the earliest of the cache TTL and the token's own expiry. */
  #remember(key: string, caller: Caller, token: string): void {
    const now = this.#now();
    const exp = jwtExpiryMs(token);
    const expiresAt = Math.min(now + this.#cacheTtl, exp ?? Infinity);
    if (expiresAt <= now) return;
    this.#cache.delete(key);
    while (this.#cache.size >= this.#maxEntries) {
      const oldest = this.#cache.keys().next();
      if (oldest.done === true) break;
      this.#cache.delete(oldest.value);
    }
    this.#cache.set(key, { caller, expiresAt });
  }
}

/** A client-node middleware that aborts the request after `ms`. */
function abortAfter(ms: number): ObservableMiddleware {
  return {
    pre: (ctx) => {
      ctx.setSignal(AbortSignal.timeout(ms));
      return new Observable(Promise.resolve(ctx));
    },
    post: (ctx) => new Observable(Promise.resolve(ctx)),
  };
}

function describeApiError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const cause = err.cause instanceof Error ? ` (${err.cause.message})` : '';
    return `${err.name}${typeof code === 'number' ? ` HTTP ${code}` : ''}: ${err.message.slice(0, 300)}${cause}`;
  }
  return String(err);
}

/** The single value of a `user.extra` key; undefined if absent or empty; refuses several values. */
function singleExtra(
  extra: Readonly<Record<string, readonly string[] | undefined>>,
  key: string,
  username: string,
): string | undefined {
  const values = Object.hasOwn(extra, key) ? (extra[key] ?? []) : [];
  if (values.length > 1) {
    throw new AuthenticationError(
      'unbound-token',
      `${username}: the TokenReview extra ${key} has ${values.length} values; a bound token has one`,
    );
  }
  const v = values[0];
  return v === undefined || v === '' ? undefined : v;
}

function describeNodeSubject(username: string, podName: string | undefined): string {
  return podName === undefined ? username : `${username} (pod ${podName})`;
}

/**
 * The `exp` claim of a JWT, in epoch ms, read WITHOUT verifying the token: it is used only to
 * shorten how long a result the TokenReview API vouched for stays cached, never to extend it.
 */
function jwtExpiryMs(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const claims: unknown = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    if (typeof claims !== 'object' || claims === null || !('exp' in claims)) return undefined;
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

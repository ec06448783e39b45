// SPDX-License-Identifier: Apache-2.0
// Client side of workload certificates, as ztunnel's SecretManager does it (ambient-protocols.md
// §4 "Rotation"; istio/ztunnel:src/identity/manager.rs): one key + CSR per identity, fetched on
// first use (concurrent callers share one fetch), refreshed at half-life, retried with jittered
// exponential backoff on failure while the still-valid certificate keeps being served, and
// never served once expired. At most `maxConcurrent` CSRs are outstanding, RealTime (a caller
// waiting on a connection) before Warmup (prefetch) before Background (refresh).
import { createPrivateKey, createPublicKey } from 'node:crypto';
export { BACKOFF_JITTER } from '../backoff.ts';
import { jitteredBackoffMs } from '../backoff.ts';
import { EventEmitter } from 'eventemitter3';
import { errorMessage } from '../errors.ts';
import { parseCertificate } from './certificate.ts';
import { generateKeyAndCsr } from './csr.ts';
import { bytesEqual } from './der.ts';
import { IdentityError } from './errors.ts';
import { derToPem, pemCertificatesToDer } from './pem.ts';
import { parseSpiffeId, type SpiffeId } from './spiffe.ts';
import { verifySvidSync } from './svid.ts';
import { TrustBundle } from './trust-bundle.ts';

export interface WorkloadCertificate {
  readonly id: SpiffeId;
  readonly privateKeyPem: string;
  /** Leaf + intermediates (no roots): what we present in TLS. */
  readonly certChainPem: readonly string[];
  /** Trust anchors from the last element of the CA response. */
  readonly rootsPem: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** Returns the CA's cert_chain (leaf first, roots last). */
export type CertificateSigner = (req: {
  csrPem: string;
  identity: string;
  ttlSeconds: number;
}) => Promise<string[]>;

/** ztunnel SECRET_TTL default: 24 h. */
export const DEFAULT_WORKLOAD_TTL_SECONDS = 24 * 60 * 60;
/** ztunnel's backoff: 500 ms initial, doubling, capped at 150 s (ambient-protocols.md §4). */
export const DEFAULT_INITIAL_BACKOFF_MS = 500;
export const DEFAULT_MAX_BACKOFF_MS = 150_000;
/** ztunnel: at most 8 concurrent CSRs. */
export const DEFAULT_MAX_CONCURRENT = 8;
/** setTimeout's limit (2^31 - 1 ms, ~24.8 days); longer waits are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function responseError(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ID_ERR_CA_RESPONSE', `unusable certificate from the CA: ${message}`, { cause });
}

/**
 * Builds a WorkloadCertificate from a private key and the CA's cert_chain response, checking
 * that the response is well formed, that the leaf belongs to the key, that it verifies against
 * the roots it came with, and (when `expectedIdentity` is given) that it carries exactly that
 * identity (ambient-protocols.md §4: "ztunnel checks the returned leaf carries exactly the
 * requested identity"). A leaf whose notBefore is ahead of `now` (CA clock ahead) is accepted;
 * an expired one is not.
 */
export function workloadCertificateFromChain(
  privateKeyPem: string,
  chain: readonly string[],
  opts: { expectedIdentity?: string; now?: Date } = {},
): Promise<WorkloadCertificate> {
  // The work is synchronous; a throw inside the executor becomes the rejection.
  return new Promise((resolve) => {
    resolve(workloadCertificateFromChainSync(privateKeyPem, chain, opts));
  });
}

function workloadCertificateFromChainSync(
  privateKeyPem: string,
  chain: readonly string[],
  opts: { expectedIdentity?: string; now?: Date },
): WorkloadCertificate {
  if (chain.length < 2) {
    throw responseError(
      `cert_chain has ${chain.length} element(s); expected the leaf first and the root(s) last`,
    );
  }
  let leafDer: Uint8Array;
  let intermediates: Uint8Array[];
  let bundle: TrustBundle;
  try {
    const leafBlocks = pemCertificatesToDer(chain[0] ?? '', 'cert_chain[0]');
    if (leafBlocks.length !== 1)
      throw responseError(`cert_chain[0] holds ${leafBlocks.length} certificates; expected only the leaf`);
    leafDer = leafBlocks[0] as Uint8Array;
    intermediates = chain.slice(1, -1).flatMap((p, i) => pemCertificatesToDer(p, `cert_chain[${i + 1}]`));
    bundle = TrustBundle.fromPem(chain[chain.length - 1] ?? '');
  } catch (err) {
    if (err instanceof IdentityError && err.code === 'ID_ERR_CA_RESPONSE') throw err;
    throw responseError((err as Error).message, err);
  }
  const leaf = parseCertificate(leafDer);
  let keySpki: Uint8Array;
  try {
    keySpki = new Uint8Array(
      createPublicKey(createPrivateKey(privateKeyPem)).export({ type: 'spki', format: 'der' }),
    );
  } catch (err) {
    throw new IdentityError(
      'ID_ERR_KEY_MISMATCH',
      `the workload private key does not parse: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (!bytesEqual(keySpki, leaf.spkiDer)) {
    throw new IdentityError(
      'ID_ERR_KEY_MISMATCH',
      'the certificate returned by the CA is not for our private key (the CA signed a different public key than the CSR carried)',
    );
  }
  const realNow = opts.now ?? new Date();
  // Tolerate a CA clock running ahead (leaf not yet valid here); still refuse an expired leaf.
  const now = realNow < leaf.notBefore ? leaf.notBefore : realNow;
  let verified;
  try {
    verified = verifySvidSync([leafDer, ...intermediates], bundle, {
      now,
      ...(opts.expectedIdentity !== undefined ? { expectedIdentities: [opts.expectedIdentity] } : {}),
    });
  } catch (err) {
    throw responseError((err as Error).message, err);
  }
  return Object.freeze({
    id: verified.id,
    privateKeyPem,
    certChainPem: Object.freeze([derToPem(leafDer), ...intermediates.map((d) => derToPem(d))]),
    rootsPem: bundle.rootsPem,
    notBefore: verified.notBefore,
    notAfter: verified.notAfter,
  });
}

/** CSR priority classes, most urgent first (ztunnel: RealTime > Warmup > Background). */
export const Priority = { RealTime: 0, Warmup: 1, Background: 2 } as const;
export type Priority = (typeof Priority)[keyof typeof Priority];

interface QueuedFetch {
  priority: Priority;
  readonly start: () => void;
  readonly cancel: (err: Error) => void;
}

interface Entry {
  readonly identity: string;
  cert: WorkloadCertificate | undefined;
  inflight: Promise<WorkloadCertificate> | undefined;
  queued: QueuedFetch | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Consecutive failures (or not-yet-valid refreshes); drives the backoff. */
  failures: number;
  lastError: unknown;
  /** Set while a retry after a failure is scheduled (epoch ms). */
  retryAt: number | undefined;
}

export interface CertificateManagerOptions {
  signer: CertificateSigner;
  /** Requested certificate lifetime; default 24 h. */
  ttlSeconds?: number;
  now?: () => Date;
  /** Uniform [0, 1) source for jitter. */
  random?: () => number;
  /** Default 500 ms. */
  initialBackoffMs?: number;
  /** Default 150 000 ms. */
  maxBackoffMs?: number;
  /** Default 8. */
  maxConcurrent?: number;
}

/** One identity's certificate as /config_dump shows it (upstream's `certificates` section). */
export interface CertificateStatus {
  readonly identity: string;
  /** Available: a valid certificate is served. Initializing: the first one is being fetched. Unavailable: none is valid and the last fetch failed. */
  readonly state: 'Available' | 'Initializing' | 'Unavailable';
  /** Leaf first, then intermediates: what TLS presents (no roots). */
  readonly certChain: readonly { serialNumber: string; validFrom: string; expirationTime: string }[];
  /** The last fetch's failure, while one is unresolved. */
  readonly error?: string;
}

interface CertificateManagerEvents {
  /** A new certificate was obtained for `id`. */
  updated: [id: string, cert: WorkloadCertificate];
  /** A fetch for `id` failed; a retry is scheduled after `retryInMs`. */
  failed: [id: string, err: Error, retryInMs: number];
}

export class CertificateManager extends EventEmitter<CertificateManagerEvents> {
  readonly #signer: CertificateSigner;
  readonly #ttl: number;
  readonly #now: () => Date;
  readonly #random: () => number;
  readonly #initialBackoff: number;
  readonly #maxBackoff: number;
  readonly #maxConcurrent: number;
  readonly #entries = new Map<string, Entry>();
  readonly #queue: QueuedFetch[] = [];
  #active = 0;
  #closed = false;

  constructor(opts: CertificateManagerOptions) {
    super();
    this.#signer = opts.signer;
    this.#ttl = opts.ttlSeconds ?? DEFAULT_WORKLOAD_TTL_SECONDS;
    this.#now = opts.now ?? (() => new Date());
    this.#random = opts.random ?? Math.random;
    this.#initialBackoff = opts.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS;
    this.#maxBackoff = opts.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    this.#maxConcurrent = Math.max(1, opts.maxConcurrent ?? DEFAULT_MAX_CONCURRENT);
  }

  /**
   * The valid certificate for `identity`, fetching one if needed. Concurrent callers share one
   * fetch. Rejects (ID_ERR_CERT_UNAVAILABLE) when no valid certificate can be had, including
   * while a retry after a recent failure is pending (so callers cannot hammer a failing CA).
   */
  getCertificate(identity: string): Promise<WorkloadCertificate> {
    if (this.#closed) return Promise.reject(this.#unavailable(identity, 'the certificate manager is closed'));
    try {
      parseSpiffeId(identity);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const entry = this.#entry(identity);
    const valid = this.#valid(entry);
    if (valid) return Promise.resolve(valid);
    if (entry.inflight) {
      if (entry.queued && entry.queued.priority > Priority.RealTime) {
        entry.queued.priority = Priority.RealTime;
        this.#sortQueue();
      }
      return entry.inflight;
    }
    if (entry.retryAt !== undefined) {
      const inMs = Math.max(0, entry.retryAt - this.#now().getTime());
      return Promise.reject(
        this.#unavailable(
          identity,
          `the last request to the CA failed (${errorText(entry.lastError)}); next attempt in ${Math.ceil(inMs / 1000)}s`,
          entry.lastError,
        ),
      );
    }
    return this.#fetch(entry, Priority.RealTime);
  }

  /**
   * Starts fetching a certificate in advance (Warmup priority, e.g. when WDS delivers a local
   * HBONE workload); errors are reported via 'failed'. Throws only for an invalid identity.
   */
  prefetch(identity: string): void {
    if (this.#closed) return;
    parseSpiffeId(identity);
    const entry = this.#entry(identity);
    if (this.#valid(entry) || entry.inflight || entry.retryAt !== undefined) return;
    this.#fetch(entry, Priority.Warmup).catch(() => undefined);
  }

  /** The current certificate for `identity`, only if it has not expired. */
  current(identity: string): WorkloadCertificate | undefined {
    const entry = this.#entries.get(identity);
    return entry ? this.#valid(entry) : undefined;
  }

  /** Every identity this manager holds or fetches, with its certificate chain (for /config_dump). */
  snapshot(): CertificateStatus[] {
    return [...this.#entries.values()].map((entry) => {
      const cert = this.#valid(entry);
      const error =
        entry.failures > 0 && entry.lastError !== undefined ? errorMessage(entry.lastError) : undefined;
      return {
        identity: entry.identity,
        state: cert !== undefined ? 'Available' : error !== undefined ? 'Unavailable' : 'Initializing',
        certChain: (cert?.certChainPem ?? [])
          .flatMap((pem) => pemCertificatesToDer(pem))
          .map((der) => {
            const c = parseCertificate(der);
            return {
              serialNumber: c.serial,
              validFrom: c.notBefore.toISOString(),
              expirationTime: c.notAfter.toISOString(),
            };
          }),
        ...(error !== undefined && { error }),
      };
    });
  }

  /** Drops the identity: its certificate, timers and any queued request. */
  forget(identity: string): void {
    const entry = this.#entries.get(identity);
    if (!entry) return;
    this.#entries.delete(identity);
    this.#dispose(entry, `the identity ${identity} was forgotten`);
  }

  /** Clears every timer and queued request; the manager cannot be used afterwards. */
  close(): void {
    this.#closed = true;
    for (const entry of this.#entries.values()) this.#dispose(entry, 'the certificate manager was closed');
    this.#entries.clear();
  }

  /** The backoff delay after `failures` consecutive failures (0-based), jitter included. */
  backoffDelayMs(failures: number): number {
    return jitteredBackoffMs(failures, this.#initialBackoff, this.#maxBackoff, this.#random);
  }

  #entry(identity: string): Entry {
    let entry = this.#entries.get(identity);
    if (!entry) {
      entry = {
        identity,
        cert: undefined,
        inflight: undefined,
        queued: undefined,
        timer: undefined,
        failures: 0,
        lastError: undefined,
        retryAt: undefined,
      };
      this.#entries.set(identity, entry);
    }
    return entry;
  }

  #valid(entry: Entry): WorkloadCertificate | undefined {
    const cert = entry.cert;
    if (!cert) return undefined;
    // Validity is inclusive of notAfter (RFC 5280 §4.1.2.5); after that, never serve it.
    if (this.#now().getTime() > cert.notAfter.getTime()) return undefined;
    return cert;
  }

  #isCurrent(entry: Entry): boolean {
    return !this.#closed && this.#entries.get(entry.identity) === entry;
  }

  #dispose(entry: Entry, why: string): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    if (entry.queued) {
      const q = entry.queued;
      entry.queued = undefined;
      const i = this.#queue.indexOf(q);
      if (i >= 0) this.#queue.splice(i, 1);
      q.cancel(this.#unavailable(entry.identity, why));
    }
  }

  #unavailable(identity: string, why: string, cause?: unknown): IdentityError {
    return new IdentityError(
      'ID_ERR_CERT_UNAVAILABLE',
      `no valid certificate for ${identity}: ${why}; check that the CA is reachable and authorizes this node for the identity`,
      { cause },
    );
  }

  #fetch(entry: Entry, priority: Priority): Promise<WorkloadCertificate> {
    const identity = entry.identity;
    const ttlSeconds = this.#ttl;
    const p = this.#limited(entry, priority, async () => {
      const { privateKeyPem, csrPem } = await generateKeyAndCsr(identity);
      const chain = await this.#signer({ csrPem, identity, ttlSeconds });
      return workloadCertificateFromChain(privateKeyPem, chain, {
        expectedIdentity: identity,
        now: this.#now(),
      });
    }).then(
      (cert) => {
        if (!this.#isCurrent(entry)) return cert; // forgotten meanwhile: hand it to the waiters only
        entry.inflight = undefined;
        entry.cert = cert;
        entry.failures = 0;
        entry.lastError = undefined;
        entry.retryAt = undefined;
        this.#scheduleRefresh(entry);
        this.emit('updated', identity, cert);
        return cert;
      },
      (err: unknown) => {
        if (!this.#isCurrent(entry)) throw err;
        entry.inflight = undefined;
        entry.lastError = err;
        const delay = this.#scheduleRetry(entry);
        const error = err instanceof Error ? err : new Error(String(err));
        this.emit('failed', identity, error, delay);
        if (err instanceof IdentityError && err.code === 'ID_ERR_CERT_UNAVAILABLE') throw err;
        throw this.#unavailable(identity, `the CA request failed (${errorText(err)})`, err);
      },
    );
    entry.inflight = p;
    // Background and warmup fetches may have no waiter; the failure is reported via 'failed'.
    p.catch(() => undefined);
    return p;
  }

  /** Runs `fn` when fewer than maxConcurrent fetches are active, most urgent priority first. */
  #limited<T>(entry: Entry, priority: Priority, fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const start = (): void => {
        entry.queued = undefined;
        this.#active++;
        fn()
          .then(resolve, reject)
          .finally(() => {
            this.#active--;
            this.#next();
          });
      };
      if (this.#active < this.#maxConcurrent) {
        start();
        return;
      }
      const item: QueuedFetch = { priority, start, cancel: reject };
      entry.queued = item;
      this.#queue.push(item);
      this.#sortQueue();
    });
  }

  #sortQueue(): void {
    // Array#sort is stable, so equal priorities keep arrival order.
    this.#queue.sort((a, b) => a.priority - b.priority);
  }

  #next(): void {
    while (this.#active < this.#maxConcurrent) {
      const item = this.#queue.shift();
      if (!item) return;
      item.start();
    }
  }

  #scheduleRefresh(entry: Entry): void {
    const cert = entry.cert;
    if (!cert) return;
    const now = this.#now().getTime();
    const nb = cert.notBefore.getTime();
    const na = cert.notAfter.getTime();
    let delay: number;
    if (now < nb) {
      // ztunnel refreshes immediately when the clock is before notBefore; we rate-limit that with
      // the failure backoff so a CA whose clock runs ahead cannot make us loop on it.
      delay = this.backoffDelayMs(entry.failures++);
    } else {
      delay = Math.max(0, nb + (na - nb) / 2 - now);
    }
    this.#setTimer(entry, now + delay, () => {
      if (!entry.inflight) this.#fetch(entry, Priority.Background).catch(() => undefined);
    });
  }

  /** Schedules the retry after a failure; returns its delay. */
  #scheduleRetry(entry: Entry): number {
    const now = this.#now().getTime();
    let delay = this.backoffDelayMs(entry.failures++);
    const cert = this.#valid(entry);
    // Clamped to expiry: never sleep past the first instant the current certificate is unusable
    // (notAfter is inclusive, so that is notAfter + 1 ms; this also keeps the delay above zero).
    if (cert) delay = Math.min(delay, cert.notAfter.getTime() + 1 - now);
    entry.retryAt = now + delay;
    this.#setTimer(entry, now + delay, () => {
      entry.retryAt = undefined;
      if (!entry.inflight) this.#fetch(entry, Priority.Background).catch(() => undefined);
    });
    return delay;
  }

  /** Runs `fn` at epoch ms `at` (per the injected clock), chaining timers beyond setTimeout's limit. */
  #setTimer(entry: Entry, at: number, fn: () => void): void {
    if (entry.timer) clearTimeout(entry.timer);
    const wait = Math.max(0, at - this.#now().getTime());
    const step = Math.min(wait, MAX_TIMER_MS);
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      if (!this.#isCurrent(entry)) return;
      if (step < wait) this.#setTimer(entry, at, fn);
      else fn();
    }, step);
    entry.timer.unref();
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

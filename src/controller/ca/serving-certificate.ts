// SPDX-License-Identifier: Apache-2.0
// The controller's own TLS certificate on :15012 (ARCHITECTURE.md, "Ports"). The mesh CA issues
// it with an explicit lifetime, and it is renewed before it runs out: at half-life, and at once
// when the CA's roots change, so a rotation never leaves the controller presenting a certificate
// from a root that peers are about to stop trusting. Without renewal, every ztunnel's handshake
// fails once the first certificate expires, and WDS and the CA go down across the whole mesh.
//
// Swapping the certificate must not rebind the port or touch established connections. grpc-js
// 1.14 does this through a certificate provider: `experimental.createCertificateProviderServer-
// Credentials` subscribes the bound server to a CertificateProvider (the interface its
// FileWatcherCertificateProvider implements), and on every identity update the server calls
// Http2SecureServer.setSecureContext. That changes what new handshakes present and leaves
// existing connections alone. This class is such a provider, fed from memory, so the key never
// touches the disk. `ServerCredentials.createSsl` credentials cannot be changed once bound.
//
// A failed renewal keeps the current certificate and retries with jittered exponential backoff
// (0.5 s doubling to 60 s, never later than the expiry). It is logged as a warning while more
// than a quarter of the lifetime is left, and after that as an error that says what happens at
// expiry, so an alert fires while there is still time to act.
import { experimental, type ServerCredentials } from '@grpc/grpc-js';
import { jitteredBackoffMs } from '../../shared/backoff.ts';
import { MeshError, errorMessage } from '../../shared/errors.ts';
import type { CertificateAuthority } from '../../shared/identity/ca.ts';
import { parseCertificate } from '../../shared/identity/certificate.ts';
import { pemCertificatesToDer } from '../../shared/identity/pem.ts';
import type { Logger } from '../../shared/telemetry/logger.ts';

/** Default lifetime of the serving certificate (SERVING_CERT_TTL_SECONDS). */
export const DEFAULT_SERVING_CERT_TTL_SECONDS = 24 * 60 * 60;
export const DEFAULT_INITIAL_BACKOFF_MS = 500;
export const DEFAULT_MAX_BACKOFF_MS = 60_000;
/**
 * The earliest a renewal is scheduled after an issuance. This stops a renewal loop when the CA
 * hands out a certificate cut short by its own expiring signing certificate.
 */
export const MIN_RENEW_DELAY_MS = 1000;
/** setTimeout's longest delay (2^31 − 1 ms, ~24.8 days); Node fires longer ones at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The part of the CA this class uses. */
export type ServingCertificateIssuer = Pick<
  CertificateAuthority,
  'issueServingCertificate' | 'onRootsChange'
>;

export interface ServingCertificateOptions {
  readonly ca: ServingCertificateIssuer;
  /** The controller's SPIFFE ID, e.g. spiffe://cluster.local/ns/istio-system/sa/istiod. */
  readonly identity: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  /** Lifetime asked of the CA for each certificate. */
  readonly ttlSeconds: number;
  readonly logger: Logger;
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

/** The certificate being served. */
export interface ServedCertificate {
  /** Leaf first, then any intermediate: the chain presented in handshakes (roots are not sent). */
  readonly certChainPem: string;
  readonly keyPem: string;
  /** The leaf's serial number, hex. */
  readonly serial: string;
  readonly notAfter: Date;
  /** When it was issued (epoch ms). Renewal is due halfway from here to notAfter. */
  readonly issuedAt: number;
}

export type RenewalReason = 'half-life' | 'retry' | 'roots changed';

function optionError(message: string): MeshError {
  return new MeshError('CTL_ERR_SERVING_CERT', `serving certificate: ${message}`);
}

/**
 * When the renewal of `cert` is due (epoch ms): halfway through the lifetime it was issued with,
 * counted from its issuance rather than from notBefore, which the CA backdates for clock skew.
 * Never sooner than MIN_RENEW_DELAY_MS after the issuance.
 */
export function renewalDueAt(cert: Pick<ServedCertificate, 'issuedAt' | 'notAfter'>): number {
  const half = (cert.notAfter.getTime() - cert.issuedAt) / 2;
  return cert.issuedAt + Math.max(MIN_RENEW_DELAY_MS, Math.floor(half));
}

export class ServingCertificate implements experimental.CertificateProvider {
  readonly #opts: ServingCertificateOptions;
  readonly #log: Logger;
  readonly #initialBackoff: number;
  readonly #maxBackoff: number;
  readonly #listeners = new Set<experimental.IdentityCertificateUpdateListener>();
  readonly #unsubscribe: () => void;
  #current: ServedCertificate;
  #timer: NodeJS.Timeout | undefined;
  /** Consecutive failed renewals. */
  #failures = 0;
  #renewing = false;
  /** A renewal requested while one was running; it runs right after. */
  #requested: RenewalReason | undefined;
  #closed = false;

  private constructor(opts: ServingCertificateOptions, first: ServedCertificate) {
    this.#opts = opts;
    this.#log = opts.logger.child({ scope: 'serving-cert' });
    this.#initialBackoff = opts.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS;
    this.#maxBackoff = opts.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    this.#current = first;
    this.#unsubscribe = opts.ca.onRootsChange(() => this.renew('roots changed'));
    this.#schedule(renewalDueAt(first), 'half-life');
  }

  /**
   * Issues the first certificate and starts renewing it. Rejects when the CA cannot issue one:
   * the controller must not start without a certificate to serve.
   */
  static async start(opts: ServingCertificateOptions): Promise<ServingCertificate> {
    if (!Number.isSafeInteger(opts.ttlSeconds) || opts.ttlSeconds <= 0) {
      throw optionError(`ttlSeconds must be a positive integer (got ${opts.ttlSeconds})`);
    }
    for (const [name, v] of [
      ['initialBackoffMs', opts.initialBackoffMs],
      ['maxBackoffMs', opts.maxBackoffMs],
    ] as const) {
      if (v !== undefined && (!Number.isFinite(v) || v <= 0)) {
        throw optionError(`${name} must be a positive number (got ${v})`);
      }
    }
    const first = await issue(opts);
    const sc = new ServingCertificate(opts, first);
    sc.#log.info(
      { serial: first.serial, notAfter: first.notAfter.toISOString(), ttlSeconds: opts.ttlSeconds },
      'serving certificate issued',
    );
    return sc;
  }

  /** The certificate new handshakes are served with. */
  get current(): ServedCertificate {
    return this.#current;
  }

  /**
   * grpc-js server credentials that present the current certificate to every new connection.
   * No client certificate is requested: callers authenticate with bearer tokens (spec §3.1, §4).
   */
  serverCredentials(): ServerCredentials {
    // grpc-js 1.14 calls the first parameter `caCertificateProvider` but hands it to
    // CertificateProviderServerCredentials as the identity provider. The second one is the CA
    // provider, and with null the server asks for no client certificate.
    return experimental.createCertificateProviderServerCredentials(this, null, false);
  }

  /**
   * Renews now, unless the provider is closed. A call made while a renewal is running queues
   * one more renewal to run after it, so a root change is never lost.
   */
  renew(reason: RenewalReason): void {
    if (this.#closed) return;
    if (this.#renewing) {
      this.#requested = reason;
      return;
    }
    void this.#renew(reason);
  }

  /** Stops renewing. The server keeps whatever it was last given. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#unsubscribe();
  }

  // ---- experimental.CertificateProvider (called by grpc-js) ----

  addIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.#listeners.add(listener);
    // Delivered on the next tick, as FileWatcherCertificateProvider does: grpc-js subscribes
    // before it registers the watcher that applies updates to the server, so a synchronous
    // call would be lost and the server would refuse every connection.
    process.nextTick(() => {
      if (this.#listeners.has(listener)) listener(this.#identityUpdate());
    });
  }

  removeIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.#listeners.delete(listener);
  }

  /** No CA certificate: client certificates are not requested (see serverCredentials). */
  addCaCertificateListener(): void {
    // nothing to deliver
  }

  removeCaCertificateListener(): void {
    // nothing to deliver
  }

  // ---- renewal ----

  #identityUpdate(): experimental.IdentityCertificateUpdate {
    return {
      certificate: Buffer.from(this.#current.certChainPem),
      privateKey: Buffer.from(this.#current.keyPem),
    };
  }

  async #renew(reason: RenewalReason): Promise<void> {
    this.#renewing = true;
    clearTimeout(this.#timer);
    try {
      const next = await issue(this.#opts);
      if (this.#closed) return;
      const previous = this.#current;
      this.#current = next;
      this.#failures = 0;
      const update = this.#identityUpdate();
      for (const listener of this.#listeners) listener(update);
      this.#log.info(
        {
          reason,
          serial: next.serial,
          notAfter: next.notAfter.toISOString(),
          previousSerial: previous.serial,
        },
        'serving certificate renewed',
      );
      this.#schedule(renewalDueAt(next), 'half-life');
    } catch (err) {
      if (this.#closed) return;
      this.#failed(reason, err);
    } finally {
      this.#renewing = false;
      const again = this.#requested;
      this.#requested = undefined;
      if (again !== undefined) this.renew(again);
    }
  }

  #failed(reason: RenewalReason, err: unknown): void {
    const now = Date.now();
    const cur = this.#current;
    const expiresAt = cur.notAfter.getTime();
    const lifetime = Math.max(1, expiresAt - cur.issuedAt);
    const left = expiresAt - now;
    const backoff = this.#backoffMs(this.#failures++);
    // Retry before the expiry if the backoff would overshoot it. Once expired, only the backoff applies.
    const retryInMs = left > 0 ? Math.min(backoff, left) : backoff;
    const fields = {
      reason,
      err: errorMessage(err),
      failures: this.#failures,
      retryInMs,
      serial: cur.serial,
      notAfter: cur.notAfter.toISOString(),
    };
    if (left <= 0) {
      this.#log.error(
        fields,
        'the serving certificate has expired and could not be renewed: ztunnels cannot connect to WDS or the CA until it is; check the CA (its key material and CA_DIR)',
      );
    } else if (left < lifetime / 4) {
      this.#log.error(
        { ...fields, expiresInMs: left },
        'the serving certificate expires soon and could not be renewed: every ztunnel will fail to connect when it does; check the CA (its key material and CA_DIR)',
      );
    } else {
      this.#log.warn(
        fields,
        'the serving certificate could not be renewed; keeping the current one and retrying',
      );
    }
    this.#schedule(now + retryInMs, 'retry');
  }

  #backoffMs(failures: number): number {
    return jitteredBackoffMs(failures, this.#initialBackoff, this.#maxBackoff);
  }

  /** Renews at `atMs` (epoch ms), in steps for delays beyond setTimeout's range. */
  #schedule(atMs: number, reason: RenewalReason): void {
    clearTimeout(this.#timer);
    if (this.#closed) return;
    const delay = Math.max(0, atMs - Date.now());
    this.#timer = setTimeout(
      () => {
        if (Date.now() < atMs) this.#schedule(atMs, reason);
        else this.renew(reason);
      },
      Math.min(delay, MAX_TIMER_MS),
    );
    // The gRPC server keeps the process alive while it serves. This timer should not.
    this.#timer.unref();
  }
}

/** Asks the CA for a new certificate and reads back what it issued. */
async function issue(opts: ServingCertificateOptions): Promise<ServedCertificate> {
  const issuedAt = Date.now();
  const { keyPem, certChainPem } = await opts.ca.issueServingCertificate({
    identity: opts.identity,
    dnsNames: opts.dnsNames,
    ipAddresses: opts.ipAddresses,
    ttlSeconds: opts.ttlSeconds,
  });
  const [leafPem] = certChainPem;
  const leafDer = leafPem === undefined ? undefined : pemCertificatesToDer(leafPem, 'serving certificate')[0];
  if (leafDer === undefined) throw new MeshError('CTL_ERR_SERVING_CERT', 'the CA returned an empty chain');
  const leaf = parseCertificate(leafDer);
  if (leaf.notAfter.getTime() - issuedAt < (opts.ttlSeconds * 1000) / 2) {
    opts.logger.warn(
      {
        scope: 'serving-cert',
        notAfter: leaf.notAfter.toISOString(),
        ttlSeconds: opts.ttlSeconds,
      },
      "the serving certificate was cut short by the CA signing certificate's expiry; rotate the CA root",
    );
  }
  return {
    // The last element holds the roots, which clients have and must not be sent (spec §4).
    certChainPem: certChainPem.slice(0, -1).join(''),
    keyPem,
    serial: leaf.serial,
    notAfter: leaf.notAfter,
    issuedAt,
  };
}

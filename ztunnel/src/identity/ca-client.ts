// SPDX-License-Identifier: Apache-2.0
// ztunnel's client of the controller's CA service (ambient-protocols.md §4;
// istio/ztunnel:src/identity/caclient.rs): a CertificateSigner for the CertificateManager, which
// owns retries, backoff, priorities and the checks of the returned chain.
//
// Each call sends the CSR with `validity_duration` and the request metadata
// `ImpersonatedIdentity` = the pod identity it asks for, and the gRPC metadata
// `authorization: Bearer <token>` (ztunnel's own projected token, re-read from its file on every
// call because the kubelet rotates it; the reader is ../config/control-plane.ts's, shared with
// WDS), `clusterid` and any CA_HEADER_* extras (§3.1). The channel is TLS verified against the
// control-plane root file (XDS_ROOT_CA), re-read on every call so that a rotated root rebuilds
// the channel (§4: "the CA root file … is watched"); plaintext is allowed to a loopback address
// only, as for WDS. Every call has a deadline, and gRPC failures become messages that say what
// to check.
import { credentials, Metadata, status, type ChannelOptions, type ServiceError } from '@grpc/grpc-js';
import { IstioCertificateServiceClient } from '../../../src/shared/gen/citadel.ts';
import type { CertificateSigner } from '../../../src/shared/identity/cert-manager.ts';
import { MeshError, errorMessage } from '../../../src/shared/errors.ts';
import { bearerToken, isLoopbackHostPort, readRootCa, type BearerToken } from '../config/control-plane.ts';

/** Per-call deadline when none is configured. */
export const DEFAULT_CA_TIMEOUT_MS = 10_000;
/** Request metadata key of the identity a node agent requests on a pod's behalf. */
export const IMPERSONATED_IDENTITY = 'ImpersonatedIdentity';

export type CaChannelSecurity =
  /** TLS, verifying the CA's serving certificate against the roots in `rootCertPath` (or SYSTEM). */
  | {
      readonly kind: 'tls';
      readonly rootCertPath: string;
      /** Name to verify in the CA's certificate when it differs from the address's host. */
      readonly serverName?: string;
    }
  /** No TLS at all, to a loopback address only (the token would otherwise travel in clear). */
  | { readonly kind: 'plaintext' };

/**
 * AUTH_TOKEN: a reader (../config/control-plane.ts), or a file re-read on every call (the
 * projected token), or the token itself.
 */
export type CaToken = BearerToken | { readonly path: string } | { readonly value: string };

export interface CaClientOptions {
  /** host:port of the CA service (CA_ADDRESS), e.g. istiod.istio-system.svc:15012. */
  readonly address: string;
  readonly security: CaChannelSecurity;
  readonly token: CaToken;
  /** Sent as `clusterid` (CLUSTER_ID, default Kubernetes). */
  readonly clusterId: string;
  /** CA_HEADER_<name> extras, sent on every call. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Deadline of each call. */
  readonly timeoutMs?: number;
}

export class CaClientError extends MeshError {
  declare readonly code: 'ZT_ERR_CA';
  /** The gRPC status when the CA answered with one. */
  readonly grpcCode: status | undefined;

  constructor(message: string, options?: { grpcCode?: status; cause?: unknown }) {
    super('ZT_ERR_CA', message, options);
    this.grpcCode = options?.grpcCode;
  }
}

const HEADER_NAME = /^[0-9a-z_.-]+$/;
const HEADER_VALUE = /^[\x20-\x7e]*$/;
const RESERVED_HEADERS = new Set(['authorization', 'clusterid', 'te', 'content-type', 'user-agent']);

function checkOptions(opts: CaClientOptions): number {
  if (opts.address === '') throw new CaClientError('CA client: the CA address (CA_ADDRESS) is empty');
  if (opts.security.kind === 'plaintext' && !isLoopbackHostPort(opts.address)) {
    throw new CaClientError(
      `CA client: plaintext to ${opts.address} refused: plaintext is allowed only to a loopback address (the bearer token would cross the network in clear); use TLS`,
    );
  }
  if (opts.clusterId === '') throw new CaClientError('CA client: the cluster id (CLUSTER_ID) is empty');
  const timeout = opts.timeoutMs ?? DEFAULT_CA_TIMEOUT_MS;
  if (!Number.isFinite(timeout) || timeout <= 0) {
    throw new CaClientError(`CA client: timeoutMs must be a positive number (got ${timeout})`);
  }
  for (const [name, value] of Object.entries(opts.headers ?? {})) {
    if (
      !HEADER_NAME.test(name) ||
      name.startsWith('grpc-') ||
      name.endsWith('-bin') ||
      RESERVED_HEADERS.has(name)
    ) {
      throw new CaClientError(
        `CA client: extra header ${JSON.stringify(name)} is not allowed (lowercase [0-9a-z_.-], not reserved, not -bin, not grpc-*); check CA_HEADER_* variables`,
      );
    }
    if (!HEADER_VALUE.test(value)) {
      throw new CaClientError(`CA client: the value of extra header ${name} must be printable ASCII`);
    }
  }
  return timeout;
}

interface FailureContext {
  readonly ca: string;
  readonly identity: string;
  readonly details: string;
  readonly timeoutMs: number;
}

/** What a gRPC status from the CA means for the operator; other codes are reported as they are. */
const GRPC_FAILURES: Partial<Readonly<Record<status, (c: FailureContext) => string>>> = {
  [status.UNAUTHENTICATED]: (c) =>
    `${c.ca} did not accept this ztunnel's credentials (${c.details}); check the token (a projected ServiceAccount token with audience istio-ca) and CLUSTER_ID`,
  [status.PERMISSION_DENIED]: (c) =>
    `${c.ca} refused to issue ${c.identity} to this node (${c.details}); the pod may not be scheduled on this node, or the controller has not seen it yet`,
  [status.INVALID_ARGUMENT]: (c) =>
    `${c.ca} rejected the request for ${c.identity} (${c.details}); check SECRET_TTL against the CA's maximum lifetime`,
  [status.UNAVAILABLE]: (c) =>
    `${c.ca} is unreachable (${c.details}); check CA_ADDRESS, the CA root file and that the controller is running`,
  [status.DEADLINE_EXCEEDED]: (c) =>
    `${c.ca} did not answer within ${c.timeoutMs} ms for ${c.identity} (${c.details})`,
};

export class CaClient {
  /** The CertificateSigner to hand to the CertificateManager. */
  readonly sign: CertificateSigner;
  readonly #opts: CaClientOptions;
  readonly #timeoutMs: number;
  readonly #token: BearerToken;
  #client: IstioCertificateServiceClient | undefined;
  /** The roots the current TLS channel was built with (null: the system's). */
  #roots: Buffer | null | undefined;
  #closed = false;

  constructor(opts: CaClientOptions) {
    this.#timeoutMs = checkOptions(opts);
    this.#opts = opts;
    const t = opts.token;
    this.#token = 'read' in t ? t : bearerToken('path' in t ? t.path : t.value);
    this.sign = (req) => this.#sign(req.csrPem, req.identity, req.ttlSeconds);
  }

  /** Closes the channel; later calls fail. */
  close(): void {
    this.#closed = true;
    this.#client?.close();
    this.#client = undefined;
  }

  /** Throws once close() was called; checked again after every await, so no channel outlives close(). */
  #checkOpen(): void {
    if (this.#closed) throw new CaClientError(`CA client for ${this.#opts.address} is closed`);
  }

  async #sign(csrPem: string, identity: string, ttlSeconds: number): Promise<string[]> {
    this.#checkOpen();
    const metadata = new Metadata();
    let token: string;
    try {
      token = await this.#token.read();
    } catch (err) {
      throw new CaClientError(errorMessage(err), { cause: err });
    }
    metadata.set('authorization', `Bearer ${token}`);
    metadata.set('clusterid', this.#opts.clusterId);
    for (const [name, value] of Object.entries(this.#opts.headers ?? {})) metadata.set(name, value);
    const client = await this.#channel();
    const request = {
      csr: csrPem,
      validityDuration: ttlSeconds,
      metadata: { [IMPERSONATED_IDENTITY]: identity },
    };
    const response = await new Promise<string[]>((resolve, reject) => {
      client.createCertificate(request, metadata, { deadline: Date.now() + this.#timeoutMs }, (err, res) => {
        if (err) reject(this.#grpcError(err, identity));
        else resolve(res.certChain);
      });
    });
    if (response.length === 0) {
      throw new CaClientError(
        `the CA at ${this.#opts.address} answered with an empty cert_chain for ${identity}`,
      );
    }
    return response;
  }

  /** The client for the current root file, rebuilt when the roots changed since the last call. */
  async #channel(): Promise<IstioCertificateServiceClient> {
    this.#checkOpen();
    const sec = this.#opts.security;
    if (sec.kind === 'plaintext') {
      this.#client ??= new IstioCertificateServiceClient(this.#opts.address, credentials.createInsecure());
      return this.#client;
    }
    let roots: Buffer | null;
    try {
      roots = await readRootCa({ rootCa: sec.rootCertPath, serverName: sec.serverName });
    } catch (err) {
      throw new CaClientError(`cannot use the CA root certificate: ${errorMessage(err)}`, { cause: err });
    }
    this.#checkOpen(); // closed while the root file was read
    const same = roots === null ? this.#roots === null : this.#roots?.equals(roots) === true;
    if (this.#client && same) return this.#client;
    // Calls already started on the old channel finish; only new ones use the new root.
    this.#client?.close();
    const options: ChannelOptions =
      sec.serverName === undefined
        ? {}
        : { 'grpc.ssl_target_name_override': sec.serverName, 'grpc.default_authority': sec.serverName };
    this.#client = new IstioCertificateServiceClient(
      this.#opts.address,
      credentials.createSsl(roots),
      options,
    );
    this.#roots = roots;
    return this.#client;
  }

  #grpcError(err: ServiceError, identity: string): CaClientError {
    const details = err.details || err.message;
    const explain = GRPC_FAILURES[err.code];
    const message = explain
      ? explain({ ca: `the CA at ${this.#opts.address}`, identity, details, timeoutMs: this.#timeoutMs })
      : `the CA at ${this.#opts.address} failed to issue ${identity}: ${status[err.code]} (${details})`;
    return new CaClientError(message, { grpcCode: err.code, cause: err });
  }
}

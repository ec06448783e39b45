// SPDX-License-Identifier: Apache-2.0
// The controller's certificate-signing gRPC service, istio.v1.auth.IstioCertificateService
// CreateCertificate (ambient-protocols.md §4), for grpc-js. Each call is authenticated first
// (UNAUTHENTICATED otherwise: an unauthenticated peer learns nothing else, CVE-2022-39388), then
// authorized (./authorize.ts: node impersonation, own identity, trust domain, lifetime cap), then
// signed by the CA core, which answers leaf first and every trusted root last — both roots
// during a rotation, so peers on either side of it keep verifying.
//
// Every refusal is logged with the caller's subject (or its address when it is not
// authenticated) and the reason, and counted by reason; issuances are logged and counted.
import type { Server, ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import {
  IstioCertificateServiceService,
  type IstioCertificateServiceServer,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from '../../shared/gen/citadel.ts';
import { DEFAULT_MAX_TTL_SECONDS, type CertificateAuthority } from '../../shared/identity/ca.ts';
import { parseCertificate } from '../../shared/identity/certificate.ts';
import { IdentityError, type IdentityErrorCode } from '../../shared/identity/errors.ts';
import { pemCertificatesToDer } from '../../shared/identity/pem.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/telemetry/logger.ts';
import { AuthenticationError } from '../auth/errors.ts';
import type { Authenticator, Caller } from '../auth/types.ts';
import { authorizeRequest, type CaPolicy } from './authorize.ts';
import { CaRefusal, REFUSAL_REASONS, type RefusalReason } from './refusal.ts';

export interface CaServiceOptions {
  readonly ca: CertificateAuthority;
  readonly authenticator: Authenticator;
  /** True when a pod running as ServiceAccount `namespace/serviceAccount` is scheduled on `node` (the model). */
  readonly nodeHasIdentity: CaPolicy['nodeHasIdentity'];
  /** Longest lifetime a caller may request (default 90 days, istiod MAX_WORKLOAD_CERT_TTL); longer is refused. */
  readonly maxTtlSeconds?: number;
  readonly logger: Logger;
}

/** Counters since the service was added; every read is a fresh snapshot. */
export interface CaServiceStats {
  readonly issued: number;
  readonly refused: Readonly<Record<RefusalReason, number>>;
}

export interface CaService {
  readonly stats: CaServiceStats;
}

/** Adds IstioCertificateService to `server` (before or after bindAsync). */
export function addCaService(server: Server, opts: CaServiceOptions): CaService {
  const maxTtlSeconds = opts.maxTtlSeconds ?? DEFAULT_MAX_TTL_SECONDS;
  if (!Number.isSafeInteger(maxTtlSeconds) || maxTtlSeconds <= 0) {
    throw new Error(`addCaService: maxTtlSeconds must be a positive integer (got ${maxTtlSeconds})`);
  }
  const policy: CaPolicy = {
    trustDomain: opts.ca.trustDomain,
    maxTtlSeconds,
    nodeHasIdentity: opts.nodeHasIdentity,
  };
  const log = opts.logger.child({ scope: 'ca' });
  let issued = 0;
  const refused = Object.fromEntries(REFUSAL_REASONS.map((r) => [r, 0])) as Record<RefusalReason, number>;

  const refuse = (
    callback: sendUnaryData<IstioCertificateResponse>,
    refusal: CaRefusal,
    who: { peer: string; caller?: Caller },
  ): void => {
    refused[refusal.reason]++;
    const fields = {
      reason: refusal.reason,
      subject: who.caller?.subject ?? 'unauthenticated',
      ...(who.caller?.kind === 'node' && { node: who.caller.node }),
      peer: who.peer,
      err: refusal.message,
      ...(refusal.cause instanceof AuthenticationError && { auth: refusal.cause.reason }),
    };
    if (refusal.reason === 'internal') log.error(fields, 'certificate request failed');
    else log.warn(fields, 'certificate request refused');
    callback({ code: refusal.grpcStatus, details: refusal.publicMessage });
  };

  const createCertificate = async (
    call: ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
    callback: sendUnaryData<IstioCertificateResponse>,
  ): Promise<void> => {
    const peer = call.getPeer();
    let caller: Caller;
    try {
      caller = await opts.authenticator.authenticate(call.metadata);
    } catch (err) {
      refuse(callback, unauthenticated(err), { peer });
      return;
    }
    try {
      const { identity, ttlSeconds } = authorizeRequest(caller, call.request, policy);
      const { certChainPem } = await opts.ca.sign({ csrPem: call.request.csr, identity, ttlSeconds });
      const notAfter = leafNotAfter(certChainPem);
      issued++;
      log.info(
        { subject: caller.subject, ...(caller.kind === 'node' && { node: caller.node }), identity, notAfter },
        'certificate issued',
      );
      callback(null, { certChain: certChainPem });
    } catch (err) {
      refuse(callback, signRefusal(err), { peer, caller });
    }
  };

  const implementation: IstioCertificateServiceServer = {
    createCertificate: (call, callback) => void createCertificate(call, callback),
  };
  server.addService(IstioCertificateServiceService, implementation);

  return {
    stats: {
      get issued() {
        return issued;
      },
      get refused() {
        return Object.freeze({ ...refused });
      },
    },
  };
}

function unauthenticated(err: unknown): CaRefusal {
  return new CaRefusal('unauthenticated', `authentication failed: ${errorMessage(err)}`, {
    publicMessage:
      err instanceof AuthenticationError
        ? `authentication failed: ${err.publicMessage}`
        : 'authentication failed',
    cause: err,
  });
}

/**
 * CA core errors that describe the request (it re-checks what authorizeRequest checked), so their
 * messages may go back to the caller. Every other error is internal.
 */
const CA_CORE_REFUSALS: Partial<Readonly<Record<IdentityErrorCode, RefusalReason>>> = {
  ID_ERR_TTL: 'ttl-too-long',
  ID_ERR_CSR: 'bad-csr',
  ID_ERR_SPIFFE_INVALID: 'bad-csr',
  ID_ERR_ISTIO_IDENTITY: 'bad-csr',
  ID_ERR_TRUST_DOMAIN: 'trust-domain',
};

/** Maps an authorization or CA core failure to a refusal; anything unexpected is internal. */
function signRefusal(err: unknown): CaRefusal {
  if (err instanceof CaRefusal) return err;
  if (err instanceof IdentityError) {
    const reason = CA_CORE_REFUSALS[err.code];
    if (reason !== undefined) return new CaRefusal(reason, err.message, { cause: err });
  }
  return new CaRefusal('internal', `issuing the certificate failed: ${errorMessage(err)}`, {
    publicMessage: 'internal error while issuing the certificate; the controller log has the details',
    cause: err,
  });
}

function leafNotAfter(chain: readonly string[]): string {
  const der = pemCertificatesToDer(chain[0] ?? '', 'issued leaf')[0];
  return der === undefined ? 'unknown' : parseCertificate(der).notAfter.toISOString();
}

// SPDX-License-Identifier: Apache-2.0
// Which identity an authenticated caller may obtain from a CreateCertificate request
// (ambient-protocols.md §4 "Node impersonation"; istio/istio:security/pkg/server/ca/server.go and
// node_auth.go; checklist B.34). Pure: the caller, the request and the policy in, the identity
// and lifetime to sign out, or a CaRefusal.
//
// - The identity is the CSR's single URI SAN, in this CA's trust domain, of the Istio shape
//   spiffe://<td>/ns/<ns>/sa/<sa>.
// - A node agent (NodeCaller) must name that identity in the request metadata
//   `ImpersonatedIdentity`, and gets it only if a pod with that ServiceAccount is scheduled on
//   its own node.
// - A workload (WorkloadCaller) gets only its own identity and may not impersonate.
// - A lifetime above the maximum is refused, never clamped; ≤ 0 asks for the CA's default.
//
// The CA core (src/shared/identity/ca.ts) checks the CSR again — signature, key, exactly one SAN
// equal to the identity — before it signs; this module only reads the SAN to decide.
import type { IstioCertificateRequest } from '../../shared/gen/citadel.ts';
import { GeneralNameTag, parseGeneralNames } from '../../shared/identity/certificate.ts';
import { pemBlocks } from '../../shared/identity/pem.ts';
import {
  istioIdentityUri,
  parseIstioIdentity,
  parseSpiffeId,
  type IstioIdentity,
} from '../../shared/identity/spiffe.ts';
import { x509 } from '../../shared/identity/x509.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Caller } from '../auth/types.ts';
import { CaRefusal } from './refusal.ts';

/** Request metadata key a node agent sets to the SPIFFE ID it requests for a pod. */
export const IMPERSONATED_IDENTITY = 'ImpersonatedIdentity';
/** Request metadata key selecting a signer; this CA has one, so the key is refused. */
export const CERT_SIGNER = 'CertSigner';
/** Same cap as the CA core: a P-256 CSR is ~300 bytes. */
const MAX_CSR_CHARS = 64 * 1024;
const SAN_OID = '2.5.29.17';

export interface CaPolicy {
  readonly trustDomain: string;
  /** Longest lifetime a caller may request; longer requests are refused. */
  readonly maxTtlSeconds: number;
  /** True when a pod running as ServiceAccount `namespace/serviceAccount` is scheduled on `node`. */
  readonly nodeHasIdentity: (node: string, namespace: string, serviceAccount: string) => boolean;
}

export interface AuthorizedRequest {
  /** The SPIFFE ID to sign for. */
  readonly identity: string;
  /** As requested; ≤ 0 means the CA's default. */
  readonly ttlSeconds: number;
}

export function authorizeRequest(
  caller: Caller,
  request: IstioCertificateRequest,
  policy: CaPolicy,
): AuthorizedRequest {
  const impersonated = metadataString(request.metadata, IMPERSONATED_IDENTITY);
  if (metadataString(request.metadata, CERT_SIGNER) !== undefined) {
    throw new CaRefusal(
      'malformed-request',
      `the request selects a signer (metadata ${CERT_SIGNER}); this CA has a single signer, remove the key`,
    );
  }
  const ttlSeconds = request.validityDuration;
  if (ttlSeconds > policy.maxTtlSeconds) {
    throw new CaRefusal(
      'ttl-too-long',
      `validity_duration ${ttlSeconds}s is above the maximum of ${policy.maxTtlSeconds}s; request a shorter lifetime (ztunnel SECRET_TTL)`,
    );
  }

  const requested = csrIdentity(request.csr);
  let identity: IstioIdentity;
  try {
    const id = parseSpiffeId(requested);
    if (id.trustDomain !== policy.trustDomain) {
      throw new CaRefusal(
        'trust-domain',
        `${id.uri} is in trust domain "${id.trustDomain}"; this CA issues identities of "${policy.trustDomain}" only`,
      );
    }
    identity = parseIstioIdentity(id.uri);
  } catch (err) {
    if (err instanceof CaRefusal) throw err;
    throw new CaRefusal(
      'bad-csr',
      `the CSR's URI SAN is not an identity this CA issues (spiffe://${policy.trustDomain}/ns/<namespace>/sa/<service-account>): ${errorMessage(err)}`,
      { cause: err },
    );
  }
  const uri = istioIdentityUri(identity);

  switch (caller.kind) {
    case 'node': {
      if (impersonated === undefined) {
        throw new CaRefusal(
          'malformed-request',
          `a node agent must set the request metadata ${IMPERSONATED_IDENTITY} to the SPIFFE ID it requests (${uri})`,
        );
      }
      if (impersonated !== uri) {
        throw new CaRefusal(
          'bad-csr',
          `the CSR's URI SAN ${uri} differs from ${IMPERSONATED_IDENTITY} ${JSON.stringify(impersonated.slice(0, 300))}`,
        );
      }
      if (!policy.nodeHasIdentity(caller.node, identity.namespace, identity.serviceAccount)) {
        throw new CaRefusal(
          'wrong-node',
          `no pod with ServiceAccount ${identity.namespace}/${identity.serviceAccount} is scheduled on node ${caller.node}; a node agent obtains identities only for pods on its own node`,
        );
      }
      break;
    }
    case 'workload': {
      const own = istioIdentityUri({
        trustDomain: policy.trustDomain,
        namespace: caller.namespace,
        serviceAccount: caller.serviceAccount,
      });
      if (impersonated !== undefined && impersonated !== own) {
        throw new CaRefusal(
          'not-own-identity',
          `only trusted node agents may set ${IMPERSONATED_IDENTITY}; ${caller.namespace}/${caller.serviceAccount} may obtain only ${own}`,
        );
      }
      if (uri !== own) {
        throw new CaRefusal(
          'not-own-identity',
          `the CSR asks for ${uri}, but the caller ${caller.namespace}/${caller.serviceAccount} may obtain only its own identity ${own}`,
        );
      }
      break;
    }
  }
  return { identity: uri, ttlSeconds };
}

/** A string value of the request's metadata Struct; empty counts as absent (as istiod reads it). */
function metadataString(
  metadata: Readonly<Record<string, unknown>> | undefined,
  key: string,
): string | undefined {
  if (metadata === undefined || !Object.hasOwn(metadata, key)) return undefined;
  const v = metadata[key];
  if (v === null || v === '') return undefined;
  if (typeof v !== 'string') {
    throw new CaRefusal('malformed-request', `the request metadata ${key} must be a string value`);
  }
  return v;
}

/** The CSR's single URI SAN, as the bytes say it (latin1: nothing merged or dropped). */
function csrIdentity(csrPem: string): string {
  if (csrPem === '') throw new CaRefusal('bad-csr', 'the request carries no csr');
  if (csrPem.length > MAX_CSR_CHARS) {
    throw new CaRefusal(
      'bad-csr',
      `the csr is ${csrPem.length} bytes; at most ${MAX_CSR_CHARS} are accepted`,
    );
  }
  let uris: string[];
  try {
    const blocks = pemBlocks(csrPem);
    const [block, ...more] = blocks;
    const label = block?.label;
    if (
      !block ||
      (label !== 'CERTIFICATE REQUEST' && label !== 'NEW CERTIFICATE REQUEST') ||
      more.length > 0
    ) {
      throw new Error('expected exactly one PEM block "-----BEGIN CERTIFICATE REQUEST-----"');
    }
    const csr = new x509.Pkcs10CertificateRequest(block.der);
    uris = csr.extensions
      .filter((e) => e.type === SAN_OID)
      .flatMap((e) => parseGeneralNames(new Uint8Array(e.value)))
      .filter((n) => n.type === GeneralNameTag.uniformResourceIdentifier)
      .map((n) => Buffer.from(n.value).toString('latin1'));
  } catch (err) {
    throw new CaRefusal('bad-csr', `the csr is not a PEM PKCS#10 request: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  const [uri, ...others] = uris;
  if (uri === undefined || others.length > 0) {
    throw new CaRefusal(
      'bad-csr',
      `the CSR must carry exactly one URI subjectAltName, the SPIFFE ID requested; it has ${uris.length}`,
    );
  }
  return uri;
}

// SPDX-License-Identifier: Apache-2.0
// authorizeRequest (ambient-protocols.md §4 "Node impersonation"; checklist B.34): which identity
// each kind of caller may obtain, and the reason and gRPC status of every refusal — node
// without or with a mismatching ImpersonatedIdentity, pod on another node or nowhere, workload
// asking for another identity or impersonating, other trust domain, non-Istio SPIFFE ID, no or
// several URI SANs, unparseable CSR, CertSigner, non-string metadata, lifetime above the cap.
import t from 'tap';
import { status } from '@grpc/grpc-js';
import { authorizeRequest, type CaPolicy } from '../../../../src/controller/ca/authorize.ts';
import { CaRefusal } from '../../../../src/controller/ca/refusal.ts';
import type { Caller, NodeCaller, WorkloadCaller } from '../../../../src/controller/auth/types.ts';
import type { IstioCertificateRequest } from '../../../../src/shared/gen/citadel.ts';
import { generateKeyAndCsr } from '../../../../src/shared/identity/csr.ts';
import { csrWithSans } from './csr-fixtures.ts';

const FRONTEND = 'spiffe://cluster.local/ns/apps/sa/frontend';
const BACKEND = 'spiffe://cluster.local/ns/apps/sa/backend';
const NODE_A: NodeCaller = { kind: 'node', node: 'node-a', subject: 'ztunnel on node-a' };
const WAYPOINT: WorkloadCaller = {
  kind: 'workload',
  namespace: 'apps',
  serviceAccount: 'waypoint',
  subject: 'wp',
};

const checks: string[] = [];
const policy: CaPolicy = {
  trustDomain: 'cluster.local',
  maxTtlSeconds: 7 * 86_400,
  nodeHasIdentity: (node, ns, sa) => {
    checks.push(`${node} ${ns}/${sa}`);
    return node === 'node-a' && ns === 'apps' && sa === 'frontend';
  },
};

async function csrFor(identity: string): Promise<string> {
  return (await generateKeyAndCsr(identity)).csrPem;
}

function req(
  csr: string,
  metadata?: Record<string, unknown>,
  validityDuration = 86_400,
): IstioCertificateRequest {
  return { csr, validityDuration, metadata };
}

function outcome(caller: Caller, r: IstioCertificateRequest): string {
  try {
    const a = authorizeRequest(caller, r, policy);
    return `ok ${a.identity} ${a.ttlSeconds}`;
  } catch (err) {
    if (!(err instanceof CaRefusal)) return `other: ${String(err)}`;
    return `${err.reason} ${status[err.grpcStatus]}`;
  }
}

t.test('a node agent gets the identity of a pod on its node, named in ImpersonatedIdentity', async (t) => {
  checks.length = 0;
  t.equal(
    outcome(NODE_A, req(await csrFor(FRONTEND), { ImpersonatedIdentity: FRONTEND })),
    `ok ${FRONTEND} 86400`,
  );
  t.same(checks, ['node-a apps/frontend'], 'the model is asked about this node and this ServiceAccount');
  t.equal(
    outcome(NODE_A, req(await csrFor(FRONTEND), { ImpersonatedIdentity: FRONTEND }, 0)),
    `ok ${FRONTEND} 0`,
    '0 asks for the default lifetime',
  );
});

t.test('node agent refusals', async (t) => {
  const csr = await csrFor(FRONTEND);
  t.equal(outcome(NODE_A, req(csr)), 'malformed-request INVALID_ARGUMENT', 'no ImpersonatedIdentity');
  t.equal(
    outcome(NODE_A, req(csr, { ImpersonatedIdentity: '' })),
    'malformed-request INVALID_ARGUMENT',
    'empty',
  );
  t.equal(
    outcome(NODE_A, req(csr, { ImpersonatedIdentity: BACKEND })),
    'bad-csr INVALID_ARGUMENT',
    'the CSR asks for another identity than ImpersonatedIdentity',
  );
  t.equal(
    outcome(NODE_A, req(await csrFor(BACKEND), { ImpersonatedIdentity: BACKEND })),
    'wrong-node PERMISSION_DENIED',
    'the pod of that ServiceAccount is on another node',
  );
  const ghost = 'spiffe://cluster.local/ns/apps/sa/ghost';
  t.equal(
    outcome(NODE_A, req(await csrFor(ghost), { ImpersonatedIdentity: ghost })),
    'wrong-node PERMISSION_DENIED',
    'no pod has that ServiceAccount',
  );
  t.equal(
    outcome({ ...NODE_A, node: 'node-b' }, req(csr, { ImpersonatedIdentity: FRONTEND })),
    'wrong-node PERMISSION_DENIED',
    'same identity, asked from another node',
  );
});

t.test('a workload gets only its own identity and cannot impersonate', async (t) => {
  const own = 'spiffe://cluster.local/ns/apps/sa/waypoint';
  t.equal(outcome(WAYPOINT, req(await csrFor(own))), `ok ${own} 86400`);
  t.equal(outcome(WAYPOINT, req(await csrFor(own), { ImpersonatedIdentity: own })), `ok ${own} 86400`);
  t.equal(outcome(WAYPOINT, req(await csrFor(FRONTEND))), 'not-own-identity PERMISSION_DENIED');
  t.equal(
    outcome(WAYPOINT, req(await csrFor(FRONTEND), { ImpersonatedIdentity: FRONTEND })),
    'not-own-identity PERMISSION_DENIED',
  );
  t.equal(
    outcome(WAYPOINT, req(await csrFor(own), { ImpersonatedIdentity: FRONTEND })),
    'not-own-identity PERMISSION_DENIED',
    'impersonation metadata from a workload',
  );
});

t.test('the identity must be an Istio identity of this trust domain', async (t) => {
  const evil = 'spiffe://evil.local/ns/apps/sa/frontend';
  t.equal(
    outcome(NODE_A, req(await csrFor(evil), { ImpersonatedIdentity: evil })),
    'trust-domain PERMISSION_DENIED',
  );
  const evilOwn = 'spiffe://evil.local/ns/apps/sa/waypoint';
  t.equal(outcome(WAYPOINT, req(await csrFor(evilOwn))), 'trust-domain PERMISSION_DENIED');
  const odd = 'spiffe://cluster.local/workload/x';
  t.equal(outcome(NODE_A, req(await csrFor(odd), { ImpersonatedIdentity: odd })), 'bad-csr INVALID_ARGUMENT');
});

t.test('the CSR must carry exactly one URI SAN and parse', async (t) => {
  const meta = { ImpersonatedIdentity: FRONTEND };
  t.equal(
    outcome(NODE_A, req(await csrWithSans({ uris: [FRONTEND, BACKEND] }), meta)),
    'bad-csr INVALID_ARGUMENT',
  );
  t.equal(outcome(NODE_A, req(await csrWithSans({}), meta)), 'bad-csr INVALID_ARGUMENT', 'no SAN');
  t.equal(
    outcome(NODE_A, req(await csrWithSans({ dns: ['frontend.apps'] }), meta)),
    'bad-csr INVALID_ARGUMENT',
  );
  t.equal(
    outcome(NODE_A, req(await csrWithSans({ uris: [`${FRONTEND}\0`] }), meta)),
    'bad-csr INVALID_ARGUMENT',
    'NUL byte in the SAN',
  );
  t.equal(outcome(NODE_A, req('', meta)), 'bad-csr INVALID_ARGUMENT', 'empty');
  t.equal(outcome(NODE_A, req('not a csr', meta)), 'bad-csr INVALID_ARGUMENT', 'not PEM');
  t.equal(
    outcome(
      NODE_A,
      req('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', meta),
    ),
    'bad-csr INVALID_ARGUMENT',
    'PEM of garbage',
  );
  t.equal(outcome(NODE_A, req('x'.repeat(65 * 1024), meta)), 'bad-csr INVALID_ARGUMENT', 'oversized');
});

t.test('metadata and lifetime', async (t) => {
  const csr = await csrFor(FRONTEND);
  t.equal(
    outcome(NODE_A, req(csr, { ImpersonatedIdentity: FRONTEND, CertSigner: 'other-ca' })),
    'malformed-request INVALID_ARGUMENT',
    'CertSigner is refused, not ignored',
  );
  t.equal(outcome(NODE_A, req(csr, { ImpersonatedIdentity: 42 })), 'malformed-request INVALID_ARGUMENT');
  t.equal(
    outcome(NODE_A, req(csr, { ImpersonatedIdentity: [FRONTEND] })),
    'malformed-request INVALID_ARGUMENT',
  );
  t.equal(outcome(NODE_A, req(csr, { ImpersonatedIdentity: FRONTEND, Other: 1 })), `ok ${FRONTEND} 86400`);
  t.equal(
    outcome(NODE_A, req(csr, { ImpersonatedIdentity: FRONTEND }, 7 * 86_400)),
    `ok ${FRONTEND} ${7 * 86_400}`,
    'the maximum itself',
  );
  t.equal(
    outcome(NODE_A, req(csr, { ImpersonatedIdentity: FRONTEND }, 7 * 86_400 + 1)),
    'ttl-too-long INVALID_ARGUMENT',
  );
  t.equal(
    outcome(NODE_A, req(csr, { ImpersonatedIdentity: FRONTEND }, 10 * 365 * 86_400)),
    'ttl-too-long INVALID_ARGUMENT',
    'ten years',
  );
});

// SPDX-License-Identifier: Apache-2.0
// The controller's CA service end to end (ambient-protocols.md §4; checklist B.34–B.36): a real
// grpc-js server over TLS on loopback with addCaService, the TokenReview authenticator against a
// loopback stand-in of the Kubernetes API, and real clients — ztunnel's CaClient (with the
// CertificateManager) and a raw generated client for requests ztunnel never sends.
//
// Every refusal of the issue is one test, each checking the gRPC status, that the refusal is
// logged with the caller and reason, and counted: no token, malformed header, bad token, the
// review says not authenticated, TokenReview API unreachable, wrong node, no pod at all, a token
// of a recreated pod, other trust domain, two SANs, lifetime too long, a workload asking for
// another identity, CertSigner. Successes: a ztunnel gets a chain that verifies against the
// returned roots; a workload gets its own identity; during a root rotation the response carries
// both roots; local mode with node tokens.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { credentials, Metadata, Server, ServerCredentials, status } from '@grpc/grpc-js';
import { addCaService, type CaService } from '../../../../src/controller/ca/service.ts';
import type { Authenticator } from '../../../../src/controller/auth/types.ts';
import { EXTRA, TokenReviewAuthenticator } from '../../../../src/controller/auth/token-review.ts';
import { NodeTokenAuthenticator, writeNodeTokenFile } from '../../../../src/controller/auth/node-token.ts';
import type { RefusalReason } from '../../../../src/controller/ca/refusal.ts';
import {
  IstioCertificateServiceClient,
  type IstioCertificateRequest,
} from '../../../../src/shared/gen/citadel.ts';
import type { CertificateAuthority } from '../../../../src/shared/identity/ca.ts';
import { CertificateManager } from '../../../../src/shared/identity/cert-manager.ts';
import { generateKeyAndCsr } from '../../../../src/shared/identity/csr.ts';
import { pemCertificatesToDer } from '../../../../src/shared/identity/pem.ts';
import { verifySvid } from '../../../../src/shared/identity/svid.ts';
import { TrustBundle } from '../../../../src/shared/identity/trust-bundle.ts';
import { Logger } from '../../../../src/shared/telemetry/logger.ts';
import { CaClient, CaClientError } from '../../../../ztunnel/src/identity/ca-client.ts';
import { mintCert, newTestCa } from '../../../helpers/pki.ts';
import {
  kubeConfigFor,
  serviceAccountUser,
  startFakeTokenReviewApi,
  type FakeTokenReviewApi,
  type ReviewAnswer,
} from '../../../unit/controller/auth/fake-token-review-api.ts';
import { csrWithSans } from '../../../unit/controller/ca/csr-fixtures.ts';

const TD = 'cluster.local';
const FRONTEND = `spiffe://${TD}/ns/apps/sa/frontend`;
const BACKEND = `spiffe://${TD}/ns/apps/sa/backend`;
const WAYPOINT = `spiffe://${TD}/ns/apps/sa/waypoint`;
const SERVER_NAME = 'ca.mesh.test';
const MAX_TTL = 7 * 86_400;
const ZTUNNEL_A = 'system:serviceaccount:istio-system:ztunnel (pod ztunnel-a)';

/** The model: which ServiceAccounts have a pod on which node. */
const PODS = [
  { node: 'node-a', namespace: 'apps', serviceAccount: 'frontend' },
  { node: 'node-b', namespace: 'apps', serviceAccount: 'backend' },
];
const nodeHasIdentity = (node: string, ns: string, sa: string): boolean =>
  PODS.some((p) => p.node === node && p.namespace === ns && p.serviceAccount === sa);

const REVIEWS: Record<string, ReviewAnswer> = {
  'tok-ztunnel-a': {
    authenticated: true,
    user: serviceAccountUser('istio-system', 'ztunnel', {
      [EXTRA.nodeName]: ['node-a'],
      [EXTRA.podName]: ['ztunnel-a'],
      [EXTRA.podUid]: ['uid-a'],
    }),
  },
  // An older API server: no node-name extra, so the node comes from the bound pod.
  'tok-ztunnel-b': {
    authenticated: true,
    user: serviceAccountUser('istio-system', 'ztunnel', {
      [EXTRA.podName]: ['ztunnel-b'],
      [EXTRA.podUid]: ['uid-b'],
    }),
  },
  'tok-ztunnel-recreated': {
    authenticated: true,
    user: serviceAccountUser('istio-system', 'ztunnel', {
      [EXTRA.podName]: ['ztunnel-b'],
      [EXTRA.podUid]: ['uid-of-the-deleted-pod'],
    }),
  },
  'tok-waypoint': { authenticated: true, user: serviceAccountUser('apps', 'waypoint') },
  'tok-revoked': { authenticated: false, error: 'token has been invalidated (internal detail)' },
};
const podNode = (ns: string, name: string, uid: string): string | undefined =>
  ns === 'istio-system' && name === 'ztunnel-b' && uid === 'uid-b' ? 'node-b' : undefined;

interface LogLine {
  level: string;
  message?: string;
  reason?: string;
  subject?: string;
  node?: string;
  peer?: string;
  identity?: string;
  err?: string;
}

interface Rig {
  readonly ca: CertificateAuthority;
  readonly address: string;
  readonly rootPath: string;
  readonly service: CaService;
  readonly logs: LogLine[];
  /** ztunnel's client with a literal token. */
  client(token: string): CaClient;
  /** A raw call, with exactly the given metadata. */
  raw(request: IstioCertificateRequest, md: Metadata): Promise<RawResult>;
}

type RawResult = { ok: true; chain: string[] } | { ok: false; code: status; details: string };

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'ca-service-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function startRig(
  t: Test,
  opts: { authenticator: Authenticator; ca?: CertificateAuthority },
): Promise<Rig> {
  const ca = opts.ca ?? (await newTestCa({ trustDomain: TD }));
  const dir = tempDir(t);
  const rootPath = join(dir, 'root-cert.pem');
  writeFileSync(rootPath, ca.trustBundle.toPem());
  const serving = await mintCert({ issuer: ca, dnsNames: [SERVER_NAME] });

  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') logs.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  const server = new Server();
  const service = addCaService(server, {
    ca,
    authenticator: opts.authenticator,
    nodeHasIdentity,
    maxTtlSeconds: MAX_TTL,
    logger: new Logger({ destination: sink }),
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      '127.0.0.1:0',
      ServerCredentials.createSsl(
        null,
        [{ private_key: Buffer.from(serving.privateKeyPem), cert_chain: Buffer.from(serving.certPem) }],
        false,
      ),
      (err, p) => (err ? reject(err) : resolve(p)),
    );
  });
  t.teardown(() => server.forceShutdown());
  const address = `127.0.0.1:${port}`;
  const channelOptions = {
    'grpc.ssl_target_name_override': SERVER_NAME,
    'grpc.default_authority': SERVER_NAME,
  };
  const raw = new IstioCertificateServiceClient(
    address,
    credentials.createSsl(Buffer.from(ca.trustBundle.toPem())),
    channelOptions,
  );
  t.teardown(() => raw.close());

  return {
    ca,
    address,
    rootPath,
    service,
    logs,
    client: (token) => {
      const c = new CaClient({
        address,
        security: { kind: 'tls', rootCertPath: rootPath, serverName: SERVER_NAME },
        token: { value: token },
        clusterId: 'Kubernetes',
        timeoutMs: 30_000,
      });
      t.teardown(() => c.close());
      return c;
    },
    raw: (request, md) =>
      new Promise<RawResult>((resolve) => {
        raw.createCertificate(request, md, { deadline: Date.now() + 30_000 }, (err, res) => {
          if (err) resolve({ ok: false, code: err.code, details: err.details });
          else resolve({ ok: true, chain: res.certChain });
        });
      }),
  };
}

async function tokenReviewRig(t: Test): Promise<Rig & { api: FakeTokenReviewApi }> {
  const api = await startFakeTokenReviewApi((token) =>
    Object.hasOwn(REVIEWS, token) ? REVIEWS[token]! : { authenticated: false, error: 'invalid bearer token' },
  );
  t.teardown(() => api.close());
  const rig = await startRig(t, {
    authenticator: new TokenReviewAuthenticator({ kubeConfig: api.kubeConfig, podNode }),
  });
  return { ...rig, api };
}

function md(entries: Record<string, string>): Metadata {
  const m = new Metadata();
  for (const [k, v] of Object.entries(entries)) m.set(k, v);
  return m;
}

async function csrFor(identity: string): Promise<string> {
  return (await generateKeyAndCsr(identity)).csrPem;
}

/** The status of a CaClient.sign call: 'OK' or the gRPC status name. */
async function signStatus(p: Promise<string[]>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    if (err instanceof CaClientError && err.grpcCode !== undefined) return status[err.grpcCode];
    return `other: ${String(err)}`;
  }
}

/**
 * Asserts one refusal: its gRPC status, that it was counted under `reason`, and that the last
 * log line records it with the caller's subject (or 'unauthenticated' and the peer address).
 */
async function expectRefusal(
  t: Test,
  rig: Rig,
  reason: RefusalReason,
  call: () => Promise<string>,
  expected: { code: keyof typeof status; subject: string },
): Promise<void> {
  const before = rig.service.stats.refused[reason];
  const issuedBefore = rig.service.stats.issued;
  t.equal(await call(), expected.code, `gRPC ${expected.code}`);
  t.equal(rig.service.stats.refused[reason], before + 1, `counted as ${reason}`);
  t.equal(rig.service.stats.issued, issuedBefore, 'nothing issued');
  const line = rig.logs.at(-1);
  t.match(line, { level: 'warn', message: 'certificate request refused', reason, subject: expected.subject });
  t.match(line?.peer, /127\.0\.0\.1/, 'the peer address is logged');
}

const rawStatus = async (p: Promise<RawResult>): Promise<string> => {
  const r = await p;
  return r.ok ? 'OK' : status[r.code];
};

t.test('a ztunnel obtains a pod identity: the chain verifies against the roots it came with', async (t) => {
  const rig = await tokenReviewRig(t);
  const client = rig.client('tok-ztunnel-a');
  const { csrPem } = await generateKeyAndCsr(FRONTEND);
  const chain = await client.sign({ csrPem, identity: FRONTEND, ttlSeconds: 3600 });
  t.equal(chain.length, 2, 'leaf, then the root (no intermediate in this CA)');
  t.equal(pemCertificatesToDer(chain[0]!).length, 1, 'the first element is the leaf alone');
  t.equal(chain.at(-1), rig.ca.trustBundle.toPem(), 'the last element holds the roots');
  const verified = await verifySvid(pemCertificatesToDer(chain[0]!), TrustBundle.fromPem(chain.at(-1)!), {
    expectedIdentities: [FRONTEND],
    trustDomain: TD,
  });
  t.equal(verified.id.uri, FRONTEND);
  t.equal(
    verified.notAfter.getTime() - verified.notBefore.getTime(),
    (3600 + 60) * 1000,
    'requested TTL (+60 s backdate)',
  );
  t.equal(rig.service.stats.issued, 1);
  t.match(rig.logs.at(-1), {
    level: 'info',
    message: 'certificate issued',
    subject: ZTUNNEL_A,
    node: 'node-a',
    identity: FRONTEND,
  });
  t.same(
    rig.api.reviews.map((r) => r.audiences),
    [['istio-ca']],
    'one TokenReview, for audience istio-ca',
  );
});

t.test("ztunnel's CertificateManager takes its certificates from the CA service", async (t) => {
  const rig = await tokenReviewRig(t);
  const manager = new CertificateManager({ signer: rig.client('tok-ztunnel-b').sign, ttlSeconds: 3600 });
  t.teardown(() => manager.close());
  const cert = await manager.getCertificate(BACKEND);
  t.equal(cert.id.uri, BACKEND, 'node-b found through the bound pod and its UID');
  t.same(cert.rootsPem, rig.ca.trustBundle.rootsPem);
});

t.test('refused: no token (a CSR from a caller without credentials, CVE-2022-39388)', async (t) => {
  const rig = await tokenReviewRig(t);
  const request = {
    csr: await csrFor(FRONTEND),
    validityDuration: 3600,
    metadata: { ImpersonatedIdentity: FRONTEND },
  };
  await expectRefusal(t, rig, 'unauthenticated', () => rawStatus(rig.raw(request, new Metadata())), {
    code: 'UNAUTHENTICATED',
    subject: 'unauthenticated',
  });
  const r = await rig.raw(request, md({ clusterid: 'Kubernetes' }));
  t.match(r, { ok: false, details: /no credentials/ }, 'the caller is told what to send');
  t.same(rig.api.reviews, [], 'no TokenReview for a call without a token');
});

t.test('refused: malformed authorization header', async (t) => {
  const rig = await tokenReviewRig(t);
  const request = {
    csr: await csrFor(FRONTEND),
    validityDuration: 3600,
    metadata: { ImpersonatedIdentity: FRONTEND },
  };
  for (const header of ['Basic dG9rLXp0dW5uZWwtYTp4', 'tok-ztunnel-a', 'Bearer tok-ztunnel-a, Bearer x']) {
    await expectRefusal(
      t,
      rig,
      'unauthenticated',
      () => rawStatus(rig.raw(request, md({ authorization: header }))),
      {
        code: 'UNAUTHENTICATED',
        subject: 'unauthenticated',
      },
    );
  }
  t.same(rig.api.reviews, [], 'no TokenReview for a malformed header');
});

t.test('refused: bad token (empty, or unknown to the API server)', async (t) => {
  const rig = await tokenReviewRig(t);
  await expectRefusal(
    t,
    rig,
    'unauthenticated',
    async () => {
      const r = await rig.raw(
        { csr: await csrFor(WAYPOINT), validityDuration: 3600 },
        md({ authorization: 'Bearer ' }),
      );
      return r.ok ? 'OK' : status[r.code];
    },
    { code: 'UNAUTHENTICATED', subject: 'unauthenticated' },
  );
  await expectRefusal(
    t,
    rig,
    'unauthenticated',
    () =>
      signStatus(
        rig.client('tok-forged').sign({
          csrPem: '',
          identity: FRONTEND,
          ttlSeconds: 3600,
        }),
      ),
    { code: 'UNAUTHENTICATED', subject: 'unauthenticated' },
  );
  t.same(
    rig.api.reviews.map((r) => r.token),
    ['tok-forged'],
    'only the well-formed token was reviewed',
  );
});

t.test('refused: the TokenReview says the token is not authenticated; its error stays private', async (t) => {
  const rig = await tokenReviewRig(t);
  const client = rig.client('tok-revoked');
  const csrPem = await csrFor(FRONTEND);
  await expectRefusal(
    t,
    rig,
    'unauthenticated',
    () => signStatus(client.sign({ csrPem, identity: FRONTEND, ttlSeconds: 3600 })),
    {
      code: 'UNAUTHENTICATED',
      subject: 'unauthenticated',
    },
  );
  const r = await rig.raw(
    { csr: csrPem, validityDuration: 3600, metadata: { ImpersonatedIdentity: FRONTEND } },
    md({ authorization: 'Bearer tok-revoked' }),
  );
  t.match(r, { ok: false, details: /token was not accepted/ });
  t.notMatch(r.ok ? '' : r.details, /internal detail/, 'the review error is not sent back');
  t.match(rig.logs.at(-1)?.err, /internal detail/, 'but it is logged');
});

t.test('refused: the TokenReview API is unreachable (fail closed)', async (t) => {
  const probe = createTcpServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const rig = await startRig(t, {
    authenticator: new TokenReviewAuthenticator({
      kubeConfig: kubeConfigFor(`http://127.0.0.1:${port}`, 'controller-token'),
      podNode,
    }),
  });
  const r = await rig.raw(
    { csr: await csrFor(FRONTEND), validityDuration: 3600, metadata: { ImpersonatedIdentity: FRONTEND } },
    md({ authorization: 'Bearer tok-ztunnel-a' }),
  );
  t.match(r, { ok: false, code: status.UNAUTHENTICATED, details: /could not be verified at this time/ });
  t.equal(rig.service.stats.refused.unauthenticated, 1);
  t.equal(rig.service.stats.issued, 0);
  t.match(rig.logs.at(-1), { reason: 'unauthenticated', err: /TokenReview request failed/ });
});

t.test('refused: wrong node (the pod of that identity lives on another node)', async (t) => {
  const rig = await tokenReviewRig(t);
  const client = rig.client('tok-ztunnel-a');
  const csrPem = await csrFor(BACKEND);
  await expectRefusal(
    t,
    rig,
    'wrong-node',
    () => signStatus(client.sign({ csrPem, identity: BACKEND, ttlSeconds: 3600 })),
    {
      code: 'PERMISSION_DENIED',
      subject: ZTUNNEL_A,
    },
  );
  t.match(rig.logs.at(-1), { node: 'node-a', err: /apps\/backend is scheduled on node node-a/ });
  // The same identity from the node its pod is on is issued.
  t.equal(
    await signStatus(rig.client('tok-ztunnel-b').sign({ csrPem, identity: BACKEND, ttlSeconds: 3600 })),
    'OK',
  );
});

t.test('refused: an identity no pod has at all', async (t) => {
  const rig = await tokenReviewRig(t);
  const ghost = `spiffe://${TD}/ns/apps/sa/ghost`;
  await expectRefusal(
    t,
    rig,
    'wrong-node',
    async () =>
      signStatus(
        rig.client('tok-ztunnel-a').sign({ csrPem: await csrFor(ghost), identity: ghost, ttlSeconds: 3600 }),
      ),
    { code: 'PERMISSION_DENIED', subject: ZTUNNEL_A },
  );
});

t.test('refused: a node token of a deleted pod (recreated under the same name, another UID)', async (t) => {
  const rig = await tokenReviewRig(t);
  await expectRefusal(
    t,
    rig,
    'unauthenticated',
    async () =>
      signStatus(
        rig
          .client('tok-ztunnel-recreated')
          .sign({ csrPem: await csrFor(BACKEND), identity: BACKEND, ttlSeconds: 3600 }),
      ),
    { code: 'UNAUTHENTICATED', subject: 'unauthenticated' },
  );
  t.match(rig.logs.at(-1)?.err, /uid-of-the-deleted-pod/);
});

t.test('refused: another trust domain', async (t) => {
  const rig = await tokenReviewRig(t);
  const evil = 'spiffe://evil.local/ns/apps/sa/frontend';
  await expectRefusal(
    t,
    rig,
    'trust-domain',
    async () =>
      signStatus(
        rig.client('tok-ztunnel-a').sign({ csrPem: await csrFor(evil), identity: evil, ttlSeconds: 3600 }),
      ),
    { code: 'PERMISSION_DENIED', subject: ZTUNNEL_A },
  );
});

t.test('refused: a CSR with two URI SANs', async (t) => {
  const rig = await tokenReviewRig(t);
  const csrPem = await csrWithSans({ uris: [FRONTEND, BACKEND] });
  await expectRefusal(
    t,
    rig,
    'bad-csr',
    () => signStatus(rig.client('tok-ztunnel-a').sign({ csrPem, identity: FRONTEND, ttlSeconds: 3600 })),
    { code: 'INVALID_ARGUMENT', subject: ZTUNNEL_A },
  );
});

t.test('refused: a lifetime above the maximum (refused, not clamped)', async (t) => {
  const rig = await tokenReviewRig(t);
  const client = rig.client('tok-ztunnel-a');
  await expectRefusal(
    t,
    rig,
    'ttl-too-long',
    async () =>
      signStatus(
        client.sign({ csrPem: await csrFor(FRONTEND), identity: FRONTEND, ttlSeconds: MAX_TTL + 1 }),
      ),
    { code: 'INVALID_ARGUMENT', subject: ZTUNNEL_A },
  );
  await expectRefusal(
    t,
    rig,
    'ttl-too-long',
    async () =>
      signStatus(
        client.sign({ csrPem: await csrFor(FRONTEND), identity: FRONTEND, ttlSeconds: 10 * 365 * 86_400 }),
      ),
    { code: 'INVALID_ARGUMENT', subject: ZTUNNEL_A },
  );
  const chain = await client.sign({
    csrPem: await csrFor(FRONTEND),
    identity: FRONTEND,
    ttlSeconds: MAX_TTL,
  });
  const leaf = await verifySvid(pemCertificatesToDer(chain[0]!), TrustBundle.fromPem(chain.at(-1)!));
  t.equal(
    (leaf.notAfter.getTime() - leaf.notBefore.getTime()) / 1000,
    MAX_TTL + 60,
    'the maximum itself is issued',
  );
});

t.test('a workload gets its own identity only; asking for another is refused', async (t) => {
  const rig = await tokenReviewRig(t);
  const own = await rig.raw(
    { csr: await csrFor(WAYPOINT), validityDuration: 0 },
    md({ authorization: 'Bearer tok-waypoint' }),
  );
  t.ok(own.ok, 'own identity, no impersonation metadata, default lifetime');
  if (own.ok) {
    const v = await verifySvid(pemCertificatesToDer(own.chain[0]!), TrustBundle.fromPem(own.chain.at(-1)!));
    t.equal(v.id.uri, WAYPOINT);
    t.equal((v.notAfter.getTime() - v.notBefore.getTime()) / 1000, 86_400 + 60, 'the CA default, 24 h');
  }
  const subject = 'system:serviceaccount:apps:waypoint';
  await expectRefusal(
    t,
    rig,
    'not-own-identity',
    async () =>
      rawStatus(
        rig.raw(
          { csr: await csrFor(FRONTEND), validityDuration: 3600 },
          md({ authorization: 'Bearer tok-waypoint' }),
        ),
      ),
    { code: 'PERMISSION_DENIED', subject },
  );
  await expectRefusal(
    t,
    rig,
    'not-own-identity',
    async () =>
      signStatus(
        rig
          .client('tok-waypoint')
          .sign({ csrPem: await csrFor(FRONTEND), identity: FRONTEND, ttlSeconds: 3600 }),
      ),
    { code: 'PERMISSION_DENIED', subject },
  );
});

t.test('refused: a request selecting another signer (CertSigner)', async (t) => {
  const rig = await tokenReviewRig(t);
  await expectRefusal(
    t,
    rig,
    'malformed-request',
    async () =>
      rawStatus(
        rig.raw(
          {
            csr: await csrFor(FRONTEND),
            validityDuration: 3600,
            metadata: { ImpersonatedIdentity: FRONTEND, CertSigner: 'x' },
          },
          md({ authorization: 'Bearer tok-ztunnel-a' }),
        ),
      ),
    { code: 'INVALID_ARGUMENT', subject: ZTUNNEL_A },
  );
});

t.test('root rotation: the new root is distributed before it signs, and kept until dropped', async (t) => {
  const rig = await tokenReviewRig(t);
  const client = rig.client('tok-ztunnel-a');
  const sign = async (): Promise<string[]> =>
    client.sign({ csrPem: await csrFor(FRONTEND), identity: FRONTEND, ttlSeconds: 3600 });
  const before = await sign();
  const oldRoots = TrustBundle.fromPem(before.at(-1)!);
  t.equal(oldRoots.rootsPem.length, 1);

  await rig.ca.addNextRoot();
  const added = await sign();
  const both = TrustBundle.fromPem(added.at(-1)!);
  t.equal(both.rootsPem.length, 2, 'step 1: the last element holds the next and the current root');
  t.ok(both.rootsPem.includes(oldRoots.rootsPem[0]!), 'the current root is still distributed');
  const stillOld = await verifySvid(pemCertificatesToDer(added[0]!), oldRoots, {
    expectedIdentities: [FRONTEND],
  });
  t.equal(stillOld.id.uri, FRONTEND, 'step 1: leaves are still signed by the current root');

  rig.ca.activateNextRoot();
  const during = await sign();
  t.same(TrustBundle.fromPem(during.at(-1)!).rootsPem, both.rootsPem, 'step 2: the same two roots');
  for (const [name, chain] of [
    ['new leaf', during],
    ['step-1 leaf', added],
    ['old leaf', before],
  ] as const) {
    const v = await verifySvid(pemCertificatesToDer(chain[0]!), both, { expectedIdentities: [FRONTEND] });
    t.equal(v.id.uri, FRONTEND, `${name} verifies against the rotated bundle`);
  }
  await t.rejects(
    verifySvid(pemCertificatesToDer(during[0]!), oldRoots),
    { code: 'ID_ERR_CHAIN' },
    'step 2: the new leaf is signed by the new root',
  );

  rig.ca.dropOldRoot();
  const after = await sign();
  const only = TrustBundle.fromPem(after.at(-1)!);
  t.equal(only.rootsPem.length, 1, 'after the rotation, only the new root');
  t.not(only.rootsPem[0], oldRoots.rootsPem[0]);
});

t.test('local mode: node tokens authenticate each ztunnel as its node', async (t) => {
  const dir = tempDir(t);
  const tokens = writeNodeTokenFile(join(dir, 'node-tokens.yaml'), ['node-a', 'node-b']);
  const rig = await startRig(t, {
    authenticator: NodeTokenAuthenticator.fromFile(join(dir, 'node-tokens.yaml')),
  });
  const tokenPath = join(dir, 'ztunnel-a.token');
  writeFileSync(tokenPath, `${tokens['node-a']!}\n`, { mode: 0o600 });
  const client = new CaClient({
    address: rig.address,
    security: { kind: 'tls', rootCertPath: rig.rootPath, serverName: SERVER_NAME },
    token: { path: tokenPath },
    clusterId: 'Kubernetes',
  });
  t.teardown(() => client.close());
  t.equal(
    await signStatus(client.sign({ csrPem: await csrFor(FRONTEND), identity: FRONTEND, ttlSeconds: 3600 })),
    'OK',
  );
  await expectRefusal(
    t,
    rig,
    'wrong-node',
    async () =>
      signStatus(client.sign({ csrPem: await csrFor(BACKEND), identity: BACKEND, ttlSeconds: 3600 })),
    { code: 'PERMISSION_DENIED', subject: 'local node token (node-a)' },
  );
  await expectRefusal(
    t,
    rig,
    'unauthenticated',
    async () =>
      signStatus(
        rig
          .client('not-a-node-token')
          .sign({ csrPem: await csrFor(FRONTEND), identity: FRONTEND, ttlSeconds: 3600 }),
      ),
    { code: 'UNAUTHENTICATED', subject: 'unauthenticated' },
  );
});

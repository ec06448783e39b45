// SPDX-License-Identifier: Apache-2.0
// ztunnel's CA client against a stub IstioCertificateService on loopback: what goes on the wire
// (CSR, validity_duration, ImpersonatedIdentity in the request metadata Struct, the bearer token,
// clusterid, CA_HEADER extras), the token file re-read on every call, TLS verified against the
// root file and rebuilt when that file changes, per-call deadline, and each gRPC failure turned
// into a message that says what to check.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Server, ServerCredentials, status, type Metadata } from '@grpc/grpc-js';
import {
  IstioCertificateServiceService,
  type IstioCertificateRequest,
  type IstioCertificateServiceServer,
} from '../../../../src/shared/gen/citadel.ts';
import type { CertificateAuthority } from '../../../../src/shared/identity/ca.ts';
import { generateKeyAndCsr } from '../../../../src/shared/identity/csr.ts';
import { CaClient, CaClientError, type CaClientOptions } from '../../../../ztunnel/src/identity/ca-client.ts';
import { mintCert, newTestCa } from '../../../helpers/pki.ts';

const ID = 'spiffe://cluster.local/ns/apps/sa/frontend';
const SERVER_NAME = 'ca.mesh.test';

interface Received {
  readonly request: IstioCertificateRequest;
  readonly metadata: Metadata;
}
type Answer = { chain: string[] } | { code: status; details: string } | 'hang';

interface Stub {
  readonly address: string;
  readonly received: Received[];
  answer: (req: IstioCertificateRequest) => Answer | Promise<Answer>;
}

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'ca-client-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A stub CA service; with `ca`, over TLS with a serving certificate for SERVER_NAME signed by it. */
async function startStub(t: Test, ca?: CertificateAuthority): Promise<Stub> {
  const received: Received[] = [];
  const stub: Stub = {
    address: '',
    received,
    answer: () => ({ chain: ['leaf\n', 'root\n'] }),
  };
  const impl: IstioCertificateServiceServer = {
    createCertificate: (call, callback) => {
      received.push({ request: call.request, metadata: call.metadata });
      void Promise.resolve(stub.answer(call.request)).then((a) => {
        if (a === 'hang') return;
        if ('chain' in a) callback(null, { certChain: a.chain });
        else callback({ code: a.code, details: a.details });
      });
    },
  };
  const server = new Server();
  server.addService(IstioCertificateServiceService, impl);
  let creds = ServerCredentials.createInsecure();
  if (ca) {
    const serving = await mintCert({ issuer: ca, dnsNames: [SERVER_NAME] });
    creds = ServerCredentials.createSsl(
      null,
      [{ private_key: Buffer.from(serving.privateKeyPem), cert_chain: Buffer.from(serving.certPem) }],
      false,
    );
  }
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p)));
  });
  t.teardown(() => server.forceShutdown());
  return Object.assign(stub, { address: `127.0.0.1:${port}` });
}

function client(t: Test, opts: CaClientOptions): CaClient {
  const c = new CaClient(opts);
  t.teardown(() => c.close());
  return c;
}

async function failure(p: Promise<unknown>): Promise<CaClientError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CaClientError) return err;
    throw err;
  }
  throw new Error('the call succeeded');
}

const sign = async (c: CaClient, ttlSeconds = 3600): Promise<string[]> =>
  c.sign({ csrPem: (await generateKeyAndCsr(ID)).csrPem, identity: ID, ttlSeconds });

t.test('what goes on the wire, and the chain comes back as the CA sent it', async (t) => {
  const ca = await newTestCa();
  const stub = await startStub(t, ca);
  const dir = tempDir(t);
  const rootPath = join(dir, 'root-cert.pem');
  writeFileSync(rootPath, ca.trustBundle.toPem());
  const tokenPath = join(dir, 'istio-token');
  writeFileSync(tokenPath, 'token-one\n');
  stub.answer = (req) => ({ chain: [`leaf-for-${req.csr.length}`, 'intermediate', 'roots'] });
  const c = client(t, {
    address: stub.address,
    security: { kind: 'tls', rootCertPath: rootPath, serverName: SERVER_NAME },
    token: { path: tokenPath },
    clusterId: 'cluster-east',
    headers: { 'x-mesh-tenant': 'blue' },
  });
  const { csrPem } = await generateKeyAndCsr(ID);
  const chain = await c.sign({ csrPem, identity: ID, ttlSeconds: 7200 });
  t.same(chain, [`leaf-for-${csrPem.length}`, 'intermediate', 'roots']);
  const got = stub.received[0]!;
  t.equal(got.request.csr, csrPem);
  t.equal(got.request.validityDuration, 7200);
  t.same(got.request.metadata, { ImpersonatedIdentity: ID }, 'ImpersonatedIdentity in the request Struct');
  t.same(got.metadata.get('authorization'), ['Bearer token-one'], 'token from the file, newline trimmed');
  t.same(got.metadata.get('clusterid'), ['cluster-east']);
  t.same(got.metadata.get('x-mesh-tenant'), ['blue']);

  writeFileSync(tokenPath, 'token-two');
  await sign(c);
  t.same(
    stub.received[1]!.metadata.get('authorization'),
    ['Bearer token-two'],
    'the token file is re-read per call',
  );
});

t.test('token problems fail before any call, naming the file', async (t) => {
  const stub = await startStub(t);
  const dir = tempDir(t);
  const base = {
    address: stub.address,
    security: { kind: 'plaintext' },
    clusterId: 'K',
  } as const;
  const missing = client(t, { ...base, token: { path: join(dir, 'absent') } });
  t.match(
    (await failure(sign(missing))).message,
    /cannot read the token file .*absent \(AUTH_TOKEN\).*projected ServiceAccount token/,
  );
  writeFileSync(join(dir, 'empty'), '\n');
  const empty = client(t, { ...base, token: { path: join(dir, 'empty') } });
  t.match((await failure(sign(empty))).message, /token file .*empty \(AUTH_TOKEN\) is empty/);
  t.equal(stub.received.length, 0);
  const literal = client(t, { ...base, token: { value: 'lit' } });
  await sign(literal);
  t.same(stub.received[0]!.metadata.get('authorization'), ['Bearer lit']);
});

t.test(
  'TLS: the CA is verified against the root file, and a changed root file rebuilds the channel',
  async (t) => {
    const ca = await newTestCa();
    const other = await newTestCa();
    const stub = await startStub(t, ca);
    const rootPath = join(tempDir(t), 'root-cert.pem');
    writeFileSync(rootPath, other.trustBundle.toPem());
    const c = client(t, {
      address: stub.address,
      security: { kind: 'tls', rootCertPath: rootPath, serverName: SERVER_NAME },
      token: { value: 'tok' },
      clusterId: 'Kubernetes',
      timeoutMs: 20_000,
    });
    const e = await failure(sign(c));
    t.equal(
      e.grpcCode,
      status.UNAVAILABLE,
      'a CA whose certificate does not chain to the root is not trusted',
    );
    t.match(e.message, /unreachable .*check CA_ADDRESS, the CA root file/);
    t.equal(stub.received.length, 0, 'no request reached the untrusted peer');

    writeFileSync(rootPath, ca.trustBundle.toPem());
    t.same(await sign(c), ['leaf\n', 'root\n'], 'works once the root file holds the right root');

    writeFileSync(rootPath, 'not a certificate');
    t.match(
      (await failure(sign(c))).message,
      /cannot use the CA root certificate: cannot read XDS_ROOT_CA .*root-cert\.pem/,
    );
  },
);

t.test('TLS: the CA certificate must be for the expected server name', async (t) => {
  const ca = await newTestCa();
  const stub = await startStub(t, ca);
  const rootPath = join(tempDir(t), 'root-cert.pem');
  writeFileSync(rootPath, ca.trustBundle.toPem());
  const c = client(t, {
    address: stub.address,
    security: { kind: 'tls', rootCertPath: rootPath, serverName: 'istiod.istio-system.svc' },
    token: { value: 'tok' },
    clusterId: 'Kubernetes',
  });
  t.equal((await failure(sign(c))).grpcCode, status.UNAVAILABLE);
  t.equal(stub.received.length, 0);
});

t.test('each call has a deadline', async (t) => {
  const stub = await startStub(t);
  stub.answer = () => 'hang';
  const c = client(t, {
    address: stub.address,
    security: { kind: 'plaintext' },
    token: { value: 'tok' },
    clusterId: 'Kubernetes',
    timeoutMs: 500,
  });
  const e = await failure(sign(c));
  t.equal(e.grpcCode, status.DEADLINE_EXCEEDED);
  t.match(e.message, /did not answer within 500 ms for spiffe:\/\/cluster\.local\/ns\/apps\/sa\/frontend/);
});

t.test('an unreachable CA', async (t) => {
  const probe = createTcpServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const c = client(t, {
    address: `127.0.0.1:${port}`,
    security: { kind: 'plaintext' },
    token: { value: 'tok' },
    clusterId: 'Kubernetes',
    timeoutMs: 20_000,
  });
  const e = await failure(sign(c));
  t.equal(e.grpcCode, status.UNAVAILABLE);
  t.match(e.message, new RegExp(`the CA at 127\\.0\\.0\\.1:${port} is unreachable`));
});

t.test('refusals of the CA become messages that say what to check', async (t) => {
  const stub = await startStub(t);
  const c = client(t, {
    address: stub.address,
    security: { kind: 'plaintext' },
    token: { value: 'tok' },
    clusterId: 'Kubernetes',
  });
  const cases: [status, RegExp][] = [
    [status.UNAUTHENTICATED, /did not accept this ztunnel's credentials \(why\); check the token/],
    [
      status.PERMISSION_DENIED,
      /refused to issue spiffe:\/\/cluster\.local\/ns\/apps\/sa\/frontend to this node \(why\)/,
    ],
    [status.INVALID_ARGUMENT, /rejected the request .* \(why\); check SECRET_TTL/],
    [status.NOT_FOUND, /failed to issue .*: NOT_FOUND \(why\)/],
  ];
  for (const [code, re] of cases) {
    stub.answer = () => ({ code, details: 'why' });
    const e = await failure(sign(c));
    t.equal(e.grpcCode, code, status[code]);
    t.match(e.message, re);
  }
  stub.answer = () => ({ chain: [] });
  t.match((await failure(sign(c))).message, /answered with an empty cert_chain/);
});

t.test('a closed client refuses further calls', async (t) => {
  const stub = await startStub(t);
  const c = new CaClient({
    address: stub.address,
    security: { kind: 'plaintext' },
    token: { value: 'tok' },
    clusterId: 'Kubernetes',
  });
  await sign(c);
  c.close();
  t.match((await failure(sign(c))).message, /is closed/);
  t.equal(stub.received.length, 1);
});

// SPDX-License-Identifier: Apache-2.0
// ztunnel's WDS client (ztunnel/src/xds/client.ts) against the controller's real WDS server
// (src/controller/xds/) and, where the test must control every response, a scripted ADS server:
// convergence, per-resource NACK with the good resources applied, readiness only after both
// types, serving the last state while the controller is away, reconnect with
// initial_resource_versions, authentication and TLS verification of the controller.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  credentials as grpcCredentials,
  Metadata,
  Server,
  ServerCredentials,
  status as GrpcStatus,
  type ServerDuplexStream,
} from '@grpc/grpc-js';
import t from 'tap';
import type { Test } from 'tap';
import { workloadResource } from '../../../../src/controller/xds/wds-resources.ts';
import { AggregatedDiscoveryServiceService } from '../../../../src/shared/gen/envoy/service/discovery/v3/ads.ts';
import type {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
} from '../../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';
import { Authorization, Match } from '../../../../src/shared/gen/authorization.ts';
import { Address } from '../../../../src/shared/gen/workload.ts';
import { loadConfig } from '../../../../ztunnel/src/config/env.ts';
import { evaluate } from '../../../../ztunnel/src/rbac/rbac.ts';
import { StateStore } from '../../../../ztunnel/src/state/store.ts';
import {
  ADDRESS_TYPE_URL,
  AUTHORIZATION_TYPE_URL,
  startWdsClient,
  type WdsClient,
  type WdsClientOptions,
} from '../../../../ztunnel/src/xds/client.ts';
import { wdsConnectionOptions } from '../../../../ztunnel/src/xds/connection.ts';
import { mintCert, newTestCa } from '../../../helpers/pki.ts';
import {
  MemoryLog,
  NODE_ID,
  NODE_NAME,
  WAIT_MS,
  appPolicy,
  appService,
  nodeMetadata,
  podIpText,
  podWorkload,
  put,
  startTestWds,
} from '../../controller/xds/harness.ts';

const W = (i: number): string => `Kubernetes//Pod/apps/w${i}`;
const SVC0 = 'apps/svc0.apps.svc.cluster.local';
const NODE = {
  id: NODE_ID,
  cluster: '',
  metadata: { NODE_NAME },
  userAgentName: 'ztunnel',
  clientFeatures: [],
};

/** Resolves once `cond()` holds, re-checking on every store change; rejects after WAIT_MS. */
function until(store: StateStore, cond: () => boolean, what: string): Promise<void> {
  if (cond()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      store.off('changed', check);
      reject(new Error(`timed out waiting for ${what}`));
    }, WAIT_MS);
    function check(): void {
      if (!cond()) return;
      clearTimeout(timer);
      store.off('changed', check);
      resolve();
    }
    store.on('changed', check);
  });
}

/** Polls a condition with no event to wait on (the client's connection state); bounded. */
async function eventually(cond: () => boolean, what: string): Promise<void> {
  const end = performance.now() + WAIT_MS;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

interface Started {
  readonly client: WdsClient;
  readonly store: StateStore;
  readonly log: MemoryLog;
  readonly ready: Promise<void>;
  readyCalls(): number;
}

function startClient(t: Test, address: string, over: Partial<WdsClientOptions> = {}): Started {
  const store = new StateStore();
  const log = new MemoryLog();
  let calls = 0;
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  const client = startWdsClient({
    address,
    credentials: () => grpcCredentials.createInsecure(),
    metadata: () => nodeMetadata(),
    node: NODE,
    store,
    logger: log.logger,
    onReady: () => {
      calls++;
      markReady();
    },
    ...over,
  });
  t.teardown(() => client.close());
  return { client, store, log, ready, readyCalls: () => calls };
}

t.test('converges on the controller state and follows its changes', async (t) => {
  const h = await startTestWds(t);
  put(h.store, {
    workloads: [podWorkload(0), podWorkload(1)],
    services: [appService(0)],
    policies: [appPolicy(0)],
  });
  const c = startClient(t, h.address);
  await c.ready;
  t.equal(c.store.workload(W(0))?.addresses[0], podIpText(0), 'raw bytes became canonical IP text');
  t.equal(c.store.workload(W(0))?.tunnelProtocol, 'HBONE', 'enums became names');
  t.equal(c.store.workload(W(0))?.trustDomain, 'cluster.local', 'elided defaults were filled in');
  t.equal(c.store.workloadByIp('', podIpText(1))?.uid, W(1));
  t.equal(c.store.serviceByVip('', '198.19.0.1')?.name, 'svc0');
  t.equal(c.store.policy('apps/p0')?.action, 'ALLOW');
  const st = c.client.status();
  t.equal(st.state, 'connected');
  t.equal(st.ready, true);
  const addr = st.types.find((x) => x.typeUrl === ADDRESS_TYPE_URL);
  t.same(addr?.versions, {
    [W(0)]: h.store.get(ADDRESS_TYPE_URL, W(0))?.version,
    [W(1)]: h.store.get(ADDRESS_TYPE_URL, W(1))?.version,
    [SVC0]: h.store.get(ADDRESS_TYPE_URL, SVC0)?.version,
  });
  t.ok(addr?.lastNonce, 'the last nonce is shown');

  put(h.store, { workloads: [podWorkload(1, { status: 1 })], policies: [appPolicy(0, { action: 1 })] });
  await until(c.store, () => c.store.workload(W(1))?.status === 'UNHEALTHY', 'the update');
  await until(c.store, () => c.store.policy('apps/p0')?.action === 'DENY', 'the policy update');
  h.store.apply(ADDRESS_TYPE_URL, new Map(), [W(0), SVC0]);
  await until(
    c.store,
    () => c.store.workload(W(0)) === undefined && c.store.service(SVC0) === undefined,
    'removals',
  );
  t.equal(c.store.workloadByIp('', podIpText(0)), undefined, 'the removed workload is unindexed');
  t.equal(c.readyCalls(), 1, 'onReady fires once');
  t.equal(h.wds.metrics.nacks, 0);
});

t.test('malformed resources are NACKed with name: reason while the rest apply', async (t) => {
  const h = await startTestWds(t);
  // Bodies a buggy or newer controller could send (our own refuses to alias a 5-byte IP).
  const body = (a: Address): { body: Uint8Array } => ({ body: Address.encode(a).finish() });
  h.store.apply(
    ADDRESS_TYPE_URL,
    new Map([
      workloadResource(podWorkload(0)),
      [
        W(5),
        body({
          type: { $case: 'workload', value: podWorkload(5, { addresses: [Uint8Array.of(10, 0, 0, 1, 9)] }) },
        }),
      ],
      [W(6), body({ type: { $case: 'workload', value: podWorkload(6, { tunnelProtocol: 9 as never }) } })],
      ['apps/wrong-key', body({ type: { $case: 'service', value: appService(0) } })],
    ]),
  );
  put(h.store, { policies: [appPolicy(0)] });
  const c = startClient(t, h.address);
  await c.ready;
  t.ok(c.store.workload(W(0)), 'the good workload is applied');
  t.equal(c.store.workload(W(5)), undefined, 'the 5-byte address is not');
  t.equal(c.store.workload(W(6)), undefined, 'nor the unknown enum');
  t.equal(c.store.service(SVC0), undefined, 'nor the service under the wrong name');
  t.ok(c.store.policy('apps/p0'), 'the other type is unaffected');
  const addr = c.client.status().types.find((x) => x.typeUrl === ADDRESS_TYPE_URL);
  t.equal(addr?.nacks, 1);
  t.notOk(Object.hasOwn(addr?.versions ?? {}, W(5)), 'a rejected resource is not recorded as held');
  await eventually(() => h.wds.metrics.nacks === 1, 'the NACK at the server');
  const nack = h.wds.clients()[0]?.types.find((x) => x.typeUrl === ADDRESS_TYPE_URL)?.lastNack?.message ?? '';
  const parts = nack.split('; ');
  t.equal(parts.length, 3, 'one entry per rejected resource, joined by "; "');
  t.match(nack, `${W(5)}: workload.addresses[0]: got 5 bytes, expected 4 (IPv4) or 16 (IPv6)`);
  t.match(nack, `${W(6)}: workload.tunnelProtocol: unknown TunnelProtocol value 9`);
  t.match(
    nack,
    /apps\/wrong-key: service: is apps\/svc0\.apps\.svc\.cluster\.local, but the resource is named "apps\/wrong-key"/,
  );
  t.equal(c.client.status().types.find((x) => x.typeUrl === ADDRESS_TYPE_URL)?.lastError?.message, nack);

  // A rejected update keeps the last good version.
  h.store.apply(
    ADDRESS_TYPE_URL,
    new Map([
      [
        W(0),
        body({ type: { $case: 'workload', value: podWorkload(0, { addresses: [Uint8Array.of(1, 2, 3)] }) } }),
      ],
    ]),
  );
  await eventually(() => h.wds.metrics.nacks === 2, 'the second NACK');
  t.equal(c.store.workload(W(0))?.addresses[0], podIpText(0), 'the last good version stays in force');
});

t.test(
  'the store keeps serving while the controller is away; reconnect converges with only the changes',
  async (t) => {
    const first = await startTestWds(t);
    put(first.store, {
      workloads: [podWorkload(0), podWorkload(1), podWorkload(2)],
      policies: [appPolicy(0)],
    });
    const c = startClient(t, first.address, { backoff: { initialMs: 10, maxMs: 200 } });
    await c.ready;
    await first.stop();
    await eventually(() => c.client.status().state !== 'connected', 'the client to notice');
    t.ok(c.store.workload(W(0)) && c.store.policy('apps/p0'), 'the last state keeps serving');

    // The controller comes back on the same port: w1 changed, w2 gone, w3 new, the rest identical.
    const second = await startTestWds(t, { port: first.port });
    put(second.store, {
      workloads: [podWorkload(0), podWorkload(1, { status: 1 }), podWorkload(3)],
      policies: [appPolicy(0)],
    });
    await until(
      c.store,
      () =>
        c.store.workload(W(1))?.status === 'UNHEALTHY' &&
        c.store.workload(W(2)) === undefined &&
        c.store.workload(W(3)) !== undefined,
      'reconvergence',
    );
    t.ok(c.client.status().connects >= 2, 'it reconnected');
    t.equal(second.wds.metrics.resourcesSent, 2, 'only the changed and the new workload were sent');
    t.ok(c.store.workload(W(0)), 'the unchanged workload stayed');
    t.ok(c.store.policy('apps/p0'), 'and so did the policy');
    t.equal(c.readyCalls(), 1, 'readiness was not lost and not re-announced');
  },
);

t.test('a client without valid credentials is refused and retries without becoming ready', async (t) => {
  const h = await startTestWds(t);
  put(h.store, { workloads: [podWorkload(0)] });
  const c = startClient(t, h.address, {
    metadata: () => new Metadata(),
    backoff: { initialMs: 10, maxMs: 50 },
  });
  await eventually(() => c.client.status().connects >= 2, 'a retry');
  const st = c.client.status();
  t.equal(st.ready, false);
  t.equal(st.lastDisconnect?.code, 'UNAUTHENTICATED');
  t.match(st.lastDisconnect?.details, /authentication failed/);
  t.equal(c.store.size.workloads, 0);
});

t.test('local failures (unusable address, no token) end in retries, never in a crash', async (t) => {
  const noTarget = startClient(t, '', { backoff: { initialMs: 10, maxMs: 50 } });
  const noToken = startClient(t, '127.0.0.1:9', {
    metadata: () => Promise.reject(new Error('token file missing')),
    backoff: { initialMs: 10, maxMs: 50 },
  });
  await eventually(
    () =>
      noTarget.client.status().lastDisconnect !== undefined &&
      noToken.client.status().lastDisconnect !== undefined,
    'both to fail',
  );
  t.match(noTarget.client.status().lastDisconnect, { code: 'INTERNAL', details: /cannot open the stream/ });
  t.match(noToken.client.status().lastDisconnect, {
    code: 'UNAUTHENTICATED',
    details: /cannot build the call metadata: token file missing/,
  });
  t.ok(
    noTarget.log.lines().some((l) => l.level === 'warn' && typeof l.retryInMs === 'number'),
    'the retry is scheduled and logged',
  );
});

t.test('TLS: the client verifies the controller certificate', async (t) => {
  const ca = await newTestCa();
  const serverCert = await mintCert({ issuer: ca, dnsNames: ['istiod.istio-system.svc'] });
  const root = Buffer.from(ca.exportKeyMaterial().rootCertPem);
  const h = await startTestWds(t, {
    credentials: ServerCredentials.createSsl(null, [
      { private_key: Buffer.from(serverCert.privateKeyPem), cert_chain: Buffer.from(serverCert.certPem) },
    ]),
  });
  put(h.store, { workloads: [podWorkload(0)] });
  const tlsOptions = { 'grpc.ssl_target_name_override': 'istiod.istio-system.svc' };

  const good = startClient(t, h.address, {
    credentials: () => grpcCredentials.createSsl(root),
    channelOptions: tlsOptions,
  });
  await good.ready;
  t.ok(good.store.workload(W(0)), 'a client trusting the mesh root converges');

  const otherCa = await newTestCa();
  const wrong = startClient(t, h.address, {
    credentials: () => grpcCredentials.createSsl(Buffer.from(otherCa.exportKeyMaterial().rootCertPem)),
    channelOptions: tlsOptions,
    backoff: { initialMs: 10, maxMs: 50 },
  });
  const wrongName = startClient(t, h.address, {
    credentials: () => grpcCredentials.createSsl(root),
    channelOptions: { 'grpc.ssl_target_name_override': 'evil.example.com' },
    backoff: { initialMs: 10, maxMs: 50 },
  });
  await eventually(
    () => wrong.client.status().connects >= 2 && wrongName.client.status().connects >= 2,
    'retries',
  );
  for (const [what, c] of [
    ['another root', wrong],
    ['another name', wrongName],
  ] as const) {
    t.equal(c.client.status().ready, false, `${what}: never ready`);
    t.equal(c.client.status().lastDisconnect?.code, 'UNAVAILABLE', what);
    t.equal(c.store.size.workloads, 0, `${what}: received nothing`);
  }
  t.equal(h.wds.metrics.connectedClients, 1, 'only the verifying client got a stream');
});

t.test(
  'TLS: after a root rotation (XDS_ROOT_CA rewritten), the next reconnect trusts the new root',
  async (t) => {
    const ca = await newTestCa();
    const serverCert = await mintCert({ issuer: ca, dnsNames: ['istiod.istio-system.svc'] });
    const h = await startTestWds(t, {
      credentials: ServerCredentials.createSsl(null, [
        { private_key: Buffer.from(serverCert.privateKeyPem), cert_chain: Buffer.from(serverCert.certPem) },
      ]),
    });
    put(h.store, { workloads: [podWorkload(0)] });
    const dir = mkdtempSync(join(tmpdir(), 'wds-root-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const rootFile = join(dir, 'root-cert.pem');
    // The controller's certificate is from a root this ztunnel does not trust yet.
    const oldRoot = await newTestCa();
    writeFileSync(rootFile, oldRoot.exportKeyMaterial().rootCertPem);
    const env = {
      NODE_NAME,
      XDS_ADDRESS: h.address,
      XDS_ROOT_CA: rootFile,
      ALT_XDS_HOSTNAME: 'istiod.istio-system.svc',
      AUTH_TOKEN: 'token',
      INSTANCE_IP: '10.0.0.5',
      POD_NAME: 'ztunnel-abc',
      POD_NAMESPACE: 'istio-system',
    };
    const cfg = loadConfig(env).wds;
    if (cfg === undefined) throw new Error('expected a WDS config');
    const conn = await wdsConnectionOptions(cfg);
    const c = startClient(t, h.address, {
      credentials: conn.credentials,
      ...(conn.channelOptions && { channelOptions: conn.channelOptions }),
      backoff: { initialMs: 10, maxMs: 50 },
    });
    await eventually(() => c.client.status().connects >= 2, 'failed attempts with the old root');
    t.equal(c.client.status().ready, false, 'not trusted under the old root');
    t.equal(c.client.status().lastDisconnect?.code, 'UNAVAILABLE');

    // The root file is rewritten (the mounted ConfigMap after a root rotation).
    writeFileSync(rootFile, ca.exportKeyMaterial().rootCertPem);
    await eventually(() => c.client.status().ready, 'a reconnect trusting the new root');
    t.ok(c.store.workload(W(0)), 'converged on a reconnect, without a restart');
  },
);

// ---- scripted server: the test writes every response ----

type Call = ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

class ScriptedStream {
  readonly #requests: DeltaDiscoveryRequest[] = [];
  #wake: (() => void) | undefined;
  readonly call: Call;

  constructor(call: Call) {
    this.call = call;
    call.on('data', (r: DeltaDiscoveryRequest) => {
      this.#requests.push(r);
      this.#wake?.();
    });
    call.on('error', () => undefined);
  }

  async next(): Promise<DeltaDiscoveryRequest> {
    const end = performance.now() + WAIT_MS;
    for (;;) {
      const r = this.#requests.shift();
      if (r !== undefined) return r;
      const left = end - performance.now();
      if (left <= 0) throw new Error('no request from the client');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  respond(typeUrl: string, nonce: string, resources: [string, Uint8Array][], removed: string[] = []): void {
    this.call.write({
      systemVersionInfo: '',
      typeUrl,
      nonce,
      resources: resources.map(([name, value]) => ({
        name,
        version: `v-${name}`,
        aliases: [],
        resource: { typeUrl, value },
      })),
      removedResources: removed,
    });
  }
}

async function startScripted(t: Test): Promise<{ address: string; stream: () => Promise<ScriptedStream> }> {
  const server = new Server();
  const waiting: ScriptedStream[] = [];
  let wake: (() => void) | undefined;
  server.addService(
    { deltaAggregatedResources: AggregatedDiscoveryServiceService.deltaAggregatedResources },
    {
      deltaAggregatedResources: (call: Call) => {
        waiting.push(new ScriptedStream(call));
        wake?.();
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  t.teardown(() => server.forceShutdown());
  return {
    address: `127.0.0.1:${port}`,
    stream: async () => {
      const end = performance.now() + WAIT_MS;
      while (waiting.length === 0) {
        if (performance.now() > end) throw new Error('the client opened no stream');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 100);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      return waiting.shift() as ScriptedStream;
    },
  };
}

/** A scripted server, a client of it, and the client's first stream once both subscriptions came. */
async function subscribed(
  t: Test,
  over: Partial<WdsClientOptions> = {},
): Promise<{ s: Awaited<ReturnType<typeof startScripted>>; c: Started; stream: ScriptedStream }> {
  const s = await startScripted(t);
  const c = startClient(t, s.address, over);
  const stream = await s.stream();
  await stream.next();
  await stream.next();
  return { s, c, stream };
}

const workloadBytes = (i: number): Uint8Array =>
  Address.encode({ type: { $case: 'workload', value: podWorkload(i) } }).finish();

t.test(
  'initial requests: wildcard, with the node, per type; ready only after both types are acknowledged',
  async (t) => {
    const s = await startScripted(t);
    const c = startClient(t, s.address);
    const stream = await s.stream();
    const first = await stream.next();
    const second = await stream.next();
    t.same([first.typeUrl, second.typeUrl], [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL]);
    for (const r of [first, second]) {
      t.equal(r.node?.id, NODE_ID, 'each first request carries the node');
      t.same(r.resourceNamesSubscribe, [], 'wildcard');
      t.equal(r.initialResourceVersions.size, 0, 'nothing held yet');
    }
    t.same(stream.call.metadata.get('authorization'), [`Bearer node:${NODE_NAME}`], 'the call metadata');

    // w0 references policy apps/p0, which arrives only with the Authorization response.
    const w0 = Address.encode({
      type: { $case: 'workload', value: podWorkload(0, { authorizationPolicies: ['apps/p0'] }) },
    }).finish();
    stream.respond(ADDRESS_TYPE_URL, 'a1', [[W(0), w0]]);
    const ack = await stream.next();
    t.same([ack.typeUrl, ack.responseNonce, ack.errorDetail], [ADDRESS_TYPE_URL, 'a1', undefined], 'ACK');
    t.equal(c.readyCalls(), 0, 'not ready with only Address');
    t.equal(c.client.status().ready, false);
    const local = c.store.workload(W(0));
    if (local === undefined) throw new Error('w0 was not applied');
    const conn = { srcIp: '198.18.9.9', dstIp: podIpText(0), dstPort: 8080 };
    const before = evaluate({ ...c.store.policiesFor(local), conn });
    t.equal(before.allowed, false, 'a referenced policy not yet received denies (checklist C.45)');
    t.match(before.reason, /apps\/p0 referenced but not yet received/);

    stream.respond(AUTHORIZATION_TYPE_URL, 'p1', [['apps/p0', Authorization.encode(appPolicy(0)).finish()]]);
    const ack2 = await stream.next();
    t.same([ack2.typeUrl, ack2.responseNonce], [AUTHORIZATION_TYPE_URL, 'p1']);
    await c.ready;
    t.equal(c.readyCalls(), 1, 'ready after both');
    t.same(c.store.policiesFor(local).missing, [], 'once it arrives, it applies');
    const after = evaluate({ ...c.store.policiesFor(local), conn });
    t.equal(after.reason, 'allow policies exist, but none allowed', 'and is evaluated as written');

    // Removal of an unknown name is ignored; an unsubscribed type is NACKed whole.
    stream.respond(ADDRESS_TYPE_URL, 'a2', [], ['never-held']);
    t.equal((await stream.next()).errorDetail, undefined);
    stream.respond('type.googleapis.com/istio.workload.Workload', 'x1', []);
    const refused = await stream.next();
    t.match(refused.errorDetail?.message, /was not subscribed/);
    t.ok(c.store.workload(W(0)), 'nothing was lost');
  },
);

t.test(
  'resources whose body is not what the type says are refused; decode errors are reported',
  async (t) => {
    const { c, stream } = await subscribed(t);
    stream.call.write({
      systemVersionInfo: '',
      typeUrl: ADDRESS_TYPE_URL,
      nonce: 'n',
      removedResources: [],
      resources: [
        {
          name: W(0),
          version: '1',
          aliases: [],
          resource: { typeUrl: AUTHORIZATION_TYPE_URL, value: workloadBytes(0) },
        },
        { name: W(1), version: '1', aliases: [], resource: undefined },
        {
          name: W(2),
          version: '1',
          aliases: [],
          resource: { typeUrl: ADDRESS_TYPE_URL, value: Uint8Array.of(0x0a, 0xff) },
        },
        {
          name: '',
          version: '1',
          aliases: [],
          resource: { typeUrl: ADDRESS_TYPE_URL, value: workloadBytes(3) },
        },
        {
          name: W(4),
          version: '1',
          aliases: [],
          resource: { typeUrl: ADDRESS_TYPE_URL, value: workloadBytes(4) },
        },
      ],
    });
    const nack = await stream.next();
    const msg = nack.errorDetail?.message ?? '';
    t.match(msg, `${W(0)}: body is a ${AUTHORIZATION_TYPE_URL}, expected ${ADDRESS_TYPE_URL}`);
    t.match(msg, `${W(1)}: resource has no body`);
    t.match(msg, new RegExp(`${W(2)}: cannot decode the istio\\.workload\\.Address`));
    t.match(msg, ': resource has no name');
    t.equal(nack.errorDetail?.code, GrpcStatus.INVALID_ARGUMENT);
    t.ok(c.store.workload(W(4)), 'the good resource was applied');
    t.equal(c.store.size.workloads, 1);
  },
);

t.test(
  'C.52: a DENY with a matcher newer than ztunnel is applied fail-closed, and a warning says so',
  async (t) => {
    const { c, stream } = await subscribed(t);
    const w0 = Address.encode({
      type: { $case: 'workload', value: podWorkload(0, { authorizationPolicies: ['apps/p0'] }) },
    }).finish();
    stream.respond(ADDRESS_TYPE_URL, 'a1', [[W(0), w0]]);
    await stream.next();
    // A matcher this ztunnel does not evaluate: an extension in the Match, and nothing else.
    const deny = appPolicy(0, {
      action: 1,
      rules: [
        { clauses: [{ matches: [Match.fromPartial({ extensions: [{ name: 'istio.io/newer-matcher' }] })] }] },
      ],
    });
    stream.respond(AUTHORIZATION_TYPE_URL, 'p1', [['apps/p0', Authorization.encode(deny).finish()]]);
    const ack = await stream.next();
    t.same(
      [ack.responseNonce, ack.errorDetail],
      ['p1', undefined],
      'accepted (a NACK would leave no DENY at all)',
    );
    await c.ready;
    const local = c.store.workload(W(0));
    if (local === undefined) throw new Error('w0 was not applied');
    const decision = evaluate({
      ...c.store.policiesFor(local),
      conn: { srcIp: '198.18.9.9', dstIp: podIpText(0), dstPort: 8080 },
    });
    t.same([decision.allowed, decision.policy], [false, 'apps/p0'], 'the DENY denies');
    t.ok(
      c.log
        .lines()
        .some(
          (l) =>
            l.level === 'warn' && l.resource === 'apps/p0' && /does not understand/.test(String(l.message)),
        ),
      'a warning names the policy',
    );
  },
);

t.test('reconnect sends initial_resource_versions of what is held', async (t) => {
  const { s, c, stream: one } = await subscribed(t, { backoff: { initialMs: 10, maxMs: 100 } });
  one.respond(ADDRESS_TYPE_URL, 'a1', [
    [W(0), workloadBytes(0)],
    [W(1), workloadBytes(1)],
  ]);
  await one.next();
  one.call.emit('error', { code: GrpcStatus.UNAVAILABLE, details: 'controller going away' });

  const two = await s.stream();
  const addr = await two.next();
  t.equal(addr.typeUrl, ADDRESS_TYPE_URL);
  t.same(
    Object.fromEntries(addr.initialResourceVersions),
    { [W(0)]: `v-${W(0)}`, [W(1)]: `v-${W(1)}` },
    'the versions of everything held',
  );
  t.equal((await two.next()).initialResourceVersions.size, 0, 'nothing held of Authorization');
  t.ok(c.store.workload(W(0)), 'still serving while reconnecting');
  two.respond(ADDRESS_TYPE_URL, 'b1', [], [W(1)]);
  await two.next();
  t.equal(c.store.workload(W(1)), undefined, 'a held-but-gone name is removed');
  t.equal(c.client.status().lastDisconnect?.code, 'UNAVAILABLE');
});

t.test('close() stops reconnecting and keeps the state', async (t) => {
  const { c, stream } = await subscribed(t);
  stream.respond(ADDRESS_TYPE_URL, 'a1', [[W(0), workloadBytes(0)]]);
  await stream.next();
  const cancelled = new Promise<void>((resolve) => stream.call.on('cancelled', () => resolve()));
  c.client.close();
  await cancelled;
  t.equal(c.client.status().state, 'closed');
  t.ok(c.store.workload(W(0)));
  t.equal(c.client.status().connects, 1);
});

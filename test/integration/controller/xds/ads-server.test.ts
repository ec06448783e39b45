// SPDX-License-Identifier: Apache-2.0
// WDS protocol conformance (spec ambient-protocols §3.1–§3.4; checklist E.66, E.67, E.74): the
// real grpc-js server with addWdsService, driven by a raw delta xDS stream whose requests the
// test writes by hand. Initial wildcard, ACK/NACK by nonce, a NACK that blocks neither other
// resources nor other clients, on-demand subscribe/unsubscribe by name and alias, reconnect
// with initial_resource_versions, debouncing, one response in flight per type, authentication,
// node checks, limits and graceful close.
import {
  credentials as grpcCredentials,
  status as GrpcStatus,
  Metadata,
  type StatusObject,
} from '@grpc/grpc-js';
import t from 'tap';
import { workloadResource } from '../../../../src/controller/xds/wds-resources.ts';
import { Authorization } from '../../../../src/shared/gen/authorization.ts';
import { AggregatedDiscoveryServiceClient } from '../../../../src/shared/gen/envoy/service/discovery/v3/ads.ts';
import {
  ADDRESS_TYPE_URL,
  AUTHORIZATION_TYPE_URL,
  RawStream,
  addressesOf,
  appPolicy,
  appService,
  nodeMetadata,
  podIpText,
  podWorkload,
  put,
  startTestWds,
  versionsOf,
} from './harness.ts';

const W = (i: number): string => `Kubernetes//Pod/apps/w${i}`;
const S = (i: number): string => `apps/svc${i}.apps.svc.cluster.local`;

t.test('initial wildcard subscription receives every resource of each type', async (t) => {
  const h = await startTestWds(t);
  put(h.store, {
    workloads: [podWorkload(0), podWorkload(1)],
    services: [appService(0)],
    policies: [appPolicy(0)],
  });
  const s = RawStream.open(t, h.address);
  s.subscribe(ADDRESS_TYPE_URL);
  const a = await s.nextOf(ADDRESS_TYPE_URL);
  t.same([...versionsOf(a).keys()].sort(), [W(0), W(1), S(0)].sort());
  t.not(a.nonce, '', 'a response carries a nonce');
  t.same(a.removedResources, []);
  const bodies = addressesOf(a);
  t.equal(bodies.get(W(0))?.type?.$case, 'workload');
  t.same(bodies.get(W(0))?.type?.value, podWorkload(0), 'the body decodes to the workload that was stored');
  const w0 = a.resources.find((r) => r.name === W(0));
  t.equal(w0?.resource?.typeUrl, ADDRESS_TYPE_URL);
  t.same(w0?.aliases, [`/${podIpText(0)}`], 'workloads are aliased by network/ip');
  t.same(a.resources.find((r) => r.name === S(0))?.aliases, ['/198.19.0.1'], 'services by network/vip');

  s.subscribe(AUTHORIZATION_TYPE_URL);
  const p = await s.nextOf(AUTHORIZATION_TYPE_URL);
  t.same([...versionsOf(p).keys()], ['apps/p0']);
  t.same(Authorization.decode(p.resources[0]?.resource?.value ?? new Uint8Array()), appPolicy(0));
  t.equal(h.wds.metrics.connectedClients, 1);
  t.equal(h.wds.clients()[0]?.node?.podName, 'ztunnel-x7k2p', 'the node id is parsed');
});

t.test('an empty store still answers the first request, so a client can ACK and become ready', async (t) => {
  const h = await startTestWds(t);
  const s = RawStream.open(t, h.address);
  s.subscribe(AUTHORIZATION_TYPE_URL);
  const r = await s.nextOf(AUTHORIZATION_TYPE_URL);
  t.same(r.resources, []);
  t.same(r.removedResources, []);
  s.ack(r);
});

t.test('ACK by nonce; later pushes carry only what changed, and removals', async (t) => {
  const h = await startTestWds(t);
  put(h.store, { workloads: [podWorkload(0), podWorkload(1)] });
  const s = RawStream.open(t, h.address);
  s.subscribe(ADDRESS_TYPE_URL);
  const first = await s.nextOf(ADDRESS_TYPE_URL);
  s.ack(first);

  put(h.store, { workloads: [podWorkload(1, { status: 1 })] });
  const second = await s.nextOf(ADDRESS_TYPE_URL);
  t.same([...versionsOf(second).keys()], [W(1)], 'only the changed workload');
  t.not(versionsOf(second).get(W(1)), versionsOf(first).get(W(1)), 'with a new version');
  t.not(second.nonce, first.nonce, 'and a new nonce');
  s.ack(second);

  h.store.apply(ADDRESS_TYPE_URL, new Map(), [W(0)]);
  const third = await s.nextOf(ADDRESS_TYPE_URL);
  t.same(third.resources, []);
  t.same(third.removedResources, [W(0)]);
  s.ack(third);

  // Re-applying identical content changes nothing and pushes nothing.
  const pushes = h.wds.metrics.pushes;
  put(h.store, { workloads: [podWorkload(1, { status: 1 })] });
  h.wds.flush();
  t.equal(h.wds.metrics.pushes, pushes, 'an identical re-upsert is not pushed');
});

t.test('a NACKed resource blocks neither later changes nor other clients', async (t) => {
  const h = await startTestWds(t);
  put(h.store, { workloads: [podWorkload(0)] });
  const bad = RawStream.open(t, h.address);
  const good = RawStream.open(t, h.address, nodeMetadata('node-b'));
  bad.subscribe(ADDRESS_TYPE_URL);
  good.subscribe(ADDRESS_TYPE_URL, { nodeName: 'node-b' });
  const initial = await bad.nextOf(ADDRESS_TYPE_URL);
  bad.ack(initial);
  good.ack(await good.nextOf(ADDRESS_TYPE_URL));

  put(h.store, { workloads: [podWorkload(1)] });
  const rejected = await bad.nextOf(ADDRESS_TYPE_URL);
  t.same([...versionsOf(rejected).keys()], [W(1)]);
  bad.nack(rejected, `${W(1)}: workload.addresses[0]: got 5 bytes, expected 4 (IPv4) or 16 (IPv6)`);
  const other = await good.nextOf(ADDRESS_TYPE_URL);
  t.same([...versionsOf(other).keys()], [W(1)], 'the other client gets the same push');
  good.ack(other);

  put(h.store, { workloads: [podWorkload(2)] });
  const after = await bad.nextOf(ADDRESS_TYPE_URL);
  t.same([...versionsOf(after).keys()], [W(2)], 'the NACK did not stop the next change');
  bad.ack(after);
  good.ack(await good.nextOf(ADDRESS_TYPE_URL));

  t.equal(h.wds.metrics.nacks, 1, 'the NACK is counted');
  const status = h.wds.clients().find((c) => c.types[0]?.nacks === 1);
  t.match(status?.types[0]?.lastNack?.message, /got 5 bytes/, 'and kept for status');
  t.ok(
    h.log
      .lines()
      .some(
        (l) => l.level === 'warn' && /NACK/.test(String(l.message)) && /got 5 bytes/.test(String(l.detail)),
      ),
    'and logged with its message',
  );

  // The rejected resource is not recorded as held: the client reconnects without it and gets it again.
  bad.close();
  const again = RawStream.open(t, h.address);
  again.subscribe(ADDRESS_TYPE_URL, {
    initial: new Map([...versionsOf(initial), ...versionsOf(after)]),
  });
  const resync = await again.nextOf(ADDRESS_TYPE_URL);
  t.same([...versionsOf(resync).keys()], [W(1)], 'only the rejected resource is re-sent');
});

t.test(
  'one response in flight per type; changes meanwhile are coalesced into one push after the ACK',
  async (t) => {
    const h = await startTestWds(t);
    put(h.store, { workloads: [podWorkload(0)] });
    const s = RawStream.open(t, h.address);
    s.subscribe(ADDRESS_TYPE_URL);
    const first = await s.nextOf(ADDRESS_TYPE_URL); // not ACKed yet

    put(h.store, { workloads: [podWorkload(1)] });
    h.wds.flush();
    put(h.store, { workloads: [podWorkload(2)] });
    h.store.apply(ADDRESS_TYPE_URL, new Map(), [W(0)]);
    h.wds.flush();
    // Barrier: a response of another type. Responses are ordered, so had an Address push been
    // sent, it would arrive first.
    s.subscribe(AUTHORIZATION_TYPE_URL);
    await s.nextOf(AUTHORIZATION_TYPE_URL);
    t.equal(s.queued, 0, 'no second Address response while the first is unacknowledged');
    t.equal(
      h.wds.clients()[0]?.types.find((x) => x.typeUrl === ADDRESS_TYPE_URL)?.inFlightNonce,
      first.nonce,
    );

    s.ack(first);
    const coalesced = await s.nextOf(ADDRESS_TYPE_URL);
    t.same([...versionsOf(coalesced).keys()].sort(), [W(1), W(2)].sort(), 'both upserts in one response');
    t.same(coalesced.removedResources, [W(0)], 'and the removal');
  },
);

t.test('debouncing coalesces a burst of changes into one push', async (t) => {
  // A quiet time far longer than the burst, so a loaded machine does not split it.
  const h = await startTestWds(t, { debounce: { quietMs: 250, maxMs: 10_000 } });
  const s = RawStream.open(t, h.address);
  s.subscribe(ADDRESS_TYPE_URL);
  s.ack(await s.nextOf(ADDRESS_TYPE_URL));
  const pushes = h.wds.metrics.pushes;
  for (let i = 0; i < 20; i++) {
    put(h.store, { workloads: [podWorkload(i)] });
    await new Promise<void>((resolve) => setImmediate(resolve)); // separate event-loop turns
  }
  const burst = await s.nextOf(ADDRESS_TYPE_URL);
  t.equal(burst.resources.length, 20, 'all twenty changes in one response');
  t.equal(h.wds.metrics.pushes, pushes + 1, 'one push');
});

t.test('on-demand: subscribe nothing, then by alias and by name; unsubscribe', async (t) => {
  const h = await startTestWds(t);
  put(h.store, { workloads: [podWorkload(0), podWorkload(1)], services: [appService(0)] });
  const s = RawStream.open(t, h.address);
  // Spec §3.4: subscribe ["*"] and unsubscribe ["*"] is "subscribe to nothing".
  s.subscribe(ADDRESS_TYPE_URL, { names: ['*'], unsubscribe: ['*'] });
  const empty = await s.nextOf(ADDRESS_TYPE_URL);
  t.same(empty.resources, [], 'nothing is sent');
  s.ack(empty);

  s.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: [`/${podIpText(0)}`] });
  const byAlias = await s.nextOf(ADDRESS_TYPE_URL);
  t.same([...versionsOf(byAlias).keys()], [W(0)], 'a network/ip key finds the workload');
  t.same(byAlias.resources[0]?.aliases, [`/${podIpText(0)}`], 'and says which key it satisfies');
  s.ack(byAlias);

  s.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: [S(0), '/203.0.113.9'] });
  const byName = await s.nextOf(ADDRESS_TYPE_URL);
  t.same([...versionsOf(byName).keys()], [S(0)], 'a namespace/hostname key finds the service');
  t.same(byName.removedResources, ['/203.0.113.9'], 'a key that names nothing is answered as removed');
  s.ack(byName);

  // Changes to subscribed resources are pushed, others are not.
  put(h.store, { workloads: [podWorkload(1, { status: 1 }), podWorkload(0, { status: 1 })] });
  const change = await s.nextOf(ADDRESS_TYPE_URL);
  t.same([...versionsOf(change).keys()], [W(0)], 'only the subscribed workload');
  s.ack(change);

  s.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesUnsubscribe: [`/${podIpText(0)}`] });
  // Barriers: a request of another type that is always answered. The server handles a stream's
  // requests in order, so once the answer is here the unsubscribe has been processed.
  s.subscribe(AUTHORIZATION_TYPE_URL);
  s.ack(await s.nextOf(AUTHORIZATION_TYPE_URL));
  put(h.store, { workloads: [podWorkload(0, { status: 0 })] });
  h.wds.flush();
  s.send({ typeUrl: AUTHORIZATION_TYPE_URL, resourceNamesSubscribe: ['apps/none'] });
  await s.nextOf(AUTHORIZATION_TYPE_URL);
  t.equal(s.queued, 0, 'after unsubscribing, its changes are no longer pushed');

  h.store.apply(ADDRESS_TYPE_URL, new Map(), [S(0)]);
  const gone = await s.nextOf(ADDRESS_TYPE_URL);
  t.same(gone.removedResources, [S(0)], 'a held resource that disappears is removed');
  t.equal(h.wds.clients()[0]?.types.find((x) => x.typeUrl === ADDRESS_TYPE_URL)?.wildcard, false);
});

t.test('on-demand key for a resource that appears later is pushed when it appears', async (t) => {
  const h = await startTestWds(t);
  const s = RawStream.open(t, h.address);
  s.subscribe(ADDRESS_TYPE_URL, { names: [`/${podIpText(7)}`] });
  const first = await s.nextOf(ADDRESS_TYPE_URL);
  t.same(first.removedResources, [`/${podIpText(7)}`], 'does not exist yet');
  s.ack(first);
  put(h.store, { workloads: [podWorkload(7)] });
  const appeared = await s.nextOf(ADDRESS_TYPE_URL);
  t.same([...versionsOf(appeared).keys()], [W(7)]);
});

t.test(
  'reconnect with initial_resource_versions: unchanged skipped, changed sent, gone removed',
  async (t) => {
    const h = await startTestWds(t);
    put(h.store, { workloads: [podWorkload(0), podWorkload(1), podWorkload(2)] });
    const s = RawStream.open(t, h.address);
    s.subscribe(ADDRESS_TYPE_URL);
    const first = await s.nextOf(ADDRESS_TYPE_URL);
    s.ack(first);
    s.close();

    // While disconnected: w1 changes, w2 goes, w3 appears.
    put(h.store, { workloads: [podWorkload(1, { status: 1 }), podWorkload(3)] });
    h.store.apply(ADDRESS_TYPE_URL, new Map(), [W(2)]);

    const held = versionsOf(first);
    held.set('Kubernetes//Pod/apps/long-gone', 'v-stale');
    const s2 = RawStream.open(t, h.address);
    s2.subscribe(ADDRESS_TYPE_URL, { initial: held });
    const resync = await s2.nextOf(ADDRESS_TYPE_URL);
    t.same([...versionsOf(resync).keys()].sort(), [W(1), W(3)].sort(), 'w0 unchanged is not re-sent');
    t.same(resync.removedResources.sort(), ['Kubernetes//Pod/apps/long-gone', W(2)].sort());
  },
);

t.test(
  'versions are content hashes: a restarted controller with the same content sends nothing new',
  async (t) => {
    const a = await startTestWds(t);
    put(a.store, { workloads: [podWorkload(0), podWorkload(1)] });
    const s = RawStream.open(t, a.address);
    s.subscribe(ADDRESS_TYPE_URL);
    const first = await s.nextOf(ADDRESS_TYPE_URL);
    await a.stop();

    const b = await startTestWds(t);
    put(b.store, { workloads: [podWorkload(1), podWorkload(0)] });
    const s2 = RawStream.open(t, b.address);
    s2.subscribe(ADDRESS_TYPE_URL, { initial: versionsOf(first) });
    const resync = await s2.nextOf(ADDRESS_TYPE_URL);
    t.same(resync.resources, [], 'no resource is re-sent');
    t.same(resync.removedResources, [], 'and none is removed (checklist E.67)');
  },
);

t.test('streams without valid credentials are refused with UNAUTHENTICATED', async (t) => {
  const h = await startTestWds(t);
  const anonymous = RawStream.open(t, h.address, new Metadata());
  anonymous.subscribe(ADDRESS_TYPE_URL);
  const st = await anonymous.status;
  t.equal(st.code, GrpcStatus.UNAUTHENTICATED);
  t.match(st.details, /authentication failed: no valid bearer token/);
  t.equal(h.wds.metrics.connectedClients, 0);
  t.equal(h.wds.metrics.rejectedStreams, 1);
});

t.test(
  'an authenticator that throws is a refusal; requests beyond the pre-auth bound end the stream',
  async (t) => {
    const throwing = await startTestWds(t, {
      authenticator: {
        authenticate: () => {
          throw new Error('token review unavailable');
        },
      },
    });
    const a = RawStream.open(t, throwing.address);
    a.subscribe(ADDRESS_TYPE_URL);
    const st = await a.status;
    t.equal(st.code, GrpcStatus.UNAUTHENTICATED);
    t.match(st.details, /token review unavailable/);

    let release: () => void = () => undefined;
    const slow = await startTestWds(t, {
      maxRequestsBeforeAuth: 2,
      authenticator: {
        authenticate: () =>
          new Promise((resolve) => {
            release = () => resolve({ kind: 'node', node: 'node-a', subject: 'late' });
          }),
      },
    });
    t.teardown(() => release());
    const b = RawStream.open(t, slow.address);
    b.subscribe(ADDRESS_TYPE_URL);
    b.subscribe(AUTHORIZATION_TYPE_URL);
    b.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: ['x'] });
    const st2 = await b.status;
    t.equal(st2.code, GrpcStatus.RESOURCE_EXHAUSTED);
    t.match(st2.details, /more than 2 requests before authentication completed/);
  },
);

t.test('bad first requests end the stream with a status that says what is wrong', async (t) => {
  const h = await startTestWds(t);
  const cases: { name: string; send: (s: RawStream) => void; code: GrpcStatus; details: RegExp }[] = [
    {
      name: 'no node',
      send: (s) => s.send({ typeUrl: ADDRESS_TYPE_URL }),
      code: GrpcStatus.INVALID_ARGUMENT,
      details: /carries no node id/,
    },
    {
      name: 'malformed node id',
      send: (s) => s.subscribe(ADDRESS_TYPE_URL, { nodeId: 'ztunnel~not-an-ip~pod.ns~ns.svc.cluster.local' }),
      code: GrpcStatus.INVALID_ARGUMENT,
      details: /where the proxy's IP address belongs/,
    },
    {
      name: 'NODE_NAME not the credential’s node',
      send: (s) => s.subscribe(ADDRESS_TYPE_URL, { nodeName: 'node-z' }),
      code: GrpcStatus.PERMISSION_DENIED,
      details: /NODE_NAME=node-z does not match the credential, which is for node node-a/,
    },
    {
      name: 'type not served',
      send: (s) => s.subscribe('type.googleapis.com/istio.workload.Workload'),
      code: GrpcStatus.INVALID_ARGUMENT,
      details: /not served here/,
    },
  ];
  for (const c of cases) {
    const s = RawStream.open(t, h.address);
    c.send(s);
    const st = await s.status;
    t.equal(st.code, c.code, c.name);
    t.match(st.details, c.details, c.name);
  }
  t.equal(h.wds.metrics.connectedClients, 0, 'none of them stays connected');
});

t.test('state of the world ADS is not served', async (t) => {
  const h = await startTestWds(t);
  const client = new AggregatedDiscoveryServiceClient(h.address, grpcCredentials.createInsecure());
  t.teardown(() => client.close());
  const call = client.streamAggregatedResources(nodeMetadata());
  call.on('error', () => undefined);
  const st = await new Promise<StatusObject>((resolve) => call.on('status', resolve));
  t.equal(st.code, GrpcStatus.UNIMPLEMENTED);
});

t.test('a client that stops ACKing while the store churns is told to reconnect', async (t) => {
  const h = await startTestWds(t, { storeOptions: { minChangeLog: 4 } });
  put(h.store, { workloads: [podWorkload(0)] });
  const s = RawStream.open(t, h.address);
  s.subscribe(ADDRESS_TYPE_URL);
  const first = await s.nextOf(ADDRESS_TYPE_URL); // not ACKed while the store churns
  for (let i = 1; i <= 10; i++) put(h.store, { workloads: [podWorkload(i)] });
  h.store.apply(
    ADDRESS_TYPE_URL,
    new Map(),
    Array.from({ length: 10 }, (_, i) => W(i + 1)),
  );
  h.wds.flush();
  // The late ACK makes the stream look at the change log, which no longer reaches back to it.
  s.ack(first);
  const st = await s.status;
  t.equal(st.code, GrpcStatus.RESOURCE_EXHAUSTED);
  t.match(st.details, /fell too far behind.*reconnect/);
});

t.test('explicit subscriptions per stream are bounded', async (t) => {
  const h = await startTestWds(t, { maxSubscriptions: 3 });
  const s = RawStream.open(t, h.address);
  s.subscribe(ADDRESS_TYPE_URL, { names: ['a/1', 'a/2', 'a/3', 'a/4'] });
  const st = await s.status;
  t.equal(st.code, GrpcStatus.RESOURCE_EXHAUSTED);
  t.match(st.details, /more than 3 subscriptions/);
});

t.test('a half-closed client stream is ended with OK; close() ends every stream with OK', async (t) => {
  const h = await startTestWds(t);
  const a = RawStream.open(t, h.address);
  a.subscribe(ADDRESS_TYPE_URL);
  await a.nextOf(ADDRESS_TYPE_URL);
  a.end();
  t.equal((await a.status).code, GrpcStatus.OK);

  const b = RawStream.open(t, h.address);
  b.subscribe(ADDRESS_TYPE_URL);
  await b.nextOf(ADDRESS_TYPE_URL);
  h.wds.close();
  t.equal((await b.status).code, GrpcStatus.OK, 'ztunnel treats OK as a benign close and reconnects at once');
  t.equal(h.wds.metrics.connectedClients, 0);

  const c = RawStream.open(t, h.address);
  c.subscribe(ADDRESS_TYPE_URL);
  t.equal((await c.status).code, GrpcStatus.UNAVAILABLE, 'new streams after close() are turned away');
});

t.test('resource bodies are shared: the store encodes each resource once for all streams', async (t) => {
  const h = await startTestWds(t);
  put(h.store, { workloads: [podWorkload(0)] });
  const stored = h.store.get(ADDRESS_TYPE_URL, W(0));
  const [, upsert] = workloadResource(podWorkload(0));
  t.ok(stored, 'stored');
  const clients = [RawStream.open(t, h.address), RawStream.open(t, h.address)];
  for (const c of clients) c.subscribe(ADDRESS_TYPE_URL);
  for (const c of clients) {
    const r = await c.nextOf(ADDRESS_TYPE_URL);
    t.equal(
      Buffer.from(r.resources[0]?.resource?.value ?? []).toString('hex'),
      Buffer.from(upsert.body).toString('hex'),
      'every client receives the stored bytes',
    );
    t.equal(r.resources[0]?.version, stored?.version);
  }
});

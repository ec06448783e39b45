// SPDX-License-Identifier: Apache-2.0
// How the WDS server writes at scale (src/controller/xds/: shared-bodies.ts, paced-write.ts,
// write-gate.ts, stream-writer.ts), through the real grpc-js server and clients that see the
// bytes on the wire (H2Stream): wildcard clients at the same revision get byte-identical
// bodies with nonces of their own and each ACK counts only for its own stream; large responses
// are written in slices by the server and arrive intact; the gate serves every waiting client
// and a client that stops reading holds the others up for at most the hold time; a stream that
// ends mid-write ends after the message, and one that goes away gives its place back at once.
import t from 'tap';
import { DeltaDiscoveryResponse } from '../../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';
import {
  ADDRESS_TYPE_URL,
  AUTHORIZATION_TYPE_URL,
  H2Stream,
  RawStream,
  WAIT_MS,
  appService,
  bodyOf,
  podWorkload,
  put,
  startTestWds,
  type TestWds,
} from './harness.ts';

/** ~250 bytes per workload: 2 000 of them make a full state of ~0.5 MB, several slices. */
const LARGE = 2_000;

function seed(h: TestWds, workloads: number): void {
  put(h.store, {
    workloads: Array.from({ length: workloads }, (_, i) => podWorkload(i)),
    services: [appService(0)],
  });
}

/** Resolves once `check` holds, polling; fails the wait after WAIT_MS. */
async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = performance.now() + WAIT_MS;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Some stream has a response in flight and no large write waits for the gate: it is being written. */
function writing(h: TestWds, streams = 1): boolean {
  const inFlight = h.wds.clients().filter((c) => c.types[0]?.inFlightNonce !== undefined).length;
  return inFlight >= streams && h.wds.metrics.largeWritesWaiting === 0;
}

function loggedUnpaced(h: TestWds): boolean {
  return h.log.lines().some((l) => /does not expose the HTTP\/2 stream/.test(String(l.message)));
}

for (const [label, workloads] of [
  ['small (written by grpc-js)', 3],
  ['large (written in slices)', LARGE],
] as const) {
  t.test(`${label}: byte-identical bodies, a nonce per client, each ACK for its own stream`, async (t) => {
    const h = await startTestWds(t);
    seed(h, workloads);
    const a = H2Stream.open(t, h.address, { nodeName: 'node-a' });
    const b = H2Stream.open(t, h.address, { nodeName: 'node-b' });
    a.subscribe(ADDRESS_TYPE_URL);
    b.subscribe(ADDRESS_TYPE_URL);
    const [ra, rb] = await Promise.all([a.next(), b.next()]);
    const da = DeltaDiscoveryResponse.decode(ra);
    const db = DeltaDiscoveryResponse.decode(rb);
    t.equal(da.resources.length, workloads + 1, 'the full state');
    t.not(da.nonce, db.nonce, 'each stream has its own nonce');
    t.ok(bodyOf(ra).equals(bodyOf(rb)), 'and the same bytes for everything else');

    // b ACKs a's nonce: stale for b, so b still has its response in flight; a ACKs its own.
    b.ack(ADDRESS_TYPE_URL, da.nonce);
    // Barrier: a stream's requests are handled in order, so once this is answered the stale
    // ACK has been looked at.
    b.subscribe(AUTHORIZATION_TYPE_URL);
    await b.next();
    a.ack(ADDRESS_TYPE_URL, da.nonce);
    await until('a has no response in flight', () =>
      h.wds.clients().some((c) => c.caller === 'test token for node-a' && c.types[0]?.acks === 1),
    );
    put(h.store, { workloads: [podWorkload(0, { status: 1 })] });
    const pa = await a.next();
    t.same(
      DeltaDiscoveryResponse.decode(pa).resources.map((r) => r.name),
      ['Kubernetes//Pod/apps/w0'],
      'a, having ACKed, gets the change',
    );
    t.equal(h.wds.metrics.acks, 1, 'the foreign nonce was not taken as b’s ACK');
    b.ack(ADDRESS_TYPE_URL, db.nonce);
    const pb = await b.next();
    t.not(DeltaDiscoveryResponse.decode(pb).nonce, DeltaDiscoveryResponse.decode(pa).nonce);
    t.ok(bodyOf(pa).equals(bodyOf(pb)), 'b gets the change after its own ACK, with the same body bytes');
    t.notOk(loggedUnpaced(h), 'the server writes large responses itself');
  });
}

t.test('a large response to a client with a small window arrives whole and decodes', async (t) => {
  const h = await startTestWds(t);
  seed(h, LARGE);
  const s = H2Stream.open(t, h.address, { windowBytes: 16 * 1024 });
  s.subscribe(ADDRESS_TYPE_URL);
  const raw = await s.next();
  const r = DeltaDiscoveryResponse.decode(raw);
  t.ok(raw.length > 4 * 64 * 1024, `several slices (${raw.length} bytes)`);
  t.equal(r.resources.length, LARGE + 1);
  t.equal(new Set(r.resources.map((x) => x.name)).size, LARGE + 1, 'every resource once');
});

t.test(
  'the gate serves every waiting client; one that stops reading holds the others for at most the hold time',
  async (t) => {
    // Every response is large and only one is written at a time.
    const h = await startTestWds(t, { writeGate: { largeResponseBytes: 1, budgetBytes: 1, holdMs: 300 } });
    seed(h, LARGE);
    const stuck = H2Stream.open(t, h.address, { nodeName: 'node-stuck', windowBytes: 16 * 1024 });
    stuck.pause();
    stuck.subscribe(ADDRESS_TYPE_URL);
    await until('the stuck client’s response is being written', () => writing(h));
    const started = performance.now();
    const others = Array.from({ length: 5 }, () => RawStream.open(t, h.address));
    for (const o of others) o.subscribe(ADDRESS_TYPE_URL);
    const got = await Promise.all(others.map((o) => o.nextOf(ADDRESS_TYPE_URL)));
    t.ok(
      got.every((r) => r.resources.length === LARGE + 1),
      `every other client got the full state, in ${Math.round(performance.now() - started)} ms`,
    );
    t.ok(h.wds.metrics.largeWritesOverdue >= 1, 'the stuck write went overdue and stopped counting');
    t.ok(
      h.log
        .lines()
        .some((l) => l.level === 'warn' && /still not written after the hold time/.test(String(l.message))),
      'and that is logged',
    );

    stuck.resume();
    const late = DeltaDiscoveryResponse.decode(await stuck.next());
    t.equal(late.resources.length, LARGE + 1, 'the stuck client gets its whole response once it reads');
  },
);

t.test('waiting clients are started in arrival order, none overtaken', async (t) => {
  const h = await startTestWds(t, { writeGate: { largeResponseBytes: 1, budgetBytes: 1, holdMs: 10_000 } });
  seed(h, LARGE);
  const clients = Array.from({ length: 4 }, (_, i) =>
    H2Stream.open(t, h.address, { nodeName: `node-${i}`, windowBytes: 16 * 1024 }),
  );
  // The first holds the gate (it does not read); the others queue behind it one by one, each
  // subscribing once the previous one's response has been decided.
  clients[0]?.pause();
  for (const [i, c] of clients.entries()) {
    c.subscribe(ADDRESS_TYPE_URL);
    await until(
      `client ${i} has a response in flight`,
      () => h.wds.clients().filter((s) => s.types[0]?.inFlightNonce !== undefined).length === i + 1,
    );
  }
  t.equal(h.wds.metrics.largeWritesWaiting, 3, 'three wait');
  clients[0]?.resume();
  const order: number[] = [];
  await Promise.all(
    clients.map(async (c, i) => {
      await c.next();
      order.push(i);
    }),
  );
  t.same(order, [0, 1, 2, 3]);
});

t.test('a server close during a large write ends the stream after the message, with OK', async (t) => {
  const h = await startTestWds(t, { writeGate: { holdMs: 10_000 } });
  seed(h, LARGE);
  const s = H2Stream.open(t, h.address, { windowBytes: 16 * 1024 });
  s.pause();
  s.subscribe(ADDRESS_TYPE_URL);
  await until('the response is being written', () => writing(h));
  h.wds.close();
  s.resume();
  const r = DeltaDiscoveryResponse.decode(await s.next());
  t.equal(r.resources.length, LARGE + 1, 'the message is complete');
  t.same(await s.ended, { code: 0, details: 'OK' }, 'then the status');
});

t.test('a client that goes away mid-write gives its place back at once', async (t) => {
  const h = await startTestWds(t, { writeGate: { largeResponseBytes: 1, budgetBytes: 1, holdMs: 10_000 } });
  seed(h, LARGE);
  const gone = H2Stream.open(t, h.address, { nodeName: 'node-gone', windowBytes: 16 * 1024 });
  gone.pause();
  gone.subscribe(ADDRESS_TYPE_URL);
  await until('its response is being written', () => writing(h));
  const next = RawStream.open(t, h.address);
  next.subscribe(ADDRESS_TYPE_URL);
  gone.close();
  const r = await next.nextOf(ADDRESS_TYPE_URL, 5_000);
  t.equal(r.resources.length, LARGE + 1, 'the next client is served well before the 10 s hold time');
  t.equal(h.wds.metrics.largeWritesOverdue, 0);
});

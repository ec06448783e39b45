// SPDX-License-Identifier: Apache-2.0
// Push-latency micro check at the PERFORMANCE.md shape, scaled down to fit a shared test machine:
// 10 000 workloads and 1 000 services, 25 auto-ACKing clients in this process, then single pod
// changes, each timed from the store apply to the last client receiving it. The figures are
// printed, not asserted (the machine is shared); the assertions are that every client receives
// exactly the changed resource, once per change, and that the initial sync is complete.
import t from 'tap';
import type { DeltaDiscoveryResponse } from '../../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';
import {
  ADDRESS_TYPE_URL,
  RawStream,
  WAIT_MS,
  appService,
  podWorkload,
  put,
  startTestWds,
} from './harness.ts';

const WORKLOADS = 10_000;
const SERVICES = 1_000;
const CLIENTS = 25;
const CHANGES = 5;

t.test('one pod change reaches every client; latency and memory are reported', async (t) => {
  const h = await startTestWds(t, { debounce: { quietMs: 100, maxMs: 500 } });
  put(h.store, {
    workloads: Array.from({ length: WORKLOADS }, (_, i) => podWorkload(i)),
    services: Array.from({ length: SERVICES }, (_, i) => appService(i)),
  });
  const clients = Array.from({ length: CLIENTS }, () => RawStream.open(t, h.address));
  const t0 = performance.now();
  for (const c of clients) c.subscribe(ADDRESS_TYPE_URL);
  const initial = await Promise.all(clients.map((c) => c.nextOf(ADDRESS_TYPE_URL, WAIT_MS * 4)));
  const syncMs = performance.now() - t0;
  for (const [i, r] of initial.entries()) {
    if (r.resources.length !== WORKLOADS + SERVICES)
      t.fail(`client ${i} got ${r.resources.length} resources`);
    clients[i]?.ack(r);
  }
  t.pass(`initial sync of ${CLIENTS} clients complete`);

  const latencies: number[] = [];
  for (let n = 0; n < CHANGES; n++) {
    const uid = `Kubernetes//Pod/apps/w${n}`;
    const start = performance.now();
    put(h.store, { workloads: [podWorkload(n, { status: 1 })] });
    const got = await Promise.all(
      clients.map(async (c) => {
        const r: DeltaDiscoveryResponse = await c.nextOf(ADDRESS_TYPE_URL);
        const at = performance.now();
        c.ack(r);
        return { r, at };
      }),
    );
    latencies.push(Math.max(...got.map((g) => g.at)) - start);
    t.ok(
      got.every(({ r }) => r.resources.length === 1 && r.resources[0]?.name === uid),
      `change ${n}: every client received exactly ${uid}`,
    );
  }
  latencies.sort((a, b) => a - b);
  const rssMb = Math.round(process.memoryUsage().rss / 1e6);
  t.comment(
    `${WORKLOADS} workloads, ${SERVICES} services, ${CLIENTS} clients: initial sync ${Math.round(syncMs)} ms; ` +
      `change → all clients (incl. 100 ms debounce) min ${Math.round(latencies[0] ?? 0)} ms, ` +
      `max ${Math.round(latencies.at(-1) ?? 0)} ms; process RSS ${rssMb} MB (server and clients)`,
  );
  t.equal(h.wds.metrics.connectedClients, CLIENTS);
  t.equal(h.wds.metrics.nacks, 0);
});

// SPDX-License-Identifier: Apache-2.0
// Scale sanity (PERFORMANCE.md: 10k pods, 1k services): the initial build, pod churn and a
// service selector change at that size. Bounds are deliberately generous (the machine is
// shared); the point is the shape — a pod event touches one resource and costs about the same
// at 10k pods as at 10 — and the timings are printed for the record.
import t from 'tap';
import { AmbientModel } from '../../../../src/controller/model/ambient-model.ts';
import type { SourceEvent } from '../../../../src/controller/sources/types.ts';
import { authorizationPolicy, namespace, peerAuthentication, pod, service, upsert } from './fixtures.ts';

const NAMESPACES = 50;
const PODS_PER_NAMESPACE = 200;
const SERVICES_PER_NAMESPACE = 20;

function podObject(ns: number, i: number, ready = true): SourceEvent {
  const ip = `10.${ns}.${Math.floor(i / 250)}.${(i % 250) + 1}`;
  return upsert(
    'Pod',
    pod(`ns-${ns}`, `pod-${i}`, {
      ips: [ip],
      ready,
      node: `node-${i % 100}`,
      serviceAccount: `sa-${i % SERVICES_PER_NAMESPACE}`,
      labels: { app: `svc-${i % SERVICES_PER_NAMESPACE}`, tier: i % 2 === 0 ? 'web' : 'db' },
      annotations: { 'ambient.istio.io/redirection': 'enabled' },
      ports: [{ name: 'http', containerPort: 8080 }],
    }),
  );
}

function cluster(): SourceEvent[] {
  const events: SourceEvent[] = [
    upsert('PeerAuthentication', peerAuthentication('istio-system', 'mesh', { mtls: { mode: 'STRICT' } })),
    upsert(
      'AuthorizationPolicy',
      authorizationPolicy('istio-system', 'mesh-deny', {
        action: 'DENY',
        rules: [{ from: [{ source: { namespaces: ['evil'] } }] }],
      }),
    ),
  ];
  for (let n = 0; n < NAMESPACES; n++) {
    const ns = `ns-${n}`;
    events.push(upsert('Namespace', namespace(ns)));
    for (let s = 0; s < SERVICES_PER_NAMESPACE; s++) {
      events.push(
        upsert(
          'Service',
          service(ns, `svc-${s}`, {
            selector: { app: `svc-${s}` },
            clusterIPs: [`10.96.${n}.${s + 1}`],
            ports: [{ name: 'http', port: 80, targetPort: 'http' }],
          }),
        ),
      );
    }
    events.push(
      upsert(
        'AuthorizationPolicy',
        authorizationPolicy(ns, 'web-only', {
          selector: { matchLabels: { tier: 'web' } },
          rules: [{ from: [{ source: { namespaces: [ns] } }] }],
        }),
      ),
      upsert(
        'PeerAuthentication',
        peerAuthentication(ns, 'db-port', {
          selector: { matchLabels: { tier: 'db' } },
          portLevelMtls: { 9090: { mode: 'PERMISSIVE' } },
        }),
      ),
    );
    for (let i = 0; i < PODS_PER_NAMESPACE; i++) events.push(podObject(n, i));
  }
  return events;
}

function ms(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

t.test('10k pods / 1k services: build, pod churn, service change', async (t) => {
  const m = new AmbientModel();
  const events = cluster();
  let start = process.hrtime.bigint();
  const initial = m.apply(events);
  const buildMs = ms(start);
  t.equal(
    initial.addresses.upserted.size,
    NAMESPACES * (PODS_PER_NAMESPACE + SERVICES_PER_NAMESPACE),
    '10k workloads + 1k services',
  );
  t.ok(buildMs < 60_000, `initial build ${buildMs.toFixed(0)} ms`);

  const churn: number[] = [];
  for (let k = 0; k < 200; k++) {
    // Each pod goes unready, then ready again: every event changes exactly one workload.
    const n = Math.floor(k / 2) % NAMESPACES;
    const i = (Math.floor(k / 2) * 7) % PODS_PER_NAMESPACE;
    start = process.hrtime.bigint();
    const d = m.apply([podObject(n, i, k % 2 === 1)]);
    churn.push(ms(start));
    if (d.addresses.upserted.size !== 1 || d.authorizations.upserted.size !== 0) {
      t.fail(
        `pod churn touched ${d.addresses.upserted.size} addresses, ${d.authorizations.upserted.size} policies`,
      );
      return;
    }
  }
  churn.sort((a, b) => a - b);
  const p50 = churn[100] ?? Infinity;
  const p99 = churn[198] ?? Infinity;
  t.ok(p50 < 20, `pod churn p50 ${p50.toFixed(3)} ms, p99 ${p99.toFixed(3)} ms`);

  start = process.hrtime.bigint();
  const d = m.apply([
    upsert(
      'Service',
      service('ns-7', 'svc-3', {
        selector: { app: 'svc-4' },
        clusterIPs: ['10.96.7.4'],
        ports: [{ name: 'http', port: 80, targetPort: 'http' }],
      }),
    ),
  ]);
  const svcMs = ms(start);
  t.equal(
    d.addresses.upserted.size,
    2 * (PODS_PER_NAMESPACE / SERVICES_PER_NAMESPACE),
    'exactly the pods leaving and joining the service',
  );
  t.ok(svcMs < 1_000, `service selector change ${svcMs.toFixed(2)} ms`);
  t.comment(
    `build ${buildMs.toFixed(0)} ms; pod churn p50 ${p50.toFixed(3)} ms p99 ${p99.toFixed(3)} ms; service change ${svcMs.toFixed(2)} ms; heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB`,
  );
});

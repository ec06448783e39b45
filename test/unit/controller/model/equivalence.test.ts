// SPDX-License-Identifier: Apache-2.0
// Property: the incremental model equals a model built from scratch. Random sequences of
// upserts and deletes over a small universe of namespaces, pods, services, EndpointSlices,
// AuthorizationPolicies and PeerAuthentications (so objects collide, move and come back) are
// applied in random batches; afterwards the incremental model's encoded resources must equal
// those of a fresh model given only the surviving objects (in any order), the replayed deltas
// must reproduce that state exactly, and every listed policy must exist (checklist C.45).
import t from 'tap';
import fc from 'fast-check';
import { AmbientModel } from '../../../../src/controller/model/ambient-model.ts';
import type { ResourceChanges } from '../../../../src/controller/model/ambient-model.ts';
import type { SourceEvent } from '../../../../src/controller/sources/types.ts';
import { Authorization } from '../../../../src/shared/gen/authorization.ts';
import { Address } from '../../../../src/shared/gen/workload.ts';
import {
  authorizationPolicy,
  endpointSlice,
  namespace,
  peerAuthentication,
  pod,
  service,
  upsert,
} from './fixtures.ts';

// Mostly one namespace, so objects meet; sometimes two, so namespace boundaries are exercised.
const ns = fc.constantFrom('a', 'a', 'b');
const labels = fc.record({ app: fc.constantFrom('x', 'y'), tier: fc.constant('web') }, { requiredKeys: [] });

const podEvent = fc
  .record({
    ns,
    name: fc.constantFrom('p1', 'p2', 'p3', 'p4'),
    labels,
    ip: fc.constantFrom('10.0.0.1', '10.0.0.2', '10.0.0.3', 'fd00::4'),
    ready: fc.boolean(),
    enrolled: fc.boolean(),
    node: fc.constantFrom('n1', 'n2'),
    sa: fc.constantFrom(undefined, 's1', 's2'),
    phase: fc.constantFrom('Running', 'Running', 'Pending', 'Succeeded'),
  })
  .map((p) =>
    upsert(
      'Pod',
      pod(p.ns, p.name, {
        labels: p.labels,
        ips: p.phase === 'Pending' ? [] : [p.ip],
        ready: p.ready,
        node: p.node,
        serviceAccount: p.sa,
        phase: p.phase,
        annotations: p.enrolled ? { 'ambient.istio.io/redirection': 'enabled' } : undefined,
        ports: [{ name: 'web', containerPort: 8081 }],
      }),
    ),
  );

const serviceEvent = fc
  .record({
    ns,
    name: fc.constantFrom('s1', 's1', 's2'),
    selector: fc.constantFrom<Record<string, string> | undefined>(
      undefined,
      {},
      { app: 'x' },
      { app: 'y', tier: 'web' },
    ),
    target: fc.constantFrom<number | string>(8080, 'web', 'absent'),
    headless: fc.boolean(),
    preferClose: fc.boolean(),
  })
  .map((s) =>
    upsert(
      'Service',
      service(s.ns, s.name, {
        selector: s.selector,
        ports: [{ name: 'http', port: 80, targetPort: s.target }],
        clusterIPs: s.headless ? ['None'] : ['10.96.0.1'],
        trafficDistribution: s.preferClose ? 'PreferClose' : undefined,
      }),
    ),
  );

const sliceEvent = fc
  .record({
    ns,
    name: fc.constantFrom('e1', 'e1', 'e2'),
    svc: fc.constantFrom('s1', 's1', 's2'),
    pods: fc.subarray(['p1', 'p2']),
    raw: fc.subarray(['192.168.0.1', '192.168.0.2']),
  })
  .map((e) =>
    upsert(
      'EndpointSlice',
      endpointSlice(e.ns, e.name, e.svc, [
        ...e.pods.map((p) => ({ addresses: ['10.0.0.9'], pod: p })),
        ...e.raw.map((ip) => ({ addresses: [ip] })),
      ]),
    ),
  );

const namespaceEvent = fc
  .record({ name: fc.constantFrom('a', 'b', 'istio-system'), annotated: fc.boolean() })
  .map((n) =>
    upsert(
      'Namespace',
      namespace(n.name, {
        annotations: n.annotated
          ? { 'networking.istio.io/traffic-distribution': 'PreferSameNode' }
          : undefined,
      }),
    ),
  );

const policySpecs: unknown[] = [
  { action: 'DENY', rules: [{}] },
  { selector: { matchLabels: { app: 'x' } }, rules: [{ from: [{ source: { namespaces: ['a'] } }] }] },
  { selector: {}, action: 'DENY', rules: [{ to: [{ operation: { ports: ['8080'] } }] }] },
  { selector: { matchLabels: { tier: 'web' } }, rules: [{ to: [{ operation: { methods: ['GET'] } }] }] },
  { selector: { matchLabels: { app: 'y' } }, action: 'CUSTOM', rules: [{}] },
  { selector: { matchLabels: { app: 'y' } }, action: 'AUDIT' },
  { targetRefs: [{ kind: 'Service', name: 's1' }] },
  { selector: 'broken', action: 'DENY' },
];

const policyEvent = fc
  .record({
    ns: fc.constantFrom('a', 'b', 'istio-system'),
    name: fc.constantFrom('ap1', 'ap2'),
    spec: fc.constantFrom(...policySpecs),
  })
  .map((p) => upsert('AuthorizationPolicy', authorizationPolicy(p.ns, p.name, p.spec)));

const mode = fc.constantFrom(undefined, 'UNSET', 'PERMISSIVE', 'STRICT', 'DISABLE');
const peerAuthEvent = fc
  .record({
    ns: fc.constantFrom('a', 'b', 'istio-system'),
    name: fc.constantFrom('pa1', 'pa2'),
    selector: fc.constantFrom(undefined, { app: 'x' }, { tier: 'web' }),
    mode,
    ports: fc.dictionary(fc.constantFrom('8080', '8081'), fc.constantFrom('PERMISSIVE', 'STRICT', 'DISABLE')),
    created: fc.constantFrom('2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z'),
  })
  .map((p) =>
    upsert(
      'PeerAuthentication',
      peerAuthentication(
        p.ns,
        p.name,
        {
          ...(p.selector === undefined ? {} : { selector: { matchLabels: p.selector } }),
          ...(p.mode === undefined ? {} : { mtls: { mode: p.mode } }),
          ...(p.selector === undefined
            ? {}
            : {
                portLevelMtls: Object.fromEntries(Object.entries(p.ports).map(([k, m]) => [k, { mode: m }])),
              }),
        },
        p.created,
      ),
    ),
  );

// Weighted towards the kinds with the most dependency edges (pods, services, policies).
const anyUpsert = fc.oneof(
  { arbitrary: podEvent, weight: 4 },
  { arbitrary: serviceEvent, weight: 3 },
  { arbitrary: sliceEvent, weight: 3 },
  { arbitrary: namespaceEvent, weight: 1 },
  { arbitrary: policyEvent, weight: 2 },
  { arbitrary: peerAuthEvent, weight: 2 },
);
/** An upsert, or (a third of the time) the delete of the same object. */
const event: fc.Arbitrary<SourceEvent> = fc
  .tuple(anyUpsert, fc.nat(2))
  .map(([e, n]) => (n === 0 ? { ...e, type: 'delete' } : e));

function identity(e: SourceEvent): string {
  return `${e.kind}/${e.object.metadata?.namespace ?? ''}/${e.object.metadata?.name ?? ''}`;
}

function replay<T>(
  into: Map<string, Uint8Array>,
  changes: ResourceChanges<T>,
  encode: (m: T) => Uint8Array,
): void {
  for (const name of changes.removed) into.delete(name);
  for (const [name, m] of changes.upserted) into.set(name, encode(m));
}

function sameBytes(a: ReadonlyMap<string, Uint8Array>, b: ReadonlyMap<string, Uint8Array>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) {
    const w = b.get(k);
    if (w === undefined || !Buffer.from(v).equals(w)) return false;
  }
  return true;
}

function listedPoliciesExist(m: AmbientModel): boolean {
  for (const a of m.addresses().values()) {
    if (a.type?.$case !== 'workload') continue;
    for (const key of a.type.value.authorizationPolicies) if (!m.authorizations().has(key)) return false;
  }
  return true;
}

/** The incremental model's resources equal a fresh model's built from `objects` (in that order). */
function matchesFresh(incremental: AmbientModel, objects: readonly SourceEvent[]): boolean {
  const fresh = new AmbientModel();
  fresh.apply(objects);
  return (
    sameBytes(incremental.encodedAddresses(), fresh.encodedAddresses()) &&
    sameBytes(incremental.encodedAuthorizations(), fresh.encodedAuthorizations())
  );
}

t.test('incremental model equals a fresh model of the current state after every batch', async () => {
  fc.assert(
    fc.property(
      fc.array(event, { minLength: 1, maxLength: 40, size: 'max' }),
      fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1 }),
      (events, batchSizes) => {
        const incremental = new AmbientModel();
        const addresses = new Map<string, Uint8Array>();
        const authorizations = new Map<string, Uint8Array>();
        const current = new Map<string, SourceEvent>();
        let i = 0;
        for (let b = 0; i < events.length; b++) {
          const batch = events.slice(i, i + (batchSizes[b % batchSizes.length] ?? 1));
          i += batch.length;
          const delta = incremental.apply(batch);
          replay(addresses, delta.addresses, (m: Address) => Address.encode(m).finish());
          replay(authorizations, delta.authorizations, (m: Authorization) =>
            Authorization.encode(m).finish(),
          );
          for (const e of batch) {
            if (e.type === 'delete') current.delete(identity(e));
            else current.set(identity(e), e);
          }
          // Checked after every batch: a stale resource may be repaired by a later event.
          if (!matchesFresh(incremental, [...current.values()])) return false;
          if (!sameBytes(addresses, incremental.encodedAddresses())) return false;
          if (!sameBytes(authorizations, incremental.encodedAuthorizations())) return false;
          if (!listedPoliciesExist(incremental)) return false;
        }
        // The translation does not depend on the order objects arrive in.
        return matchesFresh(incremental, [...current.values()].reverse());
      },
    ),
    { numRuns: 800 },
  );
});

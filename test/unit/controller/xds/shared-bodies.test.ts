// SPDX-License-Identifier: Apache-2.0
// SharedBodies (src/controller/xds/shared-bodies.ts): one encoding of the full state and of each
// change set per store revision, shared by every caller; what they carry; a fresh one after
// the store changes; undefined once the change log no longer reaches back.
import t from 'tap';
import { encodeResponseBody } from '../../../../src/controller/xds/delta-response.ts';
import { XdsResourceStore, type ResourceUpsert } from '../../../../src/controller/xds/resource-store.ts';
import { SharedBodies } from '../../../../src/controller/xds/shared-bodies.ts';
import { DeltaDiscoveryResponse } from '../../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';

const A = 'type.googleapis.com/test.A';
const up = (names: string[], content = 'v1'): Map<string, ResourceUpsert> =>
  new Map(names.map((n) => [n, { body: new TextEncoder().encode(`${n}:${content}`) }]));

function decode(bytes: Buffer): DeltaDiscoveryResponse {
  return DeltaDiscoveryResponse.decode(bytes);
}

t.test('the full state is encoded once per revision and shared', async (t) => {
  const store = new XdsResourceStore([A]);
  store.apply(A, up(['x', 'y']));
  const bodies = new SharedBodies(store);
  const full = bodies.full(A);
  t.equal(bodies.full(A), full, 'the same body for every caller at this revision');
  t.equal(full.resources, 2);
  t.equal(
    full.bytes.toString('hex'),
    encodeResponseBody({
      typeUrl: A,
      systemVersionInfo: '2',
      resources: [...store.all(A)],
      removed: [],
    }).bytes.toString('hex'),
    'every resource, at the store revision',
  );
  store.apply(A, up(['z']));
  const after = bodies.full(A);
  t.not(after, full, 'a change makes a new one');
  t.same(
    decode(after.bytes).resources.map((r) => r.name),
    ['x', 'y', 'z'],
  );
  t.equal(decode(after.bytes).systemVersionInfo, '3');
});

t.test('a change set carries the upserts and removals of (from, to] and is shared', async (t) => {
  const store = new XdsResourceStore([A]);
  store.apply(A, up(['x', 'y'])); // revisions 1, 2
  store.apply(A, up(['x'], 'v2'), ['y']); // 3, 4
  const bodies = new SharedBodies(store);
  const c = bodies.changes(A, 2, 4);
  t.ok(c);
  t.equal(bodies.changes(A, 2, 4), c, 'the same body for every caller');
  const d = decode(c?.bytes ?? Buffer.alloc(0));
  t.same(
    d.resources.map((r) => r.name),
    ['x'],
  );
  t.same(d.removedResources, ['y']);
  t.equal(d.systemVersionInfo, '4');
  t.same([c?.resources, c?.removed], [1, 1]);
  t.not(bodies.changes(A, 3, 4), c, 'another range, another body');
});

t.test('change sets of an older store revision are not reused', async (t) => {
  const store = new XdsResourceStore([A]);
  store.apply(A, up(['x']));
  const bodies = new SharedBodies(store);
  const before = bodies.changes(A, 0, 1);
  store.apply(A, up(['x'], 'v2'));
  const after = bodies.changes(A, 0, 1);
  t.not(after, before, 'x now has other content');
  t.not(
    decode(after?.bytes ?? Buffer.alloc(0)).resources[0]?.version,
    decode(before?.bytes ?? Buffer.alloc(0)).resources[0]?.version,
  );
});

t.test('undefined when the change log no longer reaches back', async (t) => {
  // Few resources at a time, so the log is trimmed to a few entries.
  const store = new XdsResourceStore([A], { minChangeLog: 2 });
  for (let i = 0; i < 10; i++) {
    store.apply(A, up([`n${i}`]));
    store.apply(A, new Map(), [`n${i}`]);
  }
  const bodies = new SharedBodies(store);
  t.equal(bodies.changes(A, 0, 20), undefined);
  t.ok(bodies.changes(A, 19, 20), 'recent revisions still answer');
});

t.test('a handful of change sets is kept per revision, the oldest dropped first', async (t) => {
  const store = new XdsResourceStore([A]);
  for (let i = 0; i < 12; i++) store.apply(A, up([`n${i}`]));
  const bodies = new SharedBodies(store);
  const first = bodies.changes(A, 0, 12);
  for (let from = 1; from <= 8; from++) bodies.changes(A, from, 12);
  t.equal(bodies.changes(A, 8, 12), bodies.changes(A, 8, 12), 'recent ones are kept');
  t.not(bodies.changes(A, 0, 12), first, 'the oldest was dropped and is built again');
});

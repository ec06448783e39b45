// SPDX-License-Identifier: Apache-2.0
// XdsResourceStore (src/controller/xds/resource-store.ts): content-hash versions (identical
// re-upserts are no-ops), atomic validated applies, alias resolution, the change log that
// client streams read incrementally, and its trimming.
import t from 'tap';
import { XdsError } from '../../../../src/controller/xds/errors.ts';
import { XdsResourceStore, type ResourceUpsert } from '../../../../src/controller/xds/resource-store.ts';
import { Resource } from '../../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';

const A = 'type.googleapis.com/test.A';
const B = 'type.googleapis.com/test.B';
const body = (s: string): Uint8Array => new TextEncoder().encode(s);
const up = (entries: [string, string, string[]?][]): Map<string, ResourceUpsert> =>
  new Map(entries.map(([name, b, aliases]) => [name, { body: body(b), ...(aliases && { aliases }) }]));

t.test('stores each resource encoded once as an envoy Resource', async (t) => {
  const s = new XdsResourceStore([A]);
  s.apply(A, up([['x', 'hello', ['/10.0.0.1']]]));
  const r = s.get(A, 'x');
  t.ok(r);
  const decoded = Resource.decode(r?.encoded ?? new Uint8Array());
  t.equal(decoded.name, 'x');
  t.equal(decoded.version, r?.version);
  t.same(decoded.aliases, ['/10.0.0.1']);
  t.equal(decoded.resource?.typeUrl, A);
  t.equal(Buffer.from(decoded.resource?.value ?? []).toString(), 'hello');
});

t.test('versions are content hashes of body and aliases', async (t) => {
  const s1 = new XdsResourceStore([A]);
  const s2 = new XdsResourceStore([A]);
  s1.apply(A, up([['x', 'v1']]));
  s2.apply(A, up([['x', 'v1']]));
  t.equal(s1.get(A, 'x')?.version, s2.get(A, 'x')?.version, 'same content, same version, in any store');
  s2.apply(A, up([['x', 'v1', ['/10.0.0.1']]]));
  t.not(s1.get(A, 'x')?.version, s2.get(A, 'x')?.version, 'aliases are part of the version');
  s2.apply(A, up([['x', 'v2', ['/10.0.0.1']]]));
  t.not(s2.get(A, 'x')?.version, s1.get(A, 'x')?.version);
});

t.test('identical re-upserts and unknown removals change nothing and emit nothing', async (t) => {
  const s = new XdsResourceStore([A, B]);
  const events: [string, number][] = [];
  s.on('change', (type, rev) => events.push([type, rev]));
  const first = s.apply(
    A,
    up([
      ['x', 'v1'],
      ['y', 'v1'],
    ]),
  );
  t.same(first, { upserted: ['x', 'y'], removed: [], revision: 2 });
  const again = s.apply(A, up([['x', 'v1']]), ['nope']);
  t.same(again, { upserted: [], removed: [], revision: 2 });
  t.same(events, [[A, 2]], 'one event for the first apply only');
  s.apply(A, up([['x', 'v2']]), ['y']);
  t.same(events, [
    [A, 2],
    [A, 4],
  ]);
  t.equal(s.revision(B), 0, 'types have their own revisions');
  t.equal(s.size(A), 1);
  t.same(
    [...s.all(A)].map((r) => r.name),
    ['x'],
  );
});

t.test('resolve finds a resource by name and by alias, and follows alias changes', async (t) => {
  const s = new XdsResourceStore([A]);
  s.apply(
    A,
    up([
      ['w1', 'a', ['/10.0.0.1']],
      ['w2', 'b', ['/10.0.0.1', '/10.0.0.2']],
    ]),
  );
  t.same(
    s
      .resolve(A, '/10.0.0.1')
      .map((r) => r.name)
      .sort(),
    ['w1', 'w2'],
  );
  t.same(
    s.resolve(A, 'w1').map((r) => r.name),
    ['w1'],
  );
  t.same(s.resolve(A, 'nothing'), []);
  s.apply(A, up([['w1', 'a', ['/10.0.0.9']]]));
  t.same(
    s.resolve(A, '/10.0.0.1').map((r) => r.name),
    ['w2'],
    'the old alias no longer finds w1',
  );
  t.same(
    s.resolve(A, '/10.0.0.9').map((r) => r.name),
    ['w1'],
  );
  s.apply(A, new Map(), ['w2']);
  t.same(s.resolve(A, '/10.0.0.2'), [], 'a removed resource is unaliased');
});

t.test('changesSince lists each changed name once, within (from, to]', async (t) => {
  const s = new XdsResourceStore([A]);
  s.apply(A, up([['x', '1']])); // rev 1
  s.apply(A, up([['y', '1']])); // rev 2
  s.apply(A, up([['x', '2']])); // rev 3
  s.apply(A, new Map(), ['y']); // rev 4
  t.same([...(s.changesSince(A, 0, 4) ?? [])].sort(), ['x', 'y']);
  t.same([...(s.changesSince(A, 1, 2) ?? [])], ['y']);
  t.same([...(s.changesSince(A, 2, 4) ?? [])].sort(), ['x', 'y']);
  t.same([...(s.changesSince(A, 4, 4) ?? [])], []);
});

t.test('the change log is trimmed; a reader from before the trim gets undefined', async (t) => {
  const s = new XdsResourceStore([A], { minChangeLog: 4 });
  for (let i = 0; i < 3; i++) s.apply(A, up([['x', String(i)]]));
  t.ok(s.changesSince(A, 0, s.revision(A)), 'within the log');
  for (let i = 3; i < 10; i++) s.apply(A, up([['x', String(i)]]));
  t.equal(s.changesSince(A, 0, s.revision(A)), undefined, 'too far behind');
  const recent = s.changesSince(A, s.revision(A) - 1, s.revision(A));
  t.same([...(recent ?? [])], ['x'], 'recent readers are still served');
});

t.test('the log keeps at least twice the number of resources', async (t) => {
  const s = new XdsResourceStore([A], { minChangeLog: 1 });
  s.apply(A, up(Array.from({ length: 50 }, (_, i): [string, string] => [`r${i}`, 'v'])));
  t.ok(s.changesSince(A, 0, s.revision(A)), 'a full initial load stays readable');
});

t.test('refuses bad input without changing anything', async (t) => {
  const s = new XdsResourceStore([A]);
  s.apply(A, up([['keep', 'v']]));
  const cases: [string, () => unknown, RegExp][] = [
    ['unknown type', () => s.apply(B, up([['x', 'v']])), /not served by this store/],
    [
      'empty name',
      () =>
        s.apply(
          A,
          up([
            ['ok', 'v'],
            ['', 'v'],
          ]),
        ),
      /resource name "" is not usable/,
    ],
    ['wildcard name', () => s.apply(A, up([['*', 'v']])), /"\*" is not usable/],
    ['empty alias', () => s.apply(A, up([['ok', 'v', ['']]])), /alias of ok/],
    ['overlong name', () => s.apply(A, up([['n'.repeat(5000), 'v']])), /at most 4096/],
    ['upsert and remove', () => s.apply(A, up([['keep', 'w']]), ['keep']), /both upserted and removed/],
  ];
  for (const [name, f, re] of cases) {
    t.throws(f, re, name);
    try {
      f();
    } catch (err) {
      t.ok(err instanceof XdsError && err.code === 'CTL_ERR_XDS_RESOURCE', `${name}: CTL_ERR_XDS_RESOURCE`);
    }
  }
  t.equal(s.size(A), 1, 'nothing was applied');
  t.equal(s.get(A, 'ok'), undefined);
  t.equal(s.revision(A), 1);
  t.throws(() => new XdsResourceStore([]), /at least one type URL/);
  t.throws(() => new XdsResourceStore([A], { minChangeLog: 0 }), /positive integer/);
});

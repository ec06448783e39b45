// SPDX-License-Identifier: Apache-2.0
// PeerAuthentication → synthetic STRICT policies (spec ambient-protocols §5.5, §5.6), judged by
// ztunnel's own engine: for every case, each port's plaintext (15006, no identity) outcome, and
// that HBONE (an identity) is never refused by mTLS settings. Cases mirror istio/istio's
// pilot/pkg/serviceregistry/ambient/testdata/peer-authn-*.yaml and TestPeerAuthentication
// (checklist C.38, C.47, C.48), with the port-level bugs of security-and-reliability §1.1
// (istio/istio#54146: several STRICT ports combined with AND left the workload permissive;
// #49098: too strict) as explicit rows, plus a property test against a reference resolution.
import t from 'tap';
import fc from 'fast-check';
import { AmbientModel } from '../../../../src/controller/model/ambient-model.ts';
import { Action } from '../../../../src/shared/gen/authorization.ts';
import { namespace, peerAuthentication, pod, upsert } from './fixtures.ts';
import { decide, plaintextAllowed } from './ztunnel-engine.ts';

const UID = 'Kubernetes//Pod/apps/server';
const STATIC = 'istio-system/istio_converted_static_strict';
const PORTS = [7070, 8080, 9090] as const;
type Mode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';

interface PaSpec {
  mode?: Mode;
  ports?: Record<number, Mode>;
  selector?: Record<string, string>;
  created?: string;
}

function spec(p: PaSpec): Record<string, unknown> {
  return {
    ...(p.selector === undefined ? {} : { selector: { matchLabels: p.selector } }),
    ...(p.mode === undefined ? {} : { mtls: { mode: p.mode } }),
    ...(p.ports === undefined
      ? {}
      : { portLevelMtls: Object.fromEntries(Object.entries(p.ports).map(([k, m]) => [k, { mode: m }])) }),
  };
}

/** A model holding ns `apps` with pod `server` (app=server) and the given PeerAuthentications. */
function build(pas: { mesh?: PaSpec; ns?: PaSpec; workload?: PaSpec }): AmbientModel {
  const m = new AmbientModel();
  const events = [
    upsert('Namespace', namespace('apps')),
    upsert('Pod', pod('apps', 'server', { labels: { app: 'server' } })),
  ];
  if (pas.mesh !== undefined)
    events.push(upsert('PeerAuthentication', peerAuthentication('istio-system', 'mesh', spec(pas.mesh))));
  if (pas.ns !== undefined)
    events.push(upsert('PeerAuthentication', peerAuthentication('apps', 'ns', spec(pas.ns))));
  if (pas.workload !== undefined) {
    events.push(
      upsert(
        'PeerAuthentication',
        peerAuthentication('apps', 'wl', spec({ selector: { app: 'server' }, ...pas.workload })),
      ),
    );
  }
  m.apply(events);
  return m;
}

function listed(m: AmbientModel): string[] {
  const a = m.addresses().get(UID);
  return a?.type?.$case === 'workload' ? a.type.value.authorizationPolicies : [];
}

interface Row {
  id: string;
  mesh?: PaSpec;
  ns?: PaSpec;
  workload?: PaSpec;
  /** Ports whose plaintext is refused. */
  strict: number[];
  /** Synthetic keys the workload lists. */
  keys: string[];
}

const CONVERTED = 'apps/converted_peer_authentication_wl';

const rows: Row[] = [
  { id: 'C.38 no PeerAuthentication: plaintext accepted', strict: [], keys: [] },
  { id: 'mesh STRICT', mesh: { mode: 'STRICT' }, strict: [...PORTS], keys: [STATIC] },
  { id: 'mesh PERMISSIVE', mesh: { mode: 'PERMISSIVE' }, strict: [], keys: [] },
  { id: 'mesh UNSET is PERMISSIVE', mesh: {}, strict: [], keys: [] },
  { id: 'namespace STRICT', ns: { mode: 'STRICT' }, strict: [...PORTS], keys: [STATIC] },
  {
    id: 'namespace PERMISSIVE overrides mesh STRICT',
    mesh: { mode: 'STRICT' },
    ns: { mode: 'PERMISSIVE' },
    strict: [],
    keys: [],
  },
  {
    id: 'namespace DISABLE overrides mesh STRICT',
    mesh: { mode: 'STRICT' },
    ns: { mode: 'DISABLE' },
    strict: [],
    keys: [],
  },
  {
    id: 'namespace UNSET inherits mesh STRICT',
    mesh: { mode: 'STRICT' },
    ns: {},
    strict: [...PORTS],
    keys: [STATIC],
  },
  {
    id: 'peer-authn-strict-workload',
    mesh: { mode: 'PERMISSIVE' },
    workload: { mode: 'STRICT' },
    strict: [...PORTS],
    keys: [STATIC],
  },
  {
    id: 'workload PERMISSIVE overrides namespace STRICT',
    ns: { mode: 'STRICT' },
    workload: { mode: 'PERMISSIVE' },
    strict: [],
    keys: [],
  },
  {
    id: '§1.1 peer-authn-strict-and-permissive-port-mtls: a PERMISSIVE port does not open the others',
    workload: { mode: 'STRICT', ports: { 8080: 'PERMISSIVE' } },
    strict: [7070, 9090],
    keys: [CONVERTED],
  },
  {
    id: '§1.1 peer-authn-strict-and-disable-port-mtls',
    workload: { mode: 'STRICT', ports: { 8080: 'PERMISSIVE', 9090: 'DISABLE' } },
    strict: [7070],
    keys: [CONVERTED],
  },
  {
    id: 'peer-authn-strict-and-strict-port-mtls: redundant STRICT port, static policy only',
    workload: { mode: 'STRICT', ports: { 8080: 'STRICT' } },
    strict: [...PORTS],
    keys: [STATIC],
  },
  {
    id: 'peer-authn-strict-port-mtls-strict-and-permissive',
    workload: { mode: 'STRICT', ports: { 8080: 'STRICT', 9090: 'PERMISSIVE' } },
    strict: [7070, 8080],
    keys: [CONVERTED],
  },
  {
    id: '§1.1 istio#54146 peer-authn-permissive-port-mtls-strict: two STRICT ports are ORed, not ANDed',
    workload: { mode: 'PERMISSIVE', ports: { 8080: 'STRICT', 9090: 'STRICT' } },
    strict: [8080, 9090],
    keys: [CONVERTED],
  },
  {
    id: '§1.1 vice versa: a STRICT port does not close the others (peer-authn-permissive-port-mtls-strict-and-permissive)',
    workload: { mode: 'PERMISSIVE', ports: { 8080: 'STRICT', 9090: 'PERMISSIVE' } },
    strict: [8080],
    keys: [CONVERTED],
  },
  {
    id: 'peer-authn-unset-port-mtls-strict (no mesh or namespace policy)',
    workload: { ports: { 8080: 'STRICT' } },
    strict: [8080],
    keys: [CONVERTED],
  },
  {
    id: 'TestPeerAuthentication: mesh STRICT + workload PERMISSIVE port',
    mesh: { mode: 'STRICT' },
    workload: { ports: { 8080: 'PERMISSIVE' } },
    strict: [7070, 9090],
    keys: [CONVERTED],
  },
  {
    id: 'TestPeerAuthentication: mesh PERMISSIVE + workload STRICT port',
    mesh: { mode: 'PERMISSIVE' },
    workload: { ports: { 8080: 'STRICT' } },
    strict: [8080],
    keys: [CONVERTED],
  },
  {
    id: 'peer-authn-strict-root-unset-workload-port-mtls-strict-and-permissive',
    mesh: { mode: 'STRICT' },
    workload: { ports: { 8080: 'STRICT', 9090: 'PERMISSIVE' } },
    strict: [7070, 8080],
    keys: [CONVERTED],
  },
  {
    id: 'peer-authn-permissive-root-unset-namespace-mixed-workload-ports',
    mesh: { mode: 'PERMISSIVE' },
    ns: {},
    workload: { ports: { 8080: 'STRICT', 9090: 'PERMISSIVE' } },
    strict: [8080],
    keys: [CONVERTED],
  },
  {
    id: 'namespace STRICT + workload UNSET with a DISABLE port: DISABLE opens the port like PERMISSIVE (§5.6)',
    ns: { mode: 'STRICT' },
    workload: { ports: { 8080: 'DISABLE' } },
    strict: [7070, 9090],
    keys: [CONVERTED],
  },
  {
    id: 'namespace STRICT + workload PERMISSIVE with a STRICT port',
    ns: { mode: 'STRICT' },
    workload: { mode: 'PERMISSIVE', ports: { 9090: 'STRICT' } },
    strict: [9090],
    keys: [CONVERTED],
  },
  {
    id: 'an UNSET port entry inherits',
    mesh: { mode: 'STRICT' },
    workload: { ports: { 8080: 'UNSET' } },
    strict: [...PORTS],
    keys: [STATIC],
  },
  {
    id: 'a workload policy selecting other pods has no effect',
    mesh: { mode: 'STRICT' },
    workload: { selector: { app: 'other' }, mode: 'PERMISSIVE' },
    strict: [...PORTS],
    keys: [STATIC],
  },
];

for (const row of rows) {
  t.test(row.id, async (t) => {
    const m = build(row);
    for (const port of PORTS) {
      t.equal(plaintextAllowed(m, UID, port), !row.strict.includes(port), `plaintext to ${port}`);
      t.ok(
        decide(m, UID, { port, from: { namespace: 'other', serviceAccount: 'client' } }).allowed,
        `HBONE to ${port} is never refused by mTLS settings`,
      );
    }
    t.same(listed(m), row.keys, 'synthetic policies listed');
    for (const key of listed(m))
      t.ok(m.authorizations().has(key), `${key} is emitted (never referenced but missing)`);
  });
}

t.test(
  'the converted policy is one DENY match with the port list (the shape of the #54146 fix)',
  async (t) => {
    const strictBase = build({
      workload: { mode: 'STRICT', ports: { 9090: 'PERMISSIVE', 8080: 'DISABLE' } },
    });
    const p = strictBase.authorizations().get(CONVERTED);
    t.equal(p?.action, Action.DENY);
    t.equal(p?.rules.length, 1);
    t.equal(p?.rules[0]?.clauses.length, 1);
    const match = p?.rules[0]?.clauses[0]?.matches[0];
    t.same(match?.notDestinationPorts, [8080, 9090], 'none of the open ports, sorted');
    t.same(match?.notPrincipals, [{ matchType: { $case: 'presence', value: {} } }]);
    const permissiveBase = build({
      workload: { mode: 'PERMISSIVE', ports: { 9090: 'STRICT', 8080: 'STRICT' } },
    });
    t.same(
      permissiveBase.authorizations().get(CONVERTED)?.rules[0]?.clauses[0]?.matches[0]?.destinationPorts,
      [8080, 9090],
    );
  },
);

t.test('static STRICT policy exists exactly while some PeerAuthentication does', async (t) => {
  const m = build({});
  t.notOk(m.authorizations().has(STATIC));
  const pa = peerAuthentication('apps', 'ns', { mtls: { mode: 'PERMISSIVE' } });
  let d = m.apply([upsert('PeerAuthentication', pa)]);
  t.ok(d.authorizations.upserted.has(STATIC));
  d = m.apply([{ type: 'delete', kind: 'PeerAuthentication', object: pa }]);
  t.same(d.authorizations.removed, [STATIC]);
});

t.test('oldest policy wins at each level; equal ages fall back to the name', async (t) => {
  const run = (older: Mode, newer: Mode, olderName = 'a', newerName = 'b'): boolean => {
    const m = new AmbientModel();
    m.apply([
      upsert('Pod', pod('apps', 'server', { labels: { app: 'server' } })),
      upsert(
        'PeerAuthentication',
        peerAuthentication('apps', newerName, { mtls: { mode: newer } }, '2026-02-01T00:00:00Z'),
      ),
      upsert(
        'PeerAuthentication',
        peerAuthentication('apps', olderName, { mtls: { mode: older } }, '2026-01-01T00:00:00Z'),
      ),
    ]);
    return plaintextAllowed(m, UID, 8080);
  };
  t.equal(run('PERMISSIVE', 'STRICT'), true, 'older PERMISSIVE wins');
  t.equal(run('STRICT', 'PERMISSIVE'), false, 'older STRICT wins');
  const tie = new AmbientModel();
  tie.apply([
    upsert('Pod', pod('apps', 'server', { labels: { app: 'server' } })),
    upsert(
      'PeerAuthentication',
      peerAuthentication('apps', 'b', { mtls: { mode: 'PERMISSIVE' } }, '2026-01-01T00:00:00Z'),
    ),
    upsert(
      'PeerAuthentication',
      peerAuthentication('apps', 'a', { mtls: { mode: 'STRICT' } }, '2026-01-01T00:00:00Z'),
    ),
  ]);
  t.equal(plaintextAllowed(tie, UID, 8080), false, 'same age: `a` before `b`');

  const wl = new AmbientModel();
  wl.apply([
    upsert('Pod', pod('apps', 'server', { labels: { app: 'server', tier: 'web' } })),
    upsert(
      'PeerAuthentication',
      peerAuthentication(
        'apps',
        'new',
        { selector: { matchLabels: { tier: 'web' } }, mtls: { mode: 'PERMISSIVE' } },
        '2026-03-01T00:00:00Z',
      ),
    ),
    upsert(
      'PeerAuthentication',
      peerAuthentication(
        'apps',
        'old',
        { selector: { matchLabels: { app: 'server' } }, mtls: { mode: 'STRICT' } },
        '2026-01-01T00:00:00Z',
      ),
    ),
  ]);
  t.equal(plaintextAllowed(wl, UID, 8080), false, 'the oldest matching workload policy governs');
});

t.test(
  'a root-namespace PeerAuthentication with a selector is ignored, with a diagnostic (§5.6)',
  async (t) => {
    const m = new AmbientModel();
    m.apply([
      upsert('Pod', pod('apps', 'server', { labels: { app: 'server' } })),
      upsert(
        'PeerAuthentication',
        peerAuthentication('istio-system', 'sel', {
          selector: { matchLabels: { app: 'server' } },
          mtls: { mode: 'STRICT' },
        }),
      ),
    ]);
    t.ok(plaintextAllowed(m, UID, 8080));
    t.match(m.diagnostics().get('PeerAuthentication istio-system/sel'), [
      /root namespace istio-system is ignored/,
    ]);
  },
);

t.test('workloads in the root namespace follow the mesh policy only', async (t) => {
  const m = new AmbientModel();
  m.apply([
    upsert('Pod', pod('istio-system', 'gw', { labels: { app: 'gw' } })),
    upsert('PeerAuthentication', peerAuthentication('istio-system', 'mesh', { mtls: { mode: 'STRICT' } })),
  ]);
  t.notOk(plaintextAllowed(m, 'Kubernetes//Pod/istio-system/gw', 8080));
});

t.test('an unreadable PeerAuthentication is read as STRICT on every port, with a diagnostic', async (t) => {
  const cases: [string, unknown][] = [
    ['unknown mode', { mtls: { mode: 'STRICTT' } }],
    [
      'port key not a port',
      {
        selector: { matchLabels: { app: 'server' } },
        mtls: { mode: 'PERMISSIVE' },
        portLevelMtls: { http: { mode: 'PERMISSIVE' } },
      },
    ],
    [
      'port 0',
      { selector: { matchLabels: { app: 'server' } }, portLevelMtls: { 0: { mode: 'PERMISSIVE' } } },
    ],
    [
      'portLevelMtls without a selector',
      { mtls: { mode: 'PERMISSIVE' }, portLevelMtls: { 8080: { mode: 'PERMISSIVE' } } },
    ],
    ['typo in a field name', { mtls: { mode: 'PERMISSIVE' }, portLevelMTLS: {} }],
    ['selector not an object', { selector: 'app=server', mtls: { mode: 'PERMISSIVE' } }],
    ['spec not an object', 'STRICT'],
  ];
  for (const [name, s] of cases) {
    const m = new AmbientModel();
    m.apply([
      upsert('Pod', pod('apps', 'server', { labels: { app: 'server' } })),
      upsert('PeerAuthentication', peerAuthentication('apps', 'bad', s)),
    ]);
    for (const port of PORTS)
      t.notOk(plaintextAllowed(m, UID, port), `${name}: plaintext to ${port} refused`);
    t.match(m.diagnostics().get('PeerAuthentication apps/bad'), [/read as STRICT/], `${name}: diagnostic`);
  }
});

t.test('property: per port, plaintext is refused exactly when the effective mode is STRICT', async () => {
  const mode = fc.constantFrom<Mode | undefined>(undefined, 'UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT');
  const level = fc.option(fc.record({ mode }), { nil: undefined });
  const portModes = fc.dictionary(
    fc.constantFrom('7070', '8080', '9090'),
    fc.constantFrom<Mode>('UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'),
  );
  fc.assert(
    fc.property(
      level,
      level,
      fc.option(fc.record({ mode, ports: portModes }), { nil: undefined }),
      (mesh, ns, wl) => {
        const m = build({
          mesh: mesh === undefined ? undefined : { mode: mesh.mode },
          ns: ns === undefined ? undefined : { mode: ns.mode },
          workload:
            wl === undefined
              ? undefined
              : {
                  mode: wl.mode,
                  ports: Object.fromEntries(Object.entries(wl.ports).map(([k, v]) => [Number(k), v])),
                },
        });
        // Reference: the most specific non-UNSET setting wins; nothing set means PERMISSIVE.
        const set = (x: Mode | undefined): x is Mode => x !== undefined && x !== 'UNSET';
        for (const port of PORTS) {
          const chain = [wl?.ports[String(port)], wl?.mode, ns?.mode, mesh?.mode];
          const effective = chain.find(set) ?? 'PERMISSIVE';
          if (plaintextAllowed(m, UID, port) !== (effective !== 'STRICT')) return false;
        }
        return true;
      },
    ),
    { numRuns: 300 },
  );
});

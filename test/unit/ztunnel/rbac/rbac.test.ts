// SPDX-License-Identifier: Apache-2.0
// L4 RBAC engine: golden table for checklist C.38–C.43 and C.45 (spec §3.8, security §3.4), and
// fast-check properties that string matching is literal (CVE-2026-39350 class).
import t from 'tap';
import fc from 'fast-check';
import type { RbacConnection } from '../../../../ztunnel/src/rbac/rbac.ts';
import {
  RBAC_REASON_NONE_ALLOWED,
  RBAC_REASON_NO_ALLOW_POLICIES,
  evaluate,
  principalOf,
  stringMatches,
} from '../../../../ztunnel/src/rbac/rbac.ts';
import type {
  Authorization,
  IstioIdentity,
  Match,
  PolicyAction,
  Rule,
  StringMatch,
} from '../../../../ztunnel/src/state/types.ts';
import { emptyMatch, newAuthorization } from '../../../../ztunnel/src/state/types.ts';

const m = (f: Partial<Match>): Match => ({ ...emptyMatch(), ...f });
/** A rule whose clauses are the given lists of matches. */
const rule = (...clauses: Match[][]): Rule => ({ clauses: clauses.map((matches) => ({ matches })) });
const pol = (
  name: string,
  action: PolicyAction,
  rules: Rule[],
  extra: Partial<Authorization> = {},
): Authorization => newAuthorization({ name, namespace: 'ns', scope: 'NAMESPACE', action, rules, ...extra });
const id = (namespace: string, serviceAccount: string, trustDomain = 'cluster.local'): IstioIdentity => ({
  trustDomain,
  namespace,
  serviceAccount,
});

const CLIENT = id('default', 'client');
const mtls: RbacConnection = {
  srcIdentity: CLIENT,
  srcIp: '198.18.1.10',
  dstIp: '198.18.1.20',
  dstPort: 8080,
};
const plaintext: RbacConnection = { srcIp: '198.18.1.10', dstIp: '198.18.1.20', dstPort: 8080 };
const v6: RbacConnection = {
  srcIdentity: CLIENT,
  srcIp: 'fd00:18:1::10',
  dstIp: 'fd00:18:1::20',
  dstPort: 8080,
};

const STRICT = newAuthorization({
  name: 'istio_converted_static_strict',
  namespace: 'istio-system',
  scope: 'WORKLOAD_SELECTOR',
  action: 'DENY',
  rules: [rule([m({ notPrincipals: [{ presence: true }] })])],
});

interface Row {
  name: string;
  policies: Authorization[];
  missing?: string[];
  conn: RbacConnection;
  allowed: boolean;
  reason?: string;
  policy?: string;
  dryRun?: string[];
}

const principal = (s: StringMatch): Match => m({ principals: [s] });

const table: Row[] = [
  // C.38
  {
    name: 'no policies → allow',
    policies: [],
    conn: mtls,
    allowed: true,
    reason: RBAC_REASON_NO_ALLOW_POLICIES,
  },
  { name: 'no policies, plaintext → allow', policies: [], conn: plaintext, allowed: true },
  {
    name: 'STRICT denies plaintext',
    policies: [STRICT],
    conn: plaintext,
    allowed: false,
    reason: 'explicitly denied by: istio-system/istio_converted_static_strict',
    policy: 'istio-system/istio_converted_static_strict',
  },
  { name: 'STRICT allows any mTLS identity', policies: [STRICT], conn: mtls, allowed: true },
  {
    name: 'STRICT allows an identity from another namespace and trust domain',
    policies: [STRICT],
    conn: { ...mtls, srcIdentity: id('other', 'x', 'example.org') },
    allowed: true,
  },
  // C.39
  {
    name: 'ALLOW with no rules → deny all',
    policies: [pol('allow-nothing', 'ALLOW', [])],
    conn: mtls,
    allowed: false,
    reason: RBAC_REASON_NONE_ALLOWED,
  },
  {
    name: 'ALLOW rules:[{}] → allow mTLS',
    policies: [pol('allow-all', 'ALLOW', [{ clauses: [] }])],
    conn: mtls,
    allowed: true,
    reason: 'allowed by: ns/allow-all',
    policy: 'ns/allow-all',
  },
  {
    name: 'ALLOW rules:[{}] → allow plaintext too',
    policies: [pol('allow-all', 'ALLOW', [{ clauses: [] }])],
    conn: plaintext,
    allowed: true,
  },
  {
    name: 'DENY rules:[{}] → deny all',
    policies: [pol('deny-all', 'DENY', [{ clauses: [] }])],
    conn: mtls,
    allowed: false,
    reason: 'explicitly denied by: ns/deny-all',
  },
  {
    name: 'DENY with no rules → no effect',
    policies: [pol('deny-nothing', 'DENY', [])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'DENY with no rules plus ALLOW with no rules → deny (the ALLOW)',
    policies: [pol('deny-nothing', 'DENY', []), pol('allow-nothing', 'ALLOW', [])],
    conn: mtls,
    allowed: false,
    reason: RBAC_REASON_NONE_ALLOWED,
  },
  {
    name: 'a clause with zero matches counts as matched',
    policies: [pol('a', 'ALLOW', [{ clauses: [{ matches: [] }] }])],
    conn: mtls,
    allowed: true,
  },
  // C.40: empty Match skipped
  {
    name: 'a clause holding only an empty Match never matches (ALLOW → deny)',
    policies: [pol('a', 'ALLOW', [rule([m({})])])],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'a clause holding only an empty Match never matches (DENY → no effect)',
    policies: [pol('d', 'DENY', [rule([m({})])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'empty Match skipped, sibling Match still counts',
    policies: [pol('a', 'ALLOW', [rule([m({}), m({ destinationPorts: [8080] })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'rule with an empty clause and a failing clause does not match',
    policies: [pol('a', 'ALLOW', [rule([], [m({ destinationPorts: [9090] })])])],
    conn: mtls,
    allowed: false,
  },
  // AND of clauses, OR of matches, OR of rules
  {
    name: 'clauses are ANDed: principal and port both hold',
    policies: [
      pol('a', 'ALLOW', [
        rule([principal({ exact: 'cluster.local/ns/default/sa/client' })], [m({ destinationPorts: [8080] })]),
      ]),
    ],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'clauses are ANDed: port clause fails',
    policies: [
      pol('a', 'ALLOW', [
        rule([principal({ exact: 'cluster.local/ns/default/sa/client' })], [m({ destinationPorts: [9090] })]),
      ]),
    ],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'matches within a clause are ORed',
    policies: [pol('a', 'ALLOW', [rule([m({ destinationPorts: [9090] }), m({ destinationPorts: [8080] })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'rules are ORed',
    policies: [
      pol('a', 'ALLOW', [rule([m({ destinationPorts: [9090] })]), rule([m({ destinationPorts: [8080] })])]),
    ],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'within a Match every field family must hold',
    policies: [
      pol('a', 'ALLOW', [rule([m({ principals: [{ presence: true }], destinationPorts: [9090] })])]),
    ],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'a field family needs positive AND negative to hold',
    policies: [pol('a', 'ALLOW', [rule([m({ destinationPorts: [8080], notDestinationPorts: [8080] })])])],
    conn: mtls,
    allowed: false,
  },
  // principals
  {
    name: 'principal exact matches the identity without spiffe://',
    policies: [pol('a', 'ALLOW', [rule([principal({ exact: 'cluster.local/ns/default/sa/client' })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'principal exact written with spiffe:// never matches',
    policies: [
      pol('a', 'ALLOW', [rule([principal({ exact: 'spiffe://cluster.local/ns/default/sa/client' })])]),
    ],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'principal exact: other service account → deny',
    policies: [pol('a', 'ALLOW', [rule([principal({ exact: 'cluster.local/ns/default/sa/other' })])])],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'principal prefix',
    policies: [pol('a', 'ALLOW', [rule([principal({ prefix: 'cluster.local/ns/default/' })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'principal suffix',
    policies: [pol('a', 'ALLOW', [rule([principal({ suffix: '/sa/client' })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'principal presence with identity',
    policies: [pol('a', 'ALLOW', [rule([principal({ presence: true })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'principal presence without identity → no match',
    policies: [pol('a', 'ALLOW', [rule([principal({ presence: true })])])],
    conn: plaintext,
    allowed: false,
  },
  {
    name: 'principal prefix "" without identity → no match (missing identity never matches)',
    policies: [pol('a', 'ALLOW', [rule([principal({ prefix: '' })])])],
    conn: plaintext,
    allowed: false,
  },
  {
    name: 'notPrincipals: identity listed → no match',
    policies: [
      pol('a', 'ALLOW', [rule([m({ notPrincipals: [{ exact: 'cluster.local/ns/default/sa/client' }] })])]),
    ],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'notPrincipals: identity not listed → match',
    policies: [
      pol('a', 'ALLOW', [rule([m({ notPrincipals: [{ exact: 'cluster.local/ns/default/sa/evil' }] })])]),
    ],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'ALLOW notPrincipals presence: plaintext allowed, mTLS not',
    policies: [pol('a', 'ALLOW', [rule([m({ notPrincipals: [{ presence: true }] })])])],
    conn: mtls,
    allowed: false,
  },
  // namespaces
  {
    name: 'namespace exact',
    policies: [pol('a', 'ALLOW', [rule([m({ namespaces: [{ exact: 'default' }] })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'namespace exact compares the namespace only, not the principal',
    policies: [pol('a', 'ALLOW', [rule([m({ namespaces: [{ exact: 'client' }] })])])],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'namespace prefix',
    policies: [pol('a', 'ALLOW', [rule([m({ namespaces: [{ prefix: 'def' }] })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'namespaces without identity → no match',
    policies: [pol('a', 'ALLOW', [rule([m({ namespaces: [{ presence: true }, { prefix: '' }] })])])],
    conn: plaintext,
    allowed: false,
  },
  {
    name: 'notNamespaces: listed → deny',
    policies: [pol('a', 'ALLOW', [rule([m({ notNamespaces: [{ exact: 'default' }] })])])],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'notNamespaces without identity → passes (documented: no identity matches nothing)',
    policies: [pol('a', 'ALLOW', [rule([m({ notNamespaces: [{ exact: 'evil' }] })])])],
    conn: plaintext,
    allowed: true,
  },
  // service accounts
  {
    name: 'serviceAccounts: namespace and name both match',
    policies: [
      pol('a', 'ALLOW', [
        rule([m({ serviceAccounts: [{ namespace: 'default', serviceAccount: 'client' }] })]),
      ]),
    ],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'serviceAccounts: same name in another namespace → no match',
    policies: [
      pol('a', 'ALLOW', [rule([m({ serviceAccounts: [{ namespace: 'other', serviceAccount: 'client' }] })])]),
    ],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'serviceAccounts without identity → no match',
    policies: [
      pol('a', 'ALLOW', [
        rule([m({ serviceAccounts: [{ namespace: 'default', serviceAccount: 'client' }] })]),
      ]),
    ],
    conn: plaintext,
    allowed: false,
  },
  {
    name: 'notServiceAccounts: listed → no match',
    policies: [
      pol('a', 'ALLOW', [
        rule([m({ notServiceAccounts: [{ namespace: 'default', serviceAccount: 'client' }] })]),
      ]),
    ],
    conn: mtls,
    allowed: false,
  },
  // C.43: regex metacharacters are literal
  {
    name: 'serviceAccount "a.b" does not match "aXb" (CVE-2026-39350)',
    policies: [
      pol('a', 'ALLOW', [rule([m({ serviceAccounts: [{ namespace: 'default', serviceAccount: 'a.b' }] })])]),
    ],
    conn: { ...mtls, srcIdentity: id('default', 'aXb') },
    allowed: false,
  },
  {
    name: 'serviceAccount "a.b" matches "a.b"',
    policies: [
      pol('a', 'ALLOW', [rule([m({ serviceAccounts: [{ namespace: 'default', serviceAccount: 'a.b' }] })])]),
    ],
    conn: { ...mtls, srcIdentity: id('default', 'a.b') },
    allowed: true,
  },
  {
    name: 'principal suffix ".*" is literal',
    policies: [pol('a', 'ALLOW', [rule([principal({ suffix: '.*' })])])],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'DENY namespace prefix "ev[i]l" does not match "evil"',
    policies: [pol('d', 'DENY', [rule([m({ namespaces: [{ prefix: 'ev[i]l' }] })])])],
    conn: { ...mtls, srcIdentity: id('evil', 'x') },
    allowed: true,
  },
  {
    name: 'DENY principal exact "cluster.local/ns/a+/sa/b" does not match "a/sa/b"',
    policies: [pol('d', 'DENY', [rule([principal({ exact: 'cluster.local/ns/a+/sa/b' })])])],
    conn: { ...mtls, srcIdentity: id('aa', 'b') },
    allowed: true,
  },
  // ports
  {
    name: 'destinationPorts any-of',
    policies: [pol('a', 'ALLOW', [rule([m({ destinationPorts: [80, 8080] })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'notDestinationPorts excludes',
    policies: [pol('a', 'ALLOW', [rule([m({ notDestinationPorts: [8080] })])])],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'notDestinationPorts other port passes',
    policies: [pol('a', 'ALLOW', [rule([m({ notDestinationPorts: [9090] })])])],
    conn: mtls,
    allowed: true,
  },
  // IPs and families
  {
    name: 'sourceIps CIDR contains the peer',
    policies: [pol('a', 'ALLOW', [rule([m({ sourceIps: [{ address: '198.18.1.0', length: 24 }] })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'sourceIps CIDR does not contain the peer',
    policies: [pol('a', 'ALLOW', [rule([m({ sourceIps: [{ address: '198.18.2.0', length: 24 }] })])])],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'notSourceIps excludes the peer',
    policies: [pol('a', 'ALLOW', [rule([m({ notSourceIps: [{ address: '198.18.1.10', length: 32 }] })])])],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'destinationIps matches the pod IP',
    policies: [pol('a', 'ALLOW', [rule([m({ destinationIps: [{ address: '198.18.1.20', length: 32 }] })])])],
    conn: mtls,
    allowed: true,
  },
  {
    name: 'notDestinationIps excludes the pod IP',
    policies: [
      pol('a', 'ALLOW', [rule([m({ notDestinationIps: [{ address: '198.18.0.0', length: 15 }] })])]),
    ],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'IPv6 sourceIps',
    policies: [pol('a', 'ALLOW', [rule([m({ sourceIps: [{ address: 'fd00:18:1::', length: 64 }] })])])],
    conn: v6,
    allowed: true,
  },
  {
    name: 'IPv4 0.0.0.0/0 never matches an IPv6 peer',
    policies: [pol('a', 'ALLOW', [rule([m({ sourceIps: [{ address: '0.0.0.0', length: 0 }] })])])],
    conn: v6,
    allowed: false,
  },
  {
    name: 'IPv6 ::/0 never matches an IPv4 peer',
    policies: [pol('a', 'ALLOW', [rule([m({ sourceIps: [{ address: '::', length: 0 }] })])])],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'IPv4-mapped peer address matches an IPv4 CIDR',
    policies: [pol('a', 'ALLOW', [rule([m({ sourceIps: [{ address: '198.18.1.0', length: 24 }] })])])],
    conn: { ...mtls, srcIp: '::ffff:198.18.1.10' },
    allowed: true,
  },
  {
    name: 'DENY on IPv4 CIDR also catches the IPv4-mapped peer',
    policies: [pol('d', 'DENY', [rule([m({ sourceIps: [{ address: '198.18.1.10', length: 32 }] })])])],
    conn: { ...mtls, srcIp: '::ffff:198.18.1.10' },
    allowed: false,
  },
  // C.41
  {
    name: 'DENY beats ALLOW',
    policies: [
      pol('allow', 'ALLOW', [{ clauses: [] }]),
      pol('deny', 'DENY', [rule([m({ destinationPorts: [8080] })])]),
    ],
    conn: mtls,
    allowed: false,
    reason: 'explicitly denied by: ns/deny',
    policy: 'ns/deny',
  },
  {
    name: 'DENY that does not match leaves ALLOW in charge',
    policies: [
      pol('allow', 'ALLOW', [{ clauses: [] }]),
      pol('deny', 'DENY', [rule([m({ destinationPorts: [9090] })])]),
    ],
    conn: mtls,
    allowed: true,
    policy: 'ns/allow',
  },
  {
    name: 'one of several ALLOW policies matching is enough',
    policies: [
      pol('a1', 'ALLOW', [rule([m({ destinationPorts: [1] })])]),
      pol('a2', 'ALLOW', [rule([m({ destinationPorts: [8080] })])]),
    ],
    conn: mtls,
    allowed: true,
    reason: 'allowed by: ns/a2',
  },
  {
    name: 'dry-run DENY never enforces, but is recorded',
    policies: [pol('dry-deny', 'DENY', [{ clauses: [] }], { dryRun: true })],
    conn: mtls,
    allowed: true,
    dryRun: ['ns/dry-deny'],
  },
  {
    name: 'dry-run ALLOW does not count as an ALLOW policy',
    policies: [pol('dry-allow', 'ALLOW', [], { dryRun: true })],
    conn: mtls,
    allowed: true,
    reason: RBAC_REASON_NO_ALLOW_POLICIES,
    dryRun: [],
  },
  {
    name: 'dry-run ALLOW matching is recorded, the real ALLOW still denies',
    policies: [
      pol('dry-allow', 'ALLOW', [{ clauses: [] }], { dryRun: true }),
      pol('allow-nothing', 'ALLOW', []),
    ],
    conn: mtls,
    allowed: false,
    reason: RBAC_REASON_NONE_ALLOWED,
    dryRun: ['ns/dry-allow'],
  },
  {
    name: 'dry-run DENY recorded even when a real DENY denies',
    policies: [
      pol('dry', 'DENY', [{ clauses: [] }], { dryRun: true }),
      pol('real', 'DENY', [{ clauses: [] }]),
    ],
    conn: mtls,
    allowed: false,
    policy: 'ns/real',
    dryRun: ['ns/dry'],
  },
  // C.45: fail closed on missing policies
  {
    name: 'referenced policy not received → deny even with no other policies',
    policies: [],
    missing: ['ns/late'],
    conn: mtls,
    allowed: false,
    reason: 'policy ns/late referenced but not yet received; denying until it arrives',
  },
  {
    name: 'missing policy denies even when an ALLOW matches',
    policies: [pol('allow', 'ALLOW', [{ clauses: [] }])],
    missing: ['ns/late'],
    conn: mtls,
    allowed: false,
  },
  {
    name: 'several missing policies are all named',
    policies: [],
    missing: ['ns/a', 'other/b'],
    conn: plaintext,
    allowed: false,
    reason: 'policies ns/a, other/b referenced but not yet received; denying until they arrive',
  },
];

t.test('golden table (checklist C.38–C.43, C.45)', async (t) => {
  for (const row of table) {
    const d = evaluate({ policies: row.policies, missing: row.missing ?? [], conn: row.conn });
    t.equal(d.allowed, row.allowed, `${row.name}: allowed`);
    if (row.reason !== undefined) t.equal(d.reason, row.reason, `${row.name}: reason`);
    if (row.policy !== undefined) t.equal(d.policy, row.policy, `${row.name}: policy`);
    if (row.dryRun !== undefined) t.same(d.dryRunMatches, row.dryRun, `${row.name}: dry-run matches`);
    if (!d.allowed) t.ok(d.reason.length > 0, `${row.name}: a deny always has a reason`);
  }
});

t.test('scope does not change evaluation (the store decides applicability)', async (t) => {
  for (const scope of ['GLOBAL', 'NAMESPACE', 'WORKLOAD_SELECTOR'] as const) {
    const d = evaluate({ policies: [{ ...STRICT, scope }], missing: [], conn: plaintext });
    t.equal(d.allowed, false, scope);
  }
});

// ---- properties: matching is literal string comparison ----

const META = ['.', '[', ']', '*', '+', '?', '(', ')', '^', '$', '\\', '|', '{', '}', 'a', 'b', '/', '-'];
const metaString = fc.string({ unit: fc.constantFrom(...META), maxLength: 8 });

/** Reference StringMatch: explicit character comparisons, no startsWith/endsWith, no regex. */
function reference(sm: StringMatch, v: string): boolean {
  const eq = (a: string, b: string): boolean => {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a.charCodeAt(i) !== b.charCodeAt(i)) return false;
    return true;
  };
  if ('exact' in sm) return eq(sm.exact, v);
  if ('prefix' in sm) return sm.prefix.length <= v.length && eq(sm.prefix, v.slice(0, sm.prefix.length));
  if ('suffix' in sm)
    return sm.suffix.length <= v.length && eq(sm.suffix, v.slice(v.length - sm.suffix.length));
  return v.length > 0;
}

const stringMatchArb: fc.Arbitrary<StringMatch> = fc.oneof(
  metaString.map((s) => ({ exact: s })),
  metaString.map((s) => ({ prefix: s })),
  metaString.map((s) => ({ suffix: s })),
  fc.constant({ presence: true as const }),
);

t.test('property: stringMatches equals the reference for strings full of regex metacharacters', async (t) => {
  fc.assert(
    fc.property(stringMatchArb, metaString, (sm, v) => stringMatches(sm, v) === reference(sm, v)),
    { numRuns: 5000 },
  );
  // Half the pairs should share structure so both outcomes are exercised: derive v from the pattern.
  fc.assert(
    fc.property(stringMatchArb, metaString, metaString, (sm, pre, post) => {
      const core = 'exact' in sm ? sm.exact : 'prefix' in sm ? sm.prefix : 'suffix' in sm ? sm.suffix : 'x';
      const v = 'prefix' in sm ? core + post : 'suffix' in sm ? pre + core : core;
      return stringMatches(sm, v) === reference(sm, v) && reference(sm, v);
    }),
    { numRuns: 2000 },
  );
  t.pass('literal semantics hold');
});

t.test('property: principal/namespace/serviceAccount matching through evaluate is literal', async (t) => {
  const seg = fc.string({
    unit: fc.constantFrom(...META.filter((c) => c !== '/')),
    minLength: 1,
    maxLength: 6,
  });
  fc.assert(
    fc.property(stringMatchArb, seg, seg, seg, seg, (sm, ns, sa, wantNs, wantSa) => {
      const ident = id(ns, sa);
      const conn = { ...mtls, srcIdentity: ident };
      const byPrincipal = evaluate({
        policies: [pol('p', 'ALLOW', [rule([principal(sm)])])],
        missing: [],
        conn,
      });
      const byNamespace = evaluate({
        policies: [pol('n', 'ALLOW', [rule([m({ namespaces: [sm] })])])],
        missing: [],
        conn,
      });
      const bySa = evaluate({
        policies: [
          pol('s', 'ALLOW', [
            rule([m({ serviceAccounts: [{ namespace: wantNs, serviceAccount: wantSa }] })]),
          ]),
        ],
        missing: [],
        conn,
      });
      const denyBySa = evaluate({
        policies: [
          pol('d', 'DENY', [rule([m({ serviceAccounts: [{ namespace: wantNs, serviceAccount: wantSa }] })])]),
        ],
        missing: [],
        conn,
      });
      const saRef = wantNs === ns && wantSa === sa;
      return (
        byPrincipal.allowed === reference(sm, principalOf(ident)) &&
        byNamespace.allowed === reference(sm, ns) &&
        bySa.allowed === saRef &&
        denyBySa.allowed === !saRef
      );
    }),
    { numRuns: 3000 },
  );
  t.pass('evaluate agrees with the reference');
});

t.test('property: for random policy sets, DENY match ⇒ deny and missing ⇒ deny', async (t) => {
  const port = fc.constantFrom(80, 8080, 9090);
  const matchArb = fc.record({
    destinationPorts: fc.array(port, { maxLength: 2 }),
    notDestinationPorts: fc.array(port, { maxLength: 1 }),
    principals: fc.array(stringMatchArb, { maxLength: 1 }),
  });
  const policyArb = fc.record({
    action: fc.constantFrom('ALLOW' as const, 'DENY' as const),
    dryRun: fc.boolean(),
    rules: fc.array(fc.array(fc.array(matchArb, { maxLength: 2 }), { maxLength: 2 }), { maxLength: 2 }),
  });
  fc.assert(
    fc.property(
      fc.array(policyArb, { maxLength: 4 }),
      fc.boolean(),
      fc.boolean(),
      port,
      (specs, withIdentity, withMissing, dstPort) => {
        const policies = specs.map((s, i) =>
          pol(
            `p${i}`,
            s.action,
            s.rules.map((clauses) => rule(...clauses.map((ms) => ms.map((x) => m(x))))),
            {
              dryRun: s.dryRun,
            },
          ),
        );
        const conn = { ...(withIdentity ? mtls : plaintext), dstPort };
        const d = evaluate({ policies, missing: withMissing ? ['ns/missing'] : [], conn });
        if (withMissing && d.allowed) return false;
        const single = (p: Authorization): boolean => evaluate({ policies: [p], missing: [], conn }).allowed;
        const enforcingDenyMatches = policies.some((p) => p.action === 'DENY' && !p.dryRun && !single(p));
        if (enforcingDenyMatches && d.allowed) return false;
        // Dry-run policies never change the decision.
        const withoutDry = evaluate({
          policies: policies.filter((p) => !p.dryRun),
          missing: withMissing ? ['ns/missing'] : [],
          conn,
        });
        return withoutDry.allowed === d.allowed;
      },
    ),
    { numRuns: 2000 },
  );
  t.pass('invariants hold');
});

// SPDX-License-Identifier: Apache-2.0
// AuthorizationPolicy → Authorization (spec ambient-protocols §3.6, §3.8, §5.4), table-driven
// against checklist C: each row is a cluster state plus connections whose outcome ztunnel's own
// engine must give with the model's output (C.38 defaults, C.39 empty-policy semantics, C.40
// absent/empty/empty-object variants, C.41 DENY over ALLOW and dry-run, C.42 HTTP fields at L4,
// C.43 literal matching, C.48 plaintext versus identity ALLOWs, C.52 fail closed on what cannot
// be read), plus the exact message shape of a full policy.
import t from 'tap';
import { AmbientModel } from '../../../../src/controller/model/ambient-model.ts';
import { Action, Scope } from '../../../../src/shared/gen/authorization.ts';
import { authorizationPolicy, namespace, pod, upsert } from './fixtures.ts';
import type { Conn } from './ztunnel-engine.ts';
import { decide } from './ztunnel-engine.ts';

const UID = 'Kubernetes//Pod/apps/server';

interface Policy {
  ns?: string;
  name?: string;
  spec: unknown;
  annotations?: Record<string, string>;
}

function build(policies: Policy[]): AmbientModel {
  const m = new AmbientModel();
  m.apply([
    upsert('Namespace', namespace('apps')),
    upsert(
      'Pod',
      pod('apps', 'server', { labels: { app: 'server' }, serviceAccount: 'server', ips: ['10.0.0.1'] }),
    ),
    ...policies.map((p, i) =>
      upsert(
        'AuthorizationPolicy',
        authorizationPolicy(p.ns ?? 'apps', p.name ?? `p${i}`, p.spec, p.annotations),
      ),
    ),
  ]);
  return m;
}

const plaintext = (port = 8080): Conn => ({ port });
const from = (ns: string, sa: string, port = 8080, srcIp?: string): Conn => ({
  port,
  from: { namespace: ns, serviceAccount: sa },
  srcIp,
});

interface Row {
  id: string;
  policies: Policy[];
  /** [connection, allowed, label] */
  probes: [Conn, boolean, string][];
  /** Expected diagnostics (regexps) per policy name. */
  warnings?: Record<string, RegExp>;
}

const client = from('apps', 'client');
const other = from('other', 'client');

const rows: Row[] = [
  {
    id: 'C.38 no policies: everything allowed',
    policies: [],
    probes: [
      [plaintext(), true, 'plaintext'],
      [client, true, 'identity'],
    ],
  },
  {
    id: 'C.39 ALLOW with no rules allows nothing',
    policies: [{ spec: { action: 'ALLOW' } }],
    probes: [
      [client, false, 'identity'],
      [plaintext(), false, 'plaintext'],
    ],
  },
  {
    id: 'C.39 ALLOW rules:[{}] allows everything',
    policies: [{ spec: { rules: [{}] } }],
    probes: [
      [client, true, 'identity'],
      [plaintext(), true, 'plaintext'],
    ],
  },
  {
    id: 'C.39 DENY rules:[{}] denies everything',
    policies: [{ spec: { action: 'DENY', rules: [{}] } }],
    probes: [
      [client, false, 'identity'],
      [plaintext(), false, 'plaintext'],
    ],
  },
  {
    id: 'C.39 DENY with no rules has no effect',
    policies: [{ spec: { action: 'DENY' } }],
    probes: [[client, true, 'identity']],
  },
  {
    id: 'C.40 from: [] is no constraint, like an absent from',
    policies: [{ spec: { rules: [{ from: [], to: [], when: [] }] } }],
    probes: [[other, true, 'any source']],
  },
  {
    id: 'C.40 an empty source is invalid: the ALLOW rule matches nothing',
    policies: [{ name: 'empty-source', spec: { rules: [{ from: [{ source: {} }] }] } }],
    probes: [[client, false, 'not widened to any source']],
    warnings: { 'empty-source': /source: sets no field/ },
  },
  {
    id: 'C.40 an empty operation is invalid: the DENY rule denies',
    policies: [{ name: 'empty-op', spec: { action: 'DENY', rules: [{ to: [{ operation: {} }] }] } }],
    probes: [[client, false, 'denied']],
    warnings: { 'empty-op': /operation: sets no field/ },
  },
  {
    id: 'C.40 selector: {} selects every workload of the namespace',
    policies: [{ spec: { selector: {}, action: 'DENY', rules: [{}] } }],
    probes: [[client, false, 'denied']],
  },
  {
    id: 'C.40 matchLabels: {} selects every workload of the namespace',
    policies: [{ spec: { selector: { matchLabels: {} }, action: 'DENY', rules: [{}] } }],
    probes: [[client, false, 'denied']],
  },
  {
    id: 'C.40 a selector for other labels does not apply',
    policies: [{ spec: { selector: { matchLabels: { app: 'other' } }, action: 'DENY', rules: [{}] } }],
    probes: [[client, true, 'allowed']],
  },
  {
    id: 'C.41 DENY beats ALLOW',
    policies: [
      { spec: { rules: [{ from: [{ source: { principals: ['cluster.local/ns/apps/sa/client'] } }] }] } },
      {
        spec: {
          action: 'DENY',
          rules: [{ from: [{ source: { principals: ['cluster.local/ns/apps/sa/client'] } }] }],
        },
      },
    ],
    probes: [[client, false, 'denied']],
  },
  {
    id: 'C.41 a dry-run DENY never enforces',
    policies: [{ spec: { action: 'DENY', rules: [{}] }, annotations: { 'istio.io/dry-run': 'true' } }],
    probes: [[client, true, 'allowed']],
  },
  {
    id: 'C.41 an unreadable dry-run annotation enforces the policy',
    policies: [
      { name: 'dr', spec: { action: 'DENY', rules: [{}] }, annotations: { 'istio.io/dry-run': 'yes' } },
    ],
    probes: [[client, false, 'denied']],
    warnings: { dr: /not a boolean.*enforced/ },
  },
  {
    id: 'C.42 ALLOW with HTTP fields: the rule is omitted (stricter)',
    policies: [
      {
        name: 'l7',
        spec: {
          rules: [
            {
              from: [{ source: { principals: ['cluster.local/ns/apps/sa/client'] } }],
              to: [{ operation: { methods: ['GET'] } }],
            },
            { from: [{ source: { namespaces: ['other'] } }] },
          ],
        },
      },
    ],
    probes: [
      [client, false, 'the HTTP rule no longer allows its source'],
      [other, true, 'the L4 rule still allows'],
    ],
    warnings: { l7: /found: methods.*Within an ALLOW policy, rules matching HTTP attributes are omitted/ },
  },
  {
    id: 'C.42 / §9.10 an ALLOW whose only rule is HTTP denies everything',
    policies: [{ spec: { rules: [{ to: [{ operation: { paths: ['/health'] } }] }] } }],
    probes: [
      [client, false, 'identity'],
      [plaintext(), false, 'plaintext'],
    ],
  },
  {
    id: 'C.42 DENY with only HTTP fields has no effect',
    policies: [
      {
        name: 'l7deny',
        spec: {
          action: 'DENY',
          rules: [
            {
              to: [{ operation: { methods: ['DELETE'] } }],
              when: [{ key: 'request.headers[x-evil]', values: ['1'] }],
            },
          ],
        },
      },
    ],
    probes: [[client, true, 'allowed']],
    warnings: { l7deny: /no enforceable rules at ztunnel and has no effect/ },
  },
  {
    id: 'C.42 mixed DENY is enforced on its L4 part',
    policies: [
      {
        name: 'mixed',
        spec: {
          action: 'DENY',
          rules: [
            {
              from: [
                { source: { principals: ['cluster.local/ns/apps/sa/client'], requestPrincipals: ['*'] } },
              ],
              to: [{ operation: { methods: ['GET'] } }],
            },
          ],
        },
      },
    ],
    probes: [
      [client, false, 'the source is denied on every method'],
      [from('apps', 'client', 9090), false, 'and every port'],
      [other, true, 'others are not'],
    ],
    warnings: { mixed: /enforced without the HTTP rules/ },
  },
  {
    id: 'C.42 DENY: an HTTP-only operation ORed with a port reads as any operation',
    policies: [
      {
        spec: {
          action: 'DENY',
          rules: [{ to: [{ operation: { methods: ['GET'] } }, { operation: { ports: ['80'] } }] }],
        },
      },
    ],
    probes: [[client, false, 'denied on 8080 too']],
  },
  {
    id: 'C.42 DENY with an HTTP when-condition and an L4 one',
    policies: [
      {
        spec: {
          action: 'DENY',
          rules: [
            {
              when: [
                { key: 'request.auth.claims[groups]', values: ['admin'] },
                { key: 'destination.port', values: ['9090'] },
              ],
            },
          ],
        },
      },
    ],
    probes: [
      [from('apps', 'client', 9090), false, '9090 denied'],
      [from('apps', 'client', 8080), true, '8080 allowed'],
    ],
  },
  {
    id: 'C.43 principals are literal: "." is not a wildcard',
    policies: [{ spec: { rules: [{ from: [{ source: { principals: ['cluster.local/ns/a.b/sa/x'] } }] }] } }],
    probes: [
      [from('aXb', 'x'), false, 'aXb does not match a.b'],
      [from('a.b', 'x'), true, 'a.b matches'],
    ],
  },
  {
    id: 'C.43 service accounts are literal (CVE-2026-39350)',
    policies: [{ spec: { rules: [{ from: [{ source: { serviceAccounts: ['a.b', 'other/c+d'] } }] }] } }],
    probes: [
      [from('apps', 'aXb'), false, 'aXb'],
      [from('apps', 'a.b'), true, 'a.b in the policy namespace'],
      [from('other', 'a.b'), false, 'a.b in another namespace'],
      [from('other', 'c+d'), true, 'other/c+d'],
      [from('other', 'cccd'), false, 'c+d is not a regex'],
    ],
  },
  {
    id: 'C.43 wildcards: * (presence), prefix*, *suffix, spiffe:// stripped',
    policies: [
      {
        spec: {
          rules: [
            { from: [{ source: { principals: ['spiffe://cluster.local/ns/trusted/*'] } }] },
            { from: [{ source: { principals: ['*/sa/admin'] } }] },
            { from: [{ source: { namespaces: ['team-*'], notPrincipals: ['*'] } }] },
          ],
        },
      },
    ],
    probes: [
      [from('trusted', 'anyone'), true, 'prefix'],
      [from('elsewhere', 'admin'), true, 'suffix'],
      [from('trustedx', 'anyone'), false, 'prefix is literal'],
      [from('team-a', 'x'), false, 'notPrincipals * excludes every identity'],
      [plaintext(), false, 'plaintext never matches a positive namespace list'],
    ],
  },
  {
    id: 'C.48 plaintext to a PERMISSIVE workload has no identity, so identity ALLOWs deny it',
    policies: [{ spec: { rules: [{ from: [{ source: { namespaces: ['apps'] } }] }] } }],
    probes: [
      [plaintext(), false, 'plaintext'],
      [client, true, 'identity'],
    ],
  },
  {
    id: 'L4 fields: ipBlocks, notIpBlocks, ports, notPorts, when source.ip / destination.ip / destination.port',
    policies: [
      {
        spec: {
          rules: [
            {
              from: [{ source: { ipBlocks: ['10.1.0.0/16'], notIpBlocks: ['10.1.9.9'] } }],
              to: [{ operation: { ports: ['8080', '9090'], notPorts: ['9090'] } }],
              when: [
                { key: 'destination.ip', values: ['10.0.0.1'] },
                { key: 'source.ip', notValues: ['10.1.7.0/24'] },
                { key: 'destination.port', notValues: ['7070'] },
              ],
            },
          ],
        },
      },
    ],
    probes: [
      [from('apps', 'c', 8080, '10.1.2.3'), true, 'in range, allowed port'],
      [from('apps', 'c', 9090, '10.1.2.3'), false, 'notPorts'],
      [from('apps', 'c', 8080, '10.1.9.9'), false, 'notIpBlocks'],
      [from('apps', 'c', 8080, '10.2.0.1'), false, 'outside ipBlocks'],
      [from('apps', 'c', 8080, '10.1.7.1'), false, 'when source.ip notValues'],
    ],
  },
  {
    id: 'C.52 an invalid ALLOW rule matches nothing',
    policies: [
      {
        name: 'badport',
        spec: {
          rules: [
            { to: [{ operation: { ports: ['http'] } }] },
            { from: [{ source: { namespaces: ['other'] } }] },
          ],
        },
      },
    ],
    probes: [
      [client, false, 'not allowed by the invalid rule'],
      [other, true, 'the valid rule still allows'],
    ],
    warnings: { badport: /ports\[0\]: not a port number/ },
  },
  {
    id: 'C.52 an invalid DENY rule denies everything in scope',
    policies: [
      {
        name: 'badcidr',
        spec: { action: 'DENY', rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/33'] } }] }] },
      },
    ],
    probes: [[client, false, 'denied']],
    warnings: { badcidr: /not an IP address or CIDR.*read as matching every connection/s },
  },
  {
    id: 'C.52 a misspelled field is not read as "no constraint"',
    policies: [
      { name: 'typo', spec: { action: 'DENY', rules: [{ from: [{ source: { principal: ['x'] } }] }] } },
    ],
    probes: [[client, false, 'denied, not ignored']],
    warnings: { typo: /source\.principal: unknown field/ },
  },
  {
    id: 'C.52 an unknown when key is invalid, not HTTP-only',
    policies: [
      {
        name: 'key',
        spec: { action: 'DENY', rules: [{ when: [{ key: 'source.principle', values: ['x'] }] }] },
      },
    ],
    probes: [[client, false, 'denied, not "no effect"']],
    warnings: { key: /unknown condition key "source.principle"/ },
  },
  {
    id: 'C.52 an invalid policy (unknown action) denies everything in its scope',
    policies: [{ name: 'bad', spec: { action: 'REJECT', rules: [] } }],
    probes: [[client, false, 'denied']],
    warnings: { bad: /invalid AuthorizationPolicy.*spec\.action/ },
  },
  {
    id: 'CUSTOM cannot be called by ztunnel: enforced as DENY of what its rules match',
    policies: [
      {
        name: 'ext',
        spec: {
          action: 'CUSTOM',
          provider: { name: 'opa' },
          rules: [{ to: [{ operation: { paths: ['/admin'], ports: ['9090'] } }] }],
        },
      },
    ],
    probes: [
      [from('apps', 'client', 9090), false, 'port 9090 denied'],
      [from('apps', 'client', 8080), true, 'other ports allowed'],
    ],
    warnings: { ext: /CUSTOM policy is enforced as a DENY/ },
  },
  {
    id: 'AUDIT is ignored',
    policies: [{ name: 'audit', spec: { action: 'AUDIT', rules: [{}] } }],
    probes: [[client, true, 'allowed']],
    warnings: { audit: /does not support the AUDIT action/ },
  },
  {
    id: "targetRefs policies are the waypoint's, never ztunnel's (§5.4)",
    policies: [
      { spec: { targetRefs: [{ kind: 'Service', group: '', name: 'server' }], action: 'DENY', rules: [{}] } },
      {
        spec: {
          targetRef: { kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' },
          rules: [],
        },
      },
    ],
    probes: [[client, true, 'allowed']],
  },
  {
    id: 'root-namespace policy without selector is GLOBAL',
    policies: [
      {
        ns: 'istio-system',
        spec: { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['other'] } }] }] },
      },
    ],
    probes: [
      [other, false, 'denied'],
      [client, true, 'allowed'],
    ],
  },
  {
    id: 'root-namespace policy with a selector applies to matching workloads of every namespace',
    policies: [
      {
        ns: 'istio-system',
        spec: { selector: { matchLabels: { app: 'server' } }, action: 'DENY', rules: [{}] },
      },
    ],
    probes: [[client, false, 'denied']],
  },
  {
    id: 'istio#51556 a selector policy in another namespace does not apply',
    policies: [
      {
        ns: 'elsewhere',
        spec: { selector: { matchLabels: { app: 'server' } }, action: 'DENY', rules: [{}] },
      },
    ],
    probes: [[client, true, 'allowed']],
  },
];

for (const row of rows) {
  t.test(row.id, async (t) => {
    const m = build(row.policies);
    for (const [conn, allowed, label] of row.probes) {
      const d = decide(m, UID, conn);
      t.equal(d.allowed, allowed, `${label}: ${d.reason}`);
    }
    for (const [name, re] of Object.entries(row.warnings ?? {})) {
      const key = `AuthorizationPolicy ${row.policies.find((p) => p.name === name)?.ns ?? 'apps'}/${name}`;
      t.match(m.diagnostics().get(key)?.join('\n'), re, `diagnostic of ${key}`);
    }
  });
}

t.test('scopes and the workload reference list', async (t) => {
  const m = build([
    { ns: 'istio-system', name: 'mesh', spec: { action: 'DENY' } },
    { name: 'ns-wide', spec: { action: 'DENY' } },
    { name: 'selected', spec: { selector: { matchLabels: { app: 'server' } }, action: 'DENY' } },
    {
      ns: 'istio-system',
      name: 'root-selected',
      spec: { selector: { matchLabels: { app: 'server' } }, action: 'DENY' },
    },
    { name: 'waypoint', spec: { targetRefs: [{ kind: 'Gateway', name: 'wp' }] } },
    { name: 'audit', spec: { selector: { matchLabels: { app: 'server' } }, action: 'AUDIT' } },
  ]);
  const a = m.authorizations();
  t.equal(a.get('istio-system/mesh')?.scope, Scope.GLOBAL);
  t.equal(a.get('apps/ns-wide')?.scope, Scope.NAMESPACE);
  t.equal(a.get('apps/selected')?.scope, Scope.WORKLOAD_SELECTOR);
  t.equal(a.get('istio-system/root-selected')?.scope, Scope.WORKLOAD_SELECTOR);
  t.notOk(a.has('apps/waypoint'), 'targetRefs: not sent');
  t.notOk(a.has('apps/audit'), 'AUDIT: not sent');
  const w = m.addresses().get(UID);
  t.same(
    w?.type?.$case === 'workload' ? w.type.value.authorizationPolicies : undefined,
    ['apps/selected', 'istio-system/root-selected'],
    'only selector-scoped policies are listed, sorted',
  );
});

t.test(
  'message shape of a full policy (clause order to, from, when; literal StringMatch kinds; raw addresses)',
  async (t) => {
    const m = build([
      {
        name: 'full',
        spec: {
          selector: { matchLabels: { app: 'server' } },
          action: 'ALLOW',
          rules: [
            {
              from: [
                {
                  source: {
                    principals: ['cluster.local/ns/a/sa/b', 'cluster.local/ns/x/*', '*/sa/admin', '*'],
                    notNamespaces: ['kube-system'],
                    ipBlocks: ['10.0.0.0/8', 'fd00::1'],
                    serviceAccounts: ['client', 'other/sa'],
                  },
                },
                { source: { namespaces: ['ns2'] } },
              ],
              to: [{ operation: { ports: ['8080'] } }],
              when: [{ key: 'source.namespace', values: ['a'], notValues: ['b*'] }],
            },
          ],
        },
        annotations: { 'istio.io/dry-run': 'true' },
      },
    ]);
    const p = m.authorizations().get('apps/full');
    t.equal(p?.action, Action.ALLOW);
    t.equal(p?.dryRun, true);
    const clauses = p?.rules[0]?.clauses ?? [];
    t.equal(clauses.length, 3);
    t.same(
      clauses[0]?.matches.map((x) => x.destinationPorts),
      [[8080]],
      'to first',
    );
    const src = clauses[1]?.matches[0];
    t.same(
      src?.principals.map((s) => s.matchType),
      [
        { $case: 'exact', value: 'cluster.local/ns/a/sa/b' },
        { $case: 'prefix', value: 'cluster.local/ns/x/' },
        { $case: 'suffix', value: '/sa/admin' },
        { $case: 'presence', value: {} },
      ],
    );
    t.same(
      src?.notNamespaces.map((s) => s.matchType),
      [{ $case: 'exact', value: 'kube-system' }],
    );
    t.same(src?.sourceIps, [
      { address: Uint8Array.from([10, 0, 0, 0]), length: 8 },
      { address: Uint8Array.from([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), length: 128 },
    ]);
    t.same(src?.serviceAccounts, [
      { namespace: 'apps', serviceAccount: 'client' },
      { namespace: 'other', serviceAccount: 'sa' },
    ]);
    t.equal(clauses[1]?.matches.length, 2, 'one Match per source, ORed');
    t.same(
      clauses[2]?.matches[0]?.namespaces.map((s) => s.matchType),
      [{ $case: 'exact', value: 'a' }],
    );
    t.same(
      clauses[2]?.matches[0]?.notNamespaces.map((s) => s.matchType),
      [{ $case: 'prefix', value: 'b' }],
    );
  },
);

t.test('patterns ztunnel cannot express literally are refused', async (t) => {
  for (const bad of ['a*b', '**', 'cluster.local/*/sa/*', '']) {
    const m = build([{ name: 'p', spec: { rules: [{ from: [{ source: { principals: [bad] } }] }] } }]);
    t.match(
      m.diagnostics().get('AuthorizationPolicy apps/p')?.join(),
      /principals\[0\]/,
      JSON.stringify(bad),
    );
    t.notOk(decide(m, UID, client).allowed, `${JSON.stringify(bad)}: the ALLOW rule matches nothing`);
  }
});

// SPDX-License-Identifier: Apache-2.0
// Static config loading: the example fixtures, strict validation with operator-facing errors,
// and the file watcher that keeps the last good config.
import t from 'tap';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  StaticConfigError,
  formatPath,
  loadStaticConfig,
  parseStaticConfig,
  watchStaticConfig,
} from '../../../../ztunnel/src/config/static-config.ts';
import { evaluate } from '../../../../ztunnel/src/rbac/rbac.ts';
import { routeOutbound } from '../../../../ztunnel/src/proxy/route.ts';
import { StateStore } from '../../../../ztunnel/src/state/store.ts';
import type { StateSnapshot } from '../../../../ztunnel/src/state/types.ts';

const FIXTURES = join(import.meta.dirname, '../../../fixtures/ztunnel');

t.test('example fixture loads and drives routing and RBAC end to end', async (t) => {
  const snap = await loadStaticConfig(join(FIXTURES, 'static-config.yaml'));
  t.equal(snap.workloads.length, 4);
  const client = snap.workloads[0];
  if (client === undefined) throw new Error('fixture');
  t.equal(client.uid, 'Kubernetes//Pod/default/client', 'uid defaults to <cluster>//Pod/<ns>/<name>');
  t.equal(client.trustDomain, 'cluster.local');
  t.equal(client.status, 'HEALTHY');
  t.equal(client.capacity, 1);
  const store = new StateStore();
  store.replaceAll(snap);
  t.same(
    store.localWorkloads('node-1').map((w) => w.name),
    ['client', 'echo-1'],
  );
  const route = routeOutbound(store, {
    source: client,
    origDst: { ip: '198.19.0.10', port: 80 },
    chooser: (c) => c[0]!,
  });
  t.equal(route.kind, 'hbone');
  const echo = store.workloadByIp('', '198.18.1.20');
  if (echo === undefined) throw new Error('fixture');
  const { policies, missing } = store.policiesFor(echo);
  t.same(missing, []);
  const conn = { srcIp: '198.18.1.10', dstIp: '198.18.1.20', dstPort: 8080 };
  const asClient = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'client' };
  t.equal(
    evaluate({ policies, missing, conn: { ...conn, srcIdentity: asClient } }).allowed,
    true,
    'client allowed',
  );
  t.equal(evaluate({ policies, missing, conn }).allowed, false, 'plaintext denied by STRICT');
  t.equal(
    evaluate({
      policies,
      missing,
      conn: { ...conn, srcIdentity: { ...asClient, serviceAccount: 'intruder' } },
    }).allowed,
    false,
    'other identity not allowed',
  );
  t.equal(
    evaluate({ policies, missing, conn: { ...conn, dstPort: 9090, srcIdentity: asClient } }).allowed,
    false,
    'other port not allowed',
  );
});

t.test('full fixture: every field parses into the model', async (t) => {
  const snap = await loadStaticConfig(join(FIXTURES, 'static-config-full.yaml'));
  const [server, , external] = snap.workloads;
  if (server === undefined || external === undefined) throw new Error('fixture');
  t.same(server.addresses, ['198.18.1.40', 'fd00:18:1::40']);
  t.same(server.waypoint, {
    hostname: { namespace: 'apps', hostname: 'waypoint.apps.svc.cluster.local' },
    hboneMtlsPort: 15008,
  });
  t.same(server.networkGateway, {
    address: { network: 'net1', address: '198.18.9.1' },
    hboneMtlsPort: 15008,
  });
  t.same(server.applicationTunnel, { protocol: 'PROXY', port: 15088 });
  t.same(server.locality, { region: 'eu-west', zone: 'eu-west-1a', subzone: 'rack-3' });
  t.equal(server.capacity, 3);
  t.same(server.services['apps/server.apps.svc.cluster.local']?.[0], {
    servicePort: 80,
    targetPort: 8080,
    appProtocol: 'HTTP11',
  });
  t.equal(external.hostname, 'db.example.com');
  t.equal(external.networkMode, 'HOST_NETWORK');
  const svc = snap.services[0];
  if (svc === undefined) throw new Error('fixture');
  t.same(svc.addresses, [
    { network: 'net1', address: '198.19.0.40' },
    { network: 'net1', address: 'fd00:19::40' },
  ]);
  t.same(svc.loadBalancing, {
    routingPreference: ['NETWORK', 'REGION', 'ZONE'],
    mode: 'FAILOVER',
    healthPolicy: 'ONLY_HEALTHY',
  });
  t.equal(svc.weightedWaypoints[0]?.weight, 100);
  t.equal(svc.visibility, 'NAMESPACE');
  const everything = snap.policies[0];
  if (everything === undefined) throw new Error('fixture');
  t.equal(everything.dryRun, true);
  t.equal(everything.rules.length, 2);
  const match = everything.rules[0]?.clauses[0]?.matches[0];
  t.same(match?.sourceIps, [
    { address: '198.18.0.0', length: 15 },
    { address: 'fd00::', length: 8 },
  ]);
  t.same(match?.notSourceIps, [{ address: '198.18.1.10', length: 32 }], 'bare IP = host route');
  t.same(match?.notPrincipals, [{ presence: true }]);
  t.same(
    everything.rules[0]?.clauses[0]?.matches[1],
    {
      namespaces: [],
      notNamespaces: [],
      principals: [],
      notPrincipals: [],
      sourceIps: [],
      notSourceIps: [],
      destinationIps: [],
      notDestinationIps: [],
      destinationPorts: [],
      notDestinationPorts: [],
      serviceAccounts: [],
      notServiceAccounts: [],
    },
    'empty match kept (it is meaningful: skipped)',
  );
  t.same(everything.rules[0]?.clauses[1], { matches: [] });
  t.same(everything.rules[1], { clauses: [] }, 'rules: [{}] kept as one rule with no clauses');
  t.same(snap.policies[2]?.rules, [], 'rules: [] = allow nothing');
  // And it round-trips through the store.
  const store = new StateStore();
  store.replaceAll(snap);
  t.same(store.snapshot().workloads.length, 3);
});

const W = (extra: string) =>
  `workloads:\n  - name: a\n    namespace: default\n    addresses: [198.18.1.10]\n${extra}`;

interface ErrRow {
  name: string;
  yaml: string;
  want: (string | RegExp)[];
}

const errors: ErrRow[] = [
  {
    name: 'unknown top-level key',
    yaml: 'workload: []\n',
    want: ['(document root): unknown key "workload"', 'allowed: workloads, services, policies'],
  },
  { name: 'top level is a list', yaml: '- a\n', want: ['(document root): got ["a"], expected a mapping'] },
  { name: 'empty file', yaml: '', want: ['the file is empty'] },
  { name: 'comment-only file', yaml: '# nothing\n', want: ['the file is empty'] },
  { name: 'YAML syntax error', yaml: 'workloads: [\n', want: ['YAML syntax'] },
  {
    name: 'duplicate YAML key',
    yaml: 'workloads: []\nworkloads: []\n',
    want: ['YAML syntax', /[Mm]ap keys must be unique/],
  },
  {
    name: 'unknown workload key',
    yaml: W('    adress: x\n'),
    want: ['workloads[0]: unknown key "adress"', 'allowed: uid, name'],
  },
  {
    name: 'bad IP',
    yaml: 'workloads:\n  - name: a\n    namespace: default\n    addresses: [198.18.1.10, 198.18.1.999]\n',
    want: ['workloads[0].addresses[1]: got "198.18.1.999", expected an IPv4 or IPv6 address'],
  },
  {
    name: 'IPv6 zone',
    yaml: 'workloads:\n  - name: a\n    namespace: default\n    addresses: ["fe80::1%eth0"]\n',
    want: ['workloads[0].addresses[0]: got "fe80::1%eth0"'],
  },
  {
    name: 'IPv4-mapped',
    yaml: 'workloads:\n  - name: a\n    namespace: default\n    addresses: ["::ffff:1.2.3.4"]\n',
    want: ['plain IPv4 address instead of IPv4-mapped'],
  },
  {
    name: 'IP as a number',
    yaml: 'workloads:\n  - name: a\n    namespace: default\n    addresses: [12]\n',
    want: ['workloads[0].addresses[0]: got 12, expected a string'],
  },
  {
    name: 'bad enum',
    yaml: W('    tunnelProtocol: HBONEE\n'),
    want: ['workloads[0].tunnelProtocol: got "HBONEE", expected one of NONE, HBONE'],
  },
  {
    name: 'lowercase enum',
    yaml: W('    status: healthy\n'),
    want: ['workloads[0].status: got "healthy", expected one of HEALTHY, UNHEALTHY'],
  },
  {
    name: 'missing required field',
    yaml: 'workloads:\n  - name: a\n    addresses: [198.18.1.10]\n',
    want: ['workloads[0].namespace: required string is missing'],
  },
  {
    name: 'bad namespace name',
    yaml: 'workloads:\n  - name: a\n    namespace: Default\n    addresses: [198.18.1.10]\n',
    want: ['workloads[0].namespace: got "Default", expected a Kubernetes namespace name'],
  },
  {
    name: 'bad trust domain',
    yaml: W('    trustDomain: "Cluster.Local"\n'),
    want: ['workloads[0].trustDomain: got "Cluster.Local"'],
  },
  {
    name: 'capacity negative',
    yaml: W('    capacity: -1\n'),
    want: ['workloads[0].capacity: got -1, expected an integer ≥ 0'],
  },
  {
    name: 'service port out of range',
    yaml: 'services:\n  - name: s\n    namespace: default\n    hostname: s.default\n    ports: [{ servicePort: 70000 }]\n',
    want: ['services[0].ports[0].servicePort: got 70000, expected an integer ≤ 65535'],
  },
  {
    name: 'port as string',
    yaml: 'services:\n  - name: s\n    namespace: default\n    hostname: s.default\n    ports: [{ servicePort: "80" }]\n',
    want: ['services[0].ports[0].servicePort: got "80", expected a number'],
  },
  {
    name: 'duplicate uid',
    yaml: 'workloads:\n  - { uid: x, name: a, namespace: default, addresses: [198.18.1.10] }\n  - { uid: x, name: b, namespace: default, addresses: [198.18.1.11] }\n',
    want: ['workloads[1].uid: duplicate uid "x", also workloads[0]'],
  },
  {
    name: 'duplicate default uid (same name/namespace)',
    yaml: 'workloads:\n  - { name: a, namespace: default, addresses: [198.18.1.10] }\n  - { name: a, namespace: default, addresses: [198.18.1.11] }\n',
    want: ['workloads[1].uid: duplicate uid "Kubernetes//Pod/default/a"'],
  },
  {
    name: 'duplicate IP in a network (also in non-canonical spelling)',
    yaml: 'workloads:\n  - { name: a, namespace: default, addresses: ["fd00::1"] }\n  - { name: b, namespace: default, addresses: ["FD00:0::1"] }\n',
    want: ['workloads[1].addresses[0]: IP fd00::1 on network "" is already used by workloads[0]'],
  },
  {
    name: 'VIP shadows a workload IP',
    yaml: 'workloads:\n  - { name: a, namespace: default, addresses: [198.18.1.10] }\nservices:\n  - { name: s, namespace: default, hostname: s.default, addresses: [198.18.1.10] }\n',
    want: ['services[0].addresses[0]: VIP 198.18.1.10 is also the IP of workloads[0]'],
  },
  {
    name: 'bad service VIP',
    yaml: 'services:\n  - { name: s, namespace: default, hostname: s.default, addresses: ["net1/nope"] }\n',
    want: ['services[0].addresses[0]: got "net1/nope", expected "ip" or "network/ip"'],
  },
  {
    name: 'duplicate service and service port',
    yaml: 'services:\n  - { name: s, namespace: default, hostname: s.default, ports: [{servicePort: 80}, {servicePort: 80}] }\n  - { name: s2, namespace: default, hostname: s.default }\n',
    want: [
      'services[0].ports[1].servicePort: duplicate service port 80',
      'services[1]: duplicate service default/s.default, also services[0]',
    ],
  },
  {
    name: 'addresses and hostname',
    yaml: W('    hostname: db.example.com\n'),
    want: ['workloads[0]: has both addresses and hostname'],
  },
  {
    name: 'neither addresses nor hostname',
    yaml: 'workloads:\n  - { name: a, namespace: default }\n',
    want: ['workloads[0]: has neither addresses nor hostname'],
  },
  {
    name: 'undefined policy reference',
    yaml: W('    authorizationPolicies: [default/nope, justname]\n'),
    want: [
      'workloads[0].authorizationPolicies[0]: policy default/nope is not defined',
      'workloads[0].authorizationPolicies[1]: got "justname", expected a policy key "namespace/name"',
    ],
  },
  {
    name: 'undefined service in workload.services',
    yaml: W('    services:\n      default/nope.default: [{ servicePort: 80, targetPort: 8080 }]\n'),
    want: ['workloads[0].services["default/nope.default"]: no service default/nope.default in services'],
  },
  {
    name: 'undefined waypoint service',
    yaml: W('    waypoint: { hostname: { namespace: default, hostname: wp.default } }\n'),
    want: ['workloads[0].waypoint.hostname: no service default/wp.default in services'],
  },
  {
    name: 'gateway with both hostname and address',
    yaml: W(
      '    waypoint: { hostname: { namespace: default, hostname: wp.default }, address: 198.18.1.1 }\n',
    ),
    want: ['workloads[0].waypoint: got {', 'expected exactly one of hostname'],
  },
  {
    name: 'bad policy enum values',
    yaml: 'policies:\n  - { name: p, namespace: default, scope: Namespace, action: AUDIT }\n',
    want: [
      'policies[0].scope: got "Namespace", expected one of GLOBAL, NAMESPACE, WORKLOAD_SELECTOR',
      'policies[0].action: got "AUDIT", expected one of ALLOW, DENY',
    ],
  },
  {
    name: 'principal with spiffe://',
    yaml: 'policies:\n  - name: p\n    namespace: default\n    scope: NAMESPACE\n    action: ALLOW\n    rules: [{ clauses: [{ matches: [{ principals: [{ exact: "spiffe://cluster.local/ns/a/sa/b" }] }] }] }]\n',
    want: [
      'policies[0].rules[0].clauses[0].matches[0].principals[0].exact: got "spiffe://cluster.local/ns/a/sa/b", expected a principal without "spiffe://"',
    ],
  },
  {
    name: 'principal with a wildcard',
    yaml: 'policies:\n  - name: p\n    namespace: default\n    scope: NAMESPACE\n    action: ALLOW\n    rules: [{ clauses: [{ matches: [{ principals: [{ suffix: "*/sa/b" }] }] }] }]\n',
    want: ['principals[0].suffix: got "*/sa/b", expected no "*"'],
  },
  {
    name: 'malformed exact principal',
    yaml: 'policies:\n  - name: p\n    namespace: default\n    scope: NAMESPACE\n    action: ALLOW\n    rules: [{ clauses: [{ matches: [{ notPrincipals: [{ exact: "cluster.local/a/b" }] }] }] }]\n',
    want: [
      'notPrincipals[0].exact: got "cluster.local/a/b", expected a principal of the form <trust-domain>/ns/<namespace>/sa/<service-account>',
    ],
  },
  {
    name: 'string match with two kinds, and an empty one',
    yaml: 'policies:\n  - name: p\n    namespace: default\n    scope: NAMESPACE\n    action: DENY\n    rules: [{ clauses: [{ matches: [{ namespaces: [{ exact: a, prefix: b }, {}] }] }] }]\n',
    want: [
      'namespaces[0]: got {"exact":"a","prefix":"b"}, expected exactly one of',
      'namespaces[1]: got {}, expected exactly one of',
    ],
  },
  {
    name: 'presence: false',
    yaml: 'policies:\n  - name: p\n    namespace: default\n    scope: NAMESPACE\n    action: DENY\n    rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: false }] }] }] }]\n',
    want: ['notPrincipals[0].presence: got false, expected one of true'],
  },
  {
    name: 'bad service account match',
    yaml: 'policies:\n  - name: p\n    namespace: default\n    scope: NAMESPACE\n    action: DENY\n    rules: [{ clauses: [{ matches: [{ serviceAccounts: [{ namespace: "a/b", serviceAccount: x }] }] }] }]\n',
    want: ['serviceAccounts[0].namespace: got "a/b"'],
  },
  {
    name: 'bad CIDR and port 0',
    yaml: 'policies:\n  - name: p\n    namespace: default\n    scope: NAMESPACE\n    action: DENY\n    rules: [{ clauses: [{ matches: [{ sourceIps: ["10.0.0.0/33"], destinationPorts: [0] }] }] }]\n',
    want: [
      'sourceIps[0]: got "10.0.0.0/33", expected a CIDR',
      'destinationPorts[0]: got 0, expected an integer ≥ 1',
    ],
  },
  {
    name: 'unknown match field (version skew must not silently widen a policy)',
    yaml: 'policies:\n  - name: p\n    namespace: default\n    scope: NAMESPACE\n    action: ALLOW\n    rules: [{ clauses: [{ matches: [{ hosts: ["x"] }] }] }]\n',
    want: ['matches[0]: unknown key "hosts"'],
  },
  {
    name: 'duplicate policy',
    yaml: 'policies:\n  - { name: p, namespace: default, scope: NAMESPACE, action: DENY }\n  - { name: p, namespace: default, scope: GLOBAL, action: ALLOW }\n',
    want: ['policies[1]: duplicate policy default/p, also policies[0]'],
  },
];

t.test('validation errors name the file, path, value and expectation', async (t) => {
  for (const row of errors) {
    let err: unknown;
    try {
      parseStaticConfig(row.yaml, '/etc/ztunnel/static.yaml');
    } catch (e) {
      err = e;
    }
    if (!(err instanceof StaticConfigError)) {
      t.fail(`${row.name}: expected a StaticConfigError, got ${String(err)}`);
      continue;
    }
    t.equal(err.code, 'ZT_ERR_STATIC_CONFIG', `${row.name}: code`);
    t.match(err.message, 'invalid static config /etc/ztunnel/static.yaml', `${row.name}: names the file`);
    for (const w of row.want) {
      if (typeof w === 'string')
        t.ok(err.message.includes(w), `${row.name}: contains ${JSON.stringify(w)}\n${err.message}`);
      else t.match(err.message, w, `${row.name}: matches ${String(w)}`);
    }
  }
});

t.test('accepted edge cases', async (t) => {
  const snap = parseStaticConfig(
    'workloads:\n  - { name: a, namespace: default, addresses: [198.18.1.10] }\n  - { name: b, namespace: default, network: net2, addresses: [198.18.1.10] }\n  - { name: h1, namespace: default, addresses: [198.18.0.1], networkMode: HOST_NETWORK }\n  - { name: h2, namespace: default, addresses: [198.18.0.1], networkMode: HOST_NETWORK }\n',
    'x.yaml',
  );
  t.equal(snap.workloads.length, 4, 'same IP on another network, and host-network pods sharing the node IP');
  const empty = parseStaticConfig('workloads: []\n', 'x.yaml');
  t.same(empty, { workloads: [], services: [], policies: [] }, 'an explicit empty document is fine');
});

t.test('many problems are capped in the message', async (t) => {
  const lines = Array.from(
    { length: 40 },
    (_, i) => `  - { name: a${i}, namespace: default, addresses: [bad${i}] }`,
  ).join('\n');
  try {
    parseStaticConfig(`workloads:\n${lines}\n`, 'x.yaml');
    t.fail('should throw');
  } catch (e) {
    t.match(String(e), /40 problems/);
    t.match(String(e), /\(15 more\)/);
  }
});

t.test('formatPath', async (t) => {
  t.equal(formatPath([]), '(document root)');
  t.equal(formatPath(['workloads', 2, 'addresses', 0]), 'workloads[2].addresses[0]');
  t.equal(formatPath(['workloads', 0, 'services', 'ns/host']), 'workloads[0].services["ns/host"]');
});

t.test('loadStaticConfig on a missing file names it', async (t) => {
  await t.rejects(loadStaticConfig('/nonexistent/dir/static.yaml'), {
    code: 'ZT_ERR_STATIC_CONFIG',
    message: /cannot read static config \/nonexistent\/dir\/static.yaml/,
  });
});

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('watchStaticConfig: reloads on change, keeps the last good config on error', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'zt-static-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'static.yaml');
  const good = await readFile(join(FIXTURES, 'static-config.yaml'), 'utf8');
  await writeFile(file, good);

  const snapshots: StateSnapshot[] = [];
  const errs: Error[] = [];
  const w = watchStaticConfig(
    file,
    (s) => snapshots.push(s),
    (e) => errs.push(e),
    { debounceMs: 20 },
  );
  t.teardown(() => w.close());
  await w.ready;
  t.equal(snapshots.length, 1, 'initial load reported');
  t.equal(errs.length, 0);

  // A bad edit: reported, last good kept, no snapshot.
  await writeFile(file, good.replace('198.18.1.10', '198.18.1.999'));
  await until(() => errs.length === 1, 'error for bad edit');
  t.match(errs[0]?.message, /workloads\[0\]\.addresses\[0\]/);
  t.equal(snapshots.length, 1);
  t.equal(w.lastGood()?.workloads[0]?.addresses[0], '198.18.1.10');

  // A good edit via rename-into-place (how editors and kubelet write).
  const tmp = join(dir, '.static.yaml.tmp');
  await writeFile(tmp, good.replace('198.18.1.10', '198.18.1.11'));
  await rename(tmp, file);
  await until(() => snapshots.length === 2, 'snapshot after fixed edit');
  t.equal(snapshots[1]?.workloads[0]?.addresses[0], '198.18.1.11');
  t.equal(w.lastGood()?.workloads[0]?.addresses[0], '198.18.1.11');

  // Touching an unrelated file in the directory with our content unchanged reports nothing.
  await writeFile(join(dir, 'unrelated'), 'x');
  await new Promise((r) => setTimeout(r, 150));
  t.equal(snapshots.length, 2, 'unchanged content is not re-reported');
  t.equal(errs.length, 1);

  // Deleting the file: an error, the last good config stays.
  await rm(file);
  await until(() => errs.length === 2, 'error for missing file');
  t.match(errs[1]?.message, /cannot read static config .*keeping the last good static config/);
  t.equal(w.lastGood()?.workloads[0]?.addresses[0], '198.18.1.11');

  // After close, changes are ignored.
  w.close();
  await writeFile(file, good);
  await new Promise((r) => setTimeout(r, 150));
  t.equal(snapshots.length, 2);
});

t.test('watchStaticConfig: a bad initial file reports an error and no snapshot', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'zt-static-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'static.yaml');
  await writeFile(file, 'workloads: [\n');
  const snapshots: StateSnapshot[] = [];
  const errs: Error[] = [];
  const w = watchStaticConfig(
    file,
    (s) => snapshots.push(s),
    (e) => errs.push(e),
    { debounceMs: 20 },
  );
  t.teardown(() => w.close());
  await w.ready;
  t.equal(snapshots.length, 0);
  t.equal(errs.length, 1);
  t.ok(errs[0] instanceof StaticConfigError);
  t.equal(w.lastGood(), undefined);
  await writeFile(file, 'workloads: []\n');
  await until(() => snapshots.length === 1, 'recovery');
  t.same(w.lastGood(), { workloads: [], services: [], policies: [] });
});

// SPDX-License-Identifier: Apache-2.0
// `./mesh demo`: brings up a small mesh on this machine (root; network namespaces, the real CNI
// reference plugins, in-pod redirection rules, one ztunnel per node), shows it working, and
// removes everything it created. Bounded: it runs a fixed script and exits.
//
//   node 0: demo/client (sa client), demo/server-a (sa server)
//   node 1: demo/server-b (sa server), demo/intruder (sa intruder), legacy/outsider (not enrolled)
//   service echo.demo.svc.cluster.local, VIP 198.19.0.10:80 → server-a, server-b :8080
//   policies: PeerAuthentication STRICT on the servers; ALLOW only sa client to reach them
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startMeshBed, type MeshBed } from '../test/helpers/mesh-bed.ts';
import { startTcpServer, tcpRequest } from '../test/helpers/testbed-apps.ts';
import type { Pod } from '../test/helpers/testbed.ts';

const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const ok = (s: string): void => console.log(`  ✔ ${s}`);
const bad = (s: string): void => console.log(`  ✘ ${s}`);
let failures = 0;
const check = (cond: boolean, yes: string, no: string): void => {
  if (cond) ok(yes);
  else {
    failures++;
    bad(no);
  }
};

if (process.getuid?.() !== 0) {
  console.error('mesh demo: needs root (it creates network namespaces and iptables rules); run it as root');
  process.exit(2);
}

/** The named pod; the demo created it, so absence is a bug worth a clear message. */
function pod(pods: Record<string, Pod>, name: string): Pod {
  const p = pods[name];
  if (p === undefined) throw new Error(`demo pod ${name} missing`);
  return p;
}

const server = (p: Pod, node: number): Record<string, unknown> => ({
  name: p.name,
  namespace: 'demo',
  serviceAccount: 'server',
  addresses: [p.ip],
  tunnelProtocol: 'HBONE',
  node: `node-${node}`,
  workloadName: 'echo',
  canonicalName: 'echo',
  canonicalRevision: 'v1',
  authorizationPolicies: ['istio-system/istio_converted_static_strict', 'demo/allow-client'],
  services: { 'demo/echo.demo.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] },
});

console.log(bold('Bringing up a two-node mesh in network namespaces...'));
let bed: MeshBed | undefined;
const cleanup = async (): Promise<void> => {
  if (bed) await bed.destroy();
  bed = undefined;
};
process.once('SIGINT', () => {
  void cleanup().then(() => process.exit(130));
});

try {
  bed = await startMeshBed({
    nodes: 2,
    pods: [
      { name: 'client', node: 0, namespace: 'demo', serviceAccount: 'client' },
      { name: 'server-a', node: 0, namespace: 'demo', serviceAccount: 'server' },
      { name: 'server-b', node: 1, namespace: 'demo', serviceAccount: 'server' },
      { name: 'intruder', node: 1, namespace: 'demo', serviceAccount: 'intruder' },
      { name: 'outsider', node: 1, namespace: 'legacy', mesh: false },
    ],
    config: (p) => ({
      workloads: [
        {
          name: 'client',
          namespace: 'demo',
          serviceAccount: 'client',
          addresses: [pod(p, 'client').ip],
          tunnelProtocol: 'HBONE',
          node: 'node-0',
          canonicalName: 'client',
        },
        server(pod(p, 'server-a'), 0),
        server(pod(p, 'server-b'), 1),
        {
          name: 'intruder',
          namespace: 'demo',
          serviceAccount: 'intruder',
          addresses: [pod(p, 'intruder').ip],
          tunnelProtocol: 'HBONE',
          node: 'node-1',
        },
        {
          name: 'outsider',
          namespace: 'legacy',
          addresses: [pod(p, 'outsider').ip],
          tunnelProtocol: 'NONE',
          node: 'node-1',
        },
      ],
      services: [
        {
          name: 'echo',
          namespace: 'demo',
          hostname: 'echo.demo.svc.cluster.local',
          addresses: ['198.19.0.10'],
          ports: [{ servicePort: 80, targetPort: 8080 }],
        },
      ],
      policies: [
        {
          name: 'istio_converted_static_strict',
          namespace: 'istio-system',
          scope: 'WORKLOAD_SELECTOR',
          action: 'DENY',
          rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: true }] }] }] }],
        },
        {
          name: 'allow-client',
          namespace: 'demo',
          scope: 'WORKLOAD_SELECTOR',
          action: 'ALLOW',
          rules: [
            { clauses: [{ matches: [{ principals: [{ exact: 'cluster.local/ns/demo/sa/client' }] }] }] },
          ],
        },
      ],
    }),
  });
  const pods = bed.pods;
  const [zt0, zt1] = bed.ztunnels;
  const node0 = bed.tb.nodes[0];
  if (zt0 === undefined || zt1 === undefined || node0 === undefined) throw new Error('demo mesh incomplete');
  for (const name of ['server-a', 'server-b']) await startTcpServer(pod(pods, name), name, [8080]);
  await startTcpServer(pod(pods, 'outsider'), 'outsider', [8080]);
  for (const p of Object.values(pods))
    console.log(`  pod ${p.namespace}/${p.name} on ${p.node.netnsName}: ${p.ip}`);
  console.log(`  ztunnel running in each node netns; config ${bed.configPath}\n`);

  console.log(bold('1. client → server-b (other node) by pod IP, through HBONE'));
  const r1 = await tcpRequest(pod(pods, 'client'), pod(pods, 'server-b').ip, 8080, { payload: 'hello' });
  check(
    r1.ok && r1.server === 'server-b',
    `reply: ${r1.output.split('\n')[0] ?? ''}`,
    `failed: ${r1.output}`,
  );
  check(
    r1.output.includes(`peer=${pod(pods, 'client').ip}`),
    'the server sees the real client pod IP',
    'source IP not preserved',
  );
  await new Promise((res) => setTimeout(res, 200));
  const inbound = zt1
    .accessLogs()
    .filter((l) => l.direction === 'inbound')
    .at(-1);
  check(
    inbound?.['src.identity'] === 'spiffe://cluster.local/ns/demo/sa/client',
    `destination ztunnel verified the peer: ${String(inbound?.['src.identity'])}`,
    'no verified identity in the access log',
  );
  if (inbound) console.log(`    access log: ${JSON.stringify(inbound)}`);

  console.log(bold('\n2. client → service VIP 198.19.0.10:80, load-balanced'));
  const seen = new Set<string>();
  for (let i = 0; i < 10; i++) {
    const r = await tcpRequest(pod(pods, 'client'), '198.19.0.10', 80);
    if (r.server) seen.add(r.server);
  }
  check(
    seen.size === 2,
    `answered by ${[...seen].sort().join(' and ')}`,
    `only ${[...seen].join(',')} answered`,
  );

  console.log(bold('\n3. the wire carries no plaintext'));
  const file = join(bed.tb.stateDir, 'demo.pcap');
  const dump = spawn(
    'ip',
    ['netns', 'exec', node0.netnsName, 'tcpdump', '--immediate-mode', '-i', 'any', '-U', '-w', file, 'tcp'],
    { stdio: 'ignore' },
  );
  await new Promise((res) => setTimeout(res, 1000));
  await tcpRequest(pod(pods, 'client'), pod(pods, 'server-b').ip, 8080, { payload: 'TOP-SECRET-PAYLOAD' });
  await tcpRequest(pod(pods, 'client'), pod(pods, 'outsider').ip, 8080, { payload: 'PLAINTEXT-TO-OUTSIDER' });
  await new Promise((res) => setTimeout(res, 300));
  dump.kill('SIGINT');
  await new Promise((res) => dump.once('exit', res));
  const pcap = readFileSync(file);
  check(
    !pcap.includes('TOP-SECRET-PAYLOAD'),
    'mesh traffic is encrypted on the node interfaces (tcpdump)',
    'plaintext seen on the wire!',
  );
  check(
    pcap.includes('PLAINTEXT-TO-OUTSIDER'),
    'traffic to a pod outside the mesh passes through in clear, as expected',
    'capture did not see passthrough traffic',
  );

  console.log(bold('\n4. policy: only sa client may reach the servers; STRICT refuses plaintext'));
  const r4 = await tcpRequest(pod(pods, 'intruder'), pod(pods, 'server-a').ip, 8080);
  check(
    r4.server === undefined,
    `demo/intruder (mTLS, wrong identity) is denied: ${r4.output.trim()}`,
    'intruder got through',
  );
  const r5 = await tcpRequest(pod(pods, 'outsider'), pod(pods, 'server-a').ip, 8080);
  check(
    r5.server === undefined,
    `legacy/outsider (plaintext) is denied by STRICT: ${r5.output.trim()}`,
    'plaintext got through',
  );

  console.log(bold('\n5. metrics (node-0 ztunnel, :15020/metrics)'));
  const m = await zt0.get(15020, '/metrics');
  const lines = m.body
    .split('\n')
    .filter(
      (l) =>
        l.startsWith('istio_tcp_connections_opened_total') ||
        l.startsWith('istio_tcp_connections_failed_total'),
    );
  for (const l of lines.slice(0, 4)) console.log(`    ${l.length > 200 ? `${l.slice(0, 200)}…` : l}`);
  check(lines.length > 0, 'istio_tcp_* metrics with SPIFFE principals', 'no metrics');
  const deny = (await zt0.get(15020, '/metrics')).body.includes('response_flags="DENY"');
  check(deny, 'denials are counted with response_flags="DENY"', 'no DENY counted');
} catch (err) {
  failures++;
  console.error(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
} finally {
  console.log(bold('\nRemoving the namespaces, interfaces and processes the demo created...'));
  await cleanup();
}
console.log(failures === 0 ? bold('\nThe mesh works.') : bold(`\n${failures} check(s) failed.`));
process.exit(failures === 0 ? 0 : 1);

// SPDX-License-Identifier: Apache-2.0
// `./mesh demo`: brings up the local cluster of examples/demo (two nodes; namespace demo in the
// mesh, legacy not), shows it working, and removes everything it created (`--keep` leaves it up
// for `./mesh exec` and `./mesh down`). Bounded: it runs a fixed script and exits.
//
//   node-0: demo/client (sa client), demo/server-a (sa server)
//   node-1: demo/server-b (sa server), demo/intruder (sa intruder), legacy/outsider (not enrolled)
//   service echo.demo, VIP 198.19.0.10:80 → server-a, server-b :8080
//   policies: PeerAuthentication STRICT and AuthorizationPolicy "only sa client" on the servers
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { downLocalCluster, upLocalCluster, type LocalCluster } from '../src/local/cluster.ts';
import { httpGetInNetns } from '../src/local/netns-net.ts';

const ROOT = join(import.meta.dirname, '..');
const MESH_APP = join(ROOT, 'src/local/bin/mesh-app');
const keep = process.argv.includes('--keep');
const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
let failures = 0;
const check = (cond: boolean, yes: string, no: string): void => {
  if (cond) console.log(`  ✔ ${yes}`);
  else {
    failures++;
    console.log(`  ✘ ${no}`);
  }
};

if (process.getuid?.() !== 0) {
  console.error('mesh demo: needs root (it creates network namespaces and iptables rules); run it as root');
  process.exit(2);
}

/** `mesh-app call` from inside a pod: the first word of the reply is the answering pod. */
async function call(
  c: LocalCluster,
  from: string,
  host: string,
  port: number,
  message = 'hello\n',
): Promise<{ ok: boolean; server: string | undefined; output: string }> {
  const pod = c.testbed.pods.find((p) => `${p.namespace}/${p.name.slice(p.namespace.length + 1)}` === from);
  if (pod === undefined) throw new Error(`demo pod ${from} missing`);
  const r = await pod.exec(MESH_APP, ['call', host, String(port), message, '--timeout', '4000'], {
    timeoutMs: 10_000,
  });
  const output = r.stdout.trim();
  const ok = r.code === 0 && !output.startsWith('ERR');
  return { ok, server: ok ? output.split(' ')[0] : undefined, output };
}

function accessLogs(c: LocalCluster, node: string): Record<string, unknown>[] {
  const file = join(c.record.stateDir, 'logs', `ztunnel-${node}.log`);
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"scope":"access"'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

console.log(bold('Bringing up examples/demo as a local cluster (network namespaces, real CNI chain)...'));
let cluster: LocalCluster | undefined;
process.once('SIGINT', () => {
  void downLocalCluster('demo').then(() => process.exit(130));
});

try {
  await downLocalCluster('demo');
  cluster = await upLocalCluster({
    manifests: join(ROOT, 'examples/demo'),
    name: 'demo',
    log: (l) => console.log(`  ${l}`),
  });
  const c = cluster;
  const ip = (ref: string): string => c.pod(ref).ip;
  const node1 = c.node('node-1');
  const node0 = c.node('node-0');

  console.log(bold('\n1. demo/client → demo/server-b (other node) by pod IP, through HBONE'));
  const r1 = await call(c, 'demo/client', ip('demo/server-b'), 8080);
  check(r1.server === 'server-b', `reply: ${r1.output.split('\n')[0] ?? ''}`, `failed: ${r1.output}`);
  check(
    r1.output.includes(`peer=${ip('demo/client')}`),
    'the server sees the real client pod IP',
    'source IP not preserved',
  );
  await delay(300);
  const inbound = accessLogs(c, 'node-1')
    .filter((l) => l.direction === 'inbound')
    .at(-1);
  check(
    inbound?.['src.identity'] === 'spiffe://cluster.local/ns/demo/sa/client',
    `node-1's ztunnel verified the peer: ${String(inbound?.['src.identity'])}`,
    'no verified identity in the access log',
  );

  console.log(bold('\n2. demo/client → service VIP 198.19.0.10:80, load-balanced'));
  const seen = new Set<string>();
  for (let i = 0; i < 10; i++) {
    const r = await call(c, 'demo/client', '198.19.0.10', 80);
    if (r.server !== undefined) seen.add(r.server);
  }
  check(
    seen.size === 2,
    `answered by ${[...seen].sort().join(' and ')}`,
    `only ${[...seen].join(',')} answered`,
  );

  console.log(bold('\n3. the wire carries no plaintext'));
  const file = join(c.record.stateDir, 'demo.pcap');
  const dump = spawn(
    'ip',
    ['netns', 'exec', node0.netnsName, 'tcpdump', '--immediate-mode', '-i', 'eth0', '-U', '-w', file, 'tcp'],
    { stdio: 'ignore' },
  );
  await delay(1000);
  await call(c, 'demo/client', ip('demo/server-b'), 8080, 'TOP-SECRET-PAYLOAD');
  await call(c, 'demo/client', ip('legacy/outsider'), 8080, 'PLAINTEXT-TO-OUTSIDER');
  await delay(300);
  dump.kill('SIGINT');
  await new Promise((res) => dump.once('exit', res));
  const pcap = readFileSync(file);
  check(
    !pcap.includes('TOP-SECRET-PAYLOAD'),
    'mesh traffic between nodes is encrypted (tcpdump on node-0 eth0)',
    'plaintext seen on the wire!',
  );
  check(
    pcap.includes('PLAINTEXT-TO-OUTSIDER'),
    'traffic to legacy/outsider (not in the mesh) passes through in clear, as expected',
    'capture did not see passthrough traffic',
  );

  console.log(bold('\n4. policy: only sa client may reach the servers; STRICT refuses plaintext'));
  const r4 = await call(c, 'demo/intruder', ip('demo/server-a'), 8080);
  check(
    r4.server === undefined,
    `demo/intruder (mTLS, wrong identity) is denied: ${r4.output}`,
    'intruder got through',
  );
  const r5 = await call(c, 'legacy/outsider', ip('demo/server-a'), 8080);
  check(
    r5.server === undefined,
    `legacy/outsider (plaintext) is denied by STRICT: ${r5.output}`,
    'plaintext got through',
  );

  console.log(bold("\n5. metrics (node-1's ztunnel, :15020/metrics)"));
  const m = await httpGetInNetns(node1.netnsPath, 15020, '/metrics');
  const lines = m.body.split('\n').filter((l) => l.startsWith('istio_tcp_connections_opened_total'));
  for (const l of lines.slice(0, 3)) console.log(`    ${l.length > 220 ? `${l.slice(0, 220)}…` : l}`);
  check(lines.length > 0, 'istio_tcp_* metrics with SPIFFE principals', 'no metrics');
  check(
    m.body.includes('response_flags="DENY"'),
    'denials are counted with response_flags="DENY"',
    'no DENY counted',
  );
} catch (err) {
  failures++;
  console.error(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
} finally {
  if (keep && cluster !== undefined && failures === 0) {
    console.log(
      bold(
        '\nLeft running (--keep): ./mesh status demo, ./mesh exec demo/client --name demo -- mesh-app call 198.19.0.10 80, ./mesh down demo',
      ),
    );
  } else {
    console.log(bold('\nRemoving the namespaces, interfaces and processes the demo created...'));
    await downLocalCluster('demo');
  }
}
console.log(failures === 0 ? bold('\nThe mesh works.') : bold(`\n${failures} check(s) failed.`));
process.exit(failures === 0 ? 0 : 1);

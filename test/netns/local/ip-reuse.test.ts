// SPDX-License-Identifier: Apache-2.0
// Pod IP reuse (checklist B.37) on a local-mode cluster: pod X (service account x) is deleted and
// pod Y (service account y) gets its IP while the control plane has not caught up — here the
// controller is stopped, so every ztunnel still maps the IP to X. Y must never be taken for X:
//   - the connection open to X ends with X; nothing of it reaches Y;
//   - a new connection to the IP, made while the client's ztunnel still expects X's identity,
//     is refused at the TLS identity check and reaches no app (Y presents its own certificate:
//     its identity comes from the node agent, never from the stale address);
//   - once the controller is back, the IP is Y's, and connections reach Y as Y.
// A pod of service account y already runs on Y's node, so Y's ztunnel holds a certificate for y
// while the CA (in the controller) is away: the refusal is the identity check, not a missing
// certificate.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { downLocalCluster, upLocalCluster, type LocalCluster } from '../../../src/local/cluster.ts';
import { connectInNetns } from '../../../src/local/netns-net.ts';
import { waitFor } from '../../helpers/wait.ts';

const ROOT = join(import.meta.dirname, '../../..');
const MESH_APP = join(ROOT, 'src/local/bin/mesh-app');
const NAME = `r${process.pid.toString(36).slice(-6)}`;

if (process.getuid?.() !== 0) throw new Error('this suite needs root (network namespaces); run it as root');

const pod = (name: string, sa: string, node: string, command: string[]): string => `---
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: demo
spec:
  nodeName: ${node}
  serviceAccountName: ${sa}
  containers:
    - name: app
      command: [${command.join(', ')}]
`;
const dir = mkdtempSync(join(tmpdir(), 'ip-reuse-'));
writeFileSync(
  join(dir, 'cluster.yaml'),
  `apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    istio.io/dataplane-mode: ambient
` +
    pod('client', 'client', 'node-0', ['mesh-app', 'sleep']) +
    pod('other', 'other', 'node-0', ['mesh-app', 'sleep']) +
    pod('x', 'x', 'node-1', ['mesh-app', 'serve', "'8080'"]) +
    pod('y-peer', 'y', 'node-1', ['mesh-app', 'serve', "'8080'"]),
);
let cluster: LocalCluster | undefined;
t.teardown(async () => {
  await downLocalCluster(NAME);
  rmSync(dir, { recursive: true, force: true });
});

t.test(
  'B.37: a reused pod IP never gets the old pod identity or its traffic',
  { timeout: 300_000 },
  async (t) => {
    cluster = await upLocalCluster({ manifests: dir, name: NAME });
    const c = cluster;
    const callFrom =
      (ref: string) =>
      async (ip: string): Promise<string> => {
        const handle = c.testbed.pods.find((p) => p.netnsName === c.pod(ref).netnsName)!;
        const r = await handle.exec(MESH_APP, ['call', ip, '8080', 'ping\n', '--timeout', '3000'], {
          timeoutMs: 10_000,
        });
        return r.stdout.trim();
      };
    const call = callFrom('demo/client');
    // A client that never talked to X: no pooled HBONE session to X's old address.
    const other = callFrom('demo/other');
    const x = c.pod('demo/x');
    await waitFor(async () => (await call(x.ip)).startsWith('x '), 'the client to reach x', 30_000, 100);

    // A connection open to X when it goes away.
    const held = connectInNetns(c.pod('demo/client').netnsPath, x.ip, 8080);
    held.setEncoding('utf8');
    let received = '';
    held.on('data', (d: string) => (received += d));
    const heldEnded = new Promise<string>((resolve) => {
      held.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      // The socket allows half-open: X's end arrives as 'end'.
      held.on('end', () => resolve('ended'));
      held.on('close', () => resolve('closed'));
    });
    held.write('hello\n');
    await waitFor(() => received.includes('hello'), 'the held connection to echo', 30_000, 100);

    await c.stopController();
    await c.deletePod('demo/x');
    t.not(await heldEnded, undefined, 'the connection open to X ended with it');
    const y: V1Pod = {
      metadata: { name: 'y', namespace: 'demo' },
      spec: {
        serviceAccountName: 'y',
        containers: [{ name: 'app', command: ['mesh-app', 'serve', '8080'] }],
      },
    };
    const reused = await c.createPod(y, 1, { ip: x.ip });
    t.equal(reused.ip, x.ip, "Y has X's IP");
    // The node still maps the address to X's MAC (neighbour cache, ~30 s); a real runtime's
    // network learns Y's from a gratuitous ARP or the cache's expiry. Flush it here.
    execFileSync('ip', ['-n', c.node('node-1').netnsName, 'neigh', 'flush', 'to', x.ip]);
    const afterHeld = received;

    // The client's ztunnel still expects X's identity at that IP: Y is refused, and its app sees nothing.
    // The client's pooled session to X's address died with X's netns without a word; its packets
    // now reach Y's kernel, which resets them: the connection fails, nothing reaches Y.
    const pooled = await call(x.ip);
    t.notOk(
      pooled.startsWith('y ') || pooled.startsWith('x '),
      `the client, while stale: no answer (${pooled})`,
    );
    // A new session to the address: the stale map still names X, Y's proxy presents Y's own
    // certificate (its identity comes from the node agent), and the handshake is refused.
    for (let i = 0; i < 3; i++) {
      const r = await other(x.ip);
      t.match(r, /^ERR/, `another client, while stale, attempt ${i}: refused (${r})`);
    }
    const clientZtunnel = readFileSync(join(c.record.stateDir, 'logs', 'ztunnel-node-0.log'), 'utf8');
    t.match(
      clientZtunnel,
      /peer identity spiffe:\/\/cluster\.local\/ns\/demo\/sa\/y is not one of the identities expected for this destination \(spiffe:\/\/cluster\.local\/ns\/demo\/sa\/x\)/,
      'refused at the identity check: Y presented its own identity, not X',
    );
    const yApp = readFileSync(join(c.record.stateDir, 'logs', 'ztunnel-node-1.log'), 'utf8');
    t.notOk(
      yApp.split('\n').some((l) => l.includes('"scope":"access"') && l.includes('"dst.workload":"y"')),
      "nothing reached Y's app",
    );
    t.equal(received, afterHeld, 'nothing more arrived on the old connection');

    await c.startController();
    await waitFor(
      async () => (await other(x.ip)).startsWith('y '),
      'the other client to reach Y as Y',
      30_000,
      100,
    );
    await waitFor(async () => (await call(x.ip)).startsWith('y '), 'the client to reach Y as Y', 60_000, 100);
    t.pass('once the control plane caught up, the IP is Y, for both clients');
  },
);

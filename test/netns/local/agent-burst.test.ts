// SPDX-License-Identifier: Apache-2.0
// The node agent killed in the middle of a burst of pod creates (checklist D.60), on a local-mode
// cluster: the real CNI chain with our plugin, the real agent process, the controller and
// ztunnels. Three pods start first; then 13 are created at once and the agent is SIGKILLed as
// soon as their first sandboxes exist, so their ADDs meet it at every stage (not yet connected,
// mid-request, gone). The fail-closed promise: a pod either starts enrolled (its in-pod rules in place, the
// agent's annotation set) or does not start at all; the ADDs that met the dead agent fail and
// their sandboxes are torn down; once the agent is back, the runtime's retries start them
// enrolled; and the pods that started before the kill stay enrolled across it.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { parse } from 'yaml';
import {
  downLocalCluster,
  upLocalCluster,
  type LocalCluster,
  type LocalPod,
} from '../../../src/local/cluster.ts';
import { waitFor } from '../../helpers/wait.ts';

const ROOT = join(import.meta.dirname, '../../..');
const MESH_APP = join(ROOT, 'src/local/bin/mesh-app');
const NAME = `b${process.pid.toString(36).slice(-6)}`;
const BURST = 16;
/** Created, and enrolled, before the burst. */
const EARLY = 3;

if (process.getuid?.() !== 0) throw new Error('this suite needs root (network namespaces); run it as root');

const dir = mkdtempSync(join(tmpdir(), 'agent-burst-'));
writeFileSync(
  join(dir, 'cluster.yaml'),
  `apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: demo
spec:
  nodeName: node-0
  serviceAccountName: client
  containers:
    - name: app
      command: [mesh-app, sleep]
`,
);
let cluster: LocalCluster | undefined;
t.teardown(async () => {
  await downLocalCluster(NAME);
  rmSync(dir, { recursive: true, force: true });
});

const podSpec = (i: number): V1Pod => ({
  metadata: { name: `burst-${i}`, namespace: 'demo' },
  spec: { containers: [{ name: 'app', command: ['mesh-app', 'serve', '8080'] }] },
});

t.test(
  'D.60: agent SIGKILLed during a burst of creates: every pod starts enrolled or not at all',
  { timeout: 300_000 },
  async (t) => {
    cluster = await upLocalCluster({ manifests: dir, name: NAME });
    const c = cluster;
    const results: (LocalPod | Error | undefined)[] = new Array<LocalPod | Error | undefined>(BURST);
    const create = (i: number): Promise<unknown> =>
      c.createPod(podSpec(i), 1).then(
        (p) => (results[i] = p),
        (e: unknown) => (results[i] = e instanceof Error ? e : new Error(String(e))),
      );
    // Pods running before the kill (they must stay enrolled across it) ...
    await Promise.all(Array.from({ length: EARLY }, (_, i) => create(i)));
    // ... then the burst, and the kill while its ADDs are in flight: once its first sandboxes
    // exist (the runtime creates the netns before it runs the CNI chain).
    const creates = Array.from({ length: BURST - EARLY }, (_, k) => create(EARLY + k));
    await waitFor(
      () => c.testbed.namespaces().filter((n) => /-p-demo-burst-/.test(n)).length >= EARLY + 2,
      'the burst under way',
      60_000,
      50,
    );
    await c.stop('agent', 'node-1', 'kill');
    await Promise.all(creates);
    const failed = results.flatMap((r, i) => (r instanceof Error ? [i] : []));
    const before = results.flatMap((r, i) => (r !== undefined && !(r instanceof Error) ? [i] : []));
    t.comment(
      `${before.length} pods started before the kill took effect, ${failed.length} ADDs met the dead agent`,
    );
    t.ok(before.length >= 1 && failed.length >= 1, 'the kill landed inside the burst');
    for (const i of failed) {
      t.match((results[i] as Error).message, /could not be created/, `burst-${i}: ADD failed closed`);
      t.notOk(
        c.testbed.namespaces().some((n) => n.endsWith(`-p-demo-burst-${i}`)),
        `burst-${i}: its sandbox was torn down`,
      );
    }

    await c.start('agent', 'node-1');
    for (const i of failed) results[i] = await c.createPod(podSpec(i), 1); // the runtime's retry

    for (let i = 0; i < BURST; i++) {
      const pod = results[i] as LocalPod;
      await waitFor(
        () => {
          const live = parse(
            readFileSync(join(c.record.stateDir, `live/pods/demo.burst-${i}.yaml`), 'utf8'),
          ) as {
            metadata: { annotations?: Record<string, string> };
          };
          return live.metadata.annotations?.['ambient.istio.io/redirection'] === 'enabled';
        },
        `burst-${i} marked enrolled`,
        30_000,
        50,
      );
      const handle = c.testbed.pods.find((p) => p.netnsName === pod.netnsName);
      const rules = await handle!.exec('iptables-save', ['-t', 'nat'], { timeoutMs: 10_000 });
      t.match(rules.stdout, /-j REDIRECT --to-ports 15001/, `burst-${i}: its in-pod rules are in place`);
      const client = c.testbed.pods.find((p) => p.netnsName === c.pod('demo/client').netnsName)!;
      const call = await client.exec(MESH_APP, ['call', pod.ip, '8080', 'ping\n', '--timeout', '3000'], {
        timeoutMs: 10_000,
      });
      t.match(call.stdout, `burst-${i}`, `burst-${i}: reached through the mesh`);
    }
    const logs = readFileSync(join(c.record.stateDir, 'logs', 'ztunnel-node-1.log'), 'utf8');
    t.ok(
      (logs.match(/connection complete/g) ?? []).length >= BURST,
      "node-1's ztunnel carried the calls (inbound over HBONE)",
    );
  },
);

// SPDX-License-Identifier: Apache-2.0
// The built CNI plugin in a real CNI chain (DESIGN.md §4): a test-bed node whose CNI directories
// are real (the runtime reads the first *.conflist on every ADD), our plugin installed into them
// by installPlugin and chained after bridge + host-local + loopback, the agent's real endpoint on
// its Unix socket. Proves: a pod is created when the agent accepts it, with the agent told the
// pod's netns and IP; with the agent down or failing, ADD fails and the runtime tears the sandbox
// down (no veth, no IP allocation, no netns left), and the pod starts once the agent is back
// (checklist D.57); excluded namespaces start without the agent (D.62); a netns that vanished
// between the primary plugin and ours fails without the agent being asked (D.58); uninstall
// leaves the node's conflist as it was and pods start without us. Needs root.
import t from 'tap';
import type { Test } from 'tap';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Logger } from '../../../src/shared/telemetry/logger.ts';
import { startPluginEventServer } from '../../../cni-plugin/src/agent/plugin-events.ts';
import type {
  PluginAddEvent,
  PluginDelEvent,
  PluginEventServer,
} from '../../../cni-plugin/src/agent/plugin-events.ts';
import { installPlugin, uninstallPlugin } from '../../../cni-plugin/src/install/install.ts';
import { CniError } from '../../helpers/cni-runtime.ts';
import { createTestbed } from '../../helpers/testbed.ts';
import type { Testbed } from '../../helpers/testbed.ts';
import { NODE_BIN } from '../../helpers/testbed-apps.ts';
import { runOk } from '../../helpers/testbed-exec.ts';
import { buildPlugin, PLUGIN_EXE } from '../../integration/cni-plugin/plugin-binary.ts';

interface Agent {
  mode: 'accept' | 'fail';
  adds: PluginAddEvent[];
  dels: PluginDelEvent[];
  server: PluginEventServer | undefined;
}

async function startAgent(runDir: string, agent: Agent): Promise<void> {
  agent.server = await startPluginEventServer({
    runDir,
    logger: new Logger({ destination: new PassThrough().resume(), level: 'silent' }),
    handlers: {
      add: async (e) => {
        agent.adds.push(e);
        if (agent.mode === 'fail')
          throw new Error(`cannot install redirection rules in ${e.netns}: injected`);
        return { enrolled: true };
      },
      del: async (e) => {
        agent.dels.push(e);
      },
    },
  });
}

async function vethCount(bed: Testbed): Promise<number> {
  const node = bed.nodes[0];
  if (node === undefined) throw new Error('no node');
  const out = await runOk(node.netnsName, 'ip', ['-o', 'link', 'show', 'type', 'veth']);
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

/** Container ids holding an address in host-local's store. */
function ipamHolders(bed: Testbed): string[] {
  const holders: string[] = [];
  const root = join(bed.stateDir, 'ipam');
  for (const net of readdirSync(root)) {
    for (const f of readdirSync(join(root, net))) {
      if (/^\d+\.\d+\.\d+\.\d+$/.test(f))
        holders.push(readFileSync(join(root, net, f), 'utf8').split(/\s/)[0] ?? '');
    }
  }
  return holders;
}

async function netnsNames(): Promise<string[]> {
  return (await runOk(undefined, 'ip', ['netns', 'list'])).split('\n').map((l) => l.split(' ')[0] ?? '');
}

/** The rejected ADD is our plugin's CNI error, and the runtime undid everything of the sandbox. */
async function assertTornDown(
  t: Test,
  bed: Testbed,
  err: unknown,
  name: string,
  veths: number,
): Promise<CniError> {
  if (!(err instanceof CniError)) throw err;
  t.equal(err.plugin, 'ambient-cni', 'our plugin failed the ADD');
  t.equal(await vethCount(bed), veths, 'no veth left on the node');
  t.notOk(ipamHolders(bed).includes(`${bed.prefix}-${name}`), 'its address was released');
  t.notOk((await netnsNames()).includes(`${bed.prefix}-p-${name}`), 'no netns left');
  t.notOk(
    bed.pods.some((p) => p.name === name),
    'no pod',
  );
  return err;
}

t.test(
  'our plugin chained after bridge/host-local/loopback on a test-bed node',
  { timeout: 180_000 },
  async (t) => {
    if (process.getuid?.() !== 0) {
      t.fail('this test needs root (network namespaces); run it as root — it is not skipped silently');
      return;
    }
    await buildPlugin();
    const base = mkdtempSync(join(tmpdir(), 'cni-chain-'));
    t.teardown(() => rmSync(base, { recursive: true, force: true }));
    const confDir = join(base, 'etc/cni/net.d');
    const binDir = join(base, 'opt/cni/bin');
    const runDir = join(base, 'run');
    const bed = await createTestbed({ nodes: 1, nodeCni: () => ({ confDir, binDir }) });
    t.teardown(() => bed.destroy());
    const agent: Agent = { mode: 'accept', adds: [], dels: [], server: undefined };
    t.teardown(() => agent.server?.close());

    const [original] = readdirSync(confDir);
    if (original === undefined) throw new Error('the test bed wrote no conflist');
    const originalText = readFileSync(join(confDir, original), 'utf8');
    const installed = await installPlugin({
      cniBinDir: binDir,
      cniConfDir: confDir,
      binarySource: PLUGIN_EXE,
      pluginConfig: { cni_agent_run_dir: runDir, log_level: 'debug' },
    });
    t.equal(installed.configPath, join(confDir, original));
    await startAgent(runDir, agent);

    await t.test('the agent accepts: the pod is created and the agent knows its netns and IP', async (t) => {
      const pod = await bed.addPod({ node: 0, name: 'web', namespace: 'shop', uid: 'uid-web' });
      t.match(pod.ip, /^198\.18\.0\.\d+$/);
      t.same(agent.adds, [
        {
          netns: pod.netnsPath,
          podName: 'web',
          podNamespace: 'shop',
          podUid: 'uid-web',
          containerId: pod.containerId,
          ifName: 'eth0',
          ips: [{ address: `${pod.ip}/24`, gateway: '198.18.0.1', interface: 2 }],
        },
      ]);
      t.match(await runOk(pod.netnsName, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']), pod.ip);
      t.equal(
        pod.cniResult.ips?.[0]?.address,
        `${pod.ip}/24`,
        'the chain result is the primary plugin result',
      );
    });

    await t.test(
      'the agent is down: ADD fails closed, the sandbox is torn down, a retry succeeds',
      async (t) => {
        await agent.server?.close();
        agent.server = undefined;
        const veths = await vethCount(bed);
        const err = await bed.addPod({ node: 0, name: 'api', namespace: 'shop' }).then(
          () => undefined,
          (e: unknown) => e,
        );
        const cni = await assertTornDown(t, bed, err, 'api', veths);
        t.equal(cni.cniError?.code, 11, 'try again later');
        t.match(
          cni.cniError?.msg,
          `cannot reach the ambient node agent at ${join(runDir, 'pluginevent.sock')}`,
        );

        // kube-system pods start without the agent.
        const dns = await bed.addPod({ node: 0, name: 'coredns', namespace: 'kube-system' });
        t.match(dns.ip, /^198\.18\.0\.\d+$/);

        await startAgent(runDir, agent);
        const pod = await bed.addPod({ node: 0, name: 'api', namespace: 'shop' });
        t.equal(agent.adds.at(-1)?.podName, 'api', 'enrolled when the runtime retried');
        t.match(pod.ip, /^198\.18\.0\.\d+$/);
      },
    );

    await t.test("the agent fails to enrol: ADD fails with the agent's message, torn down", async (t) => {
      agent.mode = 'fail';
      t.teardown(() => {
        agent.mode = 'accept';
      });
      const veths = await vethCount(bed);
      const err = await bed.addPod({ node: 0, name: 'db', namespace: 'shop' }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const cni = await assertTornDown(t, bed, err, 'db', veths);
      t.equal(cni.cniError?.code, 101);
      t.match(cni.cniError?.msg, /cannot install redirection rules in \/run\/netns\/.*-p-db: injected/);
    });

    await t.test('DEL of a pod reaches the agent', async (t) => {
      const pod = bed.pods.find((p) => p.name === 'web');
      await bed.removePod('web');
      t.match(agent.dels, [
        {
          podName: 'web',
          podNamespace: 'shop',
          containerId: pod?.containerId,
          ifName: 'eth0',
          netns: pod?.netnsPath,
        },
      ]);
    });

    await t.test('uninstall restores the conflist; pods then start without our plugin', async (t) => {
      const u = await uninstallPlugin({ cniBinDir: binDir, cniConfDir: confDir });
      t.same(u.changed, [join(confDir, original)]);
      t.equal(readFileSync(join(confDir, original), 'utf8'), originalText, 'byte for byte');
      t.same(readdirSync(binDir), []);
      const before = agent.adds.length;
      await bed.addPod({ node: 0, name: 'after', namespace: 'shop' });
      t.equal(agent.adds.length, before, 'the agent is no longer asked');
    });
  },
);

// A plugin chained between loopback and ours that removes the pod's netns, as a sandbox killed in
// the middle of ADD would leave it.
const VANISH = `#!${NODE_BIN}
const fs = require('node:fs');
const { execFileSync } = require('node:child_process');
const conf = JSON.parse(fs.readFileSync(0, 'utf8'));
if (process.env.CNI_COMMAND === 'ADD') {
  execFileSync('ip', ['netns', 'delete', require('node:path').basename(process.env.CNI_NETNS)]);
  process.stdout.write(JSON.stringify(conf.prevResult));
}
`;

t.test(
  'a netns that vanished before our ADD fails it without asking the agent',
  { timeout: 120_000 },
  async (t) => {
    if (process.getuid?.() !== 0) {
      t.fail('this test needs root (network namespaces); run it as root — it is not skipped silently');
      return;
    }
    await buildPlugin();
    const base = mkdtempSync(join(tmpdir(), 'cni-vanish-'));
    t.teardown(() => rmSync(base, { recursive: true, force: true }));
    writeFileSync(join(base, 'vanish'), VANISH);
    chmodSync(join(base, 'vanish'), 0o755);
    const runDir = join(base, 'run');
    const agent: Agent = { mode: 'accept', adds: [], dels: [], server: undefined };
    await startAgent(runDir, agent);
    t.teardown(() => agent.server?.close());
    const bed = await createTestbed({
      nodes: 1,
      extraPlugins: () => [{ type: 'vanish' }, { type: 'ambient-cni', cni_agent_run_dir: runDir }],
      extraCniPath: [base, join(PLUGIN_EXE, '..')],
    });
    t.teardown(() => bed.destroy());
    await bed.addPod({ node: 0, name: 'first', namespace: 'kube-system' });
    const veths = await vethCount(bed);

    const err = await bed.addPod({ node: 0, name: 'gone', namespace: 'shop' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    const cni = await assertTornDown(t, bed, err, 'gone', veths);
    t.equal(cni.cniError?.code, 103);
    t.match(cni.cniError?.msg, /network namespace \/run\/netns\/.*-p-gone \(CNI_NETNS\) does not exist/);
    t.equal(agent.adds.length, 0, 'the agent was asked nothing');
  },
);

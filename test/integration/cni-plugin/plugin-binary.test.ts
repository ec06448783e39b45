// SPDX-License-Identifier: Apache-2.0
// The built CNI plugin (build/cni/ambient-cni, a Node single executable) run as a container
// runtime runs it — CNI_* environment, config on stdin — against the real agent endpoint
// (cni-plugin/src/agent/plugin-events.ts) on a Unix socket, and against a silent socket:
// VERSION; ADD passing prevResult through unchanged; excluded namespaces passing without contact;
// fail-closed ADD when the agent is down, failing or silent (checklist D.57, D.61); a vanished
// netns (D.58); DEL succeeding with the agent down; CHECK. The bundle and the TypeScript entry,
// run with Node, give the same answers.
import t from 'tap';
import type { Test } from 'tap';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Logger } from '../../../src/shared/telemetry/logger.ts';
import { AgentNotReadyError, startPluginEventServer } from '../../../cni-plugin/src/agent/plugin-events.ts';
import type {
  PluginAddEvent,
  PluginDelEvent,
  PluginEventHandlers,
} from '../../../cni-plugin/src/agent/plugin-events.ts';
import { buildPlugin, runPlugin } from './plugin-binary.ts';
import type { PluginForm } from './plugin-binary.ts';

// A network namespace that exists for as long as this test runs: our own.
const NETNS = `/proc/${process.pid}/ns/net`;

// What bridge + host-local print, with fields the plugin never reads (they must survive).
const PREV = {
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'cni0', mac: '5a:9e:62:0d:3c:01' },
    { name: 'veth1a2b3c4d', mac: '9e:0b:44:c7:12:ee' },
    { name: 'eth0', mac: '0a:58:c6:12:00:05', sandbox: '/var/run/netns/cni-1' },
  ],
  ips: [{ interface: 2, address: '198.18.0.5/24', gateway: '198.18.0.1' }],
  routes: [{ dst: '0.0.0.0/0', gw: '198.18.0.1' }],
  dns: { nameservers: ['198.19.0.10'], search: ['shop.svc.cluster.local'] },
  'vendor.example/ext': { weights: [0.5, 1e-7, -0], note: 'ünïcødé "quoted" \u2028' },
};

function netconf(runDir: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'k8s-pod-network',
    type: 'ambient-cni',
    cni_agent_run_dir: runDir,
    exclude_namespaces: ['monitoring'],
    log_level: 'debug',
    prevResult: PREV,
    ...extra,
  });
}

function env(command: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: 'sandbox-0123',
    CNI_NETNS: NETNS,
    CNI_IFNAME: 'eth0',
    CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart;K8S_POD_UID=4e3f-77',
    CNI_PATH: '/opt/cni/bin',
    ...extra,
  };
}

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'cni-bin-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Agent {
  runDir: string;
  adds: PluginAddEvent[];
  dels: PluginDelEvent[];
}

async function agent(t: Test, handlers: Partial<PluginEventHandlers> = {}): Promise<Agent> {
  const runDir = join(tempDir(t), 'run');
  const adds: PluginAddEvent[] = [];
  const dels: PluginDelEvent[] = [];
  const server = await startPluginEventServer({
    runDir,
    logger: new Logger({ destination: new PassThrough().resume(), level: 'silent' }),
    handlers: {
      add: async (e) => {
        adds.push(e);
        return { enrolled: true, reason: 'namespace shop is ambient' };
      },
      del: async (e) => {
        dels.push(e);
      },
      check: async () => ({ ok: true }),
      ...handlers,
    },
  });
  t.teardown(() => server.close());
  return { runDir, adds, dels };
}

/** A socket that accepts connections and never answers; counts them. */
async function silentAgent(t: Test): Promise<{ runDir: string; connections: () => number }> {
  const runDir = tempDir(t);
  const sockets = new Set<Socket>();
  let count = 0;
  const server = createServer((s) => {
    count++;
    sockets.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(join(runDir, 'pluginevent.sock'), r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { runDir, connections: () => count };
}

function cniError(stdout: string): { cniVersion: string; code: number; msg: string; details?: string } {
  return JSON.parse(stdout) as { cniVersion: string; code: number; msg: string; details?: string };
}

t.before(async () => {
  await buildPlugin();
});

t.test('VERSION: every form answers the same, the executable quickly', async (t) => {
  const answers = new Set<string>();
  for (const form of ['exe', 'bundle', 'entry'] as PluginForm[]) {
    const r = await runPlugin(form, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
    t.equal(r.code, 0, form);
    answers.add(r.stdout);
    if (form === 'exe') t.comment(`VERSION wall time of the executable: ${r.ms.toFixed(0)} ms`);
  }
  t.same([...answers], ['{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}']);
});

t.test('ADD: the agent is told, prevResult comes back unchanged, stdout holds only the result', async (t) => {
  const a = await agent(t);
  const r = await runPlugin('exe', env('ADD'), netconf(a.runDir));
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, JSON.stringify(PREV), 'byte for byte what JSON.stringify writes of the previous result');
  t.same(JSON.parse(r.stdout), PREV);
  t.same(a.adds, [
    {
      netns: NETNS,
      podName: 'cart',
      podNamespace: 'shop',
      podUid: '4e3f-77',
      containerId: 'sandbox-0123',
      ifName: 'eth0',
      ips: [{ address: '198.18.0.5/24', gateway: '198.18.0.1', interface: 2 }],
    },
  ]);
  const lines = r.stderr.trim().split('\n');
  t.ok(lines.length > 0);
  for (const l of lines) t.doesNotThrow(() => JSON.parse(l) as unknown, 'stderr: JSON log lines');
  t.match(r.stderr, /"pod":"shop\/cart".*"enrolled":true.*pod enrolled in the mesh/);
});

t.test('ADD with the Node forms gives the same result', async (t) => {
  const a = await agent(t);
  for (const form of ['bundle', 'entry'] as PluginForm[]) {
    const r = await runPlugin(form, env('ADD'), netconf(a.runDir));
    t.equal(r.code, 0, `${form}: ${r.stderr}`);
    t.equal(r.stdout, JSON.stringify(PREV), form);
  }
  t.equal(a.adds.length, 2);
});

t.test('ADD in an excluded namespace passes at once without contacting the agent', async (t) => {
  const silent = await silentAgent(t);
  for (const ns of ['kube-system', 'monitoring']) {
    const r = await runPlugin(
      'exe',
      env('ADD', { CNI_ARGS: `K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=x` }),
      netconf(silent.runDir),
    );
    t.equal(r.code, 0, ns);
    t.equal(r.stdout, JSON.stringify(PREV), ns);
    // Contacting the silent agent would have taken the full 5 s timeout.
    t.ok(r.ms < 4_000, `${ns}: returned in ${r.ms.toFixed(0)} ms`);
  }
  t.equal(silent.connections(), 0, 'no connection to the agent');
});

t.test('ADD fails closed when the agent is down, naming the socket', async (t) => {
  const runDir = tempDir(t);
  const r = await runPlugin('exe', env('ADD'), netconf(runDir));
  t.equal(r.code, 1);
  const e = cniError(r.stdout);
  t.equal(e.code, 11, 'try again later');
  t.equal(e.cniVersion, '1.0.0');
  t.match(
    e.msg,
    `cannot reach the ambient node agent at ${join(runDir, 'pluginevent.sock')}: the socket does not exist`,
  );
  t.match(e.details, /pod sandbox is not created/);

  // A socket file left by a dead agent: nothing listens.
  const dead = createServer();
  const deadDir = tempDir(t);
  await new Promise<void>((res) => dead.listen(join(deadDir, 'live.sock'), res));
  renameSync(join(deadDir, 'live.sock'), join(deadDir, 'pluginevent.sock'));
  await new Promise<void>((res) => dead.close(() => res()));
  const r2 = await runPlugin('exe', env('ADD'), netconf(deadDir));
  t.equal(r2.code, 1);
  t.match(cniError(r2.stdout), { code: 11, msg: /nothing is listening on the socket \(ECONNREFUSED\)/ });
});

t.test("ADD fails with the agent's message when it cannot enrol the pod", async (t) => {
  const a = await agent(t, {
    add: async () => {
      throw new Error('applying redirection in /var/run/netns/cni-1: iptables-restore exited with status 4');
    },
  });
  const r = await runPlugin('exe', env('ADD'), netconf(a.runDir));
  t.equal(r.code, 1);
  const e = cniError(r.stdout);
  t.equal(e.code, 101);
  t.match(
    e.msg,
    /failed to handle pod shop\/cart \(HTTP 500\): applying redirection .*iptables-restore exited with status 4/,
  );
});

t.test('ADD fails when the agent refuses the event or is not ready', async (t) => {
  const a = await agent(t, {
    add: async () => {
      throw new AgentNotReadyError('pod informer not synced');
    },
  });
  const r = await runPlugin('exe', env('ADD'), netconf(a.runDir));
  t.match(cniError(r.stdout), { code: 11, msg: /is not ready for pod shop\/cart: pod informer not synced/ });
});

t.test('ADD gives up on a silent agent after 5 s and fails closed', async (t) => {
  const silent = await silentAgent(t);
  const r = await runPlugin('exe', env('ADD'), netconf(silent.runDir));
  t.equal(r.code, 1);
  t.match(cniError(r.stdout), { code: 11, msg: /no answer to POST \/cmdadd within 5000 ms/ });
  t.ok(r.ms >= 4_900, `waited ${r.ms.toFixed(0)} ms`);
  t.equal(silent.connections(), 1);
});

t.test('ADD for a netns that vanished, or a path that is no netns, fails without enrolling', async (t) => {
  const a = await agent(t);
  const gone = `/var/run/netns/ambient-test-gone-${process.pid}`;
  const r = await runPlugin('exe', env('ADD', { CNI_NETNS: gone }), netconf(a.runDir));
  t.equal(r.code, 1);
  t.match(cniError(r.stdout), {
    code: 103,
    msg: `the pod's network namespace ${gone} (CNI_NETNS) does not exist`,
  });
  const file = join(tempDir(t), 'not-a-netns');
  writeFileSync(file, '');
  const r2 = await runPlugin('exe', env('ADD', { CNI_NETNS: file }), netconf(a.runDir));
  t.match(cniError(r2.stdout), {
    code: 103,
    msg: /is not a network namespace \(filesystem type 0x[0-9a-f]+, expected nsfs\)/,
  });
  t.equal(a.adds.length, 0, 'the agent was asked nothing');
});

t.test('DEL succeeds with the agent down or silent, and tells it when it is up', async (t) => {
  const down = await runPlugin('exe', env('DEL', { CNI_NETNS: '' }), netconf(tempDir(t)));
  t.same({ code: down.code, stdout: down.stdout }, { code: 0, stdout: '' });

  const silent = await silentAgent(t);
  const hung = await runPlugin('exe', env('DEL'), netconf(silent.runDir));
  t.same({ code: hung.code, stdout: hung.stdout }, { code: 0, stdout: '' });
  t.ok(hung.ms < 4_000, `a silent agent holds DEL for its 1 s only (${hung.ms.toFixed(0)} ms)`);

  const a = await agent(t);
  const up = await runPlugin('exe', env('DEL'), netconf(a.runDir, { prevResult: undefined }));
  t.same({ code: up.code, stdout: up.stdout }, { code: 0, stdout: '' });
  t.same(a.dels, [
    {
      podName: 'cart',
      podNamespace: 'shop',
      podUid: '4e3f-77',
      containerId: 'sandbox-0123',
      ifName: 'eth0',
      netns: NETNS,
    },
  ]);
});

t.test("CHECK: passes when the agent confirms, fails with the agent's reason otherwise", async (t) => {
  const good = await agent(t);
  const ok = await runPlugin('exe', env('CHECK'), netconf(good.runDir));
  t.same({ code: ok.code, stdout: ok.stdout }, { code: 0, stdout: '' });
  const bad = await agent(t, {
    check: async () => ({ ok: false, reason: 'no redirection rules in the netns' }),
  });
  const r = await runPlugin('exe', env('CHECK'), netconf(bad.runDir));
  t.equal(r.code, 1);
  t.match(cniError(r.stdout), {
    code: 104,
    msg: /not set up as expected: no redirection rules in the netns/,
  });
  const down = await runPlugin('exe', env('CHECK'), netconf(tempDir(t)));
  t.match(cniError(down.stdout), { code: 11 });
});

t.test('NODE_OPTIONS in the runtime environment does not reach the executable', async (t) => {
  const r = await runPlugin(
    'exe',
    { CNI_COMMAND: 'VERSION', NODE_OPTIONS: '--require /nonexistent/hook.js' },
    '',
  );
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /supportedVersions/);
});

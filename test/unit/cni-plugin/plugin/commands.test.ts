// SPDX-License-Identifier: Apache-2.0
// The plugin's command logic (cni-plugin/src/plugin/commands.ts) with a recording fake agent:
// what goes to stdout (only the result or the CNI error object), the exit status, what the agent
// is sent, and the fail-closed mapping of every agent answer to a CNI error
// (spec ambient-protocols.md §2.1 step 2; checklist D.57, D.58, D.61, D.62).
import t from 'tap';
import { PassThrough } from 'node:stream';
import type { AgentAnswer } from '../../../../cni-plugin/src/plugin/agent-client.ts';
import { CNI_CODES, CniPluginError } from '../../../../cni-plugin/src/plugin/cni.ts';
import { runPlugin } from '../../../../cni-plugin/src/plugin/commands.ts';
import type { PluginDeps } from '../../../../cni-plugin/src/plugin/commands.ts';

const PREV = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/cni-1' }],
  ips: [{ address: '198.18.0.5/24', gateway: '198.18.0.1', interface: 0 }],
  dns: {},
};

const ENV = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'sandbox1',
  CNI_NETNS: '/var/run/netns/cni-1',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart;K8S_POD_UID=u-1',
  CNI_PATH: '/opt/cni/bin',
};

function stdin(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'net',
    type: 'ambient-cni',
    cni_agent_run_dir: '/run/agent',
    prevResult: PREV,
    ...extra,
  });
}

interface Call {
  socket: string;
  path: string;
  body: unknown;
  timeoutMs: number;
}

function fakeDeps(
  answer: AgentAnswer | Error | ((path: string) => AgentAnswer),
  netnsError?: CniPluginError,
) {
  const calls: Call[] = [];
  const logs = new PassThrough();
  let logText = '';
  logs.on('data', (b: Buffer) => (logText += b.toString()));
  const deps: PluginDeps = {
    post: async (socket, path, body, timeoutMs) => {
      calls.push({ socket, path, body, timeoutMs });
      if (answer instanceof Error) throw answer;
      return typeof answer === 'function' ? answer(path) : answer;
    },
    assertNetns: () => {
      if (netnsError) throw netnsError;
    },
    logDestination: logs,
  };
  return { deps, calls, log: () => logText };
}

const enrolled: AgentAnswer = { status: 200, body: '{"enrolled":true,"reason":"namespace label"}' };

t.test('VERSION: supported versions, nothing read from stdin, no agent', async (t) => {
  const { deps, calls } = fakeDeps(enrolled);
  const out = await runPlugin({ CNI_COMMAND: 'VERSION' }, 'garbage', deps);
  t.same(out.exitCode, 0);
  t.same(JSON.parse(out.stdout), {
    cniVersion: '1.0.0',
    supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'],
  });
  t.equal(calls.length, 0);
});

t.test('ADD: the agent gets the pod, the runtime gets prevResult unchanged', async (t) => {
  const { deps, calls, log } = fakeDeps(enrolled);
  const out = await runPlugin(ENV, stdin(), deps);
  t.equal(out.exitCode, 0);
  t.equal(out.stdout, JSON.stringify(PREV), 'prevResult, byte for byte as JSON.stringify writes it');
  t.same(calls, [
    {
      socket: '/run/agent/pluginevent.sock',
      path: '/cmdadd',
      timeoutMs: 5000,
      body: {
        netns: '/var/run/netns/cni-1',
        podName: 'cart',
        podNamespace: 'shop',
        podUid: 'u-1',
        containerId: 'sandbox1',
        ifName: 'eth0',
        ips: PREV.ips,
      },
    },
  ]);
  t.match(log(), /"enrolled":true,"reason":"namespace label","message":"pod enrolled in the mesh"/);
  t.notMatch(out.stdout, /level/, 'no log line on stdout');
});

t.test('ADD: a pod the agent says is not in the mesh starts as well', async (t) => {
  const { deps } = fakeDeps({ status: 200, body: '{"enrolled":false,"reason":"no dataplane-mode label"}' });
  const out = await runPlugin(ENV, stdin(), deps);
  t.equal(out.exitCode, 0);
  t.equal(out.stdout, JSON.stringify(PREV));
});

t.test('ADD: excluded namespaces and non-pods pass through without asking the agent', async (t) => {
  for (const [args, extra] of [
    ['K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns', {}],
    ['K8S_POD_NAMESPACE=monitoring;K8S_POD_NAME=prom', { exclude_namespaces: ['monitoring'] }],
    ['IgnoreUnknown=1', {}],
  ] as const) {
    const { deps, calls } = fakeDeps(
      new Error('must not be called'),
      new CniPluginError(103, 'must not be checked'),
    );
    const out = await runPlugin({ ...ENV, CNI_ARGS: args }, stdin(extra), deps);
    t.equal(out.exitCode, 0, args);
    t.equal(out.stdout, JSON.stringify(PREV), args);
    t.equal(calls.length, 0, `${args}: agent not contacted`);
  }
});

t.test('ADD fails closed with a CNI error for every agent answer but 200 {enrolled}', async (t) => {
  const cases: [AgentAnswer | Error, number, RegExp][] = [
    [
      new CniPluginError(
        CNI_CODES.tryAgainLater,
        'cannot reach the ambient node agent at /run/agent/pluginevent.sock',
      ),
      11,
      /cannot reach/,
    ],
    [
      { status: 500, body: '{"error":"iptables-restore: xtables lock held"}' },
      101,
      /failed to handle pod shop\/cart \(HTTP 500\): iptables-restore: xtables lock held/,
    ],
    [{ status: 500, body: 'plain text trouble' }, 101, /plain text trouble/],
    [{ status: 502, body: '' }, 101, /HTTP 502 with an empty body/],
    [
      { status: 503, body: '{"error":"pod cache not synced"}' },
      11,
      /is not ready for pod shop\/cart: pod cache not synced/,
    ],
    [
      { status: 400, body: '{"error":"invalid /cmdadd body: podUid: unknown field"}' },
      100,
      /refused POST \/cmdadd .*unknown field/,
    ],
    [{ status: 404, body: '{"error":"no handler"}' }, 100, /HTTP 404/],
    [{ status: 200, body: 'not json' }, 102, /with 200 but not \{"enrolled": boolean\}: not json/],
    [{ status: 200, body: '{"enrolled":"yes"}' }, 102, /but not/],
    [{ status: 200, body: '{"enrolled":true,"reason":7}' }, 102, /but not/],
  ];
  for (const [answer, code, msg] of cases) {
    const { deps } = fakeDeps(answer);
    const out = await runPlugin(ENV, stdin(), deps);
    t.equal(out.exitCode, 1, msg.source);
    const err = JSON.parse(out.stdout) as { cniVersion: string; code: number; msg: string; details?: string };
    t.equal(err.cniVersion, '1.0.0');
    t.equal(err.code, code, msg.source);
    t.match(err.msg, msg);
    t.equal(Object.keys(err).filter((k) => !['cniVersion', 'code', 'msg', 'details'].includes(k)).length, 0);
  }
});

t.test('ADD: a vanished netns fails before the agent is asked', async (t) => {
  const gone = new CniPluginError(
    CNI_CODES.netnsNotFound,
    "the pod's network namespace /x (CNI_NETNS) does not exist",
  );
  const { deps, calls } = fakeDeps(enrolled, gone);
  const out = await runPlugin(ENV, stdin(), deps);
  t.equal(out.exitCode, 1);
  t.match(JSON.parse(out.stdout), { code: 103, msg: /does not exist/ });
  t.equal(calls.length, 0, 'nothing to enrol, nothing sent');
});

t.test('ADD and CHECK need prevResult; config errors use the config version', async (t) => {
  for (const cmd of ['ADD', 'CHECK']) {
    const { deps } = fakeDeps(enrolled);
    const out = await runPlugin(
      { ...ENV, CNI_COMMAND: cmd },
      stdin({ prevResult: undefined, cniVersion: '0.4.0' }),
      deps,
    );
    t.equal(out.exitCode, 1);
    t.match(JSON.parse(out.stdout), {
      cniVersion: '0.4.0',
      code: 7,
      msg: new RegExp(`no prevResult in ${cmd}`),
    });
  }
  const { deps } = fakeDeps(enrolled);
  const out = await runPlugin({ ...ENV, CNI_COMMAND: 'ADD' }, 'x'.repeat(1024 * 1024 + 1), deps);
  t.match(JSON.parse(out.stdout), { code: 6, msg: /larger than/ });
});

t.test('CHECK: asks the agent; fails when it says no or cannot be asked', async (t) => {
  const env = { ...ENV, CNI_COMMAND: 'CHECK' };
  const good = fakeDeps({ status: 200, body: '{"ok":true}' });
  const out = await runPlugin(env, stdin(), good.deps);
  t.same(out, { stdout: '', exitCode: 0 }, 'CHECK prints nothing on success');
  t.equal(good.calls[0]?.path, '/cmdcheck');

  const bad = fakeDeps({ status: 200, body: '{"ok":false,"reason":"redirection rules missing"}' });
  t.match(JSON.parse((await runPlugin(env, stdin(), bad.deps)).stdout), {
    code: 104,
    msg: /not set up as expected: redirection rules missing/,
  });
  const down = fakeDeps(new CniPluginError(CNI_CODES.tryAgainLater, 'cannot reach'));
  t.match(JSON.parse((await runPlugin(env, stdin(), down.deps)).stdout), { code: 11 });
  const none = fakeDeps({ status: 404, body: '{"error":"no handler for /cmdcheck"}' });
  t.match(JSON.parse((await runPlugin(env, stdin(), none.deps)).stdout), { code: 100, msg: /no handler/ });

  const excluded = fakeDeps(new Error('must not be called'));
  const skip = await runPlugin(
    { ...env, CNI_ARGS: 'K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=x' },
    stdin(),
    excluded.deps,
  );
  t.same(skip, { stdout: '', exitCode: 0 });
  t.equal(excluded.calls.length, 0);

  const old = fakeDeps(enrolled);
  t.match(JSON.parse((await runPlugin(env, stdin({ cniVersion: '0.3.1' }), old.deps)).stdout), {
    code: 1,
    msg: /CHECK is not defined for cniVersion 0.3.1/,
  });
});

t.test('DEL always succeeds: agent told best-effort, down agent or bad input tolerated', async (t) => {
  const env = { ...ENV, CNI_COMMAND: 'DEL', CNI_NETNS: '' };
  const ok = fakeDeps({ status: 200, body: '{}' });
  t.same(await runPlugin(env, stdin({ prevResult: undefined }), ok.deps), { stdout: '', exitCode: 0 });
  t.same(ok.calls, [
    {
      socket: '/run/agent/pluginevent.sock',
      path: '/cmddel',
      timeoutMs: 1000,
      body: { podName: 'cart', podNamespace: 'shop', podUid: 'u-1', containerId: 'sandbox1', ifName: 'eth0' },
    },
  ]);

  const down = fakeDeps(new CniPluginError(CNI_CODES.tryAgainLater, 'cannot reach the ambient node agent'));
  t.same(await runPlugin(env, stdin(), down.deps), { stdout: '', exitCode: 0 });
  t.match(down.log(), /learns of the deletion from its pod watch/);

  const failing = fakeDeps({ status: 500, body: '{"error":"x"}' });
  t.same(await runPlugin(env, stdin(), failing.deps), { stdout: '', exitCode: 0 });
  t.match(failing.log(), /agent did not accept DEL/);

  for (const [s, e] of [
    ['not json', env],
    [stdin({ cniVersion: '9.9.9' }), env],
    [stdin(), { ...env, CNI_CONTAINERID: '' }],
  ] as const) {
    const d = fakeDeps(new Error('must not be called'));
    t.same(await runPlugin(e, s, d.deps), { stdout: '', exitCode: 0 });
    t.equal(d.calls.length, 0);
    t.match(d.log(), /DEL with an unusable configuration or environment/);
  }
  const excluded = fakeDeps(new Error('must not be called'));
  await runPlugin(
    { ...env, CNI_ARGS: 'K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=x' },
    stdin(),
    excluded.deps,
  );
  t.equal(excluded.calls.length, 0);
});

t.test('errors: unknown command, bad env, a plugin bug is code 999', async (t) => {
  const { deps } = fakeDeps(enrolled);
  t.match(JSON.parse((await runPlugin({}, '', deps)).stdout), { cniVersion: '1.0.0', code: 4 });
  t.match(JSON.parse((await runPlugin({ ...ENV, CNI_IFNAME: '' }, stdin(), deps)).stdout), {
    code: 4,
    msg: /CNI_IFNAME/,
  });
  const bug = fakeDeps(enrolled);
  bug.deps.assertNetns = () => {
    throw new TypeError('boom');
  };
  const out = await runPlugin(ENV, stdin(), bug.deps);
  t.equal(out.exitCode, 1);
  t.match(JSON.parse(out.stdout), { code: 999, msg: /internal error in the ambient CNI plugin: boom/ });
  t.match(bug.log(), /"level":"error"/, 'the bug is logged with its stack');
});

t.test('log_level silences the log destination', async (t) => {
  const { deps, log } = fakeDeps(enrolled);
  await runPlugin(ENV, stdin({ log_level: 'silent' }), deps);
  t.equal(log(), '');
});

// SPDX-License-Identifier: Apache-2.0
// Strict parsing of a CNI invocation (cni-plugin/src/plugin/config.ts): CNI_COMMAND, the CNI_*
// environment and CNI_ARGS, the network configuration with our keys, prevResult. Every refusal
// carries the CNI SPEC.md code and names the variable or key and the value.
import t from 'tap';
import { CniPluginError } from '../../../../cni-plugin/src/plugin/cni.ts';
import {
  parseCniArgs,
  parseCommand,
  parseEnv,
  parseNetConf,
  parsePrevResult,
} from '../../../../cni-plugin/src/plugin/config.ts';

const PREV = {
  cniVersion: '1.0.0',
  ips: [{ address: '198.18.0.5/24', gateway: '198.18.0.1', interface: 2 }],
};

function conf(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'k8s-pod-network',
    type: 'ambient-cni',
    prevResult: PREV,
    ...extra,
  });
}

function codeOf(fn: () => unknown): { code: number; msg: string } | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof CniPluginError) return { code: e.cniCode, msg: e.message };
    throw e;
  }
  return undefined;
}

const ENV = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'c0ffee',
  CNI_NETNS: '/var/run/netns/cni-1',
  CNI_IFNAME: 'eth0',
  CNI_ARGS:
    'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7d9;K8S_POD_UID=8f2c-11;K8S_POD_INFRA_CONTAINER_ID=c0ffee',
  CNI_PATH: '/opt/cni/bin',
};

t.test('CNI_COMMAND: the four commands; missing or unknown is code 4 naming it', async (t) => {
  for (const c of ['ADD', 'DEL', 'CHECK', 'VERSION']) t.equal(parseCommand({ CNI_COMMAND: c }), c);
  t.match(
    codeOf(() => parseCommand({})),
    { code: 4, msg: /CNI_COMMAND is not set/ },
  );
  t.match(
    codeOf(() => parseCommand({ CNI_COMMAND: 'GC' })),
    { code: 4, msg: /unknown CNI_COMMAND "GC"/ },
  );
  t.match(
    codeOf(() => parseCommand({ CNI_COMMAND: 'add' })),
    { code: 4 },
    'case matters',
  );
});

t.test('CNI_ARGS: KEY=VALUE pairs; malformed or duplicated pairs are refused', async (t) => {
  t.same(
    [...parseCniArgs('A=1;B=2')],
    [
      ['A', '1'],
      ['B', '2'],
    ],
  );
  t.same([...parseCniArgs('')], []);
  t.same([...parseCniArgs(undefined)], []);
  t.match(
    codeOf(() => parseCniArgs('A=1;B')),
    { code: 4, msg: /malformed pair "B"/ },
  );
  t.match(
    codeOf(() => parseCniArgs('A=1=2')),
    { code: 4, msg: /malformed pair/ },
  );
  t.match(
    codeOf(() => parseCniArgs('=1')),
    { code: 4, msg: /malformed pair/ },
  );
  t.match(
    codeOf(() => parseCniArgs('K8S_POD_NAME=a;K8S_POD_NAME=b')),
    { code: 4, msg: /sets K8S_POD_NAME twice/ },
  );
  t.equal(parseCniArgs('A=1;A=2').get('A'), '2', 'keys we do not read: the last one wins');
});

t.test('environment of ADD: container id, netns, ifname, pod from CNI_ARGS', async (t) => {
  t.same(parseEnv('ADD', ENV), {
    containerId: 'c0ffee',
    netns: '/var/run/netns/cni-1',
    ifName: 'eth0',
    pod: { namespace: 'shop', name: 'cart-7d9', uid: '8f2c-11' },
  });
  const noUid = parseEnv('ADD', { ...ENV, CNI_ARGS: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart' });
  t.same(noUid.pod, { namespace: 'shop', name: 'cart' }, 'UID is optional');
  t.equal(parseEnv('ADD', { ...ENV, CNI_ARGS: 'IgnoreUnknown=1' }).pod, undefined, 'no K8S_POD_*: not a pod');
  t.equal(parseEnv('ADD', { ...ENV, CNI_ARGS: undefined }).pod, undefined);
});

t.test('environment refusals name the variable (code 4)', async (t) => {
  const cases: [Record<string, string | undefined>, RegExp][] = [
    [{ CNI_CONTAINERID: undefined }, /CNI_CONTAINERID is not set/],
    [{ CNI_CONTAINERID: '-x' }, /CNI_CONTAINERID="-x" is invalid/],
    [{ CNI_CONTAINERID: 'a b' }, /CNI_CONTAINERID/],
    [{ CNI_IFNAME: '' }, /CNI_IFNAME is not set/],
    [{ CNI_IFNAME: 'a-very-long-ifname' }, /CNI_IFNAME="a-very-long-ifname" is not a valid interface name/],
    [{ CNI_IFNAME: 'eth/0' }, /CNI_IFNAME/],
    [{ CNI_IFNAME: '..' }, /CNI_IFNAME/],
    [{ CNI_NETNS: '' }, /CNI_NETNS is not set; ADD needs/],
    [{ CNI_NETNS: 'netns/x' }, /CNI_NETNS="netns\/x" is not an absolute path/],
    [{ CNI_NETNS: '/x\0y' }, /CNI_NETNS/],
    [{ CNI_ARGS: 'K8S_POD_NAME=a' }, /has K8S_POD_NAME but not K8S_POD_NAMESPACE/],
    [{ CNI_ARGS: 'K8S_POD_NAMESPACE=a' }, /has K8S_POD_NAMESPACE but not K8S_POD_NAME/],
    [
      { CNI_ARGS: 'K8S_POD_NAMESPACE=Shop;K8S_POD_NAME=a' },
      /K8S_POD_NAMESPACE="Shop" is not a valid namespace/,
    ],
    [{ CNI_ARGS: `K8S_POD_NAMESPACE=${'a'.repeat(64)};K8S_POD_NAME=a` }, /K8S_POD_NAMESPACE/],
    [{ CNI_ARGS: 'K8S_POD_NAMESPACE=a;K8S_POD_NAME=a_b' }, /K8S_POD_NAME="a_b" is not a valid pod name/],
    [{ CNI_ARGS: 'K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;K8S_POD_UID=x y' }, /K8S_POD_UID/],
  ];
  for (const [change, msg] of cases) {
    t.match(
      codeOf(() => parseEnv('ADD', { ...ENV, ...change })),
      { code: 4, msg },
      JSON.stringify(change),
    );
  }
});

t.test('DEL may come without CNI_NETNS; CHECK may not', async (t) => {
  t.equal(parseEnv('DEL', { ...ENV, CNI_NETNS: '' }).netns, undefined);
  t.equal(parseEnv('DEL', { ...ENV, CNI_NETNS: undefined }).netns, undefined);
  t.match(
    codeOf(() => parseEnv('CHECK', { ...ENV, CNI_NETNS: '' })),
    { code: 4, msg: /CHECK needs/ },
  );
});

t.test('network configuration: defaults, our keys, runtime keys', async (t) => {
  const c = parseNetConf(conf());
  t.equal(c.cniVersion, '1.0.0');
  t.equal(c.name, 'k8s-pod-network');
  t.equal(c.type, 'ambient-cni');
  t.equal(c.agentSocket, '/var/run/ambient-mesh/pluginevent.sock');
  t.same([...c.excludeNamespaces], ['kube-system']);
  t.equal(c.logLevel, 'info');
  t.same(c.prevResult, { raw: PREV, ips: PREV.ips });

  const d = parseNetConf(
    conf({
      cni_agent_run_dir: '/run/agent/',
      exclude_namespaces: ['istio-system', 'monitoring'],
      log_level: 'debug',
      args: { cni: { labels: ['x'] } },
      runtimeConfig: { portMappings: [] },
      capabilities: { portMappings: true },
    }),
  );
  t.equal(d.agentSocket, '/run/agent/pluginevent.sock', 'trailing slash handled');
  t.same(
    [...d.excludeNamespaces].sort(),
    ['istio-system', 'kube-system', 'monitoring'],
    'kube-system always in',
  );
  t.equal(d.logLevel, 'debug');
  t.equal(parseNetConf(conf({ prevResult: undefined })).prevResult, undefined, 'prevResult optional here');
  for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0'])
    t.equal(parseNetConf(conf({ cniVersion: v })).cniVersion, v);
});

t.test('network configuration refusals carry the spec code and name the key', async (t) => {
  const cases: [string, number, RegExp][] = [
    ['{', 6, /not JSON/],
    ['[]', 7, /must be a JSON object/],
    [conf({ cniVersion: undefined }), 7, /cniVersion must be a string/],
    [
      conf({ cniVersion: '1.1.0' }),
      1,
      /incompatible CNI version: config is "1.1.0", plugin supports 0.3.0, 0.3.1, 0.4.0, 1.0.0/,
    ],
    [conf({ cniVersion: '0.2.0' }), 1, /incompatible/],
    [conf({ exclude_namespace: ['a'] }), 2, /unsupported field "exclude_namespace"=\["a"\]/],
    [conf({ kubeconfig: '/etc/k' }), 2, /unsupported field "kubeconfig"/],
    [conf({ name: '' }), 7, /name must be a network name/],
    [conf({ name: '-x' }), 7, /name must be/],
    [conf({ type: 5 }), 7, /type must be/],
    [conf({ cni_agent_run_dir: 'run/x' }), 7, /cni_agent_run_dir must be an absolute path, got "run\/x"/],
    [
      conf({ cni_agent_run_dir: `/${'d'.repeat(100)}` }),
      7,
      /too long: the socket path .* must fit in 107 bytes/,
    ],
    [conf({ exclude_namespaces: 'kube-system' }), 7, /exclude_namespaces must be a list/],
    [
      conf({ exclude_namespaces: ['ok', 'Not_OK'] }),
      7,
      /exclude_namespaces\[1\] "Not_OK" is not a namespace name/,
    ],
    [
      conf({ log_level: 'verbose' }),
      7,
      /log_level must be one of trace, debug, info, warn, error, fatal, silent, got "verbose"/,
    ],
    [conf({ prevResult: [] }), 7, /prevResult must be a CNI result object/],
  ];
  for (const [text, code, msg] of cases)
    t.match(
      codeOf(() => parseNetConf(text)),
      { code, msg },
      text,
    );
});

t.test('prevResult: addresses read strictly, everything else kept as is', async (t) => {
  const raw = {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x', mac: '02:00:00:00:00:01' }],
    ips: [{ address: 'fd00::5/64', interface: 0 }, { address: '198.18.0.5/24' }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
    vendorExtension: { anything: [1, 2, 3] },
  };
  const p = parsePrevResult(raw);
  t.equal(p.raw, raw, 'the very object: passed through untouched');
  t.same(p.ips, [{ address: 'fd00::5/64', interface: 0 }, { address: '198.18.0.5/24' }]);
  t.same(parsePrevResult({ cniVersion: '1.0.0' }).ips, [], 'no ips: empty list');

  const bad: [unknown, RegExp][] = [
    [{ ips: {} }, /prevResult.ips must be a list/],
    [{ ips: ['198.18.0.5/24'] }, /prevResult.ips\[0\] must be an object/],
    [
      { ips: [{ address: '198.18.0.5' }] },
      /prevResult.ips\[0\].address "198.18.0.5" is not an address with a prefix/,
    ],
    [{ ips: [{ address: '198.18.0.5/33' }] }, /address/],
    [{ ips: [{ address: '198.18.0.300/24' }] }, /address/],
    [{ ips: [{ address: 'fd00::5/129' }] }, /address/],
    [{ ips: [{ address: '198.18.0.5/024' }] }, /address/],
    [{ ips: [{ address: '198.18.0.5/24', gateway: 'gw' }] }, /gateway "gw" is not an IP address/],
    [{ ips: [{ address: '198.18.0.5/24', interface: -1 }] }, /interface -1 is not an index/],
    [{ ips: [{ address: '198.18.0.5/24', interface: 1.5 }] }, /interface 1.5/],
  ];
  for (const [v, msg] of bad)
    t.match(
      codeOf(() => parsePrevResult(v)),
      { code: 7, msg },
      JSON.stringify(v),
    );
});

// SPDX-License-Identifier: Apache-2.0
// Installing the plugin into a node's CNI directories (cni-plugin/src/install/) on temporary
// directories holding real configurations: the bridge conflist of the CNI docs, a single-plugin
// .conf, several files (the runtime's choice: first by name), malformed and unsupported ones.
// Uninstall leaves the node's config byte-for-byte as it was. The watcher puts our entry back
// when the primary plugin rewrites its config. The installed entry is one the built plugin
// accepts: the installed binary is run with it.
import t from 'tap';
import type { Test } from 'tap';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Logger } from '../../../src/shared/telemetry/logger.ts';
import {
  findPrimaryConfig,
  installPlugin,
  uninstallPlugin,
} from '../../../cni-plugin/src/install/install.ts';
import { watchPluginConfig } from '../../../cni-plugin/src/install/watch.ts';
import { buildPlugin, PLUGIN_EXE } from './plugin-binary.ts';
import { spawnCollect } from '../../../cni-plugin/src/redirect/exec.ts';

const BRIDGE = `{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "ipam": {
        "type": "host-local",
        "subnet": "10.88.0.0/16",
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    {
      "type": "portmap",
      "capabilities": { "portMappings": true }
    }
  ]
}
`;

const SINGLE_CONF = `{
\t"cniVersion": "0.4.0",
\t"name": "podnet",
\t"type": "bridge",
\t"bridge": "cbr0",
\t"ipam": {"type": "host-local", "subnet": "10.244.1.0/24"}
}`;

const PLUGIN_CONFIG = { cni_agent_run_dir: '/var/run/ambient-mesh', exclude_namespaces: ['istio-system'] };

interface Node {
  bin: string;
  conf: string;
  source: string;
}

function node(t: Test, files: Record<string, string> = {}): Node {
  const dir = mkdtempSync(join(tmpdir(), 'cni-install-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, 'opt/cni/bin');
  const conf = join(dir, 'etc/cni/net.d');
  mkdirSync(bin, { recursive: true });
  mkdirSync(conf, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(conf, name), text, { mode: 0o644 });
  const source = join(dir, 'ambient-cni-build');
  writeFileSync(source, '#!/bin/sh\necho fake plugin\n', { mode: 0o600 });
  return { bin, conf, source };
}

function opts(n: Node) {
  return { cniBinDir: n.bin, cniConfDir: n.conf, binarySource: n.source, pluginConfig: PLUGIN_CONFIG };
}

function read(n: Node, name: string): string {
  return readFileSync(join(n.conf, name), 'utf8');
}

function pluginTypes(text: string): string[] {
  return (JSON.parse(text) as { plugins: { type: string }[] }).plugins.map((p) => p.type);
}

t.test('bridge conflist: binary and entry installed, idempotent, uninstall restores the bytes', async (t) => {
  const n = node(t, { '10-mynet.conflist': BRIDGE });
  const r = await installPlugin(opts(n));
  t.same(r, {
    binaryPath: join(n.bin, 'ambient-cni'),
    configPath: join(n.conf, '10-mynet.conflist'),
    changed: true,
  });
  t.equal(statSync(r.binaryPath).mode & 0o777, 0o755, 'binary 0755');
  t.equal(readFileSync(r.binaryPath, 'utf8'), readFileSync(n.source, 'utf8'));
  const installed = read(n, '10-mynet.conflist');
  t.same(pluginTypes(installed), ['bridge', 'portmap', 'ambient-cni']);
  t.same((JSON.parse(installed) as { plugins: unknown[] }).plugins[2], {
    type: 'ambient-cni',
    ...PLUGIN_CONFIG,
  });
  t.equal(statSync(join(n.conf, '10-mynet.conflist')).mode & 0o777, 0o644, 'mode kept');
  t.same(readdirSync(n.conf), ['10-mynet.conflist'], 'no temporary files left');
  t.same(readdirSync(n.bin), ['ambient-cni']);

  const mtime = statSync(join(n.conf, '10-mynet.conflist')).mtimeMs;
  await sleep(20);
  const again = await installPlugin(opts(n));
  t.equal(again.changed, false, 'second install: nothing to change');
  t.equal(read(n, '10-mynet.conflist'), installed);
  t.equal(statSync(join(n.conf, '10-mynet.conflist')).mtimeMs, mtime, 'not rewritten');

  const u = await uninstallPlugin({ cniBinDir: n.bin, cniConfDir: n.conf });
  t.same(u, { changed: [join(n.conf, '10-mynet.conflist')], restored: [], binaryRemoved: true });
  t.equal(read(n, '10-mynet.conflist'), BRIDGE, 'byte for byte as before install');
  t.same(readdirSync(n.bin), [], 'binary removed');
  t.same(await uninstallPlugin({ cniBinDir: n.bin, cniConfDir: n.conf }), {
    changed: [],
    restored: [],
    binaryRemoved: false,
  });
});

t.test('the primary config is the first file by name that holds a plugin', async (t) => {
  const other = JSON.stringify({ cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'macvlan' }] });
  const empty = JSON.stringify({ cniVersion: '1.0.0', name: 'empty', plugins: [] });
  const n = node(t, {
    '99-other.conflist': other,
    '10-mynet.conflist': BRIDGE,
    '05-empty.conflist': empty,
    '00-notes.txt': 'not a CNI file',
  });
  mkdirSync(join(n.conf, '01-dir.conf'));
  t.equal((await findPrimaryConfig(n.conf)).fileName, '10-mynet.conflist');
  await installPlugin(opts(n));
  t.same(pluginTypes(read(n, '10-mynet.conflist')), ['bridge', 'portmap', 'ambient-cni']);
  t.equal(read(n, '99-other.conflist'), other, 'other files untouched');
  t.equal(read(n, '05-empty.conflist'), empty);
  await uninstallPlugin({ cniBinDir: n.bin, cniConfDir: n.conf });
  t.equal(read(n, '10-mynet.conflist'), BRIDGE);
});

t.test('a single-plugin .conf becomes a .conflist; uninstall puts the .conf back as it was', async (t) => {
  const n = node(t, { '10-podnet.conf': SINGLE_CONF });
  chmodSync(join(n.conf, '10-podnet.conf'), 0o600);
  const r = await installPlugin(opts(n));
  t.equal(r.configPath, join(n.conf, '10-podnet.conflist'));
  t.same(readdirSync(n.conf), ['10-podnet.conflist'], 'the .conf is replaced by the list');
  t.same(pluginTypes(read(n, '10-podnet.conflist')), ['bridge', 'ambient-cni']);
  t.equal(statSync(r.configPath).mode & 0o777, 0o600, 'mode of the original kept');
  t.equal((await installPlugin(opts(n))).changed, false, 'the list is now the primary config: idempotent');

  const u = await uninstallPlugin({ cniBinDir: n.bin, cniConfDir: n.conf });
  t.same(u.restored, [join(n.conf, '10-podnet.conf')]);
  t.same(readdirSync(n.conf), ['10-podnet.conf']);
  t.equal(read(n, '10-podnet.conf'), SINGLE_CONF, 'byte for byte');
  t.equal(statSync(join(n.conf, '10-podnet.conf')).mode & 0o777, 0o600);
});

t.test('a .conf next to a list that is not ours is not converted over it', async (t) => {
  const n = node(t, { '10-podnet.conf': SINGLE_CONF, '10-podnet.conflist': BRIDGE });
  await t.rejects(installPlugin(opts(n)), {
    code: 'CNI_ERR_INSTALL_MALFORMED',
    message:
      /cannot turn 10-podnet.conf into a configuration list: 10-podnet.conflist exists and is not ours/,
  });
  t.equal(read(n, '10-podnet.conf'), SINGLE_CONF);
  t.equal(read(n, '10-podnet.conflist'), BRIDGE);
});

t.test('uninstall keeps what others added after install', async (t) => {
  const n = node(t, { '10-mynet.conflist': BRIDGE });
  await installPlugin(opts(n));
  const doc = JSON.parse(read(n, '10-mynet.conflist')) as { plugins: unknown[] };
  doc.plugins.push({ type: 'bandwidth' });
  writeFileSync(join(n.conf, '10-mynet.conflist'), JSON.stringify(doc));
  await uninstallPlugin({ cniBinDir: n.bin, cniConfDir: n.conf });
  t.same(pluginTypes(read(n, '10-mynet.conflist')), ['bridge', 'portmap', 'bandwidth']);
});

t.test('refusals: malformed, unsupported, no config, bad settings, missing binary', async (t) => {
  const broken = '{"cniVersion": "1.0.0", "name": "mynet", "plugins": [{"type": "bridge"},]}';
  const m = node(t, { '10-mynet.conflist': broken, '20-ok.conflist': BRIDGE });
  await t.rejects(installPlugin(opts(m)), {
    code: 'CNI_ERR_INSTALL_MALFORMED',
    message: /CNI config 10-mynet.conflist is not valid JSON .*left untouched/,
  });
  t.equal(read(m, '10-mynet.conflist'), broken, 'malformed file not overwritten');
  t.equal(read(m, '20-ok.conflist'), BRIDGE, 'and not skipped for the next one');

  const u = node(t, { '10-new.conflist': BRIDGE.replace('"1.0.0"', '"1.1.0"') });
  await t.rejects(installPlugin(opts(u)), {
    code: 'CNI_ERR_INSTALL_UNSUPPORTED',
    message: /cniVersion "1.1.0"/,
  });

  const none = node(t);
  await t.rejects(installPlugin(opts(none)), {
    code: 'CNI_ERR_INSTALL_NO_CONFIG',
    message: /no CNI network configuration in .* yet/,
  });

  const s = node(t, { '10-mynet.conflist': BRIDGE });
  await t.rejects(installPlugin({ ...opts(s), pluginConfig: { log_level: 'verbose' } }), {
    code: 'CNI_ERR_INSTALL_PLUGIN_CONFIG',
    message: /the plugin would refuse this configuration: log_level must be one of/,
  });
  await t.rejects(installPlugin({ ...opts(s), pluginConfig: { exclude_namespace: [] } }), {
    code: 'CNI_ERR_INSTALL_PLUGIN_CONFIG',
    message: /unsupported field "exclude_namespace"/,
  });
  await t.rejects(installPlugin({ ...opts(s), pluginConfig: { type: 'x' } }), {
    code: 'CNI_ERR_INSTALL_PLUGIN_CONFIG',
    message: /must not set "type"/,
  });
  t.equal(read(s, '10-mynet.conflist'), BRIDGE);

  await t.rejects(installPlugin({ ...opts(s), binarySource: join(s.bin, 'missing') }), {
    code: 'CNI_ERR_INSTALL_BINARY',
    message: /plugin binary .*missing cannot be installed/,
  });
  t.equal(read(s, '10-mynet.conflist'), BRIDGE, 'no entry without the binary');
});

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

t.test('the watcher puts our entry back when the primary plugin rewrites its config', async (t) => {
  const n = node(t, { '10-mynet.conflist': BRIDGE });
  await installPlugin(opts(n));
  const logs = new PassThrough();
  let logText = '';
  logs.on('data', (b: Buffer) => (logText += b.toString()));
  const w = watchPluginConfig({
    cniConfDir: n.conf,
    pluginConfig: PLUGIN_CONFIG,
    logger: new Logger({ destination: logs }),
    debounceMs: 20,
    retryMs: 100,
  });
  t.teardown(() => w.close());
  const path = join(n.conf, '10-mynet.conflist');
  const ours = () => pluginTypes(readFileSync(path, 'utf8')).includes('ambient-cni');

  // Atomic rewrite without our entry, as a primary plugin restarting would do it.
  writeFileSync(`${path}.new`, BRIDGE);
  renameSync(`${path}.new`, path);
  await until('our entry to come back after a rewrite', ours);
  t.same(pluginTypes(readFileSync(path, 'utf8')), ['bridge', 'portmap', 'ambient-cni']);

  // A non-atomic writer: first a truncated file (refused, retried), then the full one.
  writeFileSync(path, BRIDGE.slice(0, 40));
  await until('the watcher to complain about the partial file', () => /not valid JSON/.test(logText));
  writeFileSync(path, BRIDGE);
  await until('our entry to come back after a partial write', ours);
  t.match(logText, /inserted the ambient CNI plugin into the CNI config/);

  // A new primary config that sorts first gets our entry too.
  writeFileSync(join(n.conf, '05-new.conflist'), BRIDGE.replace('mynet', 'newnet'));
  await until('our entry in the new primary config', () =>
    pluginTypes(read(n, '05-new.conflist')).includes('ambient-cni'),
  );
  await w.close();

  writeFileSync(join(n.conf, '05-new.conflist'), BRIDGE);
  await sleep(300);
  t.equal(read(n, '05-new.conflist'), BRIDGE, 'closed: no more repairs');
});

t.test('the watcher refuses a directory that does not exist', async (t) => {
  t.throws(
    () =>
      watchPluginConfig({
        cniConfDir: join(tmpdir(), `no-such-dir-${process.pid}`),
        pluginConfig: PLUGIN_CONFIG,
        logger: new Logger({ destination: new PassThrough().resume() }),
      }),
    { code: 'CNI_ERR_INSTALL_WATCH', message: /cannot watch CNI config directory/ },
  );
});

t.test('the installed binary accepts the installed entry', async (t) => {
  await buildPlugin();
  const n = node(t, { '10-mynet.conflist': BRIDGE });
  const r = await installPlugin({ ...opts(n), binarySource: PLUGIN_EXE });
  t.ok(existsSync(r.binaryPath));
  const list = JSON.parse(read(n, '10-mynet.conflist')) as {
    cniVersion: string;
    name: string;
    plugins: unknown[];
  };
  const entry = list.plugins[2] as Record<string, unknown>;
  // Chained as a runtime does: name and cniVersion from the list, prevResult of the chain; an
  // excluded namespace, so no agent is needed for a complete ADD.
  const prevResult = { cniVersion: '1.0.0', ips: [{ address: '10.88.0.5/16' }] };
  const run = await spawnCollect(r.binaryPath, [], {
    env: {
      PATH: '/usr/bin:/bin',
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'abc',
      CNI_NETNS: `/proc/${process.pid}/ns/net`,
      CNI_IFNAME: 'eth0',
      CNI_ARGS: 'K8S_POD_NAMESPACE=istio-system;K8S_POD_NAME=istiod-1',
    },
    input: JSON.stringify({ ...entry, cniVersion: list.cniVersion, name: list.name, prevResult }),
    timeoutMs: 20_000,
  });
  t.equal(run.code, 0, run.stdout + run.stderr);
  t.same(JSON.parse(run.stdout), prevResult);
  await uninstallPlugin({ cniBinDir: n.bin, cniConfDir: n.conf });
  t.equal(read(n, '10-mynet.conflist'), BRIDGE);
});

// SPDX-License-Identifier: Apache-2.0
// The test bed's CNI runtime (test/helpers/cni-runtime.ts) against fake plugins that record what
// they were given: chaining per the CNI 1.0.0 spec (name/cniVersion injected, prevResult passed
// along, DEL in reverse order with the cached result), the CNI_* environment, error reporting and
// the undo of a partial ADD. Needs no network; lives with the test bed it supports.
import t from 'tap';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cniAdd, cniDel, CniError, findCniBinDir } from '../../helpers/cni-runtime.ts';
import type { CniConflist } from '../../helpers/cni-runtime.ts';
import { NODE_BIN } from '../../helpers/testbed-apps.ts';

// A plugin that logs "<COMMAND> <type>" and its stdin/env, and on ADD returns prevResult plus one
// interface named after itself. The `fail` key in its config makes it fail with a CNI error.
const PLUGIN = `#!${NODE_BIN}
const fs = require('node:fs');
const path = require('node:path');
const dir = path.dirname(process.argv[1]);
const type = path.basename(process.argv[1]);
const conf = JSON.parse(fs.readFileSync(0, 'utf8'));
const e = process.env;
fs.appendFileSync(path.join(dir, 'calls.log'), e.CNI_COMMAND + ' ' + type + '\\n');
fs.writeFileSync(path.join(dir, e.CNI_COMMAND + '-' + type + '.json'), JSON.stringify({ conf, env: {
  CNI_COMMAND: e.CNI_COMMAND, CNI_CONTAINERID: e.CNI_CONTAINERID, CNI_NETNS: e.CNI_NETNS,
  CNI_IFNAME: e.CNI_IFNAME, CNI_ARGS: e.CNI_ARGS, CNI_PATH: e.CNI_PATH } }));
if (conf.fail && e.CNI_COMMAND === 'ADD') {
  process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', code: 7, msg: 'boom', details: 'from ' + type }));
  process.exit(1);
}
if (e.CNI_COMMAND === 'ADD') {
  const prev = conf.prevResult || { cniVersion: conf.cniVersion, interfaces: [], ips: [] };
  prev.interfaces = [...(prev.interfaces || []), { name: type }];
  if (!conf.prevResult) prev.ips = [{ address: '198.18.200.2/24', interface: 0 }];
  process.stdout.write(JSON.stringify(prev));
}
`;

function setup(): {
  dir: string;
  log: () => string[];
  seen: (cmd: string, type: string) => { conf: Record<string, unknown>; env: Record<string, string> };
} {
  const dir = mkdtempSync(join(tmpdir(), 'cnirt-'));
  for (const name of ['fakea', 'fakeb', 'fakefail']) {
    writeFileSync(join(dir, name), PLUGIN);
    chmodSync(join(dir, name), 0o755);
  }
  return {
    dir,
    log: () => {
      try {
        return readFileSync(join(dir, 'calls.log'), 'utf8')
          .split('\n')
          .filter((l) => l !== '');
      } catch {
        return [];
      }
    },
    seen: (cmd, type) =>
      JSON.parse(readFileSync(join(dir, `${cmd}-${type}.json`), 'utf8')) as {
        conf: Record<string, unknown>;
        env: Record<string, string>;
      },
  };
}

t.test('ADD chains plugins in order with name, cniVersion and prevResult; DEL reverses', async (t) => {
  const { dir, log, seen } = setup();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const list: CniConflist = {
    cniVersion: '1.0.0',
    name: 'testnet',
    plugins: [{ type: 'fakea', x: 1 }, { type: 'fakeb' }],
  };
  const rt = {
    containerId: 'cid1',
    netnsPath: '/run/netns/none',
    ifName: 'eth0',
    args: { K8S_POD_NAME: 'p' },
    cniPath: [dir],
  };
  const result = await cniAdd(list, rt);
  t.same(
    result.interfaces?.map((i) => i.name),
    ['fakea', 'fakeb'],
    'final result accumulates the chain',
  );
  t.same(log(), ['ADD fakea', 'ADD fakeb']);
  const a = seen('ADD', 'fakea');
  t.same(
    a.conf,
    { type: 'fakea', x: 1, cniVersion: '1.0.0', name: 'testnet' },
    'first plugin: no prevResult',
  );
  t.same(a.env, {
    CNI_COMMAND: 'ADD',
    CNI_CONTAINERID: 'cid1',
    CNI_NETNS: '/run/netns/none',
    CNI_IFNAME: 'eth0',
    CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=p',
    CNI_PATH: dir,
  });
  const b = seen('ADD', 'fakeb');
  t.same(
    (b.conf.prevResult as { interfaces: { name: string }[] }).interfaces,
    [{ name: 'fakea' }],
    "second plugin gets the first one's result",
  );

  await cniDel(list, rt, result);
  t.same(log().slice(2), ['DEL fakeb', 'DEL fakea'], 'DEL in reverse order');
  t.same(seen('DEL', 'fakea').conf.prevResult, result, 'DEL gets the cached ADD result');
});

t.test('a failing plugin: CNI error surfaced, earlier plugins deleted again', async (t) => {
  const { dir, log } = setup();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const list: CniConflist = {
    cniVersion: '1.0.0',
    name: 'testnet',
    plugins: [{ type: 'fakea' }, { type: 'fakefail', fail: true }, { type: 'fakeb' }],
  };
  const rt = { containerId: 'cid2', netnsPath: '/run/netns/none', ifName: 'eth0', cniPath: [dir] };
  let err: unknown;
  try {
    await cniAdd(list, rt);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof CniError, 'ADD rejected with a CniError');
  const ce = err as CniError;
  t.equal(ce.plugin, 'fakefail');
  t.same(ce.cniError, { cniVersion: '1.0.0', code: 7, msg: 'boom', details: 'from fakefail' });
  t.match(ce.message, /plugin "fakefail" for container cid2 failed with exit 1: boom \(from fakefail\)/);
  t.same(log(), ['ADD fakea', 'ADD fakefail', 'DEL fakea'], 'partial ADD undone, later plugins never run');
  await t.rejects(cniAdd({ ...list, plugins: [{ type: 'missing' }] }, rt), /CNI plugin "missing" not found/);
  await t.rejects(cniAdd({ ...list, plugins: [{ type: '../fakea' }] }, rt), /invalid plugin type/);
});

t.test('the reference plugins are installed', async (t) => {
  t.doesNotThrow(
    () => findCniBinDir(),
    'containernetworking-plugins present (apt-get install containernetworking-plugins)',
  );
});

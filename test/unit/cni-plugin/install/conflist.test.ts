// SPDX-License-Identifier: Apache-2.0
// Edits of a node's CNI config (cni-plugin/src/install/conflist.ts): our entry appended once and
// only once, replaced in place when our settings change, removed to give back the exact original
// text; single-plugin files turned into lists and back; malformed or unchainable configs refused.
import t from 'tap';
import {
  checkChainable,
  conflistName,
  convertToList,
  CONVERTED_FROM_KEY,
  originalToRestore,
  parseCniConfig,
  withEntry,
  withoutConversionRecord,
  withoutEntry,
} from '../../../../cni-plugin/src/install/conflist.ts';

// The bridge example of the CNI docs, as a node would have it (4-space indent, trailing newline).
const BRIDGE = `{
    "cniVersion": "1.0.0",
    "name": "dbnet",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cni0",
            "ipam": {
                "type": "host-local",
                "subnet": "10.1.0.0/16",
                "gateway": "10.1.0.1"
            }
        },
        {
            "type": "portmap",
            "capabilities": {"portMappings": true}
        }
    ]
}
`;

const ENTRY = { type: 'ambient-cni', cni_agent_run_dir: '/var/run/ambient-mesh', log_level: 'info' };

t.test('append, idempotent re-insert, uninstall gives the original bytes', async (t) => {
  const cfg = parseCniConfig('10-bridge.conflist', BRIDGE);
  const installed = withEntry(cfg, ENTRY);
  if (installed === undefined) throw new Error('expected a change');
  const doc = JSON.parse(installed) as { plugins: { type: string }[] };
  t.same(
    doc.plugins.map((p) => p.type),
    ['bridge', 'portmap', 'ambient-cni'],
    'chained last',
  );
  t.same(doc.plugins[2], ENTRY);
  t.match(installed, /\n {8}\{\n {12}"type": "ambient-cni",/, 'laid out like its neighbours');
  t.equal(
    withEntry(parseCniConfig('10-bridge.conflist', installed), ENTRY),
    undefined,
    'second install: no change',
  );
  t.equal(
    withoutEntry(parseCniConfig('10-bridge.conflist', installed), 'ambient-cni'),
    BRIDGE,
    'byte for byte',
  );
  t.equal(withoutEntry(cfg, 'ambient-cni'), undefined, 'nothing of ours: no change');
});

t.test('changed settings replace our entry in place; duplicates collapse to one', async (t) => {
  const installed = withEntry(parseCniConfig('a.conflist', BRIDGE), ENTRY) ?? '';
  const changed = { ...ENTRY, log_level: 'debug' };
  const replaced = withEntry(parseCniConfig('a.conflist', installed), changed) ?? '';
  t.same((JSON.parse(replaced) as { plugins: unknown[] }).plugins, [
    (JSON.parse(BRIDGE) as { plugins: unknown[] }).plugins[0],
    (JSON.parse(BRIDGE) as { plugins: unknown[] }).plugins[1],
    changed,
  ]);
  t.equal(withoutEntry(parseCniConfig('a.conflist', replaced), 'ambient-cni'), BRIDGE);

  // Someone appended another plugin after ours and duplicated ours.
  const messy = JSON.stringify({
    cniVersion: '0.4.0',
    name: 'n',
    plugins: [
      { type: 'bridge' },
      { type: 'ambient-cni', log_level: 'warn' },
      { type: 'tuning' },
      { type: 'ambient-cni' },
    ],
  });
  const fixed = withEntry(parseCniConfig('m.conflist', messy), ENTRY) ?? '';
  t.same((JSON.parse(fixed) as { plugins: unknown[] }).plugins, [
    { type: 'bridge' },
    ENTRY,
    { type: 'tuning' },
  ]);
  t.same(
    (
      JSON.parse(withoutEntry(parseCniConfig('m.conflist', messy), 'ambient-cni') ?? '') as {
        plugins: unknown[];
      }
    ).plugins,
    [{ type: 'bridge' }, { type: 'tuning' }],
    'every copy of ours removed',
  );
});

t.test('key order of an equal entry does not cause a rewrite', async (t) => {
  const text = JSON.stringify({
    cniVersion: '1.0.0',
    name: 'n',
    plugins: [
      { type: 'bridge' },
      { log_level: 'info', cni_agent_run_dir: '/var/run/ambient-mesh', type: 'ambient-cni' },
    ],
  });
  t.equal(withEntry(parseCniConfig('x.conflist', text), ENTRY), undefined);
});

t.test('a single-plugin .conf becomes a list and comes back byte for byte', async (t) => {
  const conf =
    '{ "cniVersion": "0.3.1", "name": "mynet", "type": "bridge", "ipam": { "type": "host-local", "subnet": "10.22.0.0/16" } }\n';
  const cfg = parseCniConfig('10-mynet.conf', conf);
  t.equal(cfg.form, 'single');
  const list = convertToList(cfg, ENTRY);
  t.equal(list.fileName, '10-mynet.conflist');
  const doc = JSON.parse(list.text) as Record<string, unknown>;
  t.same(doc, {
    cniVersion: '0.3.1',
    name: 'mynet',
    plugins: [JSON.parse(conf), ENTRY],
    [CONVERTED_FROM_KEY]: { file: '10-mynet.conf', content: conf },
  });
  const listCfg = parseCniConfig(list.fileName, list.text);
  t.equal(originalToRestore(listCfg), undefined, 'still holds our entry: nothing to restore yet');
  const without = parseCniConfig(list.fileName, withoutEntry(listCfg, 'ambient-cni') ?? '');
  t.same(originalToRestore(without), { file: '10-mynet.conf', content: conf });

  // Another plugin was added to our list meanwhile: it stays a list, without our record.
  const extended = withEntry(without, { type: 'tuning' }) ?? '';
  const ext = parseCniConfig(list.fileName, extended);
  t.equal(originalToRestore(ext), undefined);
  const kept = JSON.parse(withoutConversionRecord(ext) ?? '') as Record<string, unknown>;
  t.same(Object.keys(kept), ['cniVersion', 'name', 'plugins']);
  t.equal(withoutConversionRecord(parseCniConfig('b.conflist', BRIDGE)), undefined);

  t.equal(conflistName('99-x.json'), '99-x.conflist');
  t.equal(conflistName('10-a.conf'), '10-a.conflist');
});

t.test('malformed configs are refused with the file named, never rewritten', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['a.conflist', '{"cniVersion": "1.0.0", "name": "n", "plugins": [', /a.conflist is not valid JSON/],
    ['a.conflist', '[]', /is not a JSON object/],
    ['a.conflist', '{"name": "n", "plugins": []}', /has no cniVersion/],
    ['a.conflist', '{"cniVersion": "1.0.0", "plugins": []}', /has no network name/],
    ['a.conflist', '{"cniVersion": "1.0.0", "name": "n", "plugins": {}}', /"plugins" that is not a list/],
    [
      'a.conflist',
      '{"cniVersion": "1.0.0", "name": "n", "plugins": [{"x": 1}]}',
      /plugins\[0\] without a "type"/,
    ],
    ['a.conflist', '{"cniVersion": "1.0.0", "name": "n", "type": "bridge"}', /has no "plugins" list/],
    ['a.conf', '{"cniVersion": "1.0.0", "name": "n"}', /neither a network configuration list/],
    [
      'a.conflist',
      '{"cniVersion": "1.0.0", "name": "n", "plugins": [], "plugins": []}',
      /key "plugins" twice/,
    ],
  ];
  for (const [name, text, msg] of cases) {
    t.throws(() => parseCniConfig(name, text), { code: 'CNI_ERR_INSTALL_MALFORMED', message: msg }, text);
  }
  t.throws(() => parseCniConfig('a.conflist', '{'), /left untouched: fix or remove it/);
});

t.test('only configs of a CNI version the plugin accepts are chained into', async (t) => {
  const make = (extra: Record<string, unknown>) =>
    parseCniConfig(
      'a.conflist',
      JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'x' }], ...extra }),
    );
  t.doesNotThrow(() => {
    checkChainable(make({}));
  });
  t.doesNotThrow(() => {
    checkChainable(make({ cniVersion: '0.3.1' }));
  });
  for (const extra of [
    { cniVersion: '1.1.0' },
    { cniVersion: '0.2.0' },
    { cniVersions: ['1.0.0', '1.1.0'] },
  ]) {
    t.throws(
      () => {
        checkChainable(make(extra));
      },
      {
        code: 'CNI_ERR_INSTALL_UNSUPPORTED',
        message: /supports 0.3.0, 0.3.1, 0.4.0, 1.0.0 and cannot be chained/,
      },
      JSON.stringify(extra),
    );
  }
});

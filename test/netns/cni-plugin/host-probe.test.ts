// SPDX-License-Identifier: Apache-2.0
// Kubelet probes and the probe address on a real node netns (cni-plugin/src/redirect/host-probe.ts;
// ambient-protocols.md §2.4; security-and-reliability.md checklist D.54).
//
// Pod A is enrolled (in-pod rules, no ztunnel: captured inbound meets nothing on 15006 and is
// refused, which makes capture visible). The node netns plays kubelet. Pod B plays an attacker
// that gives itself the probe address. Proved here: without the node's tables a node-local probe
// is captured and B's spoofed connection gets the bypass; with them the probe leaves SNATed and
// reaches A's application, while nothing B sends from the probe address reaches A's netns; other
// node traffic is not SNATed; a pod taken out of the set is captured again; uninstall removes
// both tables. Needs root: without it this file fails loudly.
import t from 'tap';
import { applyRedirection } from '../../../cni-plugin/src/redirect/apply.ts';
import {
  HOST_PROBE_TABLE,
  HostProbes,
  renderHostProbeRules,
} from '../../../cni-plugin/src/redirect/host-probe.ts';
import { testbedFor } from '../../helpers/testbed.ts';
import type { Pod } from '../../helpers/testbed.ts';
import { startTcpServer, tcpRequest } from '../../helpers/testbed-apps.ts';

const PROBE = '169.254.7.127';

/** Counts, in `pod`'s netns, packets arriving with the probe address as source (before any rule). */
async function spy(pod: Pod): Promise<() => Promise<number>> {
  const r = await pod.exec('nft', [
    `add table inet spy; add chain inet spy c { type filter hook prerouting priority -500; }; ` +
      `add rule inet spy c ip saddr ${PROBE} counter`,
  ]);
  if (r.code !== 0) throw new Error(`spy: ${r.stderr}`);
  return async () => {
    const l = await pod.exec('nft', ['list', 'table', 'inet', 'spy']);
    const m = /counter packets (\d+)/.exec(l.stdout);
    await pod.exec('nft', ['delete', 'table', 'inet', 'spy']);
    return Number(m?.[1] ?? Number.NaN);
  };
}

t.test('rendering refuses what it cannot interpolate safely', async (t) => {
  t.throws(() => renderHostProbeRules({ snatV4: '169.254.7.127; drop', snatV6: '::1' }, []), {
    code: 'CNI_ERR_INVALID_ADDRESS',
  });
  t.throws(
    () => renderHostProbeRules({ snatV4: PROBE, snatV6: 'fd16::1' }, ['198.18.0.2 } ; flush ruleset']),
    {
      code: 'CNI_ERR_INVALID_ADDRESS',
    },
  );
  const s = renderHostProbeRules({ snatV4: PROBE, snatV6: 'FD16:9254::0:1' }, [
    '198.18.0.3',
    '198.18.0.2',
    'FD00::0:5',
  ]);
  t.match(s, /probe-targets-v4 \{ type ipv4_addr; elements = \{ 198\.18\.0\.2, 198\.18\.0\.3 \}; \}/);
  t.match(s, /probe-targets-v6 \{ type ipv6_addr; elements = \{ fd00::5 \}; \}/, 'IPv6 in canonical form');
  t.match(s, /snat ip6 to fd16:9254::1/);
  t.match(s, /^add table inet istio-ambient-host\ndelete table inet istio-ambient-host\n/, 'replaced whole');
});

t.test('probe SNAT and anti-spoofing on a node netns', { timeout: 90_000 }, async (t) => {
  const tb = await testbedFor(t, { nodes: 1 });
  if (tb === undefined) return;
  const node = tb.nodes[0]!;
  const a = await tb.addPod({ node: 0, name: 'a' });
  const b = await tb.addPod({ node: 0, name: 'b' });
  await startTcpServer(a, 'A', [80]);
  await startTcpServer(b, 'B', [81]);
  await applyRedirection(a.netnsPath, {}, { backend: 'nftables' });

  const spoof = async (): Promise<{ ok: boolean; reached: number; output: string }> => {
    // B gives itself the probe address, and (the attacker's best case) A routes it back to B.
    await b.exec('ip', ['addr', 'add', `${PROBE}/32`, 'dev', 'eth0']);
    await a.exec('ip', ['route', 'replace', `${PROBE}/32`, 'via', b.ip, 'dev', 'eth0']);
    const count = await spy(a);
    try {
      const r = await tcpRequest(b, a.ip, 80, { localAddress: PROBE, timeoutMs: 1_500 });
      return { ok: r.ok, reached: await count(), output: r.output };
    } finally {
      await b.exec('ip', ['addr', 'del', `${PROBE}/32`, 'dev', 'eth0']);
      await a.exec('ip', ['route', 'del', `${PROBE}/32`]);
    }
  };

  // Without the node's tables.
  const captured = await tcpRequest(node, a.ip, 80);
  t.notOk(
    captured.ok,
    `a node-local probe is captured (to 15006, where nothing listens): ${captured.output}`,
  );
  const open = await spoof();
  t.ok(
    open.ok,
    `control: without the node's tables, the spoofed probe address gets the bypass (${open.output})`,
  );
  t.ok(open.reached > 0, 'control: its packets reach the pod');

  const probes = new HostProbes(undefined, { netnsPath: node.netnsPath });
  await probes.set('uid-a', [a.ip]); // before start(): recorded only
  const before = await node.exec('nft', ['list', 'tables']);
  t.notMatch(before.stdout, new RegExp(HOST_PROBE_TABLE), 'nothing written before start()');
  await probes.start();
  t.teardown(() => probes.uninstall().catch(() => undefined));

  const probe = await tcpRequest(node, a.ip, 80);
  t.ok(probe.ok, `a node-local probe reaches the app (${probe.output})`);
  t.match(probe.output, new RegExp(`peer=${PROBE.replaceAll('.', '\\.')}`), 'SNATed to the probe address');

  const spoofed = await spoof();
  t.notOk(spoofed.ok, `the spoofed connection fails (${spoofed.output})`);
  t.equal(spoofed.reached, 0, 'no packet from the probe address reaches the pod (D.54)');

  const other = await tcpRequest(node, b.ip, 81);
  t.ok(other.ok, other.output);
  t.match(
    other.output,
    new RegExp(`peer=${node.gateway.replaceAll('.', '\\.')}\\s`),
    'a pod that is no target: not SNATed',
  );

  // Many changes at once end in one consistent table.
  await Promise.all(Array.from({ length: 20 }, (_, i) => probes.set(`uid-x${i}`, [`198.18.200.${i + 1}`])));
  const set = await node.exec('nft', ['list', 'set', 'inet', HOST_PROBE_TABLE, 'probe-targets-v4']);
  for (let i = 1; i <= 20; i++)
    t.match(set.stdout, new RegExp(`198\\.18\\.200\\.${i}\\b`), `x${i} in the set`);
  t.match(set.stdout, new RegExp(a.ip.replaceAll('.', '\\.')), 'A still in the set');

  await probes.delete('uid-a');
  const again = await tcpRequest(node, a.ip, 80);
  t.notOk(again.ok, `out of the set, the probe is captured again (${again.output})`);

  await probes.uninstall();
  const after = await node.exec('nft', ['list', 'tables']);
  t.notMatch(after.stdout, new RegExp(HOST_PROBE_TABLE), `uninstall removed both tables: ${after.stdout}`);
});

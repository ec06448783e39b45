// SPDX-License-Identifier: Apache-2.0
// Golden-file and semantic tests of the in-pod rule renderer (cni-plugin/src/redirect/render.ts,
// spec ambient-protocols.md §2.2–2.4).
//
// Golden files live in test/fixtures/redirect/<case>.<kind>.golden. After an intended change to
// the rules, regenerate them with
//
//   UPDATE_GOLDEN=1 npm test -- test/unit/cni-plugin/redirect/render.test.ts
//
// and review the diff: every changed line is a change to what runs in every meshed pod.
import t from 'tap';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  renderIptables,
  renderNftables,
  renderRoutes,
  policyRuleSpec,
} from '../../../../cni-plugin/src/redirect/render.ts';
import type { RedirectOptionsInput } from '../../../../cni-plugin/src/redirect/render.ts';
import {
  canonicalIpv6,
  resolveRedirectOptions,
  DEFAULT_REDIRECT_OPTIONS,
} from '../../../../cni-plugin/src/redirect/options.ts';
import { RedirectError } from '../../../../cni-plugin/src/redirect/errors.ts';
import { canonicalIptables, canonicalNft } from '../../../../cni-plugin/src/redirect/state.ts';

const FIXTURES = join(import.meta.dirname, '../../../fixtures/redirect');
const UPDATE = process.env.UPDATE_GOLDEN === '1';

// The subtest type (from t.test's last overload, `test(cb)`).
type TapTest = Parameters<Parameters<typeof t.test>[0]>[0];

const CASES: Record<string, RedirectOptionsInput> = {
  default: {},
  ipv6: { ipv6: true },
  'dns-capture': { dnsCapture: true },
  'bypass-inbound': { bypassInboundCapture: true },
  'virtual-interfaces': { rerouteVirtualInterfaces: ['net1', 'tap0'] },
};

function golden(t: TapTest, name: string, actual: string): void {
  const file = join(FIXTURES, `${name}.golden`);
  if (UPDATE) {
    mkdirSync(FIXTURES, { recursive: true });
    writeFileSync(file, actual);
    t.pass(`rewrote ${name}.golden`);
    return;
  }
  let expected: string;
  try {
    expected = readFileSync(file, 'utf8');
  } catch {
    t.fail(`golden file ${file} is missing; run with UPDATE_GOLDEN=1 to create it`);
    return;
  }
  t.equal(actual, expected, `${name} matches its golden file`);
}

t.test('golden files', async (t) => {
  for (const [name, opts] of Object.entries(CASES)) {
    const ipt = renderIptables(opts);
    golden(t, `${name}.iptables-v4`, ipt.v4);
    if (ipt.v6 !== undefined) golden(t, `${name}.iptables-v6`, ipt.v6);
    golden(t, `${name}.nft`, renderNftables(opts));
    const routes = renderRoutes(opts);
    golden(t, `${name}.routes-v4`, routes.v4);
    if (routes.v6 !== undefined) golden(t, `${name}.routes-v6`, routes.v6);
    t.equal(ipt.v6 !== undefined, opts.ipv6 === true, `${name}: ip6tables rules only with ipv6`);
    t.equal(routes.v6 !== undefined, opts.ipv6 === true, `${name}: IPv6 route only with ipv6`);
  }
});

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}

function tableBlock(text: string, table: string): string[] {
  const all = lines(text);
  const start = all.indexOf(`*${table}`);
  if (start === -1) return [];
  const end = all.indexOf('COMMIT', start);
  return all.slice(start, end + 1);
}

t.test('iptables default: every row of the spec table, in Istio order', async (t) => {
  const v4 = renderIptables().v4;
  t.same(tableBlock(v4, 'mangle'), [
    '*mangle',
    ':ISTIO_OUTPUT - [0:0]',
    ':ISTIO_PRERT - [0:0]',
    '-A PREROUTING -j ISTIO_PRERT',
    '-A OUTPUT -j ISTIO_OUTPUT',
    // Istio's two rules, narrowed by conntrack direction (ARCHITECTURE.md decision 22).
    '-A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -m conntrack --ctdir REPLY -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff',
    '-A ISTIO_PRERT -m mark --mark 0x539/0xfff -m conntrack --ctdir ORIGINAL -j CONNMARK --set-xmark 0x111/0xfff',
    'COMMIT',
  ]);
  t.same(tableBlock(v4, 'nat'), [
    '*nat',
    ':ISTIO_OUTPUT - [0:0]',
    ':ISTIO_PRERT - [0:0]',
    '-A PREROUTING -j ISTIO_PRERT',
    '-A OUTPUT -j ISTIO_OUTPUT',
    '-A ISTIO_OUTPUT -d 169.254.7.127/32 -p tcp -m tcp -j ACCEPT',
    '-A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT',
    '-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT',
    '-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001',
    '-A ISTIO_PRERT -s 169.254.7.127/32 -p tcp -m tcp -j ACCEPT',
    '-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006',
    'COMMIT',
  ]);
  t.same(tableBlock(v4, 'raw'), [], 'no raw table without DNS capture');
  t.notMatch(v4, /15053|--dport 53|CT --zone/, 'no DNS rules without DNS capture');
  t.equal(canonicalIptables(v4), v4, 'rendered text is already in iptables-save canonical form');
});

t.test('iptables DNS capture adds the nat redirects and the raw ct zone rules', async (t) => {
  const v4 = renderIptables({ dnsCapture: true }).v4;
  const nat = tableBlock(v4, 'nat');
  const udp = nat.indexOf(
    '-A ISTIO_OUTPUT ! -o lo -p udp -m mark ! --mark 0x539/0xfff -m udp --dport 53 -j REDIRECT --to-ports 15053',
  );
  const tcp = nat.indexOf(
    '-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m tcp --dport 53 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15053',
  );
  const outbound = nat.findIndex((l) => l.endsWith('--to-ports 15001'));
  t.ok(udp > 0 && tcp > udp, 'UDP then TCP DNS redirect present');
  t.ok(tcp < outbound, 'DNS redirects come before the catch-all outbound redirect');
  t.same(tableBlock(v4, 'raw'), [
    '*raw',
    ':ISTIO_OUTPUT - [0:0]',
    ':ISTIO_PRERT - [0:0]',
    '-A PREROUTING -j ISTIO_PRERT',
    '-A OUTPUT -j ISTIO_OUTPUT',
    '-A ISTIO_OUTPUT -p udp -m mark --mark 0x539/0xfff -m udp --dport 53 -j CT --zone 1',
    '-A ISTIO_PRERT -p udp -m mark ! --mark 0x539/0xfff -m udp --sport 53 -j CT --zone 1',
    'COMMIT',
  ]);
});

t.test('bypass-inbound drops the 15006 redirect and the inbound probe accept only', async (t) => {
  const v4 = renderIptables({ bypassInboundCapture: true }).v4;
  t.notMatch(v4, /15006/);
  t.notMatch(v4, /-A ISTIO_PRERT -s 169\.254\.7\.127/);
  t.match(
    v4,
    /-A ISTIO_OUTPUT -d 169\.254\.7\.127\/32 -p tcp -m tcp -j ACCEPT/,
    'probe replies still accepted',
  );
  t.match(v4, /--to-ports 15001/, 'outbound still captured');
  t.match(v4, /--set-xmark 0x111\/0xfff/, 'connmark still set for ztunnel-delivered connections');
  const nft = renderNftables({ bypassInboundCapture: true });
  t.notMatch(nft, /15006/);
  t.notMatch(nft, /saddr 169\.254\.7\.127/);
});

t.test('virtual interfaces are redirected to outbound first in nat PREROUTING', async (t) => {
  const nat = tableBlock(renderIptables({ rerouteVirtualInterfaces: ['net1', 'tap0'] }).v4, 'nat');
  const prert = nat.filter((l) => l.startsWith('-A ISTIO_PRERT'));
  t.same(prert.slice(0, 4), [
    '-A ISTIO_PRERT -i net1 -p tcp -j REDIRECT --to-ports 15001',
    '-A ISTIO_PRERT -i net1 -p tcp -j RETURN',
    '-A ISTIO_PRERT -i tap0 -p tcp -j REDIRECT --to-ports 15001',
    '-A ISTIO_PRERT -i tap0 -p tcp -j RETURN',
  ]);
  t.equal(prert.length, 6, 'followed by the probe accept and the inbound redirect');
  const nft = renderNftables({ rerouteVirtualInterfaces: ['net1'] });
  t.match(
    nft,
    /iifname "net1" meta l4proto tcp counter redirect to :15001\n\t\tiifname "net1" meta l4proto tcp counter return\n/,
  );
});

t.test('ipv6 renders ip6tables with ::1 and the v6 probe address, and the ::/0 route', async (t) => {
  const r = renderIptables({ ipv6: true });
  t.equal(r.v4, renderIptables().v4, 'IPv4 rules unchanged by ipv6');
  const v6 = r.v6 ?? '';
  t.match(v6, /-A ISTIO_PRERT ! -d ::1\/128 -p tcp -m tcp ! --dport 15008 .* --to-ports 15006/);
  t.match(v6, /-A ISTIO_PRERT -s fd16:9254:7127:1337:ffff:ffff:ffff:ffff\/128 -p tcp -m tcp -j ACCEPT/);
  t.notMatch(v6, /127\.0\.0\.1|169\.254/);
  t.same(renderRoutes({ ipv6: true }), {
    v4: 'rule add priority 32764 fwmark 0x111/0xfff lookup 100\nroute replace local 0.0.0.0/0 dev lo table 100\n',
    v6: 'rule add priority 32764 fwmark 0x111/0xfff lookup 100\nroute replace local ::/0 dev lo table 100\n',
  });
  const nft = renderNftables({ ipv6: true });
  t.match(nft, /ip6 daddr != ::1 tcp dport != 15008 meta mark & 0xfff != 0x539 counter redirect to :15006/);
  t.match(nft, /oifname "lo" ip6 daddr != ::1 counter accept/);
});

t.test('nftables: three inet tables, hooks and priorities per the spec', async (t) => {
  const nft = renderNftables({ dnsCapture: true });
  const all = lines(nft);
  t.same(
    all.slice(0, 6),
    [
      'add table inet istio-ambient-nat',
      'delete table inet istio-ambient-nat',
      'add table inet istio-ambient-mangle',
      'delete table inet istio-ambient-mangle',
      'add table inet istio-ambient-raw',
      'delete table inet istio-ambient-raw',
    ],
    'all three tables are replaced in the same transaction',
  );
  t.match(
    nft,
    /table inet istio-ambient-nat \{\n\tchain prerouting \{\n\t\ttype nat hook prerouting priority -100; policy accept;/,
  );
  t.match(nft, /\tchain output \{\n\t\ttype nat hook output priority -100; policy accept;/);
  t.match(nft, /type filter hook prerouting priority -150; policy accept;/);
  t.match(nft, /type route hook output priority -150; policy accept;/);
  t.match(nft, /type filter hook prerouting priority -300; policy accept;/);
  t.match(nft, /type filter hook output priority -300; policy accept;/);
  t.match(
    nft,
    /meta mark & 0xfff == 0x539 ct direction original counter ct mark set ct mark & 0xfffff000 \| 0x111/,
  );
  t.match(nft, /ct direction reply ct mark & 0xfff == 0x111 counter meta mark set ct mark/);
  t.match(nft, /udp dport 53 meta mark & 0xfff == 0x539 counter ct zone set 1/);
  t.notMatch(renderNftables(), /table inet istio-ambient-raw \{/, 'no raw table without DNS capture');
  t.match(renderNftables(), /delete table inet istio-ambient-raw/, 'but a stale raw table is still deleted');
});

t.test('custom marks, ports, table and priority flow into every rule', async (t) => {
  const opts: RedirectOptionsInput = {
    ztunnelMark: 0x1539,
    connmark: 0x1111,
    markMask: 0xffff,
    routeTable: 200,
    rulePriority: 1000,
    probeSnatIpv4: '169.254.1.1',
    probeSnatIpv6: 'FD00:0:0:0:0:0:0:1',
    ipv6: true,
    dnsCapture: true,
    ports: { outbound: 25001, inbound: 25006, hbone: 25008, dns: 25053 },
  };
  const ipt = renderIptables(opts);
  const both = `${ipt.v4}${ipt.v6 ?? ''}${renderNftables(opts)}`;
  t.notMatch(both, /0x539|0x111\b|0xfff\b|15001|15006|15008|15053|169\.254\.7\.127|fd16/);
  t.match(ipt.v4, /--mark 0x1539\/0xffff/);
  t.match(ipt.v4, /--set-xmark 0x1111\/0xffff/);
  t.match(ipt.v6 ?? '', /-s fd00::1\/128/, 'IPv6 probe address canonicalised like iptables-save prints it');
  t.match(renderNftables(opts), /ct mark set ct mark & 0xffff0000 \| 0x1111/);
  t.equal(policyRuleSpec(opts), 'priority 1000 fwmark 0x1111/0xffff lookup 200');
  t.match(renderRoutes(opts).v6 ?? '', /route replace local ::\/0 dev lo table 200/);
});

t.test('determinism: same input, byte-identical output; input not mutated', async (t) => {
  const a = Object.freeze({
    dnsCapture: true,
    ipv6: true,
    rerouteVirtualInterfaces: Object.freeze(['b0', 'a0']),
  });
  const b = { rerouteVirtualInterfaces: ['b0', 'a0'], ipv6: true, dnsCapture: true };
  t.same(renderIptables(a), renderIptables(b));
  t.equal(renderNftables(a), renderNftables(b));
  t.same(renderRoutes(a), renderRoutes(b));
  for (let i = 0; i < 5; i++) {
    t.equal(renderIptables(a).v4, renderIptables(a).v4);
    t.equal(renderNftables(a), renderNftables(a));
  }
  t.same(b.rerouteVirtualInterfaces, ['b0', 'a0'], "interface order is the caller's, not sorted in place");
  t.equal(canonicalNft(renderNftables(a)), canonicalNft(renderNftables(b)));
});

t.test('defaults', async (t) => {
  const o = resolveRedirectOptions();
  t.same(o, DEFAULT_REDIRECT_OPTIONS);
  t.equal(o.ztunnelMark, 0x539);
  t.equal(o.connmark, 0x111);
  t.equal(o.markMask, 0xfff);
  t.equal(o.routeTable, 100);
  t.equal(o.rulePriority, 32764);
  t.same(o.ports, { outbound: 15001, inbound: 15006, hbone: 15008, dns: 15053 });
  t.ok(Object.isFrozen(o));
});

function expectCode(t: TapTest, code: string, f: () => unknown, what: string, msg?: RegExp): void {
  try {
    f();
    t.fail(`${what}: expected ${code}, nothing was thrown`);
  } catch (e) {
    t.ok(e instanceof RedirectError, `${what}: throws a RedirectError`);
    t.equal((e as RedirectError).code, code, `${what}: code ${code}`);
    if (msg) t.match((e as Error).message, msg, `${what}: message explains`);
  }
}

t.test('validation errors', async (t) => {
  const bad = (v: unknown): RedirectOptionsInput => v as RedirectOptionsInput;
  // interfaces
  expectCode(
    t,
    'CNI_ERR_INVALID_INTERFACE',
    () => renderIptables({ rerouteVirtualInterfaces: ['a234567890123456'] }),
    '16-char ifname',
    /1-15 characters/,
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_INTERFACE',
    () => renderIptables({ rerouteVirtualInterfaces: ['x -j ACCEPT'] }),
    'rule injection via ifname',
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_INTERFACE',
    () => renderNftables({ rerouteVirtualInterfaces: ['a"; flush ruleset; "'] }),
    'nft injection via ifname',
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_INTERFACE',
    () => renderIptables({ rerouteVirtualInterfaces: [''] }),
    'empty ifname',
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_INTERFACE',
    () => renderIptables({ rerouteVirtualInterfaces: ['lo'] }),
    'lo',
    /ztunnel reaches the app over lo/,
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_INTERFACE',
    () => renderIptables({ rerouteVirtualInterfaces: ['net1', 'net1'] }),
    'duplicate ifname',
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_INTERFACE',
    () => renderIptables({ rerouteVirtualInterfaces: ['a/b'] }),
    'slash in ifname',
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_OPTIONS',
    () => renderIptables(bad({ rerouteVirtualInterfaces: 'net1' })),
    'ifnames not a list',
  );
  // marks
  expectCode(
    t,
    'CNI_ERR_INVALID_MARK',
    () => renderIptables({ ztunnelMark: 0x1539 }),
    'mark outside mask',
    /outside markMask=0xfff/,
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_MARK',
    () => renderIptables({ connmark: 0x539 }),
    'equal marks',
    /distinguishable/,
  );
  expectCode(t, 'CNI_ERR_INVALID_MARK', () => renderIptables({ ztunnelMark: 0 }), 'zero mark');
  expectCode(t, 'CNI_ERR_INVALID_MARK', () => renderIptables({ markMask: 2 ** 32 }), 'mask > 32 bits');
  expectCode(t, 'CNI_ERR_INVALID_MARK', () => renderIptables({ connmark: 1.5 }), 'fractional mark');
  expectCode(t, 'CNI_ERR_INVALID_MARK', () => renderIptables(bad({ connmark: '0x111' })), 'string mark');
  // ports
  expectCode(
    t,
    'CNI_ERR_INVALID_PORT',
    () => renderIptables({ ports: { outbound: 0 } }),
    'port 0',
    /ports\.outbound=0/,
  );
  expectCode(t, 'CNI_ERR_INVALID_PORT', () => renderIptables({ ports: { inbound: 65536 } }), 'port 65536');
  expectCode(
    t,
    'CNI_ERR_INVALID_PORT',
    () => renderIptables({ ports: { inbound: 15001 } }),
    'port collision',
    /both 15001/,
  );
  expectCode(t, 'CNI_ERR_INVALID_PORT', () => renderIptables({ ports: { dns: 53 } }), 'dns port 53');
  expectCode(
    t,
    'CNI_ERR_INVALID_OPTIONS',
    () => renderIptables(bad({ ports: { admin: 15000 } })),
    'unknown port key',
  );
  // routing
  expectCode(t, 'CNI_ERR_INVALID_ROUTE', () => renderRoutes({ routeTable: 254 }), 'main table', /kernel/);
  expectCode(t, 'CNI_ERR_INVALID_ROUTE', () => renderRoutes({ routeTable: 0 }), 'table 0');
  expectCode(t, 'CNI_ERR_INVALID_ROUTE', () => renderRoutes({ rulePriority: 32766 }), 'priority of main');
  expectCode(t, 'CNI_ERR_INVALID_ROUTE', () => renderRoutes({ rulePriority: 0 }), 'priority 0');
  // addresses
  expectCode(
    t,
    'CNI_ERR_INVALID_ADDRESS',
    () => renderIptables({ probeSnatIpv4: '169.254.7' }),
    'short IPv4',
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_ADDRESS',
    () => renderIptables({ probeSnatIpv4: '127.0.0.1' }),
    'loopback probe',
    /non-loopback/,
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_ADDRESS',
    () => renderIptables({ probeSnatIpv4: '0.0.0.0' }),
    'unspecified probe',
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_ADDRESS',
    () => renderIptables({ probeSnatIpv4: '1.2.3.4 -j ACCEPT' }),
    'injection via address',
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_ADDRESS',
    () => renderIptables({ ipv6: true, probeSnatIpv6: '::1' }),
    'v6 loopback probe',
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_ADDRESS',
    () => renderIptables({ probeSnatIpv6: '169.254.7.127' }),
    'v4 as v6',
  );
  expectCode(
    t,
    'CNI_ERR_INVALID_ADDRESS',
    () => renderIptables({ probeSnatIpv6: '::ffff:1.2.3.4' }),
    'embedded IPv4',
  );
  // types and keys
  expectCode(
    t,
    'CNI_ERR_INVALID_OPTIONS',
    () => renderIptables(bad({ dnscapture: true })),
    'unknown key (typo)',
    /unknown redirect option "dnscapture"/,
  );
  expectCode(t, 'CNI_ERR_INVALID_OPTIONS', () => renderIptables(bad({ ipv6: 'yes' })), 'non-boolean flag');
  expectCode(t, 'CNI_ERR_INVALID_OPTIONS', () => renderNftables(bad([])), 'array as options');
});

t.test('canonicalIpv6 follows RFC 5952 like iptables-save', async (t) => {
  t.equal(
    canonicalIpv6('FD16:9254:7127:1337:FFFF:FFFF:FFFF:FFFF'),
    'fd16:9254:7127:1337:ffff:ffff:ffff:ffff',
  );
  t.equal(canonicalIpv6('2001:0db8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
  t.equal(canonicalIpv6('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1', 'leftmost of equal runs');
  t.equal(
    canonicalIpv6('2001:db8:0:1:1:1:1:1'),
    '2001:db8:0:1:1:1:1:1',
    'a single zero group is not compressed',
  );
  t.equal(canonicalIpv6('0:0:0:0:0:0:0:0'), '::');
  t.equal(canonicalIpv6('1::'), '1::');
  t.equal(canonicalIpv6('fe80::1:0:0:0'), 'fe80::1:0:0:0', 'longest run wins');
});

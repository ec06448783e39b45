// SPDX-License-Identifier: Apache-2.0
// Pure renderer of the in-pod redirection rules (spec ambient-protocols.md §2.2 rule table and
// nftables table, §2.3 policy routing, §2.4 probe bypass). String in, string out, no I/O.
//
// The iptables output is written in exactly the form iptables-save prints back (`-m tcp` added,
// `/32` host prefixes, `--to-ports`, user chains sorted, rules grouped by chain), so the applier
// can compare what is in a pod netns with what we want byte for byte. That comparison is what
// makes re-applying idempotent across agent restarts and iptables backend flips (istio/istio#61020).
// Rule order within a chain follows istio/istio:cni/pkg/iptables/iptables.go.
import { DNS_CT_ZONE, DNS_PORT, RESTORE_MASK, resolveRedirectOptions } from './options.ts';
import type { RedirectOptions, RedirectOptionsInput } from './options.ts';

export type { RedirectOptions, RedirectOptionsInput, RedirectPorts } from './options.ts';

/** Our iptables chains (in tables mangle, nat and raw). */
export const ISTIO_PRERT = 'ISTIO_PRERT';
export const ISTIO_OUTPUT = 'ISTIO_OUTPUT';
export const ISTIO_CHAINS: readonly string[] = [ISTIO_OUTPUT, ISTIO_PRERT];
/** Tables we touch, in the order we write them. */
export const IPTABLES_TABLES = ['mangle', 'nat', 'raw'] as const;
export type IptablesTable = (typeof IPTABLES_TABLES)[number];

/** Our nftables tables (family inet). */
export const NFT_NAT_TABLE = 'istio-ambient-nat';
export const NFT_MANGLE_TABLE = 'istio-ambient-mangle';
export const NFT_RAW_TABLE = 'istio-ambient-raw';
export const NFT_TABLES: readonly string[] = [NFT_NAT_TABLE, NFT_MANGLE_TABLE, NFT_RAW_TABLE];

export type IpFamily = 'v4' | 'v6';

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

interface FamilyAddrs {
  /** Loopback host prefix as iptables-save prints it. */
  loopback: string;
  /** Probe SNAT host prefix as iptables-save prints it. */
  probe: string;
}

function familyAddrs(o: Readonly<RedirectOptions>, family: IpFamily): FamilyAddrs {
  return family === 'v4'
    ? { loopback: '127.0.0.1/32', probe: `${o.probeSnatIpv4}/32` }
    : { loopback: '::1/128', probe: `${o.probeSnatIpv6}/128` };
}

/** One table's worth of our rules, before formatting. */
interface TableRules {
  table: IptablesTable;
  /** Jumps from built-in chains, in built-in chain order (PREROUTING before OUTPUT). */
  jumps: string[];
  /** Rules of ISTIO_OUTPUT, in order. */
  output: string[];
  /** Rules of ISTIO_PRERT, in order. */
  prert: string[];
}

function iptablesTables(o: Readonly<RedirectOptions>, family: IpFamily): TableRules[] {
  const a = familyAddrs(o, family);
  const zmark = `${hex(o.ztunnelMark)}/${hex(o.markMask)}`;
  const cmark = `${hex(o.connmark)}/${hex(o.markMask)}`;
  const notZtunnel = `-m mark ! --mark ${zmark}`;
  const jumps = [`-A PREROUTING -j ${ISTIO_PRERT}`, `-A OUTPUT -j ${ISTIO_OUTPUT}`];

  const mangle: TableRules = {
    table: 'mangle',
    jumps,
    // App replies on connections ztunnel opened toward it get skb mark 0x111, so the ip rule
    // sends them to table 100 (local delivery to ztunnel's transparent socket), not out eth0.
    // Only the reply direction: ztunnel's own packets keep 0x539 and are not routed again
    // (ARCHITECTURE.md decision 22; Istio's rule has no --ctdir).
    output: [
      `-A ${ISTIO_OUTPUT} -m connmark --mark ${cmark} -m conntrack --ctdir REPLY -j CONNMARK --restore-mark --nfmask ${hex(RESTORE_MASK)} --ctmask ${hex(RESTORE_MASK)}`,
    ],
    // Connections ztunnel opens toward the local app (skb mark 0x539, via lo) get connmark 0x111;
    // only those it originates: sockets accepted on its marked listeners inherit 0x539, and
    // the connections of those are the app's own outbound ones (decision 22).
    prert: [
      `-A ${ISTIO_PRERT} -m mark --mark ${zmark} -m conntrack --ctdir ORIGINAL -j CONNMARK --set-xmark ${cmark}`,
    ],
  };

  const natOutput: string[] = [
    // Replies to kubelet probes (SNATed on the host) are not captured.
    `-A ${ISTIO_OUTPUT} -d ${a.probe} -p tcp -m tcp -j ACCEPT`,
  ];
  if (o.dnsCapture) {
    natOutput.push(
      `-A ${ISTIO_OUTPUT} ! -o lo -p udp ${notZtunnel} -m udp --dport ${DNS_PORT} -j REDIRECT --to-ports ${o.ports.dns}`,
      `-A ${ISTIO_OUTPUT} ! -d ${a.loopback} -p tcp -m tcp --dport ${DNS_PORT} ${notZtunnel} -j REDIRECT --to-ports ${o.ports.dns}`,
    );
  }
  natOutput.push(
    // Replies of connections ztunnel delivered to the app (skb mark restored from connmark).
    `-A ${ISTIO_OUTPUT} -p tcp -m mark --mark ${cmark} -j ACCEPT`,
    // The app calling its own pod IP goes over lo and is not captured.
    `-A ${ISTIO_OUTPUT} ! -d ${a.loopback} -o lo -j ACCEPT`,
    // Everything else the app sends over TCP goes to ztunnel outbound.
    `-A ${ISTIO_OUTPUT} ! -d ${a.loopback} -p tcp ${notZtunnel} -j REDIRECT --to-ports ${o.ports.outbound}`,
  );

  const natPrert: string[] = [];
  for (const ifname of o.rerouteVirtualInterfaces) {
    // KubeVirt/DinD: inbound on a virtual interface is really outbound from a nested workload.
    natPrert.push(
      `-A ${ISTIO_PRERT} -i ${ifname} -p tcp -j REDIRECT --to-ports ${o.ports.outbound}`,
      `-A ${ISTIO_PRERT} -i ${ifname} -p tcp -j RETURN`,
    );
  }
  if (!o.bypassInboundCapture) {
    natPrert.push(
      // Kubelet probes reach the app directly.
      `-A ${ISTIO_PRERT} -s ${a.probe} -p tcp -m tcp -j ACCEPT`,
      // All other inbound TCP except HBONE goes to ztunnel's plaintext inbound port.
      `-A ${ISTIO_PRERT} ! -d ${a.loopback} -p tcp -m tcp ! --dport ${o.ports.hbone} ${notZtunnel} -j REDIRECT --to-ports ${o.ports.inbound}`,
    );
  }
  const nat: TableRules = { table: 'nat', jumps, output: natOutput, prert: natPrert };

  // Not capturing: only the mangle table (marks for replies on established connections).
  const tables = o.capture ? [mangle, nat] : [mangle];
  if (o.dnsCapture && o.capture) {
    // Proxy⇄upstream DNS in its own conntrack zone (istio/istio#33469).
    tables.push({
      table: 'raw',
      jumps,
      output: [
        `-A ${ISTIO_OUTPUT} -p udp -m mark --mark ${zmark} -m udp --dport ${DNS_PORT} -j CT --zone ${DNS_CT_ZONE}`,
      ],
      prert: [
        `-A ${ISTIO_PRERT} -p udp ${notZtunnel} -m udp --sport ${DNS_PORT} -j CT --zone ${DNS_CT_ZONE}`,
      ],
    });
  }
  return tables;
}

function formatIptables(tables: readonly TableRules[]): string {
  const lines: string[] = [];
  for (const t of tables) {
    // Declaring a chain that already exists flushes it under --noflush, which is what makes a
    // re-apply replace our chains atomically per table instead of appending duplicates.
    lines.push(
      `*${t.table}`,
      `:${ISTIO_OUTPUT} - [0:0]`,
      `:${ISTIO_PRERT} - [0:0]`,
      ...t.jumps,
      ...t.output,
      ...t.prert,
      'COMMIT',
    );
  }
  return lines.join('\n') + '\n';
}

/**
 * `iptables-restore --noflush` input creating our chains and rules: `v4` for iptables, `v6`
 * (only when `ipv6`) for ip6tables. Throws CNI_ERR_INVALID_* for invalid options.
 */
export function renderIptables(input: RedirectOptionsInput = {}): { v4: string; v6?: string } {
  const o = resolveRedirectOptions(input);
  const v4 = formatIptables(iptablesTables(o, 'v4'));
  return o.ipv6 ? { v4, v6: formatIptables(iptablesTables(o, 'v6')) } : { v4 };
}

interface NftChain {
  name: string;
  /** Base-chain declaration (`type ... hook ... priority ...; policy accept;`), absent for regular chains. */
  base?: string;
  rules: string[];
}

function nftTables(o: Readonly<RedirectOptions>): { name: string; chains: NftChain[] }[] {
  const mask = hex(o.markMask);
  const zmark = hex(o.ztunnelMark);
  const cmark = hex(o.connmark);
  const notZtunnel = `meta mark & ${mask} != ${zmark}`;
  const fams: { ip: string; loopback: string; probe: string }[] = [
    { ip: 'ip', loopback: '127.0.0.1', probe: o.probeSnatIpv4 },
  ];
  if (o.ipv6) fams.push({ ip: 'ip6', loopback: '::1', probe: o.probeSnatIpv6 });

  const natPre: string[] = [];
  for (const ifname of o.rerouteVirtualInterfaces) {
    natPre.push(
      `iifname "${ifname}" meta l4proto tcp counter redirect to :${o.ports.outbound}`,
      `iifname "${ifname}" meta l4proto tcp counter return`,
    );
  }
  if (!o.bypassInboundCapture) {
    for (const f of fams) natPre.push(`meta l4proto tcp ${f.ip} saddr ${f.probe} counter accept`);
    for (const f of fams) {
      natPre.push(
        `${f.ip} daddr != ${f.loopback} tcp dport != ${o.ports.hbone} ${notZtunnel} counter redirect to :${o.ports.inbound}`,
      );
    }
  }
  const natOut: string[] = [];
  for (const f of fams) natOut.push(`meta l4proto tcp ${f.ip} daddr ${f.probe} counter accept`);
  if (o.dnsCapture) {
    natOut.push(`oifname != "lo" ${notZtunnel} udp dport ${DNS_PORT} counter redirect to :${o.ports.dns}`);
    for (const f of fams) {
      natOut.push(
        `${f.ip} daddr != ${f.loopback} tcp dport ${DNS_PORT} ${notZtunnel} counter redirect to :${o.ports.dns}`,
      );
    }
  }
  natOut.push(`meta l4proto tcp meta mark & ${mask} == ${cmark} counter accept`);
  for (const f of fams) natOut.push(`oifname "lo" ${f.ip} daddr != ${f.loopback} counter accept`);
  for (const f of fams) {
    natOut.push(
      `meta l4proto tcp ${f.ip} daddr != ${f.loopback} ${notZtunnel} counter redirect to :${o.ports.outbound}`,
    );
  }

  const keep = hex((~o.markMask & 0xffffffff) >>> 0);
  const tables = [
    {
      name: NFT_NAT_TABLE,
      chains: [
        {
          name: 'prerouting',
          base: 'type nat hook prerouting priority -100; policy accept;',
          rules: ['jump istio-prerouting'],
        },
        {
          name: 'output',
          base: 'type nat hook output priority -100; policy accept;',
          rules: ['jump istio-output'],
        },
        { name: 'istio-prerouting', rules: natPre },
        { name: 'istio-output', rules: natOut },
      ],
    },
    {
      name: NFT_MANGLE_TABLE,
      chains: [
        {
          name: 'prerouting',
          base: 'type filter hook prerouting priority -150; policy accept;',
          rules: ['jump istio-prerouting'],
        },
        {
          name: 'output',
          base: 'type route hook output priority -150; policy accept;',
          rules: ['jump istio-output'],
        },
        {
          name: 'istio-prerouting',
          rules: [
            `meta mark & ${mask} == ${zmark} ct direction original counter ct mark set ct mark & ${keep} | ${cmark}`,
          ],
        },
        {
          name: 'istio-output',
          rules: [`ct direction reply ct mark & ${mask} == ${cmark} counter meta mark set ct mark`],
        },
      ],
    },
  ];
  // Not capturing: only the mangle table (marks for replies on established connections).
  if (!o.capture) return tables.filter((t) => t.name === NFT_MANGLE_TABLE);
  if (o.dnsCapture) {
    tables.push({
      name: NFT_RAW_TABLE,
      chains: [
        {
          name: 'prerouting',
          base: 'type filter hook prerouting priority -300; policy accept;',
          rules: ['jump istio-prerouting'],
        },
        {
          name: 'output',
          base: 'type filter hook output priority -300; policy accept;',
          rules: ['jump istio-output'],
        },
        {
          name: 'istio-prerouting',
          rules: [`udp sport ${DNS_PORT} ${notZtunnel} counter ct zone set ${DNS_CT_ZONE}`],
        },
        {
          name: 'istio-output',
          rules: [`udp dport ${DNS_PORT} meta mark & ${mask} == ${zmark} counter ct zone set ${DNS_CT_ZONE}`],
        },
      ],
    });
  }
  return tables;
}

/**
 * `nft -f` script: deletes our three inet tables (whatever is there, including a raw table left
 * from when DNS capture was on) and creates the wanted ones, all in one nft transaction, so
 * applying it twice gives the same ruleset and a failure changes nothing.
 */
export function renderNftables(input: RedirectOptionsInput = {}): string {
  const o = resolveRedirectOptions(input);
  const lines: string[] = [];
  // `add` first so the `delete` cannot fail on a missing table (nft 1.0.6 has no `destroy`).
  for (const name of NFT_TABLES) lines.push(`add table inet ${name}`, `delete table inet ${name}`);
  for (const t of nftTables(o)) {
    lines.push(`table inet ${t.name} {`);
    t.chains.forEach((c, i) => {
      if (i > 0) lines.push('');
      lines.push(`\tchain ${c.name} {`);
      if (c.base !== undefined) lines.push(`\t\t${c.base}`);
      for (const r of c.rules) lines.push(`\t\t${r}`);
      lines.push('\t}');
    });
    lines.push('}');
  }
  return lines.join('\n') + '\n';
}

/** `ip rule` selector of our policy rule (without the verb). */
export function policyRuleSpec(input: RedirectOptionsInput = {}): string {
  const o = resolveRedirectOptions(input);
  return `priority ${o.rulePriority} fwmark ${hex(o.connmark)}/${hex(o.markMask)} lookup ${o.routeTable}`;
}

/** `ip route` spec of our table-100 route (without the verb). */
export function policyRouteSpec(input: RedirectOptionsInput, family: IpFamily): string {
  const o = resolveRedirectOptions(input);
  return `local ${family === 'v4' ? '0.0.0.0/0' : '::/0'} dev lo table ${o.routeTable}`;
}

/**
 * `ip -batch` input for the policy routing of §2.3, per family (run with `ip -4` / `ip -6`):
 * the ip rule `fwmark 0x111/0xfff lookup 100` and `local 0.0.0.0/0 dev lo` in table 100
 * (`local ::/0 dev lo` for IPv6, only when `ipv6`).
 */
export function renderRoutes(input: RedirectOptionsInput = {}): { v4: string; v6?: string } {
  const o = resolveRedirectOptions(input);
  const batch = (family: IpFamily): string =>
    `rule add ${policyRuleSpec(o)}\nroute replace ${policyRouteSpec(o, family)}\n`;
  return o.ipv6 ? { v4: batch('v4'), v6: batch('v6') } : { v4: batch('v4') };
}

// SPDX-License-Identifier: Apache-2.0
// Options of the in-pod redirection rules and their validation (spec ambient-protocols.md §2.2
// constants table, §2.3 policy routing, §2.4 probe SNAT addresses, §2.5 per-pod overrides).
//
// Defaults are istio/istio:cni/pkg/config/config.go. Everything the renderer interpolates into
// an iptables-restore or nft script goes through this validation first, so a hostile annotation
// (e.g. a "virtual interface" named `x -j ACCEPT`) can never inject rules.
import { isIPv4, isIPv6 } from 'node:net';
import { RedirectError } from './errors.ts';

/** SO_MARK that ztunnel puts on every socket it opens in the pod netns (1337). */
export const DEFAULT_ZTUNNEL_MARK = 0x539;
/** Connmark given to connections ztunnel opens toward the local app ("tproxy" mark). */
export const DEFAULT_CONNMARK = 0x111;
/** Mask applied to both marks, so other users of the mark bits are left alone. */
export const DEFAULT_MARK_MASK = 0xfff;
/** CONNMARK --restore-mark copies all 32 bits (Istio's restore mask). */
export const RESTORE_MASK = 0xffffffff;
/** Policy-routing table holding `local 0.0.0.0/0 dev lo`. */
export const DEFAULT_ROUTE_TABLE = 100;
/** Priority of `ip rule fwmark 0x111/0xfff lookup 100`: just before main (32766). */
export const DEFAULT_RULE_PRIORITY = 32764;
/** Address the host SNATs kubelet probes to (HOST_PROBE_SNAT_ADDRESS). */
export const DEFAULT_PROBE_SNAT_IPV4 = '169.254.7.127';
/** IPv6 probe SNAT address (HOST_PROBE_V6_SNAT_ADDRESS). */
export const DEFAULT_PROBE_SNAT_IPV6 = 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff';
/** DNS port captured when DNS capture is on. */
export const DNS_PORT = 53;
/** Conntrack zone for proxy⇄upstream DNS (istio/istio#33469 port-collision fix). */
export const DNS_CT_ZONE = 1;

/** ztunnel's in-pod listener ports (spec §1.1, §2.7). */
export interface RedirectPorts {
  /** Outbound capture (REDIRECT target for app-originated TCP). */
  outbound: number;
  /** Inbound plaintext capture. */
  inbound: number;
  /** Inbound HBONE: never redirected. */
  hbone: number;
  /** DNS proxy (UDP and TCP). */
  dns: number;
}

export const DEFAULT_PORTS: Readonly<RedirectPorts> = Object.freeze({
  outbound: 15001,
  inbound: 15006,
  hbone: 15008,
  dns: 15053,
});

/** Fully resolved options; see {@link resolveRedirectOptions}. */
export interface RedirectOptions {
  ztunnelMark: number;
  connmark: number;
  markMask: number;
  routeTable: number;
  rulePriority: number;
  probeSnatIpv4: string;
  probeSnatIpv6: string;
  /** Also render ip6tables rules / ip6 nft rules and the `local ::/0 dev lo` route. */
  ipv6: boolean;
  /** Capture DNS (UDP+TCP port 53) to the ztunnel DNS proxy; adds the raw-table ct zone rules. */
  dnsCapture: boolean;
  /** `ambient.istio.io/bypass-inbound-capture`: only outbound is captured. */
  bypassInboundCapture: boolean;
  /**
   * False renders only what established connections through ztunnel need (connection marks and
   * the reply route) and captures nothing new: the agent's first step when a pod leaves the
   * mesh, so its connections drain instead of breaking (ARCHITECTURE.md, un-enrolment).
   */
  capture: boolean;
  /** `istio.io/reroute-virtual-interfaces`: inbound TCP on these goes to the outbound port. */
  rerouteVirtualInterfaces: readonly string[];
  ports: RedirectPorts;
}

/** What callers pass: every field optional, defaults filled in. */
export type RedirectOptionsInput = Partial<Omit<RedirectOptions, 'ports'>> & {
  ports?: Partial<RedirectPorts>;
};

export const DEFAULT_REDIRECT_OPTIONS: Readonly<RedirectOptions> = Object.freeze({
  ztunnelMark: DEFAULT_ZTUNNEL_MARK,
  connmark: DEFAULT_CONNMARK,
  markMask: DEFAULT_MARK_MASK,
  routeTable: DEFAULT_ROUTE_TABLE,
  rulePriority: DEFAULT_RULE_PRIORITY,
  probeSnatIpv4: DEFAULT_PROBE_SNAT_IPV4,
  probeSnatIpv6: DEFAULT_PROBE_SNAT_IPV6,
  ipv6: false,
  dnsCapture: false,
  bypassInboundCapture: false,
  capture: true,
  rerouteVirtualInterfaces: Object.freeze([]),
  ports: DEFAULT_PORTS,
});

const OPTION_KEYS = new Set<string>(Object.keys(DEFAULT_REDIRECT_OPTIONS));
const PORT_KEYS = ['outbound', 'inbound', 'hbone', 'dns'] as const;

// Linux IFNAMSIZ is 16 including the NUL. We accept a conservative character set (stricter than
// the kernel, which only forbids '/', ':' and whitespace) because the name is interpolated into
// rule text.
const IFNAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function invalid(code: ConstructorParameters<typeof RedirectError>[0], message: string): never {
  throw new RedirectError(code, message);
}

function checkUint32(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 0xffffffff) {
    invalid(
      'CNI_ERR_INVALID_MARK',
      `redirect option ${name}=${String(v)} is not a mark: expected an integer in 1..0xffffffff`,
    );
  }
  return v;
}

function checkBool(name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') {
    invalid('CNI_ERR_INVALID_OPTIONS', `redirect option ${name}=${String(v)} must be true or false`);
  }
  return v;
}

function checkPort(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    invalid(
      'CNI_ERR_INVALID_PORT',
      `redirect option ports.${name}=${String(v)} is not a TCP/UDP port (1..65535)`,
    );
  }
  return v;
}

/**
 * Canonical text of an IPv6 address (RFC 5952: lower case, no leading zeros, the longest run of
 * two or more zero groups compressed, leftmost on ties). iptables-save prints addresses this way,
 * and the applier compares rendered rules with iptables-save output, so we render the same form.
 * Addresses with an embedded dotted quad are rejected (never needed for a probe SNAT address).
 */
export function canonicalIpv6(addr: string): string {
  if (!isIPv6(addr) || addr.includes('.') || addr.includes('%')) {
    invalid('CNI_ERR_INVALID_ADDRESS', `"${addr}" is not a plain IPv6 address`);
  }
  const [head = '', tail] = addr.toLowerCase().split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...Array<string>(fill).fill('0'), ...tailGroups].map((g) =>
    Number.parseInt(g, 16).toString(16),
  );
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLen).join(':')}`;
}

function checkProbeIpv4(v: unknown): string {
  if (typeof v !== 'string' || !isIPv4(v)) {
    invalid(
      'CNI_ERR_INVALID_ADDRESS',
      `redirect option probeSnatIpv4=${String(v)} is not an IPv4 address (HOST_PROBE_SNAT_ADDRESS)`,
    );
  }
  const first = Number(v.split('.')[0]);
  if (v === '0.0.0.0' || first === 127 || first >= 224) {
    invalid(
      'CNI_ERR_INVALID_ADDRESS',
      `redirect option probeSnatIpv4=${v} must be a unicast, non-loopback address: probe traffic from it bypasses capture`,
    );
  }
  // isIPv4 accepts only the canonical dotted quad without leading zeros, so v is already canonical.
  return v;
}

function checkProbeIpv6(v: unknown): string {
  if (typeof v !== 'string') {
    invalid(
      'CNI_ERR_INVALID_ADDRESS',
      `redirect option probeSnatIpv6=${String(v)} is not an IPv6 address (HOST_PROBE_V6_SNAT_ADDRESS)`,
    );
  }
  const c = canonicalIpv6(v);
  if (c === '::' || c === '::1' || c.startsWith('ff')) {
    invalid(
      'CNI_ERR_INVALID_ADDRESS',
      `redirect option probeSnatIpv6=${v} must be a unicast, non-loopback address: probe traffic from it bypasses capture`,
    );
  }
  return c;
}

function checkInterfaces(v: unknown): readonly string[] {
  if (!Array.isArray(v)) {
    invalid(
      'CNI_ERR_INVALID_OPTIONS',
      'redirect option rerouteVirtualInterfaces must be a list of interface names',
    );
  }
  const seen = new Set<string>();
  for (const name of v as unknown[]) {
    if (typeof name !== 'string' || !IFNAME_RE.test(name)) {
      invalid(
        'CNI_ERR_INVALID_INTERFACE',
        `virtual interface name ${JSON.stringify(name)} is invalid: expected 1-15 characters from [A-Za-z0-9_.-], ` +
          'not starting with a punctuation character (check the istio.io/reroute-virtual-interfaces annotation)',
      );
    }
    if (name === 'lo') {
      invalid(
        'CNI_ERR_INVALID_INTERFACE',
        'virtual interface "lo" cannot be rerouted: ztunnel reaches the app over lo (check the istio.io/reroute-virtual-interfaces annotation)',
      );
    }
    if (seen.has(name)) {
      invalid(
        'CNI_ERR_INVALID_INTERFACE',
        `virtual interface "${name}" is listed twice (check the istio.io/reroute-virtual-interfaces annotation)`,
      );
    }
    seen.add(name);
  }
  return Object.freeze([...seen]);
}

/**
 * Fill defaults and validate. Throws a {@link RedirectError} (CNI_ERR_INVALID_*) naming the
 * option, the value and what is expected. Unknown keys are rejected: a typo in a config file must
 * not silently fall back to a default.
 */
export function resolveRedirectOptions(input: RedirectOptionsInput = {}): Readonly<RedirectOptions> {
  if (typeof input !== 'object' || Array.isArray(input)) {
    invalid('CNI_ERR_INVALID_OPTIONS', 'redirect options must be an object');
  }
  for (const key of Object.keys(input)) {
    if (!OPTION_KEYS.has(key)) {
      invalid(
        'CNI_ERR_INVALID_OPTIONS',
        `unknown redirect option "${key}" (known: ${[...OPTION_KEYS].join(', ')})`,
      );
    }
  }
  const d = DEFAULT_REDIRECT_OPTIONS;
  const ztunnelMark = checkUint32('ztunnelMark', input.ztunnelMark ?? d.ztunnelMark);
  const connmark = checkUint32('connmark', input.connmark ?? d.connmark);
  const markMask = checkUint32('markMask', input.markMask ?? d.markMask);
  for (const [name, mark] of [
    ['ztunnelMark', ztunnelMark],
    ['connmark', connmark],
  ] as const) {
    if ((mark & ~markMask) >>> 0 !== 0) {
      invalid(
        'CNI_ERR_INVALID_MARK',
        `redirect option ${name}=${hex(mark)} has bits outside markMask=${hex(markMask)}`,
      );
    }
  }
  if (ztunnelMark === connmark) {
    invalid(
      'CNI_ERR_INVALID_MARK',
      `ztunnelMark and connmark are both ${hex(ztunnelMark)}: ztunnel's own traffic and the replies to it must be distinguishable`,
    );
  }

  const routeTable = input.routeTable ?? d.routeTable;
  // 0 is unspec; 253 default, 254 main, 255 local belong to the kernel.
  if (
    !Number.isInteger(routeTable) ||
    routeTable < 1 ||
    routeTable > 0xfffffffe ||
    [253, 254, 255].includes(routeTable)
  ) {
    invalid(
      'CNI_ERR_INVALID_ROUTE',
      `redirect option routeTable=${String(routeTable)} must be an integer in 1..252 or 256..4294967294 (253-255 are the kernel's default/main/local)`,
    );
  }
  const rulePriority = input.rulePriority ?? d.rulePriority;
  // 0 is the `local` rule, 32766 main, 32767 default.
  if (!Number.isInteger(rulePriority) || rulePriority < 1 || rulePriority > 32765) {
    invalid(
      'CNI_ERR_INVALID_ROUTE',
      `redirect option rulePriority=${String(rulePriority)} must be an integer in 1..32765 (it must come before the main table rule at 32766)`,
    );
  }

  const portsIn: unknown = input.ports ?? {};
  if (typeof portsIn !== 'object' || portsIn === null || Array.isArray(portsIn)) {
    invalid('CNI_ERR_INVALID_OPTIONS', 'redirect option ports must be an object');
  }
  for (const key of Object.keys(portsIn)) {
    if (!(PORT_KEYS as readonly string[]).includes(key)) {
      invalid(
        'CNI_ERR_INVALID_OPTIONS',
        `unknown redirect option "ports.${key}" (known: ${PORT_KEYS.join(', ')})`,
      );
    }
  }
  const portsRec = portsIn as Partial<Record<(typeof PORT_KEYS)[number], unknown>>;
  const ports: RedirectPorts = {
    outbound: checkPort('outbound', portsRec.outbound ?? d.ports.outbound),
    inbound: checkPort('inbound', portsRec.inbound ?? d.ports.inbound),
    hbone: checkPort('hbone', portsRec.hbone ?? d.ports.hbone),
    dns: checkPort('dns', portsRec.dns ?? d.ports.dns),
  };
  const used = new Map<number, string>();
  for (const key of PORT_KEYS) {
    const other = used.get(ports[key]);
    if (other !== undefined) {
      invalid(
        'CNI_ERR_INVALID_PORT',
        `redirect options ports.${other} and ports.${key} are both ${ports[key]}: each ztunnel listener needs its own port`,
      );
    }
    used.set(ports[key], key);
  }
  if (ports.dns === DNS_PORT) {
    invalid('CNI_ERR_INVALID_PORT', `redirect option ports.dns=${DNS_PORT} would redirect DNS to itself`);
  }

  return Object.freeze({
    ztunnelMark,
    connmark,
    markMask,
    routeTable,
    rulePriority,
    probeSnatIpv4: checkProbeIpv4(input.probeSnatIpv4 ?? d.probeSnatIpv4),
    probeSnatIpv6: checkProbeIpv6(input.probeSnatIpv6 ?? d.probeSnatIpv6),
    ipv6: checkBool('ipv6', input.ipv6 ?? d.ipv6),
    dnsCapture: checkBool('dnsCapture', input.dnsCapture ?? d.dnsCapture),
    bypassInboundCapture: checkBool(
      'bypassInboundCapture',
      input.bypassInboundCapture ?? d.bypassInboundCapture,
    ),
    capture: checkBool('capture', input.capture ?? d.capture),
    rerouteVirtualInterfaces: checkInterfaces(input.rerouteVirtualInterfaces ?? d.rerouteVirtualInterfaces),
    ports: Object.freeze(ports),
  });
}

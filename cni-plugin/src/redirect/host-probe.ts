// SPDX-License-Identifier: Apache-2.0
// Kubelet health probes on the node (ambient-protocols.md §2.4; security-and-reliability.md
// checklist D.54 and the 1.29.5 probe-set eviction advisory).
//
// Inside an enrolled pod, TCP from the probe address (169.254.7.127 by default) is ACCEPTed before
// capture, so probes reach the application without mTLS or policy. On the node this module keeps:
//
//   * SNAT: TCP opened by a local process of the node (a packet with a socket: upstream's
//     iptables `-m owner --socket-exists`; kubelet is one) to an enrolled pod's IP leaves with the
//     probe address as its source. Without it a probe arrives from the node IP, is captured, and
//     a STRICT pod or an ALLOW policy refuses it: the pod never becomes ready.
//   * Anti-spoofing: a packet that *arrives* carrying the probe address as its source (from a
//     pod, bridged or routed, or from another node) is dropped, so nothing but the node's own
//     SNAT can claim the bypass (D.54). Host-originated frames do not cross these hooks.
//
// The state is two nftables tables written whole in one `nft -f` transaction (never a half-applied
// set): `inet istio-ambient-host` (the target sets, the SNAT and the routed drop) and `bridge
// istio-ambient-host` (the drop between bridge ports). Each change rewrites them; changes that
// arrive while a write is in flight are folded into the next one.
//
// The agent starts the sets only after its startup reconcile knows every enrolled pod (start()),
// and leaves them in place when it stops, so a restart never drops a running pod's probes (the
// 1.29.5 bug); uninstall() removes them.
import { isIPv4, isIPv6 } from 'node:net';
import { errorMessage } from '../../../src/shared/errors.ts';
import { describeExit, requireBinary, runCommand } from './exec.ts';
import { RedirectError } from './errors.ts';
import { canonicalIpv6, DEFAULT_PROBE_SNAT_IPV4, DEFAULT_PROBE_SNAT_IPV6 } from './options.ts';

export const HOST_PROBE_TABLE = 'istio-ambient-host';

export interface HostProbeAddresses {
  /** HOST_PROBE_SNAT_ADDRESS; must equal the in-pod rules' probe address. */
  readonly snatV4: string;
  /** HOST_PROBE_V6_SNAT_ADDRESS. */
  readonly snatV6: string;
}

export const DEFAULT_HOST_PROBE_ADDRESSES: HostProbeAddresses = {
  snatV4: DEFAULT_PROBE_SNAT_IPV4,
  snatV6: DEFAULT_PROBE_SNAT_IPV6,
};

/** Deletes both tables; create-then-delete makes it safe when a table is absent. */
const DELETE_TABLES = [
  `add table inet ${HOST_PROBE_TABLE}`,
  `delete table inet ${HOST_PROBE_TABLE}`,
  `add table bridge ${HOST_PROBE_TABLE}`,
  `delete table bridge ${HOST_PROBE_TABLE}`,
];

function checkV4(what: string, ip: string): string {
  if (!isIPv4(ip))
    throw new RedirectError('CNI_ERR_INVALID_ADDRESS', `${what} "${ip}" is not an IPv4 address`);
  return ip;
}

/**
 * The nft script that replaces both tables with the given probe targets. Pure: every address is
 * validated before it is interpolated.
 */
export function renderHostProbeRules(addrs: HostProbeAddresses, targets: Iterable<string>): string {
  const snat4 = checkV4('probe SNAT address', addrs.snatV4);
  const snat6 = canonicalIpv6(addrs.snatV6);
  const v4 = new Set<string>();
  const v6 = new Set<string>();
  for (const ip of targets) {
    if (isIPv4(ip)) v4.add(ip);
    else if (isIPv6(ip)) v6.add(canonicalIpv6(ip));
    else throw new RedirectError('CNI_ERR_INVALID_ADDRESS', `probe target "${ip}" is not an IP address`);
  }
  const elements = (s: Set<string>): string =>
    s.size === 0 ? '' : ` elements = { ${[...s].sort().join(', ')} };`;
  // What arrives claiming the probe address: dropped on the routed and on the bridged path alike.
  const dropSpoofed = [`    ip saddr ${snat4} drop`, `    ip6 saddr ${snat6} drop`];
  const t = HOST_PROBE_TABLE;
  return [
    // All of it is one transaction: the node never runs without the tables or with half of them.
    ...DELETE_TABLES,
    `table inet ${t} {`,
    `  set probe-targets-v4 { type ipv4_addr;${elements(v4)} }`,
    `  set probe-targets-v6 { type ipv6_addr;${elements(v6)} }`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    // `meta skuid` exists only for packets of a local socket: kubelet's, not forwarded traffic.
    `    meta skuid 0-4294967295 ip daddr @probe-targets-v4 meta l4proto tcp snat ip to ${snat4}`,
    `    meta skuid 0-4294967295 ip6 daddr @probe-targets-v6 meta l4proto tcp snat ip6 to ${snat6}`,
    '  }',
    '  chain prerouting {',
    '    type filter hook prerouting priority raw; policy accept;',
    ...dropSpoofed,
    '  }',
    '}',
    `table bridge ${t} {`,
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    ...dropSpoofed,
    '  }',
    '}',
    '',
  ].join('\n');
}

const WRITE_TIMEOUT_MS = 10_000;

/** The node's probe SNAT and anti-spoofing tables, kept in step with the enrolled pods. */
export class HostProbes {
  readonly #addrs: HostProbeAddresses;
  readonly #netnsPath: string | undefined;
  readonly #targets = new Map<string, readonly string[]>();
  #started = false;
  /** The write in flight, and whether another must follow it. */
  #writing: Promise<void> | undefined;
  #again: Promise<void> | undefined;

  /** `netnsPath`: the node's netns when the agent runs elsewhere (tests); default: our own. */
  constructor(addrs: HostProbeAddresses = DEFAULT_HOST_PROBE_ADDRESSES, opts: { netnsPath?: string } = {}) {
    renderHostProbeRules(addrs, []); // validates the addresses now, not at the first pod
    this.#addrs = addrs;
    this.#netnsPath = opts.netnsPath;
  }

  /** The probe targets held, by pod uid. */
  targets(): ReadonlyMap<string, readonly string[]> {
    return this.#targets;
  }

  /**
   * Writes the tables with every pod set so far, and from now on after every change. Called once
   * the agent knows all enrolled pods; until then set()/delete() only record.
   */
  async start(): Promise<void> {
    requireBinary('nft', 'install nftables: kubelet probes of mesh pods are SNATed with it');
    this.#started = true;
    await this.#write();
  }

  /** The pod's IPs are probe targets; resolves once the tables hold them (after start()). */
  async set(uid: string, ips: readonly string[]): Promise<void> {
    // Sorted: the ADD's prevResult and status.podIPs may list the same addresses in another order.
    const sorted = [...ips].sort();
    const known = this.#targets.get(uid);
    if (known !== undefined && known.length === sorted.length && known.every((ip, i) => ip === sorted[i])) {
      return;
    }
    this.#targets.set(uid, sorted);
    if (this.#started) await this.#write();
  }

  /** The pod is no longer a probe target. */
  async delete(uid: string): Promise<void> {
    if (!this.#targets.delete(uid)) return;
    if (this.#started) await this.#write();
  }

  /** Removes both tables from the node (uninstall). */
  async uninstall(): Promise<void> {
    this.#started = false;
    await this.#nft(`${DELETE_TABLES.join('\n')}\n`, 'removing');
  }

  /** One write at a time; a change during a write gets one more write, shared by all waiting. */
  #write(): Promise<void> {
    if (this.#writing === undefined) {
      this.#writing = this.#once().finally(() => {
        this.#writing = undefined;
      });
      return this.#writing;
    }
    this.#again ??= this.#writing
      .catch(() => undefined)
      .then(() => {
        this.#again = undefined;
        return this.#write();
      });
    return this.#again;
  }

  async #once(): Promise<void> {
    const all = [...this.#targets.values()].flat();
    await this.#nft(renderHostProbeRules(this.#addrs, all), 'writing');
  }

  async #nft(script: string, what: string): Promise<void> {
    let r;
    try {
      r = await runCommand(requireBinary('nft', 'install nftables'), ['-f', '-'], {
        input: script,
        timeoutMs: WRITE_TIMEOUT_MS,
        ...(this.#netnsPath !== undefined && { netnsPath: this.#netnsPath }),
      });
    } catch (e) {
      throw new RedirectError('CNI_ERR_APPLY', `${what} the node's probe tables: ${errorMessage(e)}`, {
        cause: e,
      });
    }
    if (r.code !== 0 || r.timedOut) {
      throw new RedirectError(
        'CNI_ERR_APPLY',
        `${what} the node's probe tables (nft -f -) ${describeExit(r)}: ${r.stderr.trim()}`,
      );
    }
  }
}

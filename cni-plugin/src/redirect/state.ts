// SPDX-License-Identifier: Apache-2.0
// Pure helpers that read the rules present in a pod netns and compute the scripts that move it
// to the wanted state (spec ambient-protocols.md §2.2; spec security-and-reliability.md §1.1,
// istio/istio#61020 duplicate rules after an iptables backend flip, and checklist D case 59,
// all-or-nothing apply).
//
// "Ours" means: chains ISTIO_PRERT / ISTIO_OUTPUT in tables mangle, nat and raw, every rule in
// them, and every rule of another chain that jumps to them; the inet tables istio-ambient-*.
// Everything else in the netns belongs to someone else and is never touched.
import { IPTABLES_TABLES, ISTIO_CHAINS, NFT_TABLES } from './render.ts';
import type { IptablesTable } from './render.ts';

/** Our objects in one iptables table, in iptables-save order. */
export interface IptablesTableState {
  table: IptablesTable;
  /** Our chains that exist, sorted (iptables-save sorts user chains by name). */
  chains: string[];
  /** `-A <builtin> ... -j ISTIO_*` lines, in built-in chain order. */
  jumps: string[];
  /** `-A ISTIO_* ...` lines, grouped by chain name, rule order kept. */
  rules: string[];
}

/** Our objects in one address family of one iptables backend. */
export interface IptablesState {
  tables: IptablesTableState[];
}

const BUILTIN_ORDER = ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'];
const OUR_CHAINS = new Set(ISTIO_CHAINS);
const JUMP_RE = /(?:^|\s)-[jg] (ISTIO_PRERT|ISTIO_OUTPUT)(?:\s|$)/;

function chainOf(line: string): string {
  return line.split(' ', 3)[1] ?? '';
}

function stableSortBy<T>(items: readonly T[], key: (x: T) => number | string): T[] {
  return items
    .map((x, i) => ({ x, i, k: key(x) }))
    .sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : a.i - b.i))
    .map((e) => e.x);
}

/**
 * Extract our chains, jumps and rules from `iptables-save` (or our own rendered restore input).
 * Comments, counters on chain declarations and everything not ours are dropped; the result is
 * sorted the way iptables-save prints, so rendered and saved rules compare equal.
 */
export function parseIptablesOurs(text: string): IptablesState {
  const byTable = new Map<IptablesTable, IptablesTableState>();
  let current: IptablesTableState | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      const name = line.slice(1).trim();
      current = (IPTABLES_TABLES as readonly string[]).includes(name)
        ? { table: name as IptablesTable, chains: [], jumps: [], rules: [] }
        : undefined;
      if (current) byTable.set(current.table, current);
      continue;
    }
    if (!current) continue;
    if (line.startsWith(':')) {
      const chain = line.slice(1).split(' ')[0] ?? '';
      if (OUR_CHAINS.has(chain)) current.chains.push(chain);
      continue;
    }
    if (line.startsWith('-A ')) {
      const chain = chainOf(line);
      // Counters from `iptables-save -c` look like `[0:0] -A ...`; we never ask for them.
      if (OUR_CHAINS.has(chain)) current.rules.push(line);
      else if (JUMP_RE.test(line)) current.jumps.push(line);
    }
  }
  const tables: IptablesTableState[] = [];
  for (const name of IPTABLES_TABLES) {
    const t = byTable.get(name);
    if (!t || (t.chains.length === 0 && t.jumps.length === 0 && t.rules.length === 0)) continue;
    tables.push({
      table: name,
      chains: [...new Set(t.chains)].sort(),
      jumps: stableSortBy(t.jumps, (l) => {
        const i = BUILTIN_ORDER.indexOf(chainOf(l));
        return i === -1 ? BUILTIN_ORDER.length : i;
      }),
      rules: stableSortBy(t.rules, chainOf),
    });
  }
  return { tables };
}

/** Canonical text of our iptables objects: valid `iptables-restore --noflush` input. Empty if none. */
export function formatIptablesState(state: IptablesState): string {
  const lines: string[] = [];
  for (const t of state.tables) {
    lines.push(`*${t.table}`, ...t.chains.map((c) => `:${c} - [0:0]`), ...t.jumps, ...t.rules, 'COMMIT');
  }
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}

/** Canonical form of a save dump or rendered text (see {@link parseIptablesOurs}). */
export function canonicalIptables(text: string): string {
  return formatIptablesState(parseIptablesOurs(text));
}

function removalLines(t: IptablesTableState): string[] {
  return [
    ...t.jumps.map((j) => `-D ${j.slice(3)}`),
    ...t.chains.map((c) => `-F ${c}`),
    ...t.chains.map((c) => `-X ${c}`),
  ];
}

/**
 * `iptables-restore --noflush` input that turns `current` into `desired` (both canonical
 * states). Each table is rewritten in one block, and iptables commits a table atomically, so no
 * table is ever seen half-written; tables whose content is already right are left out. Existing
 * jumps are deleted (every copy, so duplicates from an earlier bug are repaired) before the
 * wanted ones are appended, and declaring an existing chain flushes it. Returns '' when nothing
 * needs to change.
 */
export function iptablesTransitionScript(current: IptablesState, desired: IptablesState): string {
  const lines: string[] = [];
  for (const name of IPTABLES_TABLES) {
    const cur = current.tables.find((t) => t.table === name);
    const want = desired.tables.find((t) => t.table === name);
    if (cur && want && formatIptablesState({ tables: [cur] }) === formatIptablesState({ tables: [want] }))
      continue;
    if (want) {
      const extra = cur ? cur.chains.filter((c) => !want.chains.includes(c)) : [];
      lines.push(
        `*${name}`,
        ...want.chains.map((c) => `:${c} - [0:0]`),
        ...(cur ? cur.jumps.map((j) => `-D ${j.slice(3)}`) : []),
        ...extra.map((c) => `-F ${c}`),
        ...extra.map((c) => `-X ${c}`),
        ...want.jumps,
        ...want.rules,
        'COMMIT',
      );
    } else if (cur) {
      lines.push(`*${name}`, ...removalLines(cur), 'COMMIT');
    }
  }
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// nftables

/** Names of our inet tables found in `nft list tables` output. */
export function parseNftTableNames(text: string): string[] {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^\s*table\s+inet\s+(\S+)/.exec(line);
    if (m?.[1] !== undefined && NFT_TABLES.includes(m[1])) names.add(m[1]);
  }
  return NFT_TABLES.filter((n) => names.has(n));
}

// Standard priority names nft prints instead of numbers (nft(8), "PRIORITY").
const NFT_PRIORITY_NAMES: Record<string, string> = {
  raw: '-300',
  mangle: '-150',
  dstnat: '-100',
  filter: '0',
  security: '50',
  srcnat: '100',
};

function normalizeNftLine(line: string): string {
  let s = line.replace(/"/g, '').replace(/\s+/g, ' ').trim();
  s = s.replace(/ ;/g, ';');
  s = s.replace(
    /\bpriority ([a-z]+)(?=;)/,
    (_m, name: string) => `priority ${NFT_PRIORITY_NAMES[name] ?? name}`,
  );
  s = s.replace(/\band\b/g, '&');
  s = s.replace(/\b0x0*([0-9a-f]+)\b/g, '0x$1');
  // nft prints host prefixes without the /32 or /128.
  s = s.replace(/(\d+\.\d+\.\d+\.\d+)\/32\b/g, '$1').replace(/([0-9a-f:]*:[0-9a-f:]*)\/128\b/g, '$1');
  // `ct mark set ct mark & KEEP | SET` is printed with KEEP|SET as the mask (same result).
  s = s.replace(/ct mark set ct mark & (0x[0-9a-f]+) \| (0x[0-9a-f]+)/, (_m, keep: string, set: string) => {
    const k = (Number.parseInt(keep, 16) | Number.parseInt(set, 16)) >>> 0;
    return `ct mark set ct mark & 0x${k.toString(16)} | ${set}`;
  });
  // `counter packets N bytes M` (listing without -s) is the same rule as `counter`.
  s = s.replace(/\bcounter packets \d+ bytes \d+/g, 'counter');
  return s;
}

/**
 * Canonical text of our inet tables from an nft script (our rendered one) or from
 * `nft [-s] list ...` output: tables and chains sorted by name, one normalised statement per
 * line, `add`/`delete table` commands dropped. Two texts describing the same ruleset give the
 * same result, independent of how this nft version prints priorities, hex widths and quotes.
 */
export function canonicalNft(text: string): string {
  const tables = new Map<string, Map<string, string[]>>();
  let table: Map<string, string[]> | undefined;
  let chain: string[] | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') continue;
    let m = /^table\s+inet\s+(\S+)\s*\{$/.exec(line);
    if (m?.[1] !== undefined) {
      table = NFT_TABLES.includes(m[1]) ? new Map() : undefined;
      if (table) tables.set(m[1], table);
      chain = undefined;
      continue;
    }
    if (/^table\s/.test(line)) {
      table = undefined;
      continue;
    }
    m = /^chain\s+(\S+)\s*\{$/.exec(line);
    if (m?.[1] !== undefined) {
      chain = [];
      table?.set(m[1], chain);
      continue;
    }
    if (line === '}') {
      if (chain) chain = undefined;
      else table = undefined;
      continue;
    }
    if (chain && table) {
      // Our renderer may put `type ...; policy accept;` on one line; nft prints it that way too.
      chain.push(normalizeNftLine(line));
    }
  }
  const out: string[] = [];
  for (const name of [...tables.keys()].sort()) {
    out.push(`table inet ${name}`);
    const chains = tables.get(name) ?? new Map<string, string[]>();
    for (const c of [...chains.keys()].sort()) {
      out.push(`  chain ${c}`, ...(chains.get(c) ?? []).map((r) => `    ${r}`));
    }
  }
  return out.length === 0 ? '' : out.join('\n') + '\n';
}

/**
 * Our inet tables out of `nft -s list ruleset inet`, each block exactly as nft printed it (valid
 * `nft -f` input, which the applier keeps to restore on rollback), and their names. Tables of
 * others are left out.
 */
export function extractNftTables(listing: string): { tables: string[]; listing: string } {
  const blocks = new Map<string, string>();
  let name: string | undefined;
  let block: string[] = [];
  for (const line of listing.split('\n')) {
    if (name === undefined) {
      const m = /^table\s+inet\s+(\S+)\s*\{\s*$/.exec(line);
      if (m?.[1] !== undefined && NFT_TABLES.includes(m[1])) {
        name = m[1];
        block = [line];
      }
      continue;
    }
    block.push(line);
    // Top-level blocks close with a `}` in the first column; nested ones are indented.
    if (line === '}') {
      blocks.set(name, `${block.join('\n')}\n`);
      name = undefined;
    }
  }
  const tables = NFT_TABLES.filter((n) => blocks.has(n));
  return { tables, listing: tables.map((n) => blocks.get(n)).join('') };
}

/** nft script removing the named tables of ours (only those given, so it cannot fail on absent ones). */
export function nftRemovalScript(present: readonly string[]): string {
  return present.map((n) => `delete table inet ${n}\n`).join('');
}

// ---------------------------------------------------------------------------------------------
// iproute2

/** One entry of `ip -j rule show`. */
export interface IpRuleJson {
  priority?: number;
  src?: string;
  fwmark?: string;
  fwmask?: string;
  table?: string;
}

/** One entry of `ip -j route show table N`. */
export interface IpRouteJson {
  type?: string;
  dst?: string;
  dev?: string;
}

function parseJsonArray(text: string): unknown[] {
  const t = text.trim();
  if (t === '') return [];
  const v: unknown = JSON.parse(t);
  return Array.isArray(v) ? (v as unknown[]) : [];
}

/** How many copies of our policy rule `ip -j rule show` lists. */
export function countPolicyRules(
  json: string,
  want: { priority: number; connmark: number; markMask: number; table: number },
): number {
  return parseJsonArray(json).filter((r) => {
    const e = r as IpRuleJson;
    return (
      e.priority === want.priority &&
      e.fwmark !== undefined &&
      Number.parseInt(e.fwmark, 16) === want.connmark &&
      Number.parseInt(e.fwmask ?? '0xffffffff', 16) === want.markMask &&
      e.table === String(want.table)
    );
  }).length;
}

/** Whether `ip -j route show table N` lists our `local default dev lo` route. */
export function hasLocalDefaultRoute(json: string): boolean {
  return parseJsonArray(json).some((r) => {
    const e = r as IpRouteJson;
    return (
      e.type === 'local' &&
      (e.dst === 'default' || e.dst === '0.0.0.0/0' || e.dst === '::/0') &&
      e.dev === 'lo'
    );
  });
}

/** Parse `iptables -V` output: "iptables v1.8.9 (nf_tables)" → nft; "(legacy)" or no suffix → legacy. */
export function parseIptablesVersion(text: string): 'legacy' | 'nft' {
  if (/\(nf_tables\)/.test(text)) return 'nft';
  return 'legacy';
}

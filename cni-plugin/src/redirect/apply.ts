// SPDX-License-Identifier: Apache-2.0
// Applying, inspecting and removing the in-pod redirection inside a pod network namespace
// (spec ambient-protocols.md §2.1 steps 3.1 (install) and 5 (removal), §2.2 rules, §2.3 routing;
// spec security-and-reliability.md §1.1 istio/istio#61020 and checklist D case 59).
//
// Guarantees:
// - All or nothing. Every step records how to undo itself; if any step fails, the steps already
//   taken are undone, so the netns ends exactly as it was before the call (nothing of ours if it
//   had nothing). iptables commits each table atomically; nft commits the whole script atomically.
// - Idempotent. The wanted rules are compared with what iptables-save / nft list print; if equal,
//   nothing is run. Otherwise each table is rewritten in one block that also deletes every
//   existing jump to our chains, so a second apply never appends a duplicate.
// - One backend. After applying with one backend (iptables-legacy, iptables-nft or native
//   nftables) our objects in the other backends are removed. An agent whose backend detection
//   flips between restarts therefore never leaves two rule sets in a pod (istio/istio#61020).
// - Only ours. Nothing but our chains/jumps, our inet tables, our ip rule and our table-100 route
//   is ever changed.
// - One process. Every call enters the netns once, through one CommandSession (exec.ts), and
//   runs its commands there in batches: what is cheap to read and says whether more is needed,
//   the listings that can hold something of ours, the writes. A new pod's enrolment is three
//   reads and two writes (it was thirteen processes started one after the other by the agent).
//
// Callers must serialise calls for the same netns (the node agent does, per pod).
import { statSync } from 'node:fs';
import { RedirectError } from './errors.ts';
import { errorMessage } from '../../../src/shared/errors.ts';
import { CommandSession, describeExit, findBinary, requireBinary, runCommand } from './exec.ts';
import type { BatchCommand, CommandResult } from './exec.ts';
import { resolveRedirectOptions } from './options.ts';
import type { RedirectOptions, RedirectOptionsInput } from './options.ts';
import { NFT_TABLES, policyRouteSpec, policyRuleSpec, renderIptables, renderNftables } from './render.ts';
import type { IpFamily } from './render.ts';
import {
  canonicalIptables,
  canonicalNft,
  countPolicyRules,
  extractNftTables,
  formatIptablesState,
  hasLocalDefaultRoute,
  iptablesTransitionScript,
  nftRemovalScript,
  parseIptablesOurs,
  parseIptablesVersion,
  parseNftTableNames,
} from './state.ts';
import type { IptablesState } from './state.ts';

export type RedirectBackend = 'iptables' | 'nftables';
export type IptablesVariant = 'legacy' | 'nft';
export const IPTABLES_VARIANTS: readonly IptablesVariant[] = ['legacy', 'nft'];

/** Scripts a test hook may rewrite before they run. */
export type ScriptStep = 'iptables-v4' | 'iptables-v6' | 'nftables' | 'routes-v4' | 'routes-v6';

export interface ApplyOptions {
  backend: RedirectBackend;
  /**
   * iptables flavour for backend 'iptables'. Defaults to {@link detectIptablesBackend}; the node
   * agent should detect once at start and pass the result so every pod uses the same one.
   */
  iptablesVariant?: IptablesVariant;
  /** Per-command timeout (default 30 s). */
  timeoutMs?: number;
  /**
   * TEST ONLY: fault injection. Called with every script just before it runs; whatever it
   * returns is run instead. Never set this in production code.
   */
  testHooks?: { transformScript?: (step: ScriptStep, script: string) => string };
}

export interface ApplyResult {
  /** False when everything was already exactly as wanted and no command changed anything. */
  changed: boolean;
  backend: RedirectBackend;
  iptablesVariant?: IptablesVariant;
}

/** What of ours is present in a netns (see {@link inspectRedirection}). */
export interface RedirectionState {
  /** Per iptables flavour: canonical restore text of our chains and jumps ('' when none). */
  iptables: Record<IptablesVariant, { available: boolean; v4: string; v6: string }>;
  /** Our inet tables and their canonical content ({@link canonicalNft}). */
  nftables: { available: boolean; tables: string[]; ruleset: string };
  /** Copies of our ip rule and whether our table-100 route exists, per family. */
  routes: Record<IpFamily, { rules: number; route: boolean }>;
  /** True when anything of ours is present. */
  present: boolean;
}

const IPTABLES_HINT =
  'check that the kernel offers the tables and matches for this iptables flavour (legacy needs ip_tables, ' +
  'iptable_mangle/nat/raw, xt_mark, xt_connmark, xt_REDIRECT, xt_CT; nft needs nf_tables and the xt compat ' +
  'modules), that the agent uses the same flavour as the node (iptables -V), and that nothing holds /run/xtables.lock';
const NFT_HINT =
  'check that nft (nftables >= 0.9) is installed and the kernel has nf_tables, nft_nat, nft_redir, nft_ct';
const ROUTES_HINT =
  'check that the agent has CAP_NET_ADMIN in the pod netns, that lo exists, and (for IPv6) that IPv6 is enabled in the pod';

function ipBinary(): string {
  return requireBinary('ip', 'install iproute2');
}

function nftBinary(): string | undefined {
  return findBinary('nft');
}

/** iptables-save/-restore for a flavour and family, or undefined if not installed. */
function iptablesTools(
  variant: IptablesVariant,
  family: IpFamily,
): { save: string; restore: string } | undefined {
  const base = family === 'v4' ? 'iptables' : 'ip6tables';
  const save = findBinary(`${base}-${variant}-save`);
  const restore = findBinary(`${base}-${variant}-restore`);
  return save !== undefined && restore !== undefined ? { save, restore } : undefined;
}

/**
 * Which iptables flavour `iptables` on this host is: "iptables v1.8.9 (nf_tables)" → 'nft',
 * "(legacy)" or an old version without the suffix → 'legacy'.
 */
export async function detectIptablesBackend(): Promise<IptablesVariant> {
  const bin = requireBinary('iptables', 'install iptables');
  const r = await runCommand(bin, ['-V'], { timeoutMs: 10_000 });
  if (r.code !== 0) {
    throw new RedirectError(
      'CNI_ERR_BACKEND_UNAVAILABLE',
      `cannot tell which iptables backend to use: \`${r.command}\` ${describeExit(r)}: ${r.stderr.trim()}`,
    );
  }
  return parseIptablesVersion(r.stdout + r.stderr);
}

function checkNetns(netnsPath: string): void {
  let ok = false;
  try {
    ok = statSync(netnsPath).isFile();
  } catch {
    ok = false;
  }
  if (!ok) {
    throw new RedirectError(
      'CNI_ERR_NETNS_NOT_FOUND',
      `pod network namespace ${netnsPath} does not exist: the pod sandbox was probably deleted; this is not retryable for this sandbox`,
    );
  }
}

function commandError(
  code: 'CNI_ERR_APPLY' | 'CNI_ERR_REMOVE' | 'CNI_ERR_INSPECT',
  what: string,
  netnsPath: string,
  r: CommandResult,
  script: string | undefined,
  hint: string,
): RedirectError {
  const stderr = r.stderr.trim() === '' ? '(no stderr)' : r.stderr.trim();
  const attempted = script === undefined ? '' : `\nRules attempted:\n${script.trimEnd()}`;
  return new RedirectError(
    code,
    `${what} in pod netns ${netnsPath} failed: \`${r.command}\` ${describeExit(r)}: ${stderr}\n` +
      `${hint.charAt(0).toUpperCase()}${hint.slice(1)}.${attempted}`,
  );
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: RedirectError };

/** Our inet tables as nft lists them (valid `nft -f` input) and their names. */
interface NftListing {
  tables: string[];
  listing: string;
}

interface RouteState {
  rules: number;
  route: boolean;
}

/** What one read pass saw; `undefined` values mean the tools are not installed. */
interface Snapshot {
  iptables: Map<string, Outcome<IptablesState | undefined>>;
  nft: Outcome<NftListing | undefined> | undefined;
  routes: Map<IpFamily, Outcome<RouteState>>;
}

/** What a read pass is to read. */
interface Reads {
  iptables: { variant: IptablesVariant; family: IpFamily }[];
  nft: boolean;
  routes: IpFamily[];
}

/** One object of ours to bring to a wanted state; `optional`: skip it when it cannot be read. */
type Target =
  | { kind: 'iptables'; variant: IptablesVariant; family: IpFamily; desired: string; optional: boolean }
  | { kind: 'nft'; desired: string; optional: boolean }
  | { kind: 'routes'; family: IpFamily; present: boolean; optional: boolean };

/** How to put one object back as it was before a write (applyRedirection's rollback). */
type Undo =
  | { kind: 'iptables'; variant: IptablesVariant; family: IpFamily; before: IptablesState }
  | { kind: 'nft'; prior: NftListing }
  | { kind: 'routes'; family: IpFamily; before: RouteState };

/** One command that changes the netns. */
interface Write {
  readonly what: string;
  readonly hint: string;
  readonly command: BatchCommand & { input: string };
  readonly undo?: Undo;
  /**
   * nft applies a script as one transaction: when it fails nothing changed, so its undo only
   * counts once it succeeded. iptables-legacy commits table by table and `ip -batch` line by line,
   * so a failed one may have changed something: their undo counts as soon as they were tried.
   */
  readonly atomic: boolean;
}

function slotKey(variant: IptablesVariant, family: IpFamily): string {
  return `${variant}-${family}`;
}

function familyTool(family: IpFamily): string {
  return family === 'v4' ? 'iptables' : 'ip6tables';
}

/**
 * Reads and writes our objects in one netns through one {@link CommandSession}: the reads in one
 * or two batches, the writes in one more, so an apply enters the netns once and starts one
 * process.
 */
class NetnsRules {
  readonly #netns: string;
  readonly #timeoutMs: number | undefined;
  readonly #hook: ((step: ScriptStep, script: string) => string) | undefined;
  readonly #code: 'CNI_ERR_APPLY' | 'CNI_ERR_REMOVE';
  #session: CommandSession | undefined;

  constructor(netnsPath: string, code: 'CNI_ERR_APPLY' | 'CNI_ERR_REMOVE', opts?: ApplyOptions) {
    this.#netns = netnsPath;
    this.#code = code;
    this.#timeoutMs = opts?.timeoutMs;
    this.#hook = opts?.testHooks?.transformScript;
  }

  #run(commands: readonly BatchCommand[], stopOnFailure: boolean): Promise<(CommandResult | undefined)[]> {
    if (this.#session?.dead === true) {
      // Killed by a timeout or its output cap, or exited: the next batch (a rollback, say) gets
      // a shell of its own instead of reporting every command as not run.
      void this.#session.close().catch(() => undefined);
      this.#session = undefined;
    }
    this.#session ??= CommandSession.open({
      netnsPath: this.#netns,
      ...(this.#timeoutMs !== undefined ? { timeoutMs: this.#timeoutMs } : {}),
    });
    return this.#session.run(commands, { stopOnFailure });
  }

  /** Ends the session (the shell exits). */
  async close(): Promise<void> {
    await this.#session?.close();
    this.#session = undefined;
  }

  // --- reading -------------------------------------------------------------------------------

  /**
   * Everything `reads` names. Two batches at most, in the one session: first what is cheap to
   * ask and says whether more is needed (`nft list tables`: do iptables-nft's tables or ours
   * exist at all; the routing; iptables-legacy's tables, skipped by the shell when the netns has
   * none), then only the listings that can hold something of ours. In a new pod that is three
   * commands, and no second batch.
   */
  async read(o: Readonly<RedirectOptions>, reads: Reads): Promise<Snapshot> {
    const snap: Snapshot = { iptables: new Map(), nft: undefined, routes: new Map() };
    const notRun = (what: string): RedirectError =>
      new RedirectError(
        'CNI_ERR_INSPECT',
        `${what} in pod netns ${this.#netns} was not run: an earlier command of the batch timed out or the shell died`,
      );
    const outcome = <T>(
      what: string,
      hint: string,
      r: CommandResult | undefined,
      parse: (stdout: string) => T,
    ): Outcome<T> =>
      r === undefined
        ? { ok: false, error: notRun(what) }
        : r.code !== 0
          ? { ok: false, error: commandError('CNI_ERR_INSPECT', what, this.#netns, r, undefined, hint) }
          : { ok: true, value: parse(r.stdout) };
    const batch = async (
      list: readonly { command: BatchCommand; parse: (r: CommandResult | undefined) => void }[],
    ): Promise<void> => {
      if (list.length === 0) return;
      const results = await this.#run(
        list.map((c) => c.command),
        false,
      );
      list.forEach((c, i) => c.parse(results[i]));
    };

    const first: { command: BatchCommand; parse: (r: CommandResult | undefined) => void }[] = [];
    const iptablesRead = (variant: IptablesVariant, family: IpFamily, skipWhenEmpty?: string) => {
      const key = slotKey(variant, family);
      const tools = iptablesTools(variant, family);
      if (!tools) {
        snap.iptables.set(key, { ok: true, value: undefined });
        return undefined;
      }
      const what = `reading ${familyTool(family)} (${variant}) rules`;
      return {
        // No `-t`: iptables-legacy-save -t <table> would instantiate the table in the netns.
        command: { cmd: tools.save, args: [], ...(skipWhenEmpty !== undefined && { skipWhenEmpty }) },
        parse: (r: CommandResult | undefined) =>
          snap.iptables.set(key, outcome(what, IPTABLES_HINT, r, parseIptablesOurs)),
      };
    };
    // iptables-legacy-save prints the tables /proc/net/ip{,6}_tables_names lists (this netns's,
    // for the shell in it): none in a new pod, and then the shell does not start it.
    for (const { variant, family } of reads.iptables.filter((s) => s.variant === 'legacy')) {
      const c = iptablesRead(
        variant,
        family,
        family === 'v4' ? '/proc/net/ip_tables_names' : '/proc/net/ip6_tables_names',
      );
      if (c) first.push(c);
    }
    for (const family of reads.routes) {
      // Both listings from one `ip`: one JSON array per line, rules first.
      first.push({
        command: {
          cmd: ipBinary(),
          args: [family === 'v4' ? '-4' : '-6', '-j', '-batch', '-'],
          input: `rule show\nroute show table ${o.routeTable}\n`,
        },
        parse: (r) => snap.routes.set(family, this.#parseRoutes(o, family, r)),
      });
    }
    // iptables-nft keeps its tables in nftables, families ip and ip6: without a table of the
    // family, its save prints nothing. Our own tables are inet ones.
    const nftSlots = reads.iptables.filter((s) => s.variant === 'nft');
    const nft = nftBinary();
    let tables: Outcome<string> | undefined;
    if (nft === undefined) {
      if (reads.nft) snap.nft = { ok: true, value: undefined };
    } else if (reads.nft || nftSlots.length > 0) {
      first.push({
        command: { cmd: nft, args: ['list', 'tables'] },
        parse: (r) => (tables = outcome('listing nftables tables', NFT_HINT, r, (out) => out)),
      });
    }
    await batch(first);

    const second: { command: BatchCommand; parse: (r: CommandResult | undefined) => void }[] = [];
    const listed = tables;
    for (const { variant, family } of nftSlots) {
      const nftFamily = family === 'v4' ? 'ip' : 'ip6';
      if (listed?.ok === true && !new RegExp(`^table ${nftFamily} `, 'm').test(listed.value)) {
        // No table of the family: nothing of ours (or anyone's), as its save would have said.
        const installed = iptablesTools(variant, family) !== undefined;
        snap.iptables.set(slotKey(variant, family), {
          ok: true,
          value: installed ? { tables: [] } : undefined,
        });
        continue;
      }
      const c = iptablesRead(variant, family);
      if (c) second.push(c);
    }
    if (reads.nft && nft !== undefined) {
      if (listed === undefined || !listed.ok) {
        snap.nft = listed?.ok === false ? listed : { ok: false, error: notRun('listing nftables tables') };
      } else if (parseNftTableNames(listed.value).length === 0) {
        snap.nft = { ok: true, value: { tables: [], listing: '' } };
      } else {
        // Only the inet family: our tables are there, and other families' tables (iptables-nft's
        // among them) need not even be decodable.
        second.push({
          command: { cmd: nft, args: ['-s', 'list', 'ruleset', 'inet'] },
          parse: (r) => (snap.nft = outcome('listing nftables tables', NFT_HINT, r, extractNftTables)),
        });
      }
    }
    await batch(second);
    return snap;
  }

  #parseRoutes(
    o: Readonly<RedirectOptions>,
    family: IpFamily,
    r: CommandResult | undefined,
  ): Outcome<RouteState> {
    if (r === undefined) {
      return {
        ok: false,
        error: new RedirectError(
          'CNI_ERR_INSPECT',
          `listing ${family} ip rules and routes in pod netns ${this.#netns} was not run: an earlier command of the batch timed out or the shell died`,
        ),
      };
    }
    const [rules, routes] = r.stdout.split('\n').filter((l) => l.trim() !== '');
    const fail = (what: string): Outcome<RouteState> => ({
      ok: false,
      error: commandError('CNI_ERR_INSPECT', what, this.#netns, r, undefined, ROUTES_HINT),
    });
    // `ip -batch` stops at the first failing command, so rules printed but no route listing
    // means the route listing failed; an iproute2 that reports a missing table as an error
    // means there is no route of ours.
    if (rules === undefined) return fail(`listing ${family} ip rules`);
    const noTable = routes === undefined && r.code !== 0 && /table does not exist/i.test(r.stderr);
    if (!noTable && (routes === undefined || r.code !== 0)) {
      return fail(`listing ${family} routes of table ${o.routeTable}`);
    }
    try {
      return {
        ok: true,
        value: {
          rules: countPolicyRules(rules, {
            priority: o.rulePriority,
            connmark: o.connmark,
            markMask: o.markMask,
            table: o.routeTable,
          }),
          route: routes !== undefined && hasLocalDefaultRoute(routes),
        },
      };
    } catch {
      return fail(`parsing the ${family} ip rules and routes`);
    }
  }

  // --- planning ------------------------------------------------------------------------------

  /**
   * The write that brings `t` from what `snap` saw to its wanted state: undefined when it is
   * already there, or when it is optional and cannot be read. Throws when a required object
   * cannot be read or its tools are missing.
   */
  plan(o: Readonly<RedirectOptions>, t: Target, snap: Snapshot): Write | undefined {
    switch (t.kind) {
      case 'iptables': {
        const read = snap.iptables.get(slotKey(t.variant, t.family));
        if (read === undefined || !read.ok) {
          if (t.optional) return undefined;
          throw read?.error ?? new Error(`BUG: ${t.variant} ${t.family} was not read`);
        }
        if (read.value === undefined) {
          if (t.optional) return undefined;
          throw new RedirectError(
            'CNI_ERR_BACKEND_UNAVAILABLE',
            `${familyTool(t.family)}-${t.variant}-save/-restore are not installed; install iptables (>= 1.8) or use the nftables backend`,
          );
        }
        const script = iptablesTransitionScript(read.value, parseIptablesOurs(t.desired));
        if (script === '') return undefined;
        return this.#iptablesWrite(
          t.variant,
          t.family,
          this.#script(t.family === 'v4' ? 'iptables-v4' : 'iptables-v6', script),
          {
            kind: 'iptables',
            variant: t.variant,
            family: t.family,
            before: read.value,
          },
        );
      }
      case 'nft': {
        const read = snap.nft;
        if (read === undefined || !read.ok) {
          if (t.optional) return undefined;
          throw read?.error ?? new Error('BUG: nftables was not read');
        }
        if (read.value === undefined) {
          if (t.optional) return undefined;
          throw new RedirectError(
            'CNI_ERR_BACKEND_UNAVAILABLE',
            'nft is not installed; install nftables or use the iptables backend',
          );
        }
        if (canonicalNft(read.value.listing) === canonicalNft(t.desired)) return undefined;
        const script = t.desired === '' ? nftRemovalScript(read.value.tables) : t.desired;
        return this.#nftWrite(this.#script('nftables', script), { kind: 'nft', prior: read.value });
      }
      case 'routes': {
        const read = snap.routes.get(t.family);
        if (read === undefined || !read.ok) {
          if (t.optional) return undefined;
          throw read?.error ?? new Error(`BUG: ${t.family} routes were not read`);
        }
        const want = t.present ? { rules: 1, route: true } : { rules: 0, route: false };
        const script = routesScript(o, t.family, read.value, want);
        if (script === '') return undefined;
        return this.#routesWrite(
          t.family,
          this.#script(t.family === 'v4' ? 'routes-v4' : 'routes-v6', script),
          {
            kind: 'routes',
            family: t.family,
            before: read.value,
          },
        );
      }
    }
  }

  #script(step: ScriptStep, script: string): string {
    return this.#hook ? this.#hook(step, script) : script;
  }

  #iptablesWrite(variant: IptablesVariant, family: IpFamily, script: string, undo?: Undo): Write {
    const tools = iptablesTools(variant, family);
    if (!tools)
      throw new RedirectError(
        'CNI_ERR_BACKEND_UNAVAILABLE',
        `${familyTool(family)}-${variant}-restore is not installed; install iptables`,
      );
    return {
      what: `writing ${familyTool(family)} (${variant}) rules`,
      hint: IPTABLES_HINT,
      command: { cmd: tools.restore, args: ['--noflush', '--wait=10'], input: script },
      ...(undo && { undo }),
      atomic: false,
    };
  }

  #nftWrite(script: string, undo?: Undo): Write {
    return {
      what: 'writing nftables rules',
      hint: NFT_HINT,
      command: { cmd: requireBinary('nft', 'install nftables'), args: ['-f', '-'], input: script },
      ...(undo && { undo }),
      atomic: true,
    };
  }

  #routesWrite(family: IpFamily, script: string, undo?: Undo): Write {
    return {
      what: `writing ${family} policy routing`,
      hint: ROUTES_HINT,
      command: { cmd: ipBinary(), args: [family === 'v4' ? '-4' : '-6', '-batch', '-'], input: script },
      ...(undo && { undo }),
      atomic: false,
    };
  }

  // --- writing -------------------------------------------------------------------------------

  /**
   * Runs `writes` in one batch. With `stopOnFailure` the first failure ends it; returns the
   * index of the first failure (or -1) and the error of every failed write.
   */
  async write(
    writes: readonly Write[],
    stopOnFailure: boolean,
  ): Promise<{ failedAt: number; errors: RedirectError[] }> {
    const results = await this.#run(
      writes.map((w) => w.command),
      stopOnFailure,
    );
    const errors: RedirectError[] = [];
    let failedAt = -1;
    writes.forEach((w, i) => {
      const r = results[i];
      if (r === undefined) {
        if (!stopOnFailure || failedAt === -1) {
          errors.push(
            new RedirectError(
              this.#code,
              `${w.what} in pod netns ${this.#netns} was not run: an earlier command of the batch timed out or the shell died`,
            ),
          );
        }
      } else if (r.code === 0) return;
      else errors.push(commandError(this.#code, w.what, this.#netns, r, w.command.input, w.hint));
      if (failedAt === -1) failedAt = i;
    });
    return { failedAt, errors };
  }

  /**
   * Puts back what `done` (the writes that ran, in order) changed, newest first: one batch of
   * reads, one of writes. Best effort: returns the failures.
   */
  async rollback(o: Readonly<RedirectOptions>, done: readonly Write[]): Promise<string[]> {
    const undos = done.flatMap((w) => (w.undo ? [w.undo] : [])).reverse();
    if (undos.length === 0) return [];
    const failures: string[] = [];
    let snap: Snapshot;
    try {
      snap = await this.read(o, {
        iptables: undos.flatMap((u) =>
          u.kind === 'iptables' ? [{ variant: u.variant, family: u.family }] : [],
        ),
        nft: false,
        routes: undos.flatMap((u) => (u.kind === 'routes' ? [u.family] : [])),
      });
    } catch (e) {
      return [`reading the state to roll back: ${errorMessage(e)}`];
    }
    const writes: Write[] = [];
    for (const u of undos) {
      try {
        if (u.kind === 'iptables') {
          const now = snap.iptables.get(slotKey(u.variant, u.family));
          if (now === undefined || !now.ok) throw now?.error ?? new Error('not read');
          if (now.value === undefined) continue;
          const back = iptablesTransitionScript(now.value, u.before);
          if (back !== '') writes.push(this.#iptablesWrite(u.variant, u.family, back));
        } else if (u.kind === 'nft') {
          const reset = NFT_TABLES.map((n) => `add table inet ${n}\ndelete table inet ${n}\n`).join('');
          writes.push(this.#nftWrite(reset + u.prior.listing));
        } else {
          const now = snap.routes.get(u.family);
          if (now === undefined || !now.ok) throw now?.error ?? new Error('not read');
          const back = routesScript(o, u.family, now.value, u.before);
          if (back !== '') writes.push(this.#routesWrite(u.family, back));
        }
      } catch (e) {
        failures.push(`${undoLabel(u)}: ${errorMessage(e)}`);
      }
    }
    const { errors } = await this.write(writes, false);
    for (const e of errors) failures.push(e.message);
    return failures;
  }
}

function undoLabel(u: Undo): string {
  if (u.kind === 'iptables') return `${u.variant} ${u.family} iptables rules`;
  if (u.kind === 'nft') return 'nftables tables';
  return `${u.family} policy routing`;
}

/** `ip -batch` input moving our ip rule copies and table-100 route from `now` to `want`. */
function routesScript(
  o: Readonly<RedirectOptions>,
  family: IpFamily,
  now: RouteState,
  want: RouteState,
): string {
  const lines: string[] = [];
  for (let i = now.rules; i < want.rules; i++) lines.push(`rule add ${policyRuleSpec(o)}`);
  for (let i = want.rules; i < now.rules; i++) lines.push(`rule del ${policyRuleSpec(o)}`);
  if (want.route && !now.route) lines.push(`route replace ${policyRouteSpec(o, family)}`);
  if (!want.route && now.route) lines.push(`route del ${policyRouteSpec(o, family)}`);
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}

/** The reads the targets need. */
function readsFor(targets: readonly Target[]): Reads {
  return {
    iptables: targets.flatMap((t) =>
      t.kind === 'iptables' ? [{ variant: t.variant, family: t.family }] : [],
    ),
    nft: targets.some((t) => t.kind === 'nft'),
    routes: targets.flatMap((t) => (t.kind === 'routes' ? [t.family] : [])),
  };
}

/**
 * Install the in-pod redirection (rules + policy routing) in the netns at `netnsPath`, all or
 * nothing. Throws CNI_ERR_INVALID_* for bad options, CNI_ERR_NETNS_NOT_FOUND, or CNI_ERR_APPLY
 * (after rolling the netns back) naming the failed command, its exit status, its stderr and the
 * rules attempted.
 *
 * One process (a shell in the netns, {@link CommandSession}): one batch reads every object of
 * ours, one batch writes what differs (nothing on a second apply), stopping at the first failure;
 * a rollback adds one batch of reads and one of writes.
 */
export async function applyRedirection(
  netnsPath: string,
  input: RedirectOptionsInput,
  applyOpts: ApplyOptions,
): Promise<ApplyResult> {
  const o = resolveRedirectOptions(input);
  checkNetns(netnsPath);
  const variant =
    applyOpts.backend === 'iptables'
      ? (applyOpts.iptablesVariant ?? (await detectIptablesBackend()))
      : undefined;
  if (variant !== undefined && iptablesTools(variant, 'v4') === undefined) {
    throw new RedirectError(
      'CNI_ERR_BACKEND_UNAVAILABLE',
      `iptables-${variant}-save/-restore are not installed; install iptables (>= 1.8) or use the nftables backend`,
    );
  }
  if (variant === undefined) requireBinary('nft', 'install nftables or use the iptables backend');
  requireBinary('ip', 'install iproute2');
  const targets: Target[] = [];
  if (variant !== undefined) {
    const rendered = renderIptables(o);
    targets.push(
      { kind: 'iptables', variant, family: 'v4', desired: rendered.v4, optional: false },
      {
        kind: 'iptables',
        variant,
        family: 'v6',
        desired: rendered.v6 ?? '',
        optional: rendered.v6 === undefined,
      },
    );
    // A previous agent may have used the other flavour or native nftables: remove those copies.
    for (const other of IPTABLES_VARIANTS.filter((v) => v !== variant)) {
      targets.push(
        { kind: 'iptables', variant: other, family: 'v4', desired: '', optional: true },
        { kind: 'iptables', variant: other, family: 'v6', desired: '', optional: true },
      );
    }
    targets.push({ kind: 'nft', desired: '', optional: true });
  } else {
    targets.push({ kind: 'nft', desired: renderNftables(o), optional: false });
    for (const v of IPTABLES_VARIANTS) {
      targets.push(
        { kind: 'iptables', variant: v, family: 'v4', desired: '', optional: true },
        { kind: 'iptables', variant: v, family: 'v6', desired: '', optional: true },
      );
    }
  }
  // Routing last: the rule only matters once the marks are being set.
  targets.push(
    { kind: 'routes', family: 'v4', present: true, optional: false },
    { kind: 'routes', family: 'v6', present: o.ipv6, optional: !o.ipv6 },
  );

  const tx = new NetnsRules(netnsPath, 'CNI_ERR_APPLY', applyOpts);
  let writes: Write[] = [];
  try {
    try {
      const snap = await tx.read(o, readsFor(targets));
      writes = targets.flatMap((t) => {
        const w = tx.plan(o, t, snap);
        return w === undefined ? [] : [w];
      });
      if (writes.length > 0) {
        const { failedAt, errors } = await tx.write(writes, true);
        if (failedAt !== -1) {
          // The failed write itself may have changed something unless it is atomic.
          const tried = writes.slice(0, failedAt + 1).filter((w, i) => i < failedAt || !w.atomic);
          throw new ApplyFailure(errors[0], tried);
        }
      }
    } catch (e) {
      const tried = e instanceof ApplyFailure ? e.tried : [];
      const cause = e instanceof ApplyFailure ? e.cause : e;
      const failures = await tx.rollback(o, tried);
      const base = errorMessage(cause);
      const rolled =
        failures.length === 0
          ? 'The pod netns was rolled back to its state before this call.'
          : `Rolling the pod netns back ALSO FAILED, it may hold partial rules; remove them with removeRedirection or delete the sandbox: ${failures.join('; ')}`;
      throw new RedirectError(
        'CNI_ERR_APPLY',
        `applying in-pod redirection (${variant ?? 'nftables'}) failed: ${base}\n${rolled}`,
        { cause },
      );
    }
  } finally {
    await tx.close();
  }
  return {
    changed: writes.length > 0,
    backend: applyOpts.backend,
    ...(variant !== undefined ? { iptablesVariant: variant } : {}),
  };
}

/** A write of applyRedirection failed; `tried` are the writes that may have changed the netns. */
class ApplyFailure extends Error {
  readonly tried: readonly Write[];
  constructor(cause: unknown, tried: readonly Write[]) {
    super(errorMessage(cause), { cause });
    this.tried = tried;
  }
}

/**
 * Remove everything of ours from the netns (iptables chains and jumps in both flavours and both
 * families, our inet tables, our ip rules and table-100 route), leaving all else alone. Tries
 * every part even after a failure, then throws CNI_ERR_REMOVE listing what failed.
 * `input` only matters for non-default route table, rule priority or marks.
 */
export async function removeRedirection(
  netnsPath: string,
  input: RedirectOptionsInput = {},
  opts: { timeoutMs?: number } = {},
): Promise<void> {
  const o = resolveRedirectOptions(input);
  checkNetns(netnsPath);
  // Routing first: without the marks' rules the ip rule is harmless, but reverse order of apply.
  const targets: Target[] = [
    { kind: 'routes', family: 'v4', present: false, optional: false },
    { kind: 'routes', family: 'v6', present: false, optional: true },
  ];
  for (const v of IPTABLES_VARIANTS) {
    targets.push(
      { kind: 'iptables', variant: v, family: 'v4', desired: '', optional: true },
      { kind: 'iptables', variant: v, family: 'v6', desired: '', optional: true },
    );
  }
  targets.push({ kind: 'nft', desired: '', optional: true });
  const tx = new NetnsRules(netnsPath, 'CNI_ERR_REMOVE', { backend: 'iptables', ...opts });
  const failures: string[] = [];
  try {
    const snap = await tx.read(o, readsFor(targets));
    const writes: Write[] = [];
    for (const t of targets) {
      try {
        const w = tx.plan(o, t, snap);
        if (w !== undefined) writes.push(w);
      } catch (e) {
        failures.push(errorMessage(e));
      }
    }
    const { errors } = await tx.write(writes, false);
    for (const e of errors) failures.push(e.message);
  } finally {
    await tx.close();
  }
  if (failures.length > 0) {
    throw new RedirectError(
      'CNI_ERR_REMOVE',
      `removing in-pod redirection from ${netnsPath} failed: ${failures.join('\n')}`,
    );
  }
}

/**
 * What of ours is in the netns: for reconcile and tests. Flavours or families that cannot be
 * read (tool not installed, IPv6 disabled) are reported as unavailable/empty.
 */
export async function inspectRedirection(
  netnsPath: string,
  input: RedirectOptionsInput = {},
): Promise<RedirectionState> {
  const o = resolveRedirectOptions(input);
  checkNetns(netnsPath);
  const rd = new NetnsRules(netnsPath, 'CNI_ERR_APPLY');
  let snap: Snapshot;
  try {
    snap = await rd.read(o, {
      iptables: IPTABLES_VARIANTS.flatMap((variant) => [
        { variant, family: 'v4' as const },
        { variant, family: 'v6' as const },
      ]),
      nft: true,
      routes: ['v4', 'v6'],
    });
  } finally {
    await rd.close();
  }
  const value = <T>(r: Outcome<T> | undefined): T => {
    if (r === undefined) throw new Error('BUG: not read');
    if (!r.ok) throw r.error;
    return r.value;
  };
  const iptables = {} as RedirectionState['iptables'];
  for (const v of IPTABLES_VARIANTS) {
    const v4 = value(snap.iptables.get(slotKey(v, 'v4')));
    const r6 = snap.iptables.get(slotKey(v, 'v6'));
    // No IPv6 in this kernel/netns: reported as empty.
    const v6 = r6?.ok === true ? r6.value : undefined;
    iptables[v] = {
      available: v4 !== undefined,
      v4: v4 ? formatIptablesState(v4) : '',
      v6: v6 ? formatIptablesState(v6) : '',
    };
  }
  const nft = value(snap.nft);
  const r6 = snap.routes.get('v6');
  const routes: RedirectionState['routes'] = {
    v4: value(snap.routes.get('v4')),
    v6: r6?.ok === true ? r6.value : { rules: 0, route: false },
  };
  const nftables = {
    available: nft !== undefined,
    tables: nft?.tables ?? [],
    ruleset: nft ? canonicalNft(nft.listing) : '',
  };
  const present =
    IPTABLES_VARIANTS.some((v) => iptables[v].v4 !== '' || iptables[v].v6 !== '') ||
    nftables.tables.length > 0 ||
    routes.v4.rules > 0 ||
    routes.v4.route ||
    routes.v6.rules > 0 ||
    routes.v6.route;
  return { iptables, nftables, routes, present };
}

/**
 * Differences between an inspected state and what {@link applyRedirection} with these options
 * would produce ([] = up to date). For the node agent's reconcile and for tests.
 */
export function diffRedirection(
  state: RedirectionState,
  input: RedirectOptionsInput,
  target: { backend: RedirectBackend; iptablesVariant?: IptablesVariant },
): string[] {
  const o = resolveRedirectOptions(input);
  const diffs: string[] = [];
  const ipt = renderIptables(o);
  for (const v of IPTABLES_VARIANTS) {
    const active = target.backend === 'iptables' && target.iptablesVariant === v;
    const want4 = active ? canonicalIptables(ipt.v4) : '';
    const want6 = active ? canonicalIptables(ipt.v6 ?? '') : '';
    if (state.iptables[v].v4 !== want4) diffs.push(`iptables (${v}) IPv4 rules differ`);
    if (state.iptables[v].v6 !== want6) diffs.push(`iptables (${v}) IPv6 rules differ`);
  }
  const wantNft = target.backend === 'nftables' ? canonicalNft(renderNftables(o)) : '';
  if (state.nftables.ruleset !== wantNft) diffs.push('nftables tables differ');
  if (state.routes.v4.rules !== 1)
    diffs.push(`IPv4 policy rule present ${state.routes.v4.rules} times, want 1`);
  if (!state.routes.v4.route) diffs.push(`IPv4 local route in table ${o.routeTable} missing`);
  const want6 = o.ipv6 ? 1 : 0;
  if (state.routes.v6.rules !== want6)
    diffs.push(`IPv6 policy rule present ${state.routes.v6.rules} times, want ${want6}`);
  if (state.routes.v6.route !== o.ipv6)
    diffs.push(`IPv6 local route in table ${o.routeTable} ${o.ipv6 ? 'missing' : 'unexpected'}`);
  return diffs;
}

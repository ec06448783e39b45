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
//
// Callers must serialise calls for the same netns (the node agent does, per pod).
import { statSync } from 'node:fs';
import { RedirectError } from './errors.ts';
import { describeExit, findBinary, requireBinary, runCommand } from './exec.ts';
import type { CommandResult } from './exec.ts';
import { resolveRedirectOptions } from './options.ts';
import type { RedirectOptions, RedirectOptionsInput } from './options.ts';
import { NFT_TABLES, policyRouteSpec, policyRuleSpec, renderIptables, renderNftables } from './render.ts';
import type { IpFamily } from './render.ts';
import {
  canonicalIptables,
  canonicalNft,
  countPolicyRules,
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

/** Reads and writes our objects in one netns; records undo steps for {@link applyRedirection}. */
class NetnsRules {
  readonly #netns: string;
  readonly #timeoutMs: number | undefined;
  readonly #hook: ((step: ScriptStep, script: string) => string) | undefined;
  readonly #code: 'CNI_ERR_APPLY' | 'CNI_ERR_REMOVE';
  readonly #undo: { what: string; run: () => Promise<void> }[] = [];
  changed = false;

  constructor(netnsPath: string, code: 'CNI_ERR_APPLY' | 'CNI_ERR_REMOVE', opts?: ApplyOptions) {
    this.#netns = netnsPath;
    this.#code = code;
    this.#timeoutMs = opts?.timeoutMs;
    this.#hook = opts?.testHooks?.transformScript;
  }

  #run(cmd: string, args: readonly string[], input?: string): Promise<CommandResult> {
    return runCommand(cmd, args, {
      netnsPath: this.#netns,
      ...(input !== undefined ? { input } : {}),
      ...(this.#timeoutMs !== undefined ? { timeoutMs: this.#timeoutMs } : {}),
    });
  }

  #script(step: ScriptStep, script: string): string {
    return this.#hook ? this.#hook(step, script) : script;
  }

  // --- iptables ------------------------------------------------------------------------------

  async readIptables(variant: IptablesVariant, family: IpFamily): Promise<IptablesState | undefined> {
    const tools = iptablesTools(variant, family);
    if (!tools) return undefined;
    // No `-t`: iptables-legacy-save -t <table> would instantiate the table in the netns.
    const r = await this.#run(tools.save, []);
    if (r.code !== 0) {
      throw commandError(
        'CNI_ERR_INSPECT',
        `reading ${family === 'v4' ? 'iptables' : 'ip6tables'} (${variant}) rules`,
        this.#netns,
        r,
        undefined,
        IPTABLES_HINT,
      );
    }
    return parseIptablesOurs(r.stdout);
  }

  async #restoreIptables(
    variant: IptablesVariant,
    family: IpFamily,
    script: string,
    code: 'CNI_ERR_APPLY' | 'CNI_ERR_REMOVE',
  ): Promise<void> {
    const tools = iptablesTools(variant, family);
    if (!tools)
      throw new RedirectError(
        'CNI_ERR_BACKEND_UNAVAILABLE',
        `${family === 'v4' ? 'iptables' : 'ip6tables'}-${variant}-restore is not installed; install iptables`,
      );
    const r = await this.#run(tools.restore, ['--noflush', '--wait=10'], script);
    if (r.code !== 0) {
      throw commandError(
        code,
        `writing ${family === 'v4' ? 'iptables' : 'ip6tables'} (${variant}) rules`,
        this.#netns,
        r,
        script,
        IPTABLES_HINT,
      );
    }
  }

  /**
   * Make our iptables objects in (variant, family) equal `desiredText` ('' = none). With
   * `optional`, a flavour/family that cannot be read (not installed, no IPv6) is skipped.
   */
  async iptablesTo(
    variant: IptablesVariant,
    family: IpFamily,
    desiredText: string,
    optional: boolean,
  ): Promise<void> {
    let before: IptablesState | undefined;
    try {
      before = await this.readIptables(variant, family);
    } catch (e) {
      if (optional) return;
      throw e;
    }
    if (!before) {
      if (optional) return;
      throw new RedirectError(
        'CNI_ERR_BACKEND_UNAVAILABLE',
        `${family === 'v4' ? 'iptables' : 'ip6tables'}-${variant}-save/-restore are not installed; install iptables (>= 1.8) or use the nftables backend`,
      );
    }
    const script = iptablesTransitionScript(before, parseIptablesOurs(desiredText));
    if (script === '') return;
    const step: ScriptStep = family === 'v4' ? 'iptables-v4' : 'iptables-v6';
    const beforeState = before;
    // Registered before running: a failed restore may still have committed earlier tables.
    this.#undo.push({
      what: `${variant} ${family} iptables rules`,
      run: async () => {
        const now = await this.readIptables(variant, family);
        if (!now) return;
        const back = iptablesTransitionScript(now, beforeState);
        if (back !== '') await this.#restoreIptables(variant, family, back, this.#code);
      },
    });
    this.changed = true;
    await this.#restoreIptables(variant, family, this.#script(step, script), this.#code);
  }

  // --- nftables ------------------------------------------------------------------------------

  /** Raw listing of our tables (valid `nft -f` input) and their names; undefined without nft. */
  async readNft(): Promise<{ tables: string[]; listing: string } | undefined> {
    const nft = nftBinary();
    if (nft === undefined) return undefined;
    const r = await this.#run(nft, ['list', 'tables']);
    if (r.code !== 0)
      throw commandError('CNI_ERR_INSPECT', 'listing nftables tables', this.#netns, r, undefined, NFT_HINT);
    const tables = parseNftTableNames(r.stdout);
    let listing = '';
    for (const t of tables) {
      const l = await this.#run(nft, ['-s', 'list', 'table', 'inet', t]);
      if (l.code !== 0)
        throw commandError(
          'CNI_ERR_INSPECT',
          `listing nftables table inet ${t}`,
          this.#netns,
          l,
          undefined,
          NFT_HINT,
        );
      listing += l.stdout.endsWith('\n') ? l.stdout : `${l.stdout}\n`;
    }
    return { tables, listing };
  }

  async #nftRun(script: string, code: 'CNI_ERR_APPLY' | 'CNI_ERR_REMOVE'): Promise<void> {
    const nft = requireBinary('nft', 'install nftables');
    const r = await this.#run(nft, ['-f', '-'], script);
    if (r.code !== 0) throw commandError(code, 'writing nftables rules', this.#netns, r, script, NFT_HINT);
  }

  /** Make our inet tables equal the rendered script `desired` ('' = none). */
  async nftTo(desired: string, optional: boolean): Promise<void> {
    let before: { tables: string[]; listing: string } | undefined;
    try {
      before = await this.readNft();
    } catch (e) {
      if (optional) return;
      throw e;
    }
    if (!before) {
      if (optional) return;
      throw new RedirectError(
        'CNI_ERR_BACKEND_UNAVAILABLE',
        'nft is not installed; install nftables or use the iptables backend',
      );
    }
    if (canonicalNft(before.listing) === canonicalNft(desired)) return;
    const script = desired === '' ? nftRemovalScript(before.tables) : desired;
    const prior = before;
    this.changed = true;
    // nft applies a script as one transaction: on failure nothing changed, so the undo step is
    // only registered once it succeeded.
    await this.#nftRun(this.#script('nftables', script), this.#code);
    this.#undo.push({
      what: 'nftables tables',
      run: async () => {
        const reset = NFT_TABLES.map((n) => `add table inet ${n}\ndelete table inet ${n}\n`).join('');
        await this.#nftRun(reset + prior.listing, this.#code);
      },
    });
  }

  // --- policy routing ------------------------------------------------------------------------

  async readRoutes(
    o: Readonly<RedirectOptions>,
    family: IpFamily,
  ): Promise<{ rules: number; route: boolean }> {
    const ip = ipBinary();
    const fam = family === 'v4' ? '-4' : '-6';
    const rules = await this.#run(ip, [fam, '-j', 'rule', 'show']);
    if (rules.code !== 0)
      throw commandError(
        'CNI_ERR_INSPECT',
        `listing ${family} ip rules`,
        this.#netns,
        rules,
        undefined,
        ROUTES_HINT,
      );
    const routes = await this.#run(ip, [fam, '-j', 'route', 'show', 'table', String(o.routeTable)]);
    let route = false;
    if (routes.code === 0) route = hasLocalDefaultRoute(routes.stdout);
    else if (!/table does not exist/i.test(routes.stderr)) {
      throw commandError(
        'CNI_ERR_INSPECT',
        `listing ${family} routes of table ${o.routeTable}`,
        this.#netns,
        routes,
        undefined,
        ROUTES_HINT,
      );
    }
    return {
      rules: countPolicyRules(rules.stdout, {
        priority: o.rulePriority,
        connmark: o.connmark,
        markMask: o.markMask,
        table: o.routeTable,
      }),
      route,
    };
  }

  async #routesSet(
    o: Readonly<RedirectOptions>,
    family: IpFamily,
    want: { rules: number; route: boolean },
    code: 'CNI_ERR_APPLY' | 'CNI_ERR_REMOVE',
    hook: boolean,
  ): Promise<void> {
    const now = await this.readRoutes(o, family);
    const lines: string[] = [];
    for (let i = now.rules; i < want.rules; i++) lines.push(`rule add ${policyRuleSpec(o)}`);
    for (let i = want.rules; i < now.rules; i++) lines.push(`rule del ${policyRuleSpec(o)}`);
    if (want.route && !now.route) lines.push(`route replace ${policyRouteSpec(o, family)}`);
    if (!want.route && now.route) lines.push(`route del ${policyRouteSpec(o, family)}`);
    if (lines.length === 0) return;
    const step: ScriptStep = family === 'v4' ? 'routes-v4' : 'routes-v6';
    const script = lines.join('\n') + '\n';
    const final = hook ? this.#script(step, script) : script;
    const r = await this.#run(ipBinary(), [family === 'v4' ? '-4' : '-6', '-batch', '-'], final);
    if (r.code !== 0)
      throw commandError(code, `writing ${family} policy routing`, this.#netns, r, final, ROUTES_HINT);
  }

  /** Make our ip rule (exactly one copy when `present`) and route match. */
  async routesTo(
    o: Readonly<RedirectOptions>,
    family: IpFamily,
    present: boolean,
    optional: boolean,
  ): Promise<void> {
    let before: { rules: number; route: boolean };
    try {
      before = await this.readRoutes(o, family);
    } catch (e) {
      if (optional) return;
      throw e;
    }
    const want = present ? { rules: 1, route: true } : { rules: 0, route: false };
    if (before.rules === want.rules && before.route === want.route) return;
    this.changed = true;
    this.#undo.push({
      what: `${family} policy routing`,
      run: () => this.#routesSet(o, family, before, this.#code, false),
    });
    await this.#routesSet(o, family, want, this.#code, true);
  }

  /** Undo every recorded step, newest first; returns the failures (best effort). */
  async rollback(): Promise<string[]> {
    const failures: string[] = [];
    for (const step of this.#undo.reverse()) {
      try {
        await step.run();
      } catch (e) {
        failures.push(`${step.what}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    this.#undo.length = 0;
    return failures;
  }
}

/**
 * Install the in-pod redirection (rules + policy routing) in the netns at `netnsPath`, all or
 * nothing. Throws CNI_ERR_INVALID_* for bad options, CNI_ERR_NETNS_NOT_FOUND, or CNI_ERR_APPLY
 * (after rolling the netns back) naming the failed command, its exit status, its stderr and the
 * rules attempted.
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
  const tx = new NetnsRules(netnsPath, 'CNI_ERR_APPLY', applyOpts);
  try {
    if (variant !== undefined) {
      const rendered = renderIptables(o);
      await tx.iptablesTo(variant, 'v4', rendered.v4, false);
      await tx.iptablesTo(variant, 'v6', rendered.v6 ?? '', rendered.v6 === undefined);
      // A previous agent may have used the other flavour or native nftables: remove those copies.
      for (const other of IPTABLES_VARIANTS.filter((v) => v !== variant)) {
        await tx.iptablesTo(other, 'v4', '', true);
        await tx.iptablesTo(other, 'v6', '', true);
      }
      await tx.nftTo('', true);
    } else {
      await tx.nftTo(renderNftables(o), false);
      for (const v of IPTABLES_VARIANTS) {
        await tx.iptablesTo(v, 'v4', '', true);
        await tx.iptablesTo(v, 'v6', '', true);
      }
    }
    // Routing last: the rule only matters once the marks are being set.
    await tx.routesTo(o, 'v4', true, false);
    await tx.routesTo(o, 'v6', o.ipv6, !o.ipv6);
  } catch (e) {
    const failures = await tx.rollback();
    const base = e instanceof Error ? e.message : String(e);
    const rolled =
      failures.length === 0
        ? 'The pod netns was rolled back to its state before this call.'
        : `Rolling the pod netns back ALSO FAILED, it may hold partial rules; remove them with removeRedirection or delete the sandbox: ${failures.join('; ')}`;
    throw new RedirectError(
      'CNI_ERR_APPLY',
      `applying in-pod redirection (${variant ?? 'nftables'}) failed: ${base}\n${rolled}`,
      {
        cause: e,
      },
    );
  }
  return {
    changed: tx.changed,
    backend: applyOpts.backend,
    ...(variant !== undefined ? { iptablesVariant: variant } : {}),
  };
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
  const tx = new NetnsRules(netnsPath, 'CNI_ERR_REMOVE', { backend: 'iptables', ...opts });
  const failures: string[] = [];
  const attempt = async (f: () => Promise<void>): Promise<void> => {
    try {
      await f();
    } catch (e) {
      failures.push(e instanceof Error ? e.message : String(e));
    }
  };
  // Routing first: without the marks' rules the ip rule is harmless, but reverse order of apply.
  await attempt(() => tx.routesTo(o, 'v4', false, false));
  await attempt(() => tx.routesTo(o, 'v6', false, true));
  for (const v of IPTABLES_VARIANTS) {
    await attempt(() => tx.iptablesTo(v, 'v4', '', true));
    await attempt(() => tx.iptablesTo(v, 'v6', '', true));
  }
  await attempt(() => tx.nftTo('', true));
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
  const iptables = {} as RedirectionState['iptables'];
  for (const v of IPTABLES_VARIANTS) {
    const v4 = await rd.readIptables(v, 'v4');
    let v6: IptablesState | undefined;
    try {
      v6 = await rd.readIptables(v, 'v6');
    } catch {
      v6 = undefined; // no IPv6 in this kernel/netns
    }
    iptables[v] = {
      available: v4 !== undefined,
      v4: v4 ? formatIptablesState(v4) : '',
      v6: v6 ? formatIptablesState(v6) : '',
    };
  }
  const nft = await rd.readNft();
  const routes = {} as RedirectionState['routes'];
  routes.v4 = await rd.readRoutes(o, 'v4');
  try {
    routes.v6 = await rd.readRoutes(o, 'v6');
  } catch {
    routes.v6 = { rules: 0, route: false };
  }
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

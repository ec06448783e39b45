// SPDX-License-Identifier: Apache-2.0
// In-pod redirection applied in real pod network namespaces of the test bed
// (cni-plugin/src/redirect/apply.ts; spec ambient-protocols.md §2.2–2.4; spec
// security-and-reliability.md §1.1 istio/istio#61020 and checklist D case 59).
//
// Covers, with iptables-legacy, iptables-nft and native nftables: the installed rules equal the
// rendered ones; applying twice changes nothing; a backend-detection flip leaves exactly one rule
// set; removal leaves only the unrelated rules we put there first; injected failures leave the
// netns exactly as before; and the rules do what §2.2 says to real TCP connections.
// Needs root: without it this file fails loudly.
import { spawn, type ChildProcess } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import {
  applyRedirection,
  detectIptablesBackend,
  diffRedirection,
  inspectRedirection,
  removeRedirection,
} from '../../../cni-plugin/src/redirect/apply.ts';
import type { ApplyOptions, IptablesVariant } from '../../../cni-plugin/src/redirect/apply.ts';
import { renderIptables, renderNftables } from '../../../cni-plugin/src/redirect/render.ts';
import type { RedirectOptionsInput } from '../../../cni-plugin/src/redirect/render.ts';
import { canonicalIptables, canonicalNft } from '../../../cni-plugin/src/redirect/state.ts';
import { RedirectError } from '../../../cni-plugin/src/redirect/errors.ts';
import { testbedFor } from '../../helpers/testbed.ts';
import type { Pod } from '../../helpers/testbed.ts';
import { startTcpServer, tcpRequest } from '../../helpers/testbed-apps.ts';

const FULL: RedirectOptionsInput = { dnsCapture: true, ipv6: true };

async function save(pod: Pod, variant: IptablesVariant, family: 'v4' | 'v6'): Promise<string> {
  const bin = `${family === 'v4' ? 'iptables' : 'ip6tables'}-${variant}-save`;
  const r = await pod.exec(bin, []);
  if (r.code !== 0) throw new Error(`${bin}: ${r.stderr}`);
  // Comments carry timestamps and built-in chain policies carry packet counters (IPv6 neighbour
  // discovery moves them); neither is part of the rule set.
  return r.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => (l.startsWith(':') ? l.replace(/\[\d+:\d+\]$/, '[0:0]') : l))
    .join('\n');
}

async function nftRuleset(pod: Pod): Promise<string> {
  const r = await pod.exec('nft', ['-s', 'list', 'ruleset']);
  if (r.code !== 0) throw new Error(`nft list ruleset: ${r.stderr}`);
  return r.stdout;
}

function count(text: string, re: RegExp): number {
  return (text.match(new RegExp(re.source, 'gm')) ?? []).length;
}

/** Everything unrelated we put into pod A before any apply; must survive every operation. */
async function unrelated(pod: Pod): Promise<string[]> {
  const out: string[] = [];
  for (const v of ['legacy', 'nft'] as const) {
    const s = await save(pod, v, 'v4');
    out.push(
      ...s
        .split('\n')
        .filter((l) => l.includes('198.18.9.9') || l.includes('--dport 81'))
        .map((l) => `${v}: ${l}`),
    );
  }
  const nft = await nftRuleset(pod);
  out.push(
    ...nft
      .split('\n')
      .filter((l) => l.includes('unrelated') || l.includes('9999'))
      .map((l) => `nft: ${l.trim()}`),
  );
  const rules = await pod.exec('ip', ['rule', 'show']);
  out.push(
    ...rules.stdout
      .split('\n')
      .filter((l) => l.includes('lookup 200'))
      .map((l) => `rule: ${l.trim()}`),
  );
  const routes = await pod.exec('ip', ['route', 'show', 'table', '100']);
  out.push(
    ...routes.stdout
      .split('\n')
      .filter((l) => l.includes('blackhole'))
      .map((l) => `route: ${l.trim()}`),
  );
  return out;
}

async function expectApplyError(t: Tap, p: Promise<unknown>, what: string, message: RegExp[]): Promise<void> {
  try {
    await p;
    t.fail(`${what}: expected CNI_ERR_APPLY, apply succeeded`);
  } catch (e) {
    t.ok(e instanceof RedirectError, `${what}: RedirectError`);
    t.equal((e as RedirectError).code, 'CNI_ERR_APPLY', `${what}: CNI_ERR_APPLY`);
    for (const m of message) t.match((e as Error).message, m, `${what}: message has ${String(m)}`);
  }
}

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

t.test('in-pod redirection in a real pod netns', { timeout: 60_000 }, async (t) => {
  const tb = await testbedFor(t, { nodes: 1 });
  if (tb === undefined) return;
  const { prefix } = tb;
  const a = await tb.addPod({ node: 0, name: 'a' });
  const b = await tb.addPod({ node: 0, name: 'b' });

  // Unrelated state that must survive: rules in both iptables flavours, an nft table, an ip rule,
  // and another route in table 100. The mangle MARK rule also plays "ztunnel's SO_MARK" below.
  for (const cmd of [
    ['iptables-legacy', '-t', 'nat', '-A', 'OUTPUT', '-d', '198.18.9.9/32', '-p', 'tcp', '-j', 'RETURN'],
    ['iptables-nft', '-t', 'nat', '-A', 'OUTPUT', '-d', '198.18.9.9/32', '-p', 'tcp', '-j', 'RETURN'],
    [
      'iptables-nft',
      '-t',
      'mangle',
      '-A',
      'OUTPUT',
      '-d',
      `${b.ip}/32`,
      '-p',
      'tcp',
      '--dport',
      '81',
      '-j',
      'MARK',
      '--set-xmark',
      '0x539/0xfff',
    ],
    [
      'nft',
      'add table inet unrelated; add chain inet unrelated c; add rule inet unrelated c tcp dport 9999 counter',
    ],
    ['ip', 'rule', 'add', 'priority', '1000', 'fwmark', '0x5', 'lookup', '200'],
    ['ip', 'route', 'add', 'blackhole', '198.18.9.0/24', 'table', '100'],
  ]) {
    const [cmd0, ...args] = cmd;
    const r = await a.exec(cmd0!, args);
    t.equal(r.code, 0, `setup: ${cmd.join(' ')} ${r.stderr}`);
  }
  const baseline = await unrelated(a);
  t.equal(baseline.length, 7, `baseline unrelated objects present: ${baseline.join(' | ')}`);

  for (const variant of ['legacy', 'nft'] as const) {
    t.test(
      `iptables-${variant}: installed rules equal the rendered ones; second apply is a no-op`,
      async (t) => {
        const opts: ApplyOptions = { backend: 'iptables', iptablesVariant: variant };
        const r1 = await applyRedirection(a.netnsPath, FULL, opts);
        t.equal(r1.changed, true);
        const rendered = renderIptables(FULL);
        const v4 = await save(a, variant, 'v4');
        const v6 = await save(a, variant, 'v6');
        t.equal(canonicalIptables(v4), rendered.v4, 'iptables-save (ours) == rendered v4');
        t.equal(canonicalIptables(v6), rendered.v6, 'ip6tables-save (ours) == rendered v6');
        t.equal(count(v4, /^-A (PREROUTING|OUTPUT) -j ISTIO_/), 6, 'one jump per built-in chain and table');
        const state = await inspectRedirection(a.netnsPath, FULL);
        t.same(diffRedirection(state, FULL, opts), [], 'inspect shows exactly the wanted state');
        t.same(state.routes, { v4: { rules: 1, route: true }, v6: { rules: 1, route: true } });

        const r2 = await applyRedirection(a.netnsPath, FULL, opts);
        t.equal(r2.changed, false, 'second apply changes nothing');
        t.equal(await save(a, variant, 'v4'), v4, 'iptables-save byte-identical after the second apply');
        t.equal(await save(a, variant, 'v6'), v6, 'ip6tables-save byte-identical after the second apply');
        t.same(await unrelated(a), baseline, 'unrelated rules intact');
      },
    );
  }

  t.test('backend-detection flip (istio/istio#61020): exactly one rule set', async (t) => {
    const detected = await detectIptablesBackend();
    const version = await a.exec('iptables', ['-V']);
    t.equal(
      detected,
      /nf_tables/.test(version.stdout) ? 'nft' : 'legacy',
      `detected ${detected} from ${version.stdout.trim()}`,
    );
    // Agent restarts alternate their detection result; every pod must still hold one rule set.
    for (const variant of ['legacy', 'nft', 'legacy', 'nft'] as const) {
      await applyRedirection(a.netnsPath, FULL, { backend: 'iptables', iptablesVariant: variant });
      const other = variant === 'legacy' ? 'nft' : 'legacy';
      const mine = await save(a, variant, 'v4');
      const theirs = await save(a, other, 'v4');
      t.equal(canonicalIptables(mine), renderIptables(FULL).v4, `${variant}: rendered rules present`);
      t.equal(count(theirs, /ISTIO_/), 0, `${variant}: nothing of ours left in ${other}`);
      t.equal(
        count(await save(a, other, 'v6'), /ISTIO_/),
        0,
        `${variant}: nothing of ours left in ${other} ip6tables`,
      );
      const state = await inspectRedirection(a.netnsPath, FULL);
      t.same(diffRedirection(state, FULL, { backend: 'iptables', iptablesVariant: variant }), []);
    }
    t.same(await unrelated(a), baseline, 'unrelated rules intact');
  });

  t.test(
    'native nftables: tables equal the rendered script; idempotent; iptables copies removed',
    async (t) => {
      const opts: ApplyOptions = { backend: 'nftables' };
      const r1 = await applyRedirection(a.netnsPath, FULL, opts);
      t.equal(r1.changed, true);
      const ruleset = await nftRuleset(a);
      t.equal(
        canonicalNft(ruleset),
        canonicalNft(renderNftables(FULL)),
        'nft list ruleset (ours) == rendered',
      );
      t.equal(count(ruleset, /^table inet istio-ambient-/), 3, 'three tables, once each');
      for (const v of ['legacy', 'nft'] as const) {
        t.equal(
          count(await save(a, v, 'v4'), /ISTIO_/),
          0,
          `no iptables-${v} copies after switching to nftables`,
        );
      }
      const r2 = await applyRedirection(a.netnsPath, FULL, opts);
      t.equal(r2.changed, false, 'second apply changes nothing');
      t.equal(await nftRuleset(a), ruleset, 'ruleset byte-identical after the second apply');
      // Switching DNS capture off drops the raw table in the same transaction.
      await applyRedirection(a.netnsPath, { ipv6: true }, opts);
      const noDns = await nftRuleset(a);
      t.equal(count(noDns, /istio-ambient-raw/), 0, 'raw table removed when DNS capture turns off');
      t.equal(canonicalNft(noDns), canonicalNft(renderNftables({ ipv6: true })));
      t.same(await unrelated(a), baseline, 'unrelated rules intact');
    },
  );

  t.test('removal leaves only what was there before', async (t) => {
    await applyRedirection(a.netnsPath, FULL, { backend: 'iptables', iptablesVariant: 'legacy' });
    t.equal(
      count(await nftRuleset(a), /istio-ambient/),
      0,
      'switching back to iptables removed our nft tables',
    );
    await removeRedirection(a.netnsPath, FULL);
    const state = await inspectRedirection(a.netnsPath, FULL);
    t.equal(state.present, false, `nothing of ours: ${JSON.stringify(state)}`);
    for (const v of ['legacy', 'nft'] as const) {
      t.equal(count(await save(a, v, 'v4'), /ISTIO_/), 0, `no ISTIO chains in ${v} v4`);
      t.equal(count(await save(a, v, 'v6'), /ISTIO_/), 0, `no ISTIO chains in ${v} v6`);
    }
    t.equal(count(await nftRuleset(a), /istio-ambient/), 0, 'no istio-ambient tables');
    const rules = await a.exec('ip', ['rule', 'show']);
    t.notMatch(rules.stdout, /fwmark 0x111\/0xfff/, 'our ip rule removed');
    const routes = await a.exec('ip', ['route', 'show', 'table', '100']);
    t.notMatch(routes.stdout, /local/, 'our table-100 route removed');
    t.same(await unrelated(a), baseline, 'unrelated rules, ip rule and table-100 route intact');
    await removeRedirection(a.netnsPath, FULL); // idempotent
    t.equal((await inspectRedirection(a.netnsPath)).present, false);
  });

  t.test('injected failures leave the netns exactly as before (all or nothing)', async (t) => {
    for (const variant of ['legacy', 'nft'] as const) {
      // From nothing: the raw table is last, so mangle and nat were committed when it fails.
      await expectApplyError(
        t,
        applyRedirection(a.netnsPath, FULL, {
          backend: 'iptables',
          iptablesVariant: variant,
          testHooks: {
            transformScript: (step, s) =>
              step === 'iptables-v4' ? s.replace('-j CT --zone 1', '-j BOGUSTARGET') : s,
          },
        }),
        `${variant} bogus target`,
        [
          new RegExp(`iptables-${variant}-restore --noflush`),
          /exited with status \d+/,
          /BOGUSTARGET/,
          /Rules attempted:\n\*mangle/,
          /rolled back/,
        ],
      );
      let state = await inspectRedirection(a.netnsPath, FULL);
      t.equal(state.present, false, `${variant}: no half-applied rules after a failed fresh apply`);

      // From an older rule set: the failure must restore it, not leave nothing or a mix.
      await applyRedirection(a.netnsPath, {}, { backend: 'iptables', iptablesVariant: variant });
      const before = await save(a, variant, 'v4');
      await expectApplyError(
        t,
        applyRedirection(a.netnsPath, FULL, {
          backend: 'iptables',
          iptablesVariant: variant,
          testHooks: {
            transformScript: (step, s) =>
              step === 'iptables-v6' ? s.replace('-j CT --zone 1', '-j BOGUSTARGET') : s,
          },
        }),
        `${variant} failure in ip6tables after iptables succeeded`,
        [/ip6tables/, /BOGUSTARGET/],
      );
      t.equal(await save(a, variant, 'v4'), before, `${variant}: IPv4 rules rolled back to the previous set`);
      state = await inspectRedirection(a.netnsPath, {});
      t.same(
        diffRedirection(state, {}, { backend: 'iptables', iptablesVariant: variant }),
        [],
        `${variant}: previous state intact`,
      );
      await removeRedirection(a.netnsPath, FULL);
    }

    // nftables: one transaction, so a bad line changes nothing.
    await applyRedirection(a.netnsPath, {}, { backend: 'nftables' });
    const before = await nftRuleset(a);
    await expectApplyError(
      t,
      applyRedirection(a.netnsPath, FULL, {
        backend: 'nftables',
        testHooks: {
          transformScript: (step, s) =>
            step === 'nftables' ? `${s}add rule inet istio-ambient-nat istio-output bogus-statement\n` : s,
        },
      }),
      'nft bogus statement',
      [/nft -f -/, /exited with status \d+/, /Rules attempted:\nadd table inet istio-ambient-nat/],
    );
    t.equal(await nftRuleset(a), before, 'nft ruleset unchanged by the failed transaction');

    // Routing fails after the rules went in: the rules are rolled back too.
    await removeRedirection(a.netnsPath, FULL);
    await expectApplyError(
      t,
      applyRedirection(a.netnsPath, FULL, {
        backend: 'iptables',
        iptablesVariant: 'legacy',
        testHooks: {
          transformScript: (step, s) => (step === 'routes-v6' ? s.replace('dev lo', 'dev nosuchdev0') : s),
        },
      }),
      'route failure',
      [/policy routing/, /nosuchdev0/],
    );
    const state = await inspectRedirection(a.netnsPath, FULL);
    t.equal(
      state.present,
      false,
      `rules and the IPv4 routing undone after the IPv6 route failed: ${JSON.stringify(state.routes)}`,
    );
    t.same(await unrelated(a), baseline, 'unrelated rules intact through every failure');
  });

  t.test('one process per apply, removal or inspection, whatever it has to do', async (t) => {
    // Enrolment latency (bench/README.md, enrolment group): every process the agent starts costs
    // milliseconds on a busy node. A new pod netns, as a CNI ADD brings it.
    const c = await tb.addPod({ node: 0, name: 'c' });
    const variant = await detectIptablesBackend();
    const cases: [string, () => Promise<unknown>][] = [
      [
        'apply to a new pod (iptables)',
        () => applyRedirection(c.netnsPath, {}, { backend: 'iptables', iptablesVariant: variant }),
      ],
      [
        'apply again, nothing to do',
        () => applyRedirection(c.netnsPath, {}, { backend: 'iptables', iptablesVariant: variant }),
      ],
      [
        'apply with IPv6 and DNS capture',
        () => applyRedirection(c.netnsPath, FULL, { backend: 'iptables', iptablesVariant: variant }),
      ],
      [
        'flip to the other flavour',
        () =>
          applyRedirection(c.netnsPath, FULL, {
            backend: 'iptables',
            iptablesVariant: variant === 'nft' ? 'legacy' : 'nft',
          }),
      ],
      ['switch to nftables', () => applyRedirection(c.netnsPath, FULL, { backend: 'nftables' })],
      ['inspect', () => inspectRedirection(c.netnsPath, FULL)],
      ['remove', () => removeRedirection(c.netnsPath, FULL)],
      [
        'a failed apply and its rollback',
        () =>
          applyRedirection(c.netnsPath, FULL, {
            backend: 'iptables',
            iptablesVariant: variant,
            testHooks: {
              transformScript: (step, s) =>
                step === 'routes-v6' ? s.replace('dev lo', 'dev nosuchdev0') : s,
            },
          }).catch(() => undefined),
      ],
    ];
    for (const [what, f] of cases) {
      let spawns = 0;
      const onSpawn = (): void => {
        spawns++;
      };
      subscribe('child_process', onSpawn);
      try {
        await f();
      } finally {
        unsubscribe('child_process', onSpawn);
      }
      t.equal(spawns, 1, `${what}: one process`);
    }
    const state = await inspectRedirection(c.netnsPath, FULL);
    t.equal(state.present, false, 'the failed apply was rolled back to nothing');
    await tb.removePod('c');
  });

  t.test(
    'a write that outlives its deadline is killed, and a fresh shell rolls the netns back',
    async (t) => {
      // iptables-legacy-restore waits (--wait=10) for the xtables lock; holding the lock makes the
      // write hang past the session's deadline. XTABLES_LOCKFILE points this file's children at a
      // lock of our own, so no other test's iptables waits on it. The lock is let go only once the
      // first session has been killed, so the rollback's own write can run.
      const lockFile = join(tmpdir(), `${prefix}-xtables.lock`);
      const holder = spawn('flock', ['-x', lockFile, '-c', 'echo locked; exec sleep 30'], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      t.teardown(() => {
        holder.kill('SIGKILL');
        rmSync(lockFile, { force: true });
      });
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once('data', () => resolve());
        holder.once('exit', (code) => reject(new Error(`flock exited with ${code} before taking the lock`)));
      });
      const savedLock = process.env.XTABLES_LOCKFILE;
      process.env.XTABLES_LOCKFILE = lockFile;
      const sessions: ChildProcess[] = [];
      const onSpawn = (msg: unknown): void => {
        const child = (msg as { process: ChildProcess }).process;
        sessions.push(child);
        // The first shell dies by its deadline: only then may the rollback get the lock.
        if (sessions.length === 1) child.once('exit', () => holder.kill('SIGKILL'));
      };
      subscribe('child_process', onSpawn);
      const started = Date.now();
      try {
        await expectApplyError(
          t,
          applyRedirection(a.netnsPath, FULL, {
            backend: 'iptables',
            iptablesVariant: 'legacy',
            timeoutMs: 1000,
          }),
          'a write held past its deadline',
          [
            /timed out and was killed/,
            /iptables-legacy-restore/,
            /rolled back to its state before this call/,
          ],
        );
      } finally {
        unsubscribe('child_process', onSpawn);
        if (savedLock === undefined) delete process.env.XTABLES_LOCKFILE;
        else process.env.XTABLES_LOCKFILE = savedLock;
      }
      t.equal(sessions.length, 2, 'the rollback ran in a shell of its own, not in the killed one');
      t.ok(Date.now() - started < 15_000, 'bounded by the deadline, not by the 10 s lock wait');
      t.equal(
        holder.exitCode ?? holder.signalCode,
        'SIGKILL',
        'the lock was held until the first shell died',
      );
      const state = await inspectRedirection(a.netnsPath, FULL);
      t.equal(state.present, false, `no half-applied rules: ${JSON.stringify(state)}`);
      t.same(await unrelated(a), baseline, 'unrelated rules intact');
    },
  );

  t.test('a vanished netns is a distinct, non-retryable error', async (t) => {
    await t.rejects(applyRedirection(`/run/netns/${prefix}-gone`, {}, { backend: 'nftables' }), {
      code: 'CNI_ERR_NETNS_NOT_FOUND',
    });
    await t.rejects(removeRedirection(`/run/netns/${prefix}-gone`), { code: 'CNI_ERR_NETNS_NOT_FOUND' });
    await t.rejects(
      applyRedirection(a.netnsPath, { rerouteVirtualInterfaces: ['x y'] }, { backend: 'nftables' }),
      {
        code: 'CNI_ERR_INVALID_INTERFACE',
      },
    );
  });

  for (const backend of ['iptables', 'nftables'] as const) {
    t.test(
      `traffic (${backend}): outbound to 15001, inbound to 15006, 15008 and own IP untouched`,
      async (t) => {
        const opts: ApplyOptions =
          backend === 'iptables' ? { backend, iptablesVariant: await detectIptablesBackend() } : { backend };
        // Pod A: stand-in ztunnel listeners plus the app on 80. Pod B: an app on 80 and 81.
        const srvA = await startTcpServer(a, 'A', [15001, 15006, 15008, 80]);
        const srvB = await startTcpServer(b, 'B', [80, 81]);
        t.teardown(() => {
          srvA.child.kill('SIGKILL');
          srvB.child.kill('SIGKILL');
        });
        const plain = await tcpRequest(a, b.ip, 80);
        t.equal(plain.server, 'B', `before apply, A→B:80 reaches B (${plain.output})`);

        await applyRedirection(a.netnsPath, {}, opts);

        const out = await tcpRequest(a, b.ip, 80);
        t.equal(
          `${String(out.server)}:${String(out.landedPort)}`,
          'A:15001',
          `A→B:80 captured to A's 15001 (${out.output})`,
        );
        const inbound = await tcpRequest(b, a.ip, 80);
        t.equal(
          `${String(inbound.server)}:${String(inbound.landedPort)}`,
          'A:15006',
          `B→A:80 captured to A's 15006 (${inbound.output})`,
        );
        const hbone = await tcpRequest(b, a.ip, 15008);
        t.equal(
          `${String(hbone.server)}:${String(hbone.landedPort)}`,
          'A:15008',
          `B→A:15008 not redirected (${hbone.output})`,
        );
        const self = await tcpRequest(a, a.ip, 80);
        t.equal(
          `${String(self.server)}:${String(self.landedPort)}`,
          'A:80',
          `A→own pod IP:80 not captured (${self.output})`,
        );
        const loop = await tcpRequest(a, '127.0.0.1', 80);
        t.equal(
          `${String(loop.server)}:${String(loop.landedPort)}`,
          'A:80',
          `A→127.0.0.1:80 not captured (${loop.output})`,
        );
        // Packets carrying ztunnel's mark 0x539 (set here by the unrelated mangle rule for port 81)
        // are never captured.
        const marked = await tcpRequest(a, b.ip, 81);
        t.equal(
          `${String(marked.server)}:${String(marked.landedPort)}`,
          'B:81',
          `ztunnel-marked A→B:81 not captured (${marked.output})`,
        );

        // Kubelet probe: from the probe SNAT address, inbound is not captured.
        await b.exec('ip', ['addr', 'add', '169.254.7.127/32', 'dev', 'eth0']);
        await a.exec('ip', ['route', 'replace', '169.254.7.127/32', 'via', b.ip, 'dev', 'eth0']);
        const probe = await tcpRequest(b, a.ip, 80, { localAddress: '169.254.7.127' });
        t.equal(
          `${String(probe.server)}:${String(probe.landedPort)}`,
          'A:80',
          `probe from 169.254.7.127 reaches the app (${probe.output})`,
        );
        t.match(probe.output, /peer=169\.254\.7\.127/);
        await b.exec('ip', ['addr', 'del', '169.254.7.127/32', 'dev', 'eth0']);
        await a.exec('ip', ['route', 'del', '169.254.7.127/32']);

        await removeRedirection(a.netnsPath);
        const after = await tcpRequest(a, b.ip, 80);
        t.equal(after.server, 'B', `after removal, A→B:80 reaches B again (${after.output})`);
        const inAfter = await tcpRequest(b, a.ip, 80);
        t.equal(
          `${String(inAfter.server)}:${String(inAfter.landedPort)}`,
          'A:80',
          'after removal, B→A:80 reaches the app',
        );
      },
    );
  }
});

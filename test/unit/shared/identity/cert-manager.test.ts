// SPDX-License-Identifier: Apache-2.0
// CertificateManager (ambient-protocols.md §4 "Rotation"): shared first fetch, half-life refresh,
// backoff growth, cap and jitter bounds, clamping to expiry, never serving an expired cert,
// forget/close, the concurrency limit with priorities, unref'd timers; and
// workloadCertificateFromChain's checks of the CA response.
import t from 'tap';
import fc from 'fast-check';
import { install, type Clock } from '@sinonjs/fake-timers';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  BACKOFF_JITTER,
  CertificateManager,
  workloadCertificateFromChain,
  type CertificateSigner,
  type WorkloadCertificate,
} from '../../../../src/shared/identity/cert-manager.ts';
import { generateKeyAndCsr } from '../../../../src/shared/identity/csr.ts';
import { IdentityError } from '../../../../src/shared/identity/errors.ts';
import { verifySvid } from '../../../../src/shared/identity/svid.ts';
import { TrustBundle } from '../../../../src/shared/identity/trust-bundle.ts';
import { mintCert, newTestCa, presentedChainDer } from '../../../helpers/pki.ts';
import type { CertificateAuthority } from '../../../../src/shared/identity/ca.ts';

const ID = 'spiffe://cluster.local/ns/a/sa/b';
const ID2 = 'spiffe://cluster.local/ns/c/sa/d';

/** A signer backed by a real CA, with a switch to make it fail and a call log. */
function caSigner(ca: CertificateAuthority): {
  signer: CertificateSigner;
  calls: string[];
  failing: { on: boolean };
} {
  const calls: string[] = [];
  const failing = { on: false };
  const signer: CertificateSigner = async (req) => {
    calls.push(req.identity);
    if (failing.on) throw new Error('CA unavailable (test)');
    return (await ca.sign({ csrPem: req.csrPem, identity: req.identity, ttlSeconds: req.ttlSeconds }))
      .certChainPem;
  };
  return { signer, calls, failing };
}

type Events = { updated: [string, WorkloadCertificate]; failed: [string, Error, number] };
function nextEvent<K extends keyof Events>(m: CertificateManager, name: K): Promise<Events[K]> {
  return new Promise((resolve) => {
    m.once(name, (...args: Events[K]) => resolve(args));
  });
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return err instanceof IdentityError ? err.code : `other: ${String(err)}`;
  }
}

function installClock(): Clock {
  return install({ now: Date.parse('2030-06-01T00:00:00Z'), toFake: ['setTimeout', 'clearTimeout', 'Date'] });
}

t.test('first use fetches once for all concurrent callers', async (t) => {
  const ca = await newTestCa();
  const { signer, calls } = caSigner(ca);
  const m = new CertificateManager({ signer });
  t.teardown(() => m.close());
  let updates = 0;
  m.on('updated', () => updates++);
  t.equal(m.current(ID), undefined);
  const certs = await Promise.all(Array.from({ length: 10 }, () => m.getCertificate(ID)));
  t.equal(calls.length, 1, 'one CSR for 10 callers');
  t.ok(
    certs.every((c) => c === certs[0]),
    'all share the same certificate',
  );
  t.equal(updates, 1);
  const cert = certs[0]!;
  t.equal(cert.id.uri, ID);
  t.equal(m.current(ID), cert);
  t.equal(await m.getCertificate(ID), cert, 'served from cache');
  t.equal(calls.length, 1);
  t.equal(cert.certChainPem.length, 1, 'leaf only (no intermediate), roots kept apart');
  t.same(cert.rootsPem, ca.trustBundle.rootsPem);
  await verifySvid(presentedChainDer(cert), TrustBundle.fromPem(cert.rootsPem), { expectedIdentities: [ID] });
  t.equal(
    cert.notAfter.getTime() - cert.notBefore.getTime(),
    (86400 + 60) * 1000,
    'asks for 24 h by default',
  );
  t.equal(await codeOf(m.getCertificate('spiffe://cluster.local/ns/a/sa/b/')), 'ID_ERR_SPIFFE_INVALID');
});

t.test(
  'refresh at half-life; failures keep the valid cert and back off ×2 up to the cap, clamped to expiry',
  async (t) => {
    const clock = installClock();
    t.teardown(() => clock.uninstall());
    const ca = await newTestCa();
    const { signer, calls, failing } = caSigner(ca);
    const ttl = 3 * 3600;
    const m = new CertificateManager({ signer, ttlSeconds: ttl, random: () => 0.5 }); // jitter factor exactly 1
    t.teardown(() => m.close());

    const first = await m.getCertificate(ID);
    const lifetime = first.notAfter.getTime() - first.notBefore.getTime();
    const refreshAt = first.notBefore.getTime() + lifetime / 2;
    await clock.tickAsync(refreshAt - Date.now() - 1);
    t.equal(calls.length, 1, 'no refresh before half-life');
    const upd = nextEvent(m, 'updated');
    await clock.tickAsync(1);
    const [, second] = await upd;
    t.equal(calls.length, 2, 'refreshed at half-life');
    t.not(second, first);
    t.not(second.privateKeyPem, first.privateKeyPem, 'new key on rotation');
    t.equal(m.current(ID), second);

    // From now on the CA fails: collect the retry delays until the cert expires.
    failing.on = true;
    const refresh2 =
      second.notBefore.getTime() + (second.notAfter.getTime() - second.notBefore.getTime()) / 2;
    let f = nextEvent(m, 'failed');
    await clock.tickAsync(refresh2 - Date.now());
    const delays: number[] = [];
    for (;;) {
      const [id, err, delay] = await f;
      t.equal(id, ID);
      t.match(err.message, /CA unavailable/);
      delays.push(delay);
      const served = m.current(ID);
      if (Date.now() > second.notAfter.getTime()) {
        t.equal(served, undefined, 'expired: not served');
        break;
      }
      t.equal(served, second, 'still-valid cert kept while retrying');
      t.equal(await m.getCertificate(ID), second, 'getCertificate serves it too');
      f = nextEvent(m, 'failed');
      await clock.tickAsync(delay);
      if (delays.length > 200) break;
    }
    const expected = [500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 150000, 150000];
    t.same(delays.slice(0, expected.length), expected, 'exponential from 0.5 s, capped at 150 s');
    const clamped = delays.at(-2)!;
    t.ok(clamped < 150000, `the last retry before expiry is clamped to expiry (${clamped} ms)`);
    t.ok(delays.slice(expected.length, -2).every((d) => d === 150000));

    // Expired and a retry pending: callers are refused rather than hammering the CA.
    t.equal(m.current(ID), undefined);
    t.equal(await codeOf(m.getCertificate(ID)), 'ID_ERR_CERT_UNAVAILABLE');
    const callsBefore = calls.length;
    failing.on = false;
    const recovered = nextEvent(m, 'updated');
    await clock.tickAsync(delays.at(-1)!);
    const [, third] = await recovered;
    t.equal(calls.length, callsBefore + 1, 'the scheduled retry fetched');
    t.equal(await m.getCertificate(ID), third);
  },
);

t.test('never serves an expired certificate; notAfter is inclusive', async (t) => {
  const clock = installClock();
  t.teardown(() => clock.uninstall());
  const ca = await newTestCa();
  const { signer, failing } = caSigner(ca);
  const m = new CertificateManager({ signer, ttlSeconds: 600 });
  t.teardown(() => m.close());
  const cert = await m.getCertificate(ID);
  failing.on = true;
  clock.setSystemTime(cert.notAfter.getTime()); // jump without firing timers
  t.equal(m.current(ID), cert, 'valid at notAfter exactly');
  clock.setSystemTime(cert.notAfter.getTime() + 1);
  t.equal(m.current(ID), undefined, 'expired 1 ms later');
  // No retry is pending (the timers did not fire), so getCertificate refetches — and that fails.
  const err = await m.getCertificate(ID).catch((e: unknown) => e);
  t.ok(err instanceof IdentityError && err.code === 'ID_ERR_CERT_UNAVAILABLE');
  t.match((err as Error).message, /CA unavailable/);
  failing.on = false;
  t.equal(await codeOf(m.getCertificate(ID)), 'ID_ERR_CERT_UNAVAILABLE', 'during the backoff window');
  const upd = nextEvent(m, 'updated');
  await clock.tickAsync(1000);
  const [, fresh] = await upd;
  t.ok(fresh.notAfter.getTime() > Date.now());
  t.equal(await m.getCertificate(ID), fresh);
});

t.test('a CA response for another identity is refused', async (t) => {
  const ca = await newTestCa();
  const liar: CertificateSigner = async () => {
    const other = await generateKeyAndCsr(ID2);
    return (await ca.sign({ csrPem: other.csrPem, identity: ID2 })).certChainPem;
  };
  const m = new CertificateManager({ signer: liar });
  t.teardown(() => m.close());
  const err = await m.getCertificate(ID).catch((e: unknown) => e);
  t.ok(err instanceof IdentityError && err.code === 'ID_ERR_CERT_UNAVAILABLE');
  const cause = (err as Error).cause;
  t.ok(cause instanceof IdentityError, 'the cause is kept');
  t.equal(m.current(ID), undefined);
});

t.test('backoff jitter stays within ±20 % of the capped exponential', async (t) => {
  const ca = await newTestCa();
  const { signer } = caSigner(ca);
  t.equal(BACKOFF_JITTER, 0.2);
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 40 }),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      (k, r) => {
        const m = new CertificateManager({ signer, random: () => r });
        const base = Math.min(500 * 2 ** k, 150000);
        const d = m.backoffDelayMs(k);
        return d >= Math.floor(base * 0.8) && d <= Math.ceil(base * 1.2);
      },
    ),
    { numRuns: 500 },
  );
  const lo = new CertificateManager({ signer, random: () => 0 });
  const hi = new CertificateManager({ signer, random: () => 0.999999 });
  t.equal(lo.backoffDelayMs(0), 400);
  t.equal(hi.backoffDelayMs(0), 600);
  t.equal(lo.backoffDelayMs(20), 120000);
  t.equal(hi.backoffDelayMs(20), 180000);
  const custom = new CertificateManager({
    signer,
    random: () => 0.5,
    initialBackoffMs: 100,
    maxBackoffMs: 1000,
  });
  t.same(
    [0, 1, 2, 3, 4, 5].map((k) => custom.backoffDelayMs(k)),
    [100, 200, 400, 800, 1000, 1000],
  );
});

t.test('forget() and close() drop certificates and timers', async (t) => {
  const clock = installClock();
  t.teardown(() => clock.uninstall());
  const ca = await newTestCa();
  const { signer, calls } = caSigner(ca);
  const m = new CertificateManager({ signer, ttlSeconds: 3600 });
  await m.getCertificate(ID);
  await m.getCertificate(ID2);
  m.forget(ID);
  t.equal(m.current(ID), undefined, 'forgotten');
  t.ok(m.current(ID2), 'others kept');
  const upd = nextEvent(m, 'updated');
  await clock.tickAsync(3600_000);
  const [refreshed] = await upd;
  t.equal(refreshed, ID2, 'only the remembered identity refreshes');
  t.same(calls, [ID, ID2, ID2]);
  await m.getCertificate(ID);
  t.equal(calls.length, 4, 'a forgotten identity is fetched again on use');

  m.close();
  t.equal(clock.countTimers(), 0, 'close() clears every timer');
  t.equal(await codeOf(m.getCertificate(ID)), 'ID_ERR_CERT_UNAVAILABLE');
  t.equal(m.current(ID2), undefined);
  await clock.tickAsync(10 * 3600_000);
  t.equal(calls.length, 4, 'no fetch after close');
});

t.test('at most maxConcurrent CSRs; RealTime before Warmup', async (t) => {
  const ca = await newTestCa();
  const order: string[] = [];
  const gates: (() => void)[] = [];
  let active = 0;
  let maxActive = 0;
  const signer: CertificateSigner = async (req) => {
    order.push(req.identity);
    active++;
    maxActive = Math.max(maxActive, active);
    await new Promise<void>((r) => gates.push(r));
    active--;
    return (await ca.sign({ csrPem: req.csrPem, identity: req.identity })).certChainPem;
  };
  const m = new CertificateManager({ signer, maxConcurrent: 2 });
  t.teardown(() => m.close());
  const ids = Array.from({ length: 6 }, (_, i) => `spiffe://cluster.local/ns/n${i}/sa/s`);
  const all = Promise.all(ids.map((id) => m.getCertificate(id)));
  const waitFor = async (n: number): Promise<void> => {
    for (let i = 0; i < 500 && order.length < n; i++) await new Promise((r) => setTimeout(r, 2));
  };
  await waitFor(2);
  await new Promise((r) => setTimeout(r, 20));
  t.equal(order.length, 2, 'only two started');
  while (order.length < 6 || gates.length > 0) {
    gates.shift()?.();
    await new Promise((r) => setTimeout(r, 2));
  }
  await all;
  t.equal(maxActive, 2);

  // Priority: one slot busy, then a warmup and a real-time request queue up.
  const one = new CertificateManager({ signer, maxConcurrent: 1 });
  t.teardown(() => one.close());
  order.length = 0;
  const busy = one.getCertificate('spiffe://cluster.local/ns/busy/sa/s');
  await waitFor(1);
  one.prefetch('spiffe://cluster.local/ns/warm/sa/s');
  const rt = one.getCertificate('spiffe://cluster.local/ns/rt/sa/s');
  for (let i = 0; order.length < 3 && i < 500; i++) {
    gates.shift()?.();
    await new Promise((r) => setTimeout(r, 2));
  }
  while (gates.length > 0 || order.length < 3) {
    gates.shift()?.();
    await new Promise((r) => setTimeout(r, 2));
  }
  await Promise.all([busy, rt]);
  t.same(order, [
    'spiffe://cluster.local/ns/busy/sa/s',
    'spiffe://cluster.local/ns/rt/sa/s',
    'spiffe://cluster.local/ns/warm/sa/s',
  ]);
});

t.test(
  'a certificate not yet valid (CA clock ahead) is refreshed after a backoff, not in a loop',
  async (t) => {
    const clock = installClock();
    t.teardown(() => clock.uninstall());
    const ahead = await newTestCa({ now: () => new Date(Date.now() + 10 * 60_000) });
    const { signer, calls } = caSigner(ahead);
    const m = new CertificateManager({ signer, random: () => 0.5 });
    t.teardown(() => m.close());
    const cert = await m.getCertificate(ID);
    t.ok(cert.notBefore.getTime() > Date.now(), 'notBefore is in the future here');
    t.equal(m.current(ID), cert, 'served (peers with synced clocks accept it)');
    await clock.tickAsync(499);
    t.equal(calls.length, 1, 'not immediately');
    const upd = nextEvent(m, 'updated');
    await clock.tickAsync(1);
    await upd;
    t.equal(calls.length, 2, 'retried after the initial backoff');
    await clock.tickAsync(999);
    t.equal(calls.length, 2, 'and then after a doubled backoff, not in a loop');
  },
);

t.test('timers are unref’d: a process holding a certificate exits by itself', async (t) => {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const script = `
    import { CertificateManager } from '${here}../../../../src/shared/identity/cert-manager.ts';
    import { newTestCa } from '${here}../../../helpers/pki.ts';
    const ca = await newTestCa();
    const m = new CertificateManager({ signer: async (r) => (await ca.sign(r)).certChainPem });
    await m.getCertificate('${ID}');
    process.stdout.write('got');
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  clearTimeout(timer);
  t.equal(out, 'got');
  t.equal(code, 0, 'exited on its own, with a refresh timer pending');
});

t.test('workloadCertificateFromChain validates the CA response', async (t) => {
  const ca = await newTestCa({ useIntermediate: true });
  const { privateKeyPem, csrPem } = await generateKeyAndCsr(ID);
  const { certChainPem } = await ca.sign({ csrPem, identity: ID });
  const wc = await workloadCertificateFromChain(privateKeyPem, certChainPem, { expectedIdentity: ID });
  t.equal(wc.id.uri, ID);
  t.equal(wc.certChainPem.length, 2, 'leaf + intermediate');
  t.equal(wc.certChainPem[1], ca.signingCertificatePem);
  t.same(wc.rootsPem, ca.trustBundle.rootsPem);
  t.ok(Object.isFrozen(wc));

  const code = (p: Promise<unknown>): Promise<string> => codeOf(p);
  t.equal(
    await code(workloadCertificateFromChain(privateKeyPem, certChainPem, { expectedIdentity: ID2 })),
    'ID_ERR_CA_RESPONSE',
    'other identity',
  );
  const other = await generateKeyAndCsr(ID);
  t.equal(
    await code(workloadCertificateFromChain(other.privateKeyPem, certChainPem)),
    'ID_ERR_KEY_MISMATCH',
    'not our key',
  );
  t.equal(await code(workloadCertificateFromChain('garbage', certChainPem)), 'ID_ERR_KEY_MISMATCH');
  t.equal(
    await code(workloadCertificateFromChain(privateKeyPem, certChainPem.slice(0, 1))),
    'ID_ERR_CA_RESPONSE',
    'no roots',
  );
  t.equal(
    await code(workloadCertificateFromChain(privateKeyPem, [certChainPem[0]!, certChainPem[2]!])),
    'ID_ERR_CA_RESPONSE',
    'missing intermediate',
  );
  t.equal(
    await code(
      workloadCertificateFromChain(privateKeyPem, [certChainPem[0]! + certChainPem[1]!, certChainPem[2]!]),
    ),
    'ID_ERR_CA_RESPONSE',
    'two certificates in the leaf element',
  );
  t.equal(
    await code(
      workloadCertificateFromChain(privateKeyPem, [certChainPem[0]!, certChainPem[1]!, certChainPem[0]!]),
    ),
    'ID_ERR_CA_RESPONSE',
    'a leaf as trust anchor',
  );
  const foreign = await newTestCa();
  t.equal(
    await code(
      workloadCertificateFromChain(privateKeyPem, [
        certChainPem[0]!,
        certChainPem[1]!,
        foreign.trustBundle.toPem(),
      ]),
    ),
    'ID_ERR_CA_RESPONSE',
    'roots that do not issue the leaf',
  );
  const leafNotAfter = wc.notAfter.getTime();
  t.equal(
    await code(
      workloadCertificateFromChain(privateKeyPem, certChainPem, { now: new Date(leafNotAfter + 1000) }),
    ),
    'ID_ERR_CA_RESPONSE',
    'already expired',
  );
  t.equal(
    await code(
      workloadCertificateFromChain(privateKeyPem, certChainPem, {
        now: new Date(wc.notBefore.getTime() - 3600_000),
      }),
    ),
    'ok',
    'not yet valid here (CA clock ahead) is tolerated',
  );
  const twoUris = await mintCert({ issuer: ca, uris: [ID, ID2] });
  t.equal(
    await code(
      workloadCertificateFromChain(twoUris.privateKeyPem, [
        twoUris.certPem,
        certChainPem[1]!,
        certChainPem[2]!,
      ]),
    ),
    'ID_ERR_CA_RESPONSE',
    'a leaf with two identities',
  );
  // Rotation: the roots element carries both roots.
  await ca.addNextRoot();
  const rotated = await ca.sign({ csrPem, identity: ID });
  const wc2 = await workloadCertificateFromChain(privateKeyPem, rotated.certChainPem, {
    expectedIdentity: ID,
  });
  t.equal(wc2.rootsPem.length, 2);
});

t.test(
  'snapshot(): each identity with its state and chain serials, as /config_dump shows them',
  async (t) => {
    const ca = await newTestCa({ useIntermediate: true });
    const { signer, failing } = caSigner(ca);
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const m = new CertificateManager({
      signer: async (req) => {
        if (req.identity === ID2) await held;
        return signer(req);
      },
      random: () => 0.5,
    });
    t.teardown(() => m.close());
    t.same(m.snapshot(), [], 'nothing before the first request');

    const cert = await m.getCertificate(ID);
    const second = m.getCertificate(ID2);
    const snap = m.snapshot();
    const mine = snap.find((s) => s.identity === ID);
    t.equal(mine?.state, 'Available');
    t.equal(mine?.certChain.length, 2, 'leaf and intermediate, no root');
    const leafPem = cert.certChainPem[0]!;
    const leafSerial = new (await import('node:crypto')).X509Certificate(leafPem).serialNumber.toLowerCase();
    t.equal(
      mine?.certChain[0]?.serialNumber.replace(/^00/, ''),
      leafSerial.replace(/^00/, ''),
      'the leaf serial',
    );
    t.equal(mine?.certChain[0]?.expirationTime, cert.notAfter.toISOString());
    t.equal(snap.find((s) => s.identity === ID2)?.state, 'Initializing', 'the first fetch is in flight');
    release();
    await second;

    failing.on = true;
    m.forget(ID);
    const failed = nextEvent(m, 'failed');
    void m.getCertificate(ID).catch(() => undefined);
    await failed;
    const down = m.snapshot().find((s) => s.identity === ID);
    t.equal(down?.state, 'Unavailable');
    t.match(down?.error, /CA unavailable \(test\)/);
    t.same(down?.certChain, []);
  },
);

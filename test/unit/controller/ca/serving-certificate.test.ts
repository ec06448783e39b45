// SPDX-License-Identifier: Apache-2.0
// The controller's serving certificate as a grpc-js certificate provider: an explicit lifetime,
// renewal at half-life and on root changes, retries with backoff that keep the current
// certificate, warnings that become errors as the expiry nears, and no renewal loop from long
// lifetimes or from a closed provider. The grpc-js server side is tested end to end in
// test/integration/controller/app/serving-certificate.test.ts.
import t, { type Test } from 'tap';
import { Writable } from 'node:stream';
import {
  MIN_RENEW_DELAY_MS,
  ServingCertificate,
  renewalDueAt,
  type ServingCertificateIssuer,
  type ServingCertificateOptions,
} from '../../../../src/controller/ca/serving-certificate.ts';
import type { CertificateAuthority } from '../../../../src/shared/identity/ca.ts';
import {
  GeneralNameTag,
  parseCertificate,
  signedBy,
  type ParsedCertificate,
} from '../../../../src/shared/identity/certificate.ts';
import { pemCertificatesToDer } from '../../../../src/shared/identity/pem.ts';
import { Logger } from '../../../../src/shared/telemetry/logger.ts';
import { newTestCa } from '../../../helpers/pki.ts';

const TD = 'cluster.local';
const IDENTITY = `spiffe://${TD}/ns/istio-system/sa/istiod`;

interface Line {
  level: string;
  message: string;
  reason?: string;
  failures?: number;
  retryInMs?: number;
  expiresInMs?: number;
  serial?: string;
}

function memoryLog(): { logger: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const logger = new Logger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Line);
        cb();
      },
    }),
  });
  return { logger, lines };
}

/** The CA, with issuance failures on demand and a count of issuances. */
class FlakyIssuer implements ServingCertificateIssuer {
  failNext = 0;
  failAlways = false;
  issued = 0;
  /** When set, issuances wait for it. */
  gate: Promise<void> | undefined;
  readonly #ca: CertificateAuthority;

  constructor(ca: CertificateAuthority) {
    this.#ca = ca;
  }

  async issueServingCertificate(
    req: Parameters<CertificateAuthority['issueServingCertificate']>[0],
  ): ReturnType<CertificateAuthority['issueServingCertificate']> {
    await this.gate;
    if (this.failAlways || this.failNext > 0) {
      this.failNext = Math.max(0, this.failNext - 1);
      throw new Error('CA key unavailable (injected)');
    }
    this.issued++;
    return this.#ca.issueServingCertificate(req);
  }

  onRootsChange(listener: () => void): () => void {
    return this.#ca.onRootsChange(listener);
  }
}

async function start(
  t: Test,
  ca: ServingCertificateIssuer,
  opts: Partial<ServingCertificateOptions> = {},
): Promise<{ sc: ServingCertificate; lines: Line[] }> {
  const { logger, lines } = memoryLog();
  const sc = await ServingCertificate.start({
    ca,
    identity: IDENTITY,
    dnsNames: ['istiod.istio-system.svc'],
    ipAddresses: ['127.0.0.1'],
    ttlSeconds: 3600,
    logger,
    ...opts,
  });
  t.teardown(() => sc.close());
  return { sc, lines };
}

function leafOf(chainPem: string): ParsedCertificate {
  return parseCertificate(pemCertificatesToDer(chainPem, 'served chain')[0]!);
}

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test(
  'renewal is due halfway through the lifetime counted from issuance, never within a second',
  async (t) => {
    const issuedAt = Date.parse('2030-01-01T00:00:00Z');
    t.equal(renewalDueAt({ issuedAt, notAfter: new Date(issuedAt + 86_400_000) }), issuedAt + 43_200_000);
    t.equal(
      renewalDueAt({ issuedAt, notAfter: new Date(issuedAt + 500) }),
      issuedAt + MIN_RENEW_DELAY_MS,
      'a certificate cut short by the CA does not cause a renewal loop',
    );
    t.equal(renewalDueAt({ issuedAt, notAfter: new Date(issuedAt - 5000) }), issuedAt + MIN_RENEW_DELAY_MS);
  },
);

t.test('the first certificate: explicit lifetime, names, no roots in the served chain', async (t) => {
  const ca = await newTestCa({ trustDomain: TD });
  const { sc, lines } = await start(t, ca, { ttlSeconds: 7200 });
  const leaf = leafOf(sc.current.certChainPem);
  t.equal(
    pemCertificatesToDer(sc.current.certChainPem, 'chain').length,
    1,
    'leaf only: the root is not sent',
  );
  t.ok(signedBy(leaf, leafOf(ca.trustBundle.toPem())), 'signed by the mesh root');
  const lifetime = leaf.notAfter.getTime() - sc.current.issuedAt;
  t.ok(lifetime > 7199_000 && lifetime <= 7200_000, `lifetime ${lifetime} ms is the one asked for`);
  const names = leaf.subjectAltNames.map((n) =>
    n.type === GeneralNameTag.iPAddress ? [...n.value].join('.') : Buffer.from(n.value).toString('latin1'),
  );
  t.same(names.sort(), ['127.0.0.1', IDENTITY, 'istiod.istio-system.svc'].sort());
  t.match(lines, [{ level: 'info', message: 'serving certificate issued', serial: sc.current.serial }]);

  const updates: string[] = [];
  sc.addIdentityCertificateListener((u) => updates.push(u?.certificate.toString() ?? 'null'));
  t.same(updates, [], 'not delivered synchronously: grpc-js registers its watcher after subscribing');
  await new Promise((r) => process.nextTick(r));
  t.same(updates, [sc.current.certChainPem], 'delivered on the next tick');
});

t.test('a root rotation renews at once; the new certificate chains to the new root', async (t) => {
  const ca = await newTestCa({ trustDomain: TD });
  const { sc, lines } = await start(t, ca);
  const first = sc.current;
  const updates: Buffer[] = [];
  sc.addIdentityCertificateListener((u) => u && updates.push(u.certificate));
  await new Promise((r) => process.nextTick(r));

  const oldRoot = leafOf(ca.signingCertificatePem);
  await ca.addNextRoot();
  await until('the renewal', () => updates.length === 2);
  t.not(sc.current.serial, first.serial);
  t.equal(updates[1]?.toString(), sc.current.certChainPem, 'grpc-js is handed the new chain');
  t.ok(signedBy(leafOf(sc.current.certChainPem), oldRoot), 'step 1: still signed by the current root');
  t.match(lines.at(-1), { level: 'info', message: 'serving certificate renewed', reason: 'roots changed' });

  ca.activateNextRoot();
  await until('the renewal after the activation', () => updates.length === 3);
  t.ok(signedBy(leafOf(sc.current.certChainPem), leafOf(ca.signingCertificatePem)), 'signed by the new root');
  t.notOk(signedBy(leafOf(sc.current.certChainPem), oldRoot));

  ca.dropOldRoot();
  await until('the renewal after the old root is dropped', () => updates.length === 4);
});

t.test('a failed renewal keeps the current certificate and retries with backoff', async (t) => {
  const ca = await newTestCa({ trustDomain: TD });
  const issuer = new FlakyIssuer(ca);
  const { sc, lines } = await start(t, issuer, { initialBackoffMs: 20 });
  const first = sc.current;
  issuer.failNext = 3;
  await ca.addNextRoot();
  await until('three failures', () => lines.filter((l) => l.level === 'warn').length === 3);
  t.equal(sc.current, first, 'the current certificate is kept meanwhile');
  await until('the renewal', () => sc.current !== first);
  const warnings = lines.filter((l) => l.level === 'warn');
  t.same(
    warnings.map((l) => [l.message, l.failures]),
    [1, 2, 3].map((n) => [
      'the serving certificate could not be renewed; keeping the current one and retrying',
      n,
    ]),
  );
  // 20 ms doubling, ±20 % jitter.
  t.same(
    warnings.map(
      (l) => l.retryInMs! >= 16 * 2 ** (l.failures! - 1) && l.retryInMs! <= 24 * 2 ** (l.failures! - 1),
    ),
    [true, true, true],
    `backoff ${warnings.map((l) => l.retryInMs).join(', ')} ms`,
  );
  t.same([warnings[0]?.reason, warnings[1]?.reason], ['roots changed', 'retry']);
  t.match(lines.at(-1), { level: 'info', message: 'serving certificate renewed', reason: 'retry' });
});

t.test(
  'failures are warnings, then errors when a quarter of the lifetime is left, and after the expiry',
  async (t) => {
    const ca = await newTestCa({ trustDomain: TD });
    const issuer = new FlakyIssuer(ca);
    // 3 s: renewal due after 1–1.5 s, with more than a quarter left.
    const { sc, lines } = await start(t, issuer, { ttlSeconds: 3, initialBackoffMs: 100, maxBackoffMs: 200 });
    issuer.failAlways = true;
    const lifetime = sc.current.notAfter.getTime() - sc.current.issuedAt;
    await until('an error after the expiry', () => lines.some((l) => /has expired/.test(l.message)));
    const failures = lines.filter((l) => l.failures !== undefined);
    t.match(failures[0], { level: 'warn', reason: 'half-life' }, 'the renewal was attempted at half-life');
    const soon = failures.find((l) => l.level === 'error');
    t.ok(soon?.expiresInMs !== undefined, 'an error-level line before the expiry');
    t.ok(soon!.expiresInMs! > 0 && soon!.expiresInMs! < lifetime / 4, `${soon!.expiresInMs} ms left`);
    t.match(soon!.message, /expires soon and could not be renewed: every ztunnel will fail to connect/);
    t.match(failures.at(-1), { level: 'error', message: /has expired and could not be renewed/ });
  },
);

t.test('a lifetime beyond setTimeout range does not renew at once', async (t) => {
  const ca = await newTestCa({ trustDomain: TD });
  const issuer = new FlakyIssuer(ca);
  const warnings: string[] = [];
  const onWarning = (w: Error): number => warnings.push(w.name);
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));
  await start(t, issuer, { ttlSeconds: 60 * 86_400 });
  await new Promise((r) => setTimeout(r, 200));
  t.equal(issuer.issued, 1, 'one certificate, no renewal loop');
  t.notOk(warnings.includes('TimeoutOverflowWarning'));
});

t.test('a renewal asked for while one runs runs after it; close stops everything', async (t) => {
  const ca = await newTestCa({ trustDomain: TD });
  const issuer = new FlakyIssuer(ca);
  const { sc } = await start(t, issuer);
  let open!: () => void;
  issuer.gate = new Promise((r) => (open = r));
  sc.renew('roots changed');
  sc.renew('roots changed');
  sc.renew('roots changed');
  open();
  await until('two renewals', () => issuer.issued === 3);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(issuer.issued, 3, 'the requests made during one renewal collapse into one');

  sc.close();
  await ca.addNextRoot();
  sc.renew('roots changed');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(issuer.issued, 3, 'closed: no renewal');
});

t.test('options are checked and a CA that cannot issue fails the start', async (t) => {
  const ca = await newTestCa({ trustDomain: TD });
  await t.rejects(start(t, ca, { ttlSeconds: 0 }), { code: 'CTL_ERR_SERVING_CERT' });
  await t.rejects(start(t, ca, { ttlSeconds: 1.5 }), { code: 'CTL_ERR_SERVING_CERT' });
  await t.rejects(start(t, ca, { initialBackoffMs: -1 }), { code: 'CTL_ERR_SERVING_CERT' });
  const issuer = new FlakyIssuer(ca);
  issuer.failAlways = true;
  await t.rejects(start(t, issuer), /CA key unavailable/);
});

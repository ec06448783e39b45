// SPDX-License-Identifier: Apache-2.0
// Certificate revocation at the HBONE layer (checklist B.31; spec §4 "CRL"): a peer whose
// certificate a CRL revokes is refused at the handshake in both directions, before any HTTP/2
// (let alone payload) is exchanged with it; and when the CRL changes, revalidate() tears down
// the live sessions of peers it now revokes, with their tunnels and upstream connections, while
// every other session carries on.
import { once } from 'node:events';
import t from 'tap';
import type { Test } from 'tap';
import type { WorkloadCertificate } from '../../../../src/shared/identity/cert-manager.ts';
import { parseCertificate } from '../../../../src/shared/identity/certificate.ts';
import { RevocationList } from '../../../../src/shared/identity/crl.ts';
import { pemCertificatesToDer } from '../../../../src/shared/identity/pem.ts';
import { HboneError } from '../../../../src/shared/hbone/errors.ts';
import { startEchoServer, startHbonePair, type HbonePair } from '../../../helpers/hbone.ts';
import { newTestCa } from '../../../helpers/pki.ts';
import { waitFor } from '../../../helpers/wait.ts';

const ca = await newTestCa({ useIntermediate: true });
const echo = await startEchoServer();
t.teardown(() => echo.close());
const authority = `127.0.0.1:${echo.port}`;

function serialOf(cert: WorkloadCertificate): string {
  const der = pemCertificatesToDer(cert.certChainPem[0] ?? '')[0];
  if (der === undefined) throw new Error('no leaf');
  return parseCertificate(der).serial;
}

async function crlRevoking(...serials: string[]): Promise<RevocationList> {
  return RevocationList.fromPem((await ca.issueCrl({ revoke: serials })).pem);
}

interface Rig {
  pair: HbonePair;
  /** What each side's revocation source returns; assign to change it. */
  lists: { server: RevocationList | undefined; client: RevocationList | undefined };
  rejected: Error[];
  sessions: () => number;
}

async function rig(t: Test): Promise<Rig> {
  const lists: Rig['lists'] = { server: undefined, client: undefined };
  const pair = await startHbonePair({
    ca,
    serverRevocation: () => lists.server,
    clientRevocation: () => lists.client,
  });
  t.teardown(() => pair.close());
  const rejected: Error[] = [];
  let sessions = 0;
  pair.server.on('peerRejected', (err) => rejected.push(err));
  pair.server.on('session', () => sessions++);
  return { pair, lists, rejected, sessions: () => sessions };
}

/** Opens a tunnel to the echo server and proves it carries bytes. */
async function openTunnel(pair: HbonePair): Promise<Awaited<ReturnType<HbonePair['connect']>>> {
  const tunnel = await pair.connect(authority);
  tunnel.stream.write('ping\n');
  const [d] = (await once(tunnel.stream, 'data')) as [Buffer];
  if (d.toString() !== 'ping\n') throw new Error(`unexpected echo ${d.toString()}`);
  return tunnel;
}

t.test('a revoked client is refused by the server before any HTTP/2', async (t) => {
  const r = await rig(t);
  r.lists.server = await crlRevoking(serialOf(r.pair.clientCert));
  await t.rejects(r.pair.connect(authority), 'the tunnel is not opened');
  await waitFor(() => r.rejected.length === 1, 'the server reporting the refusal');
  t.equal((r.rejected[0] as HboneError).code, 'HBONE_ERR_PEER_REVOKED');
  t.match(r.rejected[0]?.message, new RegExp(`serial ${serialOf(r.pair.clientCert)}.*revoked by the CRL`));
  t.equal(r.sessions(), 0, 'no HTTP/2 session was started with it');
  t.equal(r.pair.upstream.calls, 0, 'no CONNECT reached the upstream decision');

  // A CRL that names someone else changes nothing.
  r.lists.server = await crlRevoking('0abc');
  await openTunnel(r.pair);
  t.equal(r.sessions(), 1);
});

t.test('a revoked server is refused by the client before any HTTP/2', async (t) => {
  const r = await rig(t);
  r.lists.client = await crlRevoking(serialOf(r.pair.serverCert));
  const err = await r.pair.connect(authority).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof HboneError, 'an HboneError');
  t.equal((err as HboneError).code, 'HBONE_ERR_PEER_REVOKED');
  t.match((err as Error).message, /presented an unacceptable certificate: .*is revoked by the CRL/);
  t.equal(r.sessions(), 0, 'the server never saw an HTTP/2 session');
  t.equal(r.pair.client.stats().sessionsActive, 0, 'nothing pooled');
});

t.test('revoking the intermediate refuses every certificate it issued', async (t) => {
  const r = await rig(t);
  const intermediate = pemCertificatesToDer(r.pair.serverCert.certChainPem[1] ?? '')[0];
  if (intermediate === undefined) throw new Error('expected an intermediate in the chain');
  r.lists.client = await crlRevoking(parseCertificate(intermediate).serial);
  const err = (await r.pair.connect(authority).catch((e: unknown) => e)) as HboneError;
  t.equal(err.code, 'HBONE_ERR_PEER_REVOKED');
  t.match(err.message, /intermediate certificate #1 .* is revoked/);
});

for (const side of ['server', 'client'] as const) {
  t.test(
    `a new CRL: the ${side} tears down the sessions of the peer it revokes, and only those`,
    async (t) => {
      const r = await rig(t);
      const tunnel = await openTunnel(r.pair);
      await waitFor(() => echo.sockets.size === 1, 'the upstream connection');
      const peerCert = side === 'server' ? r.pair.clientCert : r.pair.serverCert;
      const endpoint = side === 'server' ? r.pair.server : r.pair.client;

      // Unrelated revocations: nothing is closed, the tunnel still carries bytes.
      r.lists[side] = await crlRevoking('0abc');
      t.same(endpoint.revalidate(), [], 'nothing revoked, nothing closed');
      tunnel.stream.write('still\n');
      const [d] = (await once(tunnel.stream, 'data')) as [Buffer];
      t.equal(d.toString(), 'still\n', 'the tunnel carries on');

      r.lists[side] = await crlRevoking('0abc', serialOf(peerCert));
      const closedAt = Date.now();
      const closed = endpoint.revalidate();
      t.equal(closed.length, 1, 'one session closed');
      t.equal(closed[0]?.streams, 1, 'with its one tunnel');
      t.equal(closed[0]?.peer.id.uri, side === 'server' ? r.pair.clientId : r.pair.serverId);
      t.equal(closed[0]?.error.code, 'HBONE_ERR_PEER_REVOKED');
      await waitFor(() => tunnel.stream.closed, "the client's tunnel ending", 2000);
      t.not(tunnel.stream.rstCode, 0, 'reset, not a clean end');
      await waitFor(() => echo.sockets.size === 0, 'the upstream connection closing', 2000);
      t.ok(Date.now() - closedAt < 2000, `torn down in ${Date.now() - closedAt} ms`);
      await waitFor(
        () => r.pair.client.stats().sessionsActive === 0 && r.pair.server.stats().sessionsActive === 0,
        'both ends dropping the session',
        2000,
      );
      t.same(endpoint.revalidate(), [], 'nothing left to close');

      // The peer does not get back in: a new handshake is refused too.
      const err = (await r.pair.connect(authority).catch((e: unknown) => e)) as Error;
      t.ok(err instanceof Error, 'a new tunnel is refused');
      if (side === 'client') t.equal((err as HboneError).code, 'HBONE_ERR_PEER_REVOKED');
      else await waitFor(() => r.rejected.length === 1, 'the server refusing the new handshake');
    },
  );
}

t.test('without revocation lists revalidate() closes nothing', async (t) => {
  const pair = await startHbonePair({ ca });
  t.teardown(() => pair.close());
  await openTunnel(pair);
  t.same(pair.server.revalidate(), []);
  t.same(pair.client.revalidate(), []);
  t.equal(pair.client.stats().sessionsActive, 1);
});

// SPDX-License-Identifier: Apache-2.0
// Root rotation with real HBONE handshakes (checklist I.102): a fleet of peers, each with its own
// HBONE server and certificate, refreshes its certificate one peer at a time, as ztunnels do at
// half-life, while the CA goes through the three rotation steps. After every single refresh,
// every peer opens a fresh session (mutual TLS + SVID checks) to every other peer and moves bytes
// through it. No handshake may fail at any point.
//
// The control shows what the steps prevent: signing with the new root before every peer has
// learned it (the old one-call rotation) makes peers that have not refreshed yet refuse the
// refreshed ones.
import { once } from 'node:events';
import t from 'tap';
import { CertificateAuthority } from '../../../src/shared/identity/ca.ts';
import type { WorkloadCertificate } from '../../../src/shared/identity/cert-manager.ts';
import { HboneClient } from '../../../src/shared/hbone/client.ts';
import { HboneServer } from '../../../src/shared/hbone/server.ts';
import { loopbackOnConnect, startEchoServer, type TestTcpServer } from '../../helpers/hbone.ts';
import { issueWorkloadCert } from '../../helpers/pki.ts';

const TD = 'cluster.local';
const NAMES = ['a', 'b', 'c'];

interface Peer {
  readonly id: string;
  cert: WorkloadCertificate;
  readonly server: HboneServer;
  port: number;
}

interface Fleet {
  ca: CertificateAuthority;
  peers: Peer[];
  echo: TestTcpServer;
  /** Every peer dials every other once; returns the failures as "label: from → to: why". */
  dialAll(label: string): Promise<string[]>;
  /** Refreshes each peer's certificate in turn; after each refresh, every peer dials every other. */
  refreshAll(label: string): Promise<string[]>;
  close(): Promise<void>;
}

async function startFleet(): Promise<Fleet> {
  const ca = await CertificateAuthority.create({ trustDomain: TD, useIntermediate: true });
  const echo = await startEchoServer();
  const peers: Peer[] = [];
  for (const n of NAMES) {
    const id = `spiffe://${TD}/ns/${n}/sa/${n}`;
    const peer: Peer = {
      id,
      cert: await issueWorkloadCert(ca, id),
      server: new HboneServer({
        certificate: () => peer.cert,
        trustDomain: TD,
        onConnect: loopbackOnConnect({ calls: 0, dials: 0, connected: 0 }),
      }),
      port: 0,
    };
    peer.port = (await peer.server.listen({ host: '127.0.0.1', port: 0 })).port;
    peers.push(peer);
  }

  /** A fresh client (so a fresh TLS handshake) from `from` to `to`, and one echoed message. */
  const dial = async (from: Peer, to: Peer): Promise<string | undefined> => {
    const client = new HboneClient({ certificate: () => from.cert });
    try {
      const tunnel = await client.connect({
        peer: { host: '127.0.0.1', port: to.port },
        authority: `127.0.0.1:${echo.port}`,
        expectedIdentities: [to.id],
      });
      const chunks: Buffer[] = [];
      tunnel.stream.on('data', (d: Buffer) => chunks.push(d));
      tunnel.stream.end('hello');
      await once(tunnel.stream, 'end');
      const got = Buffer.concat(chunks).toString();
      return got === 'hello' ? undefined : `echo was ${JSON.stringify(got)}`;
    } catch (err) {
      return (err as Error).message;
    } finally {
      await client.close();
    }
  };

  const short = (p: Peer): string => p.id.slice(p.id.lastIndexOf('/') + 1);
  const dialAll = async (label: string): Promise<string[]> => {
    const failures: string[] = [];
    for (const from of peers) {
      for (const to of peers) {
        if (from === to) continue;
        const failure = await dial(from, to);
        if (failure !== undefined) failures.push(`${label}: ${short(from)} → ${short(to)}: ${failure}`);
      }
    }
    return failures;
  };
  return {
    ca,
    peers,
    echo,
    dialAll,
    async refreshAll(label) {
      const failures: string[] = [];
      for (const refreshed of peers) {
        refreshed.cert = await issueWorkloadCert(ca, refreshed.id);
        failures.push(...(await dialAll(`${label}, after ${short(refreshed)} refreshed`)));
      }
      return failures;
    },
    async close() {
      await Promise.all(peers.map((p) => p.server.close({ deadlineMs: 0 })));
      await echo.close();
    },
  };
}

t.test('I.102 three-step root rotation: no handshake fails at any point', async (t) => {
  const fleet = await startFleet();
  t.teardown(() => fleet.close());
  const oldRoot = fleet.ca.trustBundle.rootsPem[0]!;

  t.same(await fleet.refreshAll('before the rotation'), [], 'the fleet works');
  await fleet.ca.addNextRoot();
  t.same(await fleet.refreshAll('step 1 (next root added)'), [], 'step 1: every handshake succeeds');
  t.ok(
    fleet.peers.every((p) => p.cert.rootsPem.length === 2),
    'every peer now trusts both roots',
  );
  fleet.ca.activateNextRoot();
  t.same(await fleet.refreshAll('step 2 (next root signs)'), [], 'step 2: every handshake succeeds');
  fleet.ca.dropOldRoot();
  t.same(await fleet.refreshAll('step 3 (old root dropped)'), [], 'step 3: every handshake succeeds');
  t.ok(
    fleet.peers.every((p) => p.cert.rootsPem.length === 1 && p.cert.rootsPem[0] !== oldRoot),
    'every peer ends with the new root alone',
  );
});

t.test('control: signing with the new root before peers learned it breaks handshakes', async (t) => {
  const fleet = await startFleet();
  t.teardown(() => fleet.close());
  await fleet.ca.addNextRoot();
  fleet.ca.activateNextRoot(); // at once, without a refresh round in between
  const a = fleet.peers[0]!;
  a.cert = await issueWorkloadCert(fleet.ca, a.id);
  const failures = await fleet.dialAll('one-call rotation, a refreshed');
  // b and c still trust only the old root: they refuse a's new certificate as client and as
  // server; between themselves nothing changed.
  t.same(
    failures.map((f) => /: (\S+ → \S+): /.exec(f)?.[1]),
    ['a → b', 'a → c', 'b → a', 'c → a'],
    failures.join('\n'),
  );
});

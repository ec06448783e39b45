// SPDX-License-Identifier: Apache-2.0
// ztunnel handoff (spec 2.6 step 7, checklist I.95/I.97): an old and a new ztunnel process serve
// the same pod through SO_REUSEPORT listeners; the new one connects to the agent, becomes the
// newest connection and gets the snapshot with the same netns fd; then the old one shuts down.
// Throughout, clients in another pod open HBONE connections (mTLS to the pod's 15008) in a
// bounded loop, and every attempt is classified: served (TLS handshake completed by a ztunnel),
// refused (ECONNREFUSED: no listener at that instant), or reset (accepted by the kernel, then
// dropped).
//
// Two handoffs are measured. A → B with net.ipv4.tcp_migrate_req forced back to 0: plain
// SO_REUSEPORT, where closing the old listener resets the connections still waiting in its accept
// backlog; the resets are reported, not asserted (they depend on load). B → C as ztunnel runs it
// (tcp_migrate_req = 1, set on Add): the kernel moves the old listener's queue to the new one, and
// the test asserts zero refused and zero reset. Refused must be zero in both, since the new
// ztunnel listens before the old one closes.
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import t from 'tap';

import type { SnapshotEntry } from '../../../cni-plugin/src/agent/agent.ts';
import { ZdsServer, type ZtunnelPeer } from '../../../cni-plugin/src/agent/zds-server.ts';
import { CertificateAuthority } from '../../../src/shared/identity/ca.ts';
import { closeFd, openNetns, socketForConnect, writeNetSysctl } from '../../../src/shared/native/index.ts';
import { issueWorkloadCert } from '../../helpers/pki.ts';
import { createTestbed, type Pod, type Testbed } from '../../helpers/testbed.ts';
import { memoryLogger } from '../../integration/zds/fixtures.ts';
import { ZtunnelProc, proxyPids } from './ztunnel-proc.ts';

type Outcome = 'served' | 'refused' | 'reset' | 'other';

/** Client workers; enough to keep the old ztunnel's accept queue non-empty on a 2-core machine. */
const WORKERS = 16;
/** Hard bound on attempts for the whole test. */
const MAX_ATTEMPTS = 200_000;
/** How long each phase keeps the load on after the old ztunnel was told to stop. */
const PHASE_MS = 1500;

if (process.getuid?.() !== 0) {
  t.fail('the ZDS netns suite needs root (network namespaces)');
} else {
  let tb: Testbed;
  let server: Pod;
  let client: Pod;
  const procs: ZtunnelProc[] = [];
  const fds: number[] = [];
  let agent: ZdsServer | undefined;
  /** Client load on/off; the teardown switches it off too, should the test body give up. */
  let running = false;

  t.before(async () => {
    tb = await createTestbed({ nodes: 1 });
    server = await tb.addPod({ node: 0, name: 'server', namespace: 'demo' });
    client = await tb.addPod({ node: 0, name: 'client', namespace: 'demo' });
  });
  t.teardown(async () => {
    running = false;
    await Promise.all(procs.map((p) => p.kill()));
    await agent?.close();
    for (const fd of fds) closeFd(fd);
    await tb.destroy();
  });

  t.test('handoff between ztunnel processes: never refused; with tcp_migrate_req, never reset', async (t) => {
    const dir = join(tb.stateDir, 'zds');
    mkdirSync(dir, { recursive: true });
    const zdsPath = join(dir, 'ztunnel.sock');
    const caDir = join(dir, 'ca');
    const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local', dir: caDir });
    const cert = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/demo/sa/client');

    const serverNs = openNetns(server.netnsPath);
    const clientNs = openNetns(client.netnsPath);
    fds.push(serverNs, clientNs);
    const pod: SnapshotEntry = {
      uid: 'uid-server',
      info: { name: 'server', namespace: 'demo', serviceAccount: 'default' },
      netnsFd: serverNs,
    };
    agent = ZdsServer.listen({ path: zdsPath, snapshot: () => [pod], logger: memoryLogger('warn').logger });
    const zds = agent;
    const start = async (): Promise<ZtunnelProc> => {
      const ready = new Promise<ZtunnelPeer>((resolve) => zds.once('ready', resolve));
      const zt = new ZtunnelProc(zdsPath, caDir);
      procs.push(zt);
      const peer = await ready;
      if (peer.pid !== zt.pid) throw new Error(`expected pid ${zt.pid} to connect, got ${peer.pid}`);
      return zt;
    };

    const others = new Set<string>();
    /** One HBONE connection attempt from the client pod: TCP connect + mTLS handshake. */
    const attempt = (): Promise<Outcome> =>
      new Promise((resolve) => {
        let socket: net.Socket;
        try {
          socket = new net.Socket({ fd: socketForConnect({ netnsFd: clientNs, family: 4 }) });
        } catch (err) {
          others.add(`socket: ${String(err)}`);
          resolve('other');
          return;
        }
        // connect() first, in the same tick: TLS then waits for the connection before its hello.
        socket.connect(15008, server.ip);
        const session = tls.connect({
          socket,
          key: cert.privateKeyPem,
          cert: cert.certChainPem.join(''),
          ALPNProtocols: ['h2'],
          // Only the connection's fate is measured here; identity checks have their own suites.
          rejectUnauthorized: false,
        });
        const timer = setTimeout(() => finish('other', 'no handshake within 10 s'), 10_000);
        const finish = (o: Outcome, why?: string): void => {
          clearTimeout(timer);
          session.destroy();
          if (why !== undefined) others.add(why);
          resolve(o);
        };
        session.once('secureConnect', () => finish('served'));
        session.once('error', (err: NodeJS.ErrnoException) => {
          if (err.code === 'ECONNREFUSED') finish('refused');
          else if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish('reset');
          else finish('other', `${err.code ?? ''} ${err.message}`);
        });
      });

    const a = await start();
    t.same(await proxyPids(server), [a.pid], 'ztunnel A serves the pod');

    // Attempts are counted per phase: the phase in force when they started.
    const counts: Record<string, Record<Outcome, number>> = {};
    let phase = 'A only';
    let attempts = 0;
    running = true;
    const workers = Array.from({ length: WORKERS }, async () => {
      while (running && attempts < MAX_ATTEMPTS) {
        attempts++;
        const p = phase;
        const o = await attempt();
        counts[p] ??= { served: 0, refused: 0, reset: 0, other: 0 };
        counts[p][o]++;
      }
    });
    const settle = (): Promise<void> => new Promise((r) => setTimeout(r, PHASE_MS));
    await settle();

    // Handoff 1: plain SO_REUSEPORT.
    phase = 'B joins';
    const b = await start();
    t.same(await proxyPids(server), [a.pid, b.pid].sort(), 'A and B both listen (SO_REUSEPORT)');
    writeNetSysctl(serverNs, 'ipv4/tcp_migrate_req', '0');
    phase = 'A→B plain';
    t.equal(await a.stop(3000), 0, 'A drained and exited (exit 2: its drain hung)');
    await settle();
    t.same(await proxyPids(server), [b.pid], 'only B listens');

    // Handoff 2: as ztunnel runs it; C's Add turns migration back on.
    phase = 'C joins';
    const c = await start();
    const sysctl = await server.exec('sysctl', ['-n', 'net.ipv4.tcp_migrate_req']);
    t.equal(sysctl.stdout.trim(), '1', "the new ztunnel's Add set tcp_migrate_req");
    phase = 'B→C migrate';
    t.equal(await b.stop(3000), 0, 'B drained and exited (exit 2: its drain hung)');
    await settle();
    t.same(await proxyPids(server), [c.pid], 'only C listens');

    running = false;
    await Promise.all(workers);
    for (const [p, n] of Object.entries(counts)) {
      t.comment(`${p}: served ${n.served}, refused ${n.refused}, reset ${n.reset}, other ${n.other}`);
    }
    for (const o of others) t.comment(`other failure: ${o}`);
    const plain = counts['A→B plain'];
    const migrate = counts['B→C migrate'];
    t.match(
      counts['A only'],
      { refused: 0, reset: 0, other: 0 },
      'before any handoff, every attempt is served',
    );
    t.ok((plain?.served ?? 0) > 20, `load during handoff 1 (${plain?.served ?? 0} served)`);
    t.ok((migrate?.served ?? 0) > 20, `load during handoff 2 (${migrate?.served ?? 0} served)`);
    for (const [p, n] of Object.entries(counts)) t.equal(n.refused, 0, `${p}: no connection refused`);
    t.equal(migrate?.reset, 0, 'handoff 2 (tcp_migrate_req): no connection reset');
    t.equal(migrate?.other, 0, 'handoff 2: no other failure');
    t.ok(attempts < MAX_ATTEMPTS, `bounded: ${attempts} attempts`);
    await c.stop(1000);
  });
}

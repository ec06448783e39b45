// SPDX-License-Identifier: Apache-2.0
// Checklist G.88 (CVE-2021-43826 class): a client that disconnects at every stage of setting up
// an HBONE tunnel, over and over, leaves nothing behind. Stages: TCP connected with nothing sent;
// in the middle of the TLS handshake; TLS done without the HTTP/2 preface; preface and SETTINGS
// without a CONNECT; a CONNECT whose upstream dial is still pending; a CONNECT answered 200 with no
// data. Each stage is aborted by FIN and by RST, alternately. Afterwards the server holds no
// session, stream, tunnel or upstream socket, the process has the file descriptors and socket
// handles it had before, and a legitimate client still gets its bytes through. The checklist asks
// for 10^5 iterations; this runs 2 × 40 per stage to stay within a unit test's time.
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { duplexPair } from 'node:stream';
import tls from 'node:tls';
import t from 'tap';
import { connectBlock, headersFrame } from '../../../../helpers/h2-raw.ts';
import type { RawH2Client } from '../../../../helpers/h2-raw.ts';
import { eventually, startRig, type Rig } from './rig.ts';

const ROUNDS = 40;

type Abort = 'fin' | 'rst';

function close(socket: net.Socket, how: Abort): void {
  if (how === 'rst') socket.resetAndDestroy();
  else socket.destroy();
}

function closeClient(c: RawH2Client, how: Abort): void {
  if (how === 'rst') c.resetTcp();
  else c.destroy();
}

/** Resolves once `socket` has closed (both ends' handles released on our side). */
function closed(socket: net.Socket): Promise<void> {
  return socket.closed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve()));
}

const stages: [string, (rig: Rig, how: Abort) => Promise<void>][] = [
  [
    'TCP connected, nothing sent',
    async (rig, how) => {
      const s = net.connect({ host: '127.0.0.1', port: rig.port });
      s.on('error', () => undefined);
      await new Promise<void>((resolve) => s.once('connect', () => resolve()));
      close(s, how);
      await closed(s);
    },
  ],
  [
    'in the middle of the TLS handshake (server flight received, no client Finished)',
    async (rig, how) => {
      // The TLS client talks through an in-memory pair, relayed to the server by hand, so that the
      // server's flight can be withheld from it: the server is left waiting for the client's.
      const tcp = net.connect({ host: '127.0.0.1', port: rig.port });
      tcp.on('error', () => undefined);
      const [inner, outer] = duplexPair();
      const sock = tls.connect({
        socket: inner,
        key: rig.clientCert.privateKeyPem,
        cert: rig.clientCert.certChainPem.join(''),
        ca: rig.rootsPem.join(''),
        ALPNProtocols: ['h2'],
        checkServerIdentity: () => undefined,
      });
      sock.on('error', () => undefined);
      outer.on('data', (d: Buffer) => tcp.write(d));
      await new Promise<void>((resolve) => tcp.once('data', () => resolve()));
      close(tcp, how);
      sock.destroy();
      outer.destroy();
      await closed(tcp);
    },
  ],
  [
    'TLS done, no HTTP/2 preface',
    async (rig, how) => {
      const c = await rig.connect({ preface: false });
      closeClient(c, how);
      await closed(c.tcp);
    },
  ],
  [
    'preface and SETTINGS, no CONNECT',
    async (rig, how) => {
      const c = await rig.connect();
      closeClient(c, how);
      await closed(c.tcp);
    },
  ],
  [
    'CONNECT sent, upstream dial pending',
    async (rig, how) => {
      const c = await rig.connect();
      const calls = rig.stats.onConnect;
      c.send(headersFrame(1, connectBlock(`127.0.0.1:${rig.echoPort}`)));
      // The rig's onConnect waits dialDelayMs before dialling: the abort lands in that window.
      await eventually(() => rig.stats.onConnect > calls, 1000, 1);
      closeClient(c, how);
      await closed(c.tcp);
    },
  ],
  [
    'CONNECT answered 200, no data',
    async (rig, how) => {
      const c = await rig.connect();
      c.send(headersFrame(1, connectBlock(`127.0.0.1:${rig.echoPort}`)));
      const o = await c.outcome(1, 3000);
      if (o.kind !== 'status' || o.status !== 200) throw new Error(`no tunnel: ${JSON.stringify(o)}`);
      closeClient(c, how);
      await closed(c.tcp);
    },
  ],
];

const openFds = (): number => readdirSync('/proc/self/fd').length;
const socketHandles = (): number =>
  process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TLSWrap').length;

t.test('G.88 aborts at every CONNECT stage leave no session, tunnel, socket or fd behind', async (t) => {
  const rig = await startRig(t, { dialDelayMs: 20 });
  // A first tunnel warms up whatever the server creates once (secure context, timers).
  const warm = await rig.legit();
  t.ok(warm.ok, `warm-up tunnel: ${warm.detail}`);
  await eventually(() => rig.stats.upstreamOpen === 0, 1000);
  const fdsBefore = openFds();
  const handlesBefore = socketHandles();

  for (const [name, run] of stages) {
    for (let i = 0; i < 2 * ROUNDS; i++) await run(rig, i % 2 === 0 ? 'fin' : 'rst');
    const idle = await eventually(() => {
      const s = rig.server.stats();
      return s.sessionsActive === 0 && s.streamsActive === 0 && s.tunnelsActive === 0;
    }, 3000);
    t.ok(idle, `${name}: the server forgot every session (${JSON.stringify(rig.server.stats())})`);
  }

  const upstreamsClosed = await eventually(
    () => rig.stats.upstreamOpen === 0 && rig.stats.inFlight === 0,
    3000,
  );
  t.ok(
    upstreamsClosed,
    `no upstream socket or pending dial left (open ${rig.stats.upstreamOpen}, in flight ${rig.stats.inFlight})`,
  );
  // The warm-up and every 200-stage round dialled; every dial-stage round was cancelled instead.
  t.equal(rig.stats.dials, 1 + 2 * ROUNDS, 'only the warm-up and the 200 stage dialled the upstream');
  t.equal(rig.stats.cancelledBeforeDial, 2 * ROUNDS, 'every abort during the dial delay cancelled the dial');
  const released = await eventually(() => openFds() <= fdsBefore && socketHandles() <= handlesBefore, 3000);
  t.ok(
    released,
    `file descriptors ${openFds()} (before ${fdsBefore}), socket handles ${socketHandles()} (before ${handlesBefore})`,
  );

  const after = await rig.legit();
  t.ok(after.ok, `a legitimate tunnel still works afterwards: ${after.detail}`);
});

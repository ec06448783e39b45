// SPDX-License-Identifier: Apache-2.0
// Slowloris on the HBONE port (security-and-reliability.md §4 checklist F.75; HboneSettings
// handshakeTimeoutMs). Hundreds of TCP connections that send one byte of a ClientHello (or nothing)
// and stall must all be closed by the server within about twice the handshake deadline, while a
// legitimate client's handshake and tunnel in parallel succeed. Also measured: a connection that
// completes TLS but never sends the HTTP/2 preface (the next stall point after the handshake).
import t from 'tap';
import net from 'node:net';
import { probeTls } from '../../../../helpers/h2-raw.ts';
import { startRig } from './rig.ts';

const DEADLINE_MS = 500;
const STALLERS = 200;

interface Staller {
  socket: net.Socket;
  closedAfterMs: number | undefined;
}

t.test(
  'F.75 slowloris: stalled handshakes are closed by the deadline; legitimate clients unaffected',
  async (t) => {
    const rig = await startRig(t, { settings: { handshakeTimeoutMs: DEADLINE_MS } });
    const stallers: Staller[] = [];
    t.teardown(() => {
      for (const s of stallers) s.socket.destroy();
    });
    const started = performance.now();
    await Promise.all(
      Array.from(
        { length: STALLERS },
        async (_, i) =>
          new Promise<void>((resolve) => {
            const socket = net.connect({ host: '127.0.0.1', port: rig.port });
            const s: Staller = { socket, closedAfterMs: undefined };
            stallers.push(s);
            socket.on('error', () => undefined);
            socket.on('close', () => {
              s.closedAfterMs = performance.now() - started;
            });
            socket.once('connect', () => {
              // Half send the first byte of a TLS handshake record; the other half send nothing.
              if (i % 2 === 0) socket.write(Buffer.from([0x16]));
              resolve();
            });
          }),
      ),
    );
    const connectedMs = performance.now() - started;
    // A legitimate client in parallel, while all stallers hold their sockets.
    const legit = await rig.legit();
    t.ok(legit.ok, `legitimate tunnel during the attack: ${legit.detail} in ${legit.ms.toFixed(0)} ms`);
    const limit = 2 * DEADLINE_MS + connectedMs + 250;
    await new Promise((r) => setTimeout(r, limit + 250));
    const closedTimes = stallers.flatMap((s) => (s.closedAfterMs === undefined ? [] : [s.closedAfterMs]));
    const open = STALLERS - closedTimes.length;
    const maxClosed = Math.max(0, ...closedTimes);
    const minClosed = Math.min(...closedTimes);
    t.comment(
      `${STALLERS} stalled connections (connected in ${connectedMs.toFixed(0)} ms), deadline ${DEADLINE_MS} ms: ` +
        `${closedTimes.length} closed by the server between ${minClosed.toFixed(0)} and ${maxClosed.toFixed(0)} ms, ${open} still open; ` +
        `legitimate tunnel took ${legit.ms.toFixed(0)} ms`,
    );
    t.equal(open, 0, 'every stalled connection was closed by the server');
    t.ok(
      maxClosed <= limit,
      `all closed within ~2× the deadline (${maxClosed.toFixed(0)} ≤ ${limit.toFixed(0)} ms)`,
    );
    t.ok(minClosed >= DEADLINE_MS * 0.8, `none closed before the deadline (${minClosed.toFixed(0)} ms)`);
    t.equal(rig.stats.onConnect, 1, 'onConnect only for the legitimate tunnel');
  },
);

t.test('F.75 a TLS session that never sends the HTTP/2 preface is not held forever', async (t) => {
  const rig = await startRig(t, { settings: { handshakeTimeoutMs: DEADLINE_MS } });
  // h2 negotiated, then silence: observe for 4× the handshake deadline.
  const r = await probeTls({ ...rig.cred, observeMs: 4 * DEADLINE_MS });
  t.comment(
    `TLS done, no preface: ${r.stillOpen ? 'still open' : `closed after ${r.closedAfterMs?.toFixed(0) ?? '?'} ms`} ` +
      `(handshakeTimeoutMs ${DEADLINE_MS})`,
  );
  t.ok(r.secureConnect && r.alpn === 'h2', 'the handshake itself succeeded');
  t.notOk(r.stillOpen, `closed within ${4 * DEADLINE_MS} ms`);
});

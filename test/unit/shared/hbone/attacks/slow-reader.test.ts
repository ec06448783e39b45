// SPDX-License-Identifier: Apache-2.0
// A peer that never reads (security-and-reliability.md §4 checklist A.16 "a peer that never reads
// (zero window)", F.81 "a slow reader that never drains → backpressure keeps memory within window +
// buffer"). The client opens tunnels to an upstream that writes as fast as it can, answers PINGs
// so the session stays up, and never sends a WINDOW_UPDATE. HTTP/2 flow control stops the server
// at the client's windows; the relay then stops reading the upstream once RELAY_BUFFER_BYTES wait
// in the stream; the upstream's socket fills and it stops too. Nothing grows after that.
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectBlock, headersFrame, windowUpdateFrame } from '../../../../helpers/h2-raw.ts';
import type { InFrame } from '../../../../helpers/h2-raw.ts';
import { RELAY_BUFFER_BYTES } from '../../../../../src/shared/hbone/relay.ts';
import { eventually, fullGc, startRig } from './rig.ts';

/** RFC 9113 §6.9.2: both windows start at 65,535 unless SETTINGS or WINDOW_UPDATE change them. */
const DEFAULT_WINDOW = 65_535;
const STREAMS = 20;

const dataBytes = (frames: readonly InFrame[], streamId?: number): number =>
  frames.reduce(
    (n, f) => (f.type === 'DATA' && (streamId === undefined || f.streamId === streamId) ? n + f.length : n),
    0,
  );

const arrayBuffersMiB = (): number => {
  fullGc();
  return process.memoryUsage().arrayBuffers / 1048576;
};

t.test('A.16/F.81 a peer that never opens its window holds the server to bounded work', async (t) => {
  const rig = await startRig(t, { upstream: 'firehose' });
  const baseline = arrayBuffersMiB();
  const c = await rig.connect();
  const ids = Array.from({ length: STREAMS }, (_, i) => 2 * i + 1);
  for (const id of ids) c.send(headersFrame(id, connectBlock(`127.0.0.1:${rig.echoPort}`)));
  for (const id of ids)
    t.match(await c.outcome(id, 3000), { kind: 'status', status: 200 }, `stream ${id} up`);

  // Let everything that can move, move; then nothing may.
  t.ok(
    await eventually(() => dataBytes(c.frames) >= DEFAULT_WINDOW, 3000),
    'the server fills the connection window',
  );
  await sleep(1000);
  const received = dataBytes(c.frames);
  const accepted = rig.stats.upstreamBytesAccepted();
  const held = arrayBuffersMiB() - baseline;
  await sleep(1000);
  t.equal(dataBytes(c.frames), received, 'no DATA beyond the window while it stays closed');
  t.equal(received, DEFAULT_WINDOW, 'exactly the connection window was sent');
  t.equal(rig.stats.upstreamBytesAccepted(), accepted, 'the upstream is stopped: its writes no longer drain');
  // Per stream the server holds what the relay queues before pausing (RELAY_BUFFER_BYTES) plus a
  // read or two, ~7.5 MiB for 20 streams; the kernel holds the rest of what the upstream wrote. A
  // relay without backpressure would buffer the firehose (GB/s on loopback) instead.
  const expectedMiB = (STREAMS * (RELAY_BUFFER_BYTES + 2 * 65_536)) / 1048576;
  t.ok(
    held < 16,
    `buffers held by the process: ${held.toFixed(1)} MiB (expected ~${expectedMiB.toFixed(1)})`,
  );
  t.comment(
    `upstream wrote ${(accepted / 1048576).toFixed(1)} MiB into its sockets for ${STREAMS} streams; ` +
      `client received ${received} B; process holds ${held.toFixed(1)} MiB`,
  );
  t.equal(rig.stats.upstreamOpen, STREAMS, 'the tunnels stay open: a slow reader is not an error');

  // Opening the connection window lets every stream use its own window, and no more.
  c.send(windowUpdateFrame(0, 16 << 20));
  t.ok(
    await eventually(() => dataBytes(c.frames) >= STREAMS * DEFAULT_WINDOW, 3000),
    'with the connection window open, every stream gets its own window',
  );
  await sleep(500);
  t.equal(dataBytes(c.frames), STREAMS * DEFAULT_WINDOW, 'and stops there: the stream windows hold');
  for (const id of ids) t.equal(dataBytes(c.frames, id), DEFAULT_WINDOW, `stream ${id}: one window`);

  // Opening one stream's window moves that stream only: flow control, not a dead tunnel.
  c.send(windowUpdateFrame(1, 1 << 20));
  t.ok(
    await eventually(() => dataBytes(c.frames, 1) === DEFAULT_WINDOW + (1 << 20), 3000),
    'stream 1 gets exactly the 1 MiB it opened',
  );
  await sleep(300);
  t.equal(dataBytes(c.frames, 3), DEFAULT_WINDOW, 'stream 3, still closed, does not move');

  // Going away frees everything: sessions, tunnels, upstream sockets.
  c.destroy();
  c.frames.length = 0; // the raw client keeps every frame it received
  t.ok(await eventually(() => rig.stats.upstreamOpen === 0, 3000), 'upstream sockets closed');
  t.ok(await eventually(() => rig.stats.tunnelsClosed === STREAMS, 3000), 'every tunnel reported closed');
  t.ok(
    await eventually(() => arrayBuffersMiB() - baseline < 2, 3000, 100),
    `buffers released (${(arrayBuffersMiB() - baseline).toFixed(1)} MiB above baseline)`,
  );
});

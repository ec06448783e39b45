// SPDX-License-Identifier: Apache-2.0
// SETTINGS and PING abuse against the HBONE server (security-and-reliability.md §4 checklist A.17;
// §3.5 maxSettings / maxOutstandingPings). Floods of SETTINGS (RFC 9113 §6.5) and PING (§6.7) frames,
// each of which obliges the server to queue an ACK, must be bounded: the session is closed (GOAWAY
// ENHANCE_YOUR_CALM or a plain close) or answered with bounded memory; a SETTINGS frame with more
// than 32 entries is refused; invalid SETTINGS values are connection errors; the process stays up.
import t from 'tap';
import { ErrorCode, Setting, errorCodeName, pingFrame, settingsFrame } from '../../../../helpers/h2-raw.ts';
import type { InFrame, RawH2Client } from '../../../../helpers/h2-raw.ts';
import { settledRssMiB, startRig } from './rig.ts';

const FLOOD_FRAMES = 200_000;

interface FloodResult {
  frames: number;
  closed: boolean;
  acks: number;
  goaway: string;
  ms: number;
  peakRssDeltaMiB: number;
}

/** Write `frame` up to FLOOD_FRAMES times (in batches of 100, paced) until closed; never read slower. */
async function flood(c: RawH2Client, frame: Buffer, ackType: 'SETTINGS' | 'PING'): Promise<FloodResult> {
  const base = process.memoryUsage().rss;
  let peak = base;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 5);
  const started = performance.now();
  const batch = Buffer.concat(Array.from({ length: 100 }, () => frame));
  let frames = 0;
  while (frames < FLOOD_FRAMES) {
    if (!(await c.sendPaced(batch))) break;
    frames += 100;
  }
  const closed = await c.waitForClose(2000);
  clearInterval(sampler);
  const ga = c.goaway();
  return {
    frames,
    closed,
    acks: c.frames.filter((f) => f.type === ackType && f.ack).length,
    goaway: ga ? errorCodeName(ga.errorCode) : 'none',
    ms: (c.closedAt ?? performance.now()) - started,
    peakRssDeltaMiB: (peak - base) / 1048576,
  };
}

t.test('A.17 SETTINGS flood and PING flood are bounded', async (t) => {
  const rig = await startRig(t);
  const before = await settledRssMiB();
  for (const [name, frame, ackType] of [
    ['SETTINGS flood', settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 65535]]), 'SETTINGS'],
    ['empty SETTINGS flood', settingsFrame(), 'SETTINGS'],
    ['PING flood', pingFrame(Buffer.from('attacker')), 'PING'],
  ] as const) {
    const c = await rig.connect();
    const r = await flood(c, frame, ackType);
    t.comment(
      `${name}: ${r.frames} frames written, ${r.acks} ACKs received, closed=${r.closed} after ${r.ms.toFixed(0)} ms, ` +
        `GOAWAY ${r.goaway}, peak RSS +${r.peakRssDeltaMiB.toFixed(1)} MiB`,
    );
    t.ok(
      r.closed || (r.frames === FLOOD_FRAMES && r.acks >= FLOOD_FRAMES / 2),
      `${name}: the session was closed, or the flood was answered (${r.frames} frames, ${r.acks} ACKs)`,
    );
    t.ok(r.peakRssDeltaMiB < 64, `${name}: peak RSS growth ${r.peakRssDeltaMiB.toFixed(1)} MiB < 64 MiB`);
    c.destroy();
  }
  const after = await settledRssMiB();
  t.ok(after - before < 32, `settled RSS growth ${(after - before).toFixed(1)} MiB < 32 MiB`);
  t.ok((await rig.legit()).ok, 'a legitimate tunnel works afterwards');
});

t.test('A.17 SETTINGS with more than 32 entries, and invalid SETTINGS values', async (t) => {
  const rig = await startRig(t);
  const cases: [string, Buffer, number[]][] = [
    [
      '33 entries',
      settingsFrame(Array.from({ length: 33 }, (_, i) => [Setting.INITIAL_WINDOW_SIZE, 65535 + i] as const)),
      [ErrorCode.ENHANCE_YOUR_CALM],
    ],
    [
      '1000 entries',
      settingsFrame(Array.from({ length: 1000 }, (_, i) => [Setting.HEADER_TABLE_SIZE, i] as const)),
      [ErrorCode.ENHANCE_YOUR_CALM],
    ],
    ['ENABLE_PUSH = 2', settingsFrame([[Setting.ENABLE_PUSH, 2]]), [ErrorCode.PROTOCOL_ERROR]],
    [
      'INITIAL_WINDOW_SIZE = 2^31',
      settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 0x80000000]]),
      [ErrorCode.FLOW_CONTROL_ERROR],
    ],
    ['MAX_FRAME_SIZE = 16383', settingsFrame([[Setting.MAX_FRAME_SIZE, 16383]]), [ErrorCode.PROTOCOL_ERROR]],
    [
      'MAX_FRAME_SIZE = 2^24',
      settingsFrame([[Setting.MAX_FRAME_SIZE, 0x1000000]]),
      [ErrorCode.PROTOCOL_ERROR],
    ],
    ['SETTINGS on stream 1', Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 1]), [ErrorCode.PROTOCOL_ERROR]],
    [
      'SETTINGS length 5',
      Buffer.from([0, 0, 5, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 1]),
      [ErrorCode.FRAME_SIZE_ERROR],
    ],
    [
      'SETTINGS ACK with payload',
      settingsFrame([[Setting.ENABLE_PUSH, 0]], true),
      [ErrorCode.FRAME_SIZE_ERROR],
    ],
  ];
  for (const [name, frame, codes] of cases) {
    const c = await rig.connect();
    c.send(frame);
    const ga = await c.waitFor((f): f is Extract<InFrame, { type: 'GOAWAY' }> => f.type === 'GOAWAY', 3000);
    const closed = await c.waitForClose(3000);
    const got = ga ? errorCodeName(ga.errorCode) : 'none';
    t.ok(closed, `${name}: connection closed (GOAWAY ${got})`);
    t.ok(
      ga === undefined || codes.includes(ga.errorCode),
      `${name}: GOAWAY ${got} (want ${codes.map(errorCodeName).join('/')})`,
    );
    c.destroy();
  }
  t.equal(rig.stats.onConnect, 0, 'onConnect never called');
  t.ok((await rig.legit()).ok, 'a legitimate tunnel works afterwards');
});

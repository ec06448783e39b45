// SPDX-License-Identifier: Apache-2.0
// CONTINUATION flood against the HBONE server (security-and-reliability.md §4 checklist A.10; §1.4
// CVE-2024-27919 / CVE-2024-30255 / CVE-2023-45288 / nghttp2 CVE-2024-28182; §1.5 Node CVE-2024-27983).
// HEADERS without END_HEADERS followed by endless CONTINUATION frames (RFC 9113 §6.10) must get the
// connection closed after a bounded number of frames and bytes; HEADERS + CONTINUATION followed by
// an abrupt TCP close, repeated under load, must not crash the process or disturb a legitimate client.
import t from 'tap';
import { continuationFrame, errorCodeName, headersFrame, hpackEncode } from '../../../../helpers/h2-raw.ts';
import type { RawH2Client } from '../../../../helpers/h2-raw.ts';
import { startRig } from './rig.ts';

const TARGET = '10.0.0.5:8080';
const MAX_BYTES = 4 * 1024 * 1024;

interface FloodResult {
  frames: number;
  bytes: number;
  closed: boolean;
  ms: number;
  goaway: string;
}

/** HEADERS (no END_HEADERS), then CONTINUATION frames with `payload` until closed or MAX_BYTES sent. */
async function flood(c: RawH2Client, payload: () => Buffer): Promise<FloodResult> {
  const started = performance.now();
  c.send(
    headersFrame(
      1,
      hpackEncode([
        [':method', 'CONNECT'],
        [':authority', TARGET],
      ]),
      { endHeaders: false },
    ),
  );
  let frames = 0;
  while (c.bytesSent < MAX_BYTES) {
    if (!(await c.sendPaced(continuationFrame(1, payload())))) break;
    frames++;
  }
  const closed = await c.waitForClose(3000);
  const ga = c.goaway();
  return {
    frames,
    bytes: c.bytesSent,
    closed,
    ms: (c.closedAt ?? performance.now()) - started,
    goaway: ga ? errorCodeName(ga.errorCode) : 'none',
  };
}

t.test('A.10 CONTINUATION flood: the connection is closed after a bounded number of frames', async (t) => {
  const rig = await startRig(t);
  let n = 0;
  const variants: [string, () => Buffer][] = [
    // Each frame carries a complete ~1 KB literal field: the decoded list grows with every frame.
    ['1 KB header fields', () => hpackEncode([[`x-c${n++}`, 'v'.repeat(1000)]])],
    // Empty CONTINUATION frames: no header bytes at all, only frame overhead (CVE-2024-28182 style).
    ['empty frames', () => Buffer.alloc(0)],
    // One field split across frames that never completes (a 16 KB string prefix, then raw bytes).
    ['one never-ending field', () => Buffer.alloc(1024, 0x61)],
  ];
  for (const [name, payload] of variants) {
    const c = await rig.connect();
    const r = await flood(c, payload);
    t.comment(
      `${name}: ${r.frames} CONTINUATION frames / ${(r.bytes / 1024).toFixed(0)} KiB written before close, ` +
        `closed after ${r.ms.toFixed(0)} ms, GOAWAY ${r.goaway}`,
    );
    t.ok(r.closed, `${name}: connection closed by the server`);
    t.ok(r.bytes < MAX_BYTES, `${name}: closed before ${MAX_BYTES / 1048576} MiB were sent (${r.bytes} B)`);
    c.destroy();
  }
  t.equal(rig.stats.onConnect, 0, 'onConnect never called');
  t.ok((await rig.legit()).ok, 'a legitimate tunnel still works');
});

t.test('A.10 / CVE-2024-27983: HEADERS + CONTINUATION then an abrupt TCP close, under load', async (t) => {
  const rig = await startRig(t);
  const ROUNDS = 10;
  const PER_ROUND = 20;
  let legitOk = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const legit = rig.legit();
    await Promise.all(
      Array.from({ length: PER_ROUND }, async (_, i) => {
        const c = await rig.connect();
        c.send(
          headersFrame(
            1,
            hpackEncode([
              [':method', 'CONNECT'],
              [':authority', TARGET],
            ]),
            { endHeaders: false },
          ),
          continuationFrame(1, hpackEncode([['x-a', 'b'.repeat(500)]])),
          continuationFrame(1, hpackEncode([['x-b', 'c'.repeat(500)]])),
        );
        // Alternate an RST (SO_LINGER 0) with a plain destroy, at slightly different moments.
        if (i % 3 === 0) await new Promise((r) => setImmediate(r));
        if (i % 2 === 0) c.resetTcp();
        else c.destroy();
      }),
    );
    if ((await legit).ok) legitOk++;
  }
  t.equal(legitOk, ROUNDS, `legitimate tunnels during the attack: ${legitOk}/${ROUNDS}`);
  t.equal(rig.stats.onConnect, ROUNDS, 'onConnect called only for the legitimate tunnels');
  t.ok((await rig.legit()).ok, 'the server is still serving afterwards');
});

// SPDX-License-Identifier: Apache-2.0
// Oversized header lists on HBONE CONNECT (security-and-reliability.md §4 checklist A.9; §1.4
// CVE-2026-47774 HPACK/cookie amplification; ambient-protocols.md §1.4 server max header list 64 KiB).
// A decoded list over 64 KiB, whether sent as plain literals or as a small block that references one
// dynamic-table entry (RFC 7541 §2.3, §6.1) thousands of times, must be refused before onConnect, and
// repeating the amplification must not grow the server's memory.
import t from 'tap';
import { errorCodeName, headerBlockFrames, hpackEncode } from '../../../../helpers/h2-raw.ts';
import type { HpackField, RawH2Client, StreamOutcome } from '../../../../helpers/h2-raw.ts';
import { settledRssMiB, startRig } from './rig.ts';

const TARGET = '10.0.0.5:8080';

function show(o: StreamOutcome): string {
  if (o.kind === 'status') return `status ${o.status}`;
  if (o.kind === 'rst' || o.kind === 'goaway')
    return `${o.kind === 'rst' ? 'RST_STREAM' : 'GOAWAY'} ${errorCodeName(o.errorCode)}`;
  return o.kind;
}

/** Refused = no success status; a stream or connection error, or an error status. */
function refused(o: StreamOutcome): boolean {
  if (o.kind === 'status') return o.status >= 400;
  return o.kind !== 'timeout';
}

/** An amplifying block: one `name: value` inserted into the dynamic table, then `refs` references to it. */
function amplified(name: string, valueLen: number, refs: number): Buffer {
  const fields: HpackField[] = [
    [':method', 'CONNECT'],
    [':authority', TARGET],
    { kind: 'literal', name, value: 'a'.repeat(valueLen), indexing: 'incremental' },
  ];
  for (let i = 0; i < refs; i++) fields.push({ kind: 'indexed', index: 62 });
  return hpackEncode(fields);
}

async function sendBlock(c: RawH2Client, streamId: number, block: Buffer): Promise<StreamOutcome> {
  c.send(...headerBlockFrames(streamId, block));
  return c.outcome(streamId, 3000);
}

t.test('A.9 a decoded header list over 64 KiB is refused before onConnect', async (t) => {
  const rig = await startRig(t);
  const cases: [string, Buffer][] = [
    [
      'one 70 KiB header',
      hpackEncode([
        [':method', 'CONNECT'],
        [':authority', TARGET],
        ['x-big', 'b'.repeat(70 * 1024)],
      ]),
    ],
    [
      '700 headers of 100 bytes (≈ 90 KiB decoded)',
      hpackEncode([
        [':method', 'CONNECT'],
        [':authority', TARGET],
        ...Array.from({ length: 700 }, (_, i): [string, string] => [`x-h${i}`, 'v'.repeat(100)]),
      ]),
    ],
    [
      '70 KiB cookie',
      hpackEncode([
        [':method', 'CONNECT'],
        [':authority', TARGET],
        ['cookie', 'c'.repeat(70 * 1024)],
      ]),
    ],
    [
      'cookie crumbs (1000 × 80 bytes)',
      hpackEncode([
        [':method', 'CONNECT'],
        [':authority', TARGET],
        ...Array.from({ length: 1000 }, (_, i): [string, string] => ['cookie', `k${i}=${'v'.repeat(75)}`]),
      ]),
    ],
  ];
  for (const [name, block] of cases) {
    const c = await rig.connect();
    const o = await sendBlock(c, 1, block);
    t.ok(refused(o), `${name} (${block.length} B encoded) → ${show(o)}`);
    c.destroy();
  }
  t.equal(rig.stats.onConnect, 0, 'onConnect never called');
  t.equal(rig.stats.dials, 0, 'no upstream dial');
  // Control: a list comfortably under the limit (≈ 8 KiB) is still served.
  const c = await rig.connect();
  const ok = await sendBlock(
    c,
    1,
    hpackEncode([
      [':method', 'CONNECT'],
      [':authority', `127.0.0.1:${rig.echoPort}`],
      ['x-pad', 'p'.repeat(8 * 1024)],
    ]),
  );
  t.ok(ok.kind === 'status' && ok.status === 200, `8 KiB header list accepted → ${show(ok)}`);
  c.destroy();
});

t.test('A.9 HPACK amplification (small block, huge decoded list) is refused; RSS stays flat', async (t) => {
  const rig = await startRig(t);
  // 4000-byte value (entry size 4037 ≤ 4096 table) referenced 2000 times: ≈ 8 MB decoded from ≈ 6 KB.
  const block = amplified('x-amp', 4000, 2000);
  const cookieBlock = amplified('cookie', 4000, 2000);
  t.ok(block.length < 8 * 1024, `encoded block is small (${block.length} B)`);

  const first = await rig.connect();
  const o = await sendBlock(first, 1, block);
  t.ok(refused(o), `amplified x-amp → ${show(o)}`);
  if (!first.closed) {
    // The entry is now in the server's dynamic table: reference it again with a 2 KB block.
    const refsOnly = hpackEncode([
      [':method', 'CONNECT'],
      [':authority', TARGET],
      ...Array.from({ length: 2000 }, (): HpackField => ({ kind: 'indexed', index: 62 })),
    ]);
    const again = await sendBlock(first, 3, refsOnly);
    t.ok(refused(again), `references only (${refsOnly.length} B) → ${show(again)}`);
  }
  first.destroy();
  const c2 = await rig.connect();
  const oc = await sendBlock(c2, 1, cookieBlock);
  t.ok(refused(oc), `amplified cookie → ${show(oc)}`);
  c2.destroy();

  const before = await settledRssMiB();
  let peak = before;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss / 1048576);
  }, 5);
  const outcomes = new Map<string, number>();
  const ATTEMPTS = 50;
  for (let i = 0; i < ATTEMPTS; i += 5) {
    await Promise.all(
      Array.from({ length: 5 }, async (_, j) => {
        const c = await rig.connect();
        const r = await sendBlock(c, 1, (i + j) % 2 === 0 ? block : cookieBlock);
        outcomes.set(show(r), (outcomes.get(show(r)) ?? 0) + 1);
        c.destroy();
      }),
    );
  }
  clearInterval(sampler);
  const after = await settledRssMiB();
  t.comment(
    `amplification × ${ATTEMPTS}: outcomes ${JSON.stringify(Object.fromEntries(outcomes))}; ` +
      `RSS ${before.toFixed(1)} → ${after.toFixed(1)} MiB (peak ${peak.toFixed(1)})`,
  );
  t.notOk(outcomes.has('status 200'), 'no attempt was accepted');
  t.ok(after - before < 32, `settled RSS delta ${(after - before).toFixed(1)} MiB < 32 MiB`);
  t.ok(
    peak - before < 64,
    `peak RSS delta ${(peak - before).toFixed(1)} MiB < 64 MiB (≈ 8 MB decoded per attempt if unbounded)`,
  );
  t.equal(rig.stats.onConnect, 0, 'onConnect never called');
  t.ok((await rig.legit()).ok, 'a legitimate tunnel still works');
});

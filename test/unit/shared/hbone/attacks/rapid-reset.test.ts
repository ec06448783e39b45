// SPDX-License-Identifier: Apache-2.0
// Rapid Reset against the HBONE server (security-and-reliability.md §4 checklist A.11; §1.4
// CVE-2023-44487 / ISTIO-SECURITY-2023-004). One connection sends HEADERS(CONNECT) + RST_STREAM(CANCEL)
// pairs (RFC 9113 §6.2, §6.4) as fast as the socket takes them, up to 5,000 pairs. The server must
// end the session (GOAWAY and close) after a bounded number of pairs, the onConnect work started for
// cancelled streams must be bounded and see its req.signal aborted, and upstream dials for cancelled
// streams must stay near zero and be closed.
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ErrorCode,
  errorCodeName,
  headersFrame,
  connectBlock,
  rstStreamFrame,
} from '../../../../helpers/h2-raw.ts';
import { eventually, startRig } from './rig.ts';

const PAIRS = 5000;
const DIAL_DELAY_MS = 20;

for (const [variant, pauseEvery] of [
  ['as fast as the socket takes them', 0],
  // A short pause every 10 pairs lets the server's GOAWAY reach us before its close (otherwise the
  // close with our unread frames turns into a TCP RST that can overtake the GOAWAY).
  ['paced (1 ms every 10 pairs)', 10],
] as const) {
  t.test(
    `A.11 rapid reset ${variant}: GOAWAY after a bounded number of resets; cancelled work is aborted`,
    async (t) => {
      const rig = await startRig(t, { dialDelayMs: DIAL_DELAY_MS });
      const limit = rig.server.settings.maxPrematureResets;
      const c = await rig.connect();
      const started = performance.now();
      const block = connectBlock(`127.0.0.1:${rig.echoPort}`);
      let pairs = 0;
      while (pairs < PAIRS) {
        const id = 1 + 2 * pairs;
        if (!(await c.sendPaced(headersFrame(id, block), rstStreamFrame(id)))) break;
        pairs++;
        if (c.goaway()) break;
        if (pauseEvery > 0 && pairs % pauseEvery === 0) await sleep(1);
      }
      const closed = await c.waitForClose(5000);
      const ms = (c.closedAt ?? performance.now()) - started;
      const ga = c.goaway();
      // Let onConnect calls that were in flight finish (each waits DIAL_DELAY_MS, then checks its signal).
      await eventually(() => rig.stats.inFlight === 0, 3000);
      await eventually(() => rig.stats.upstreamOpen === 0, 3000);
      const s = rig.stats;
      const defence = s.sessionErrors.find((m) => /rapid reset/.test(m));
      t.comment(
        `rapid reset (${variant}): ${pairs} HEADERS+RST pairs written in ${ms.toFixed(0)} ms; ` +
          `GOAWAY ${ga ? `${errorCodeName(ga.errorCode)} lastStreamId=${ga.lastStreamId}` : 'not seen'}; closed=${closed}; ` +
          `onConnect=${s.onConnect} signalsAborted=${s.signalsAborted} cancelledBeforeDial=${s.cancelledBeforeDial} ` +
          `dials=${s.dials} maxInFlight=${s.maxInFlight} upstreamOpen=${s.upstreamOpen}; server: ${defence ?? 'no rapid-reset error'}`,
      );
      t.ok(closed, 'the server closed the session');
      t.ok(pairs < PAIRS, `the session ended before all ${PAIRS} pairs were written (after ${pairs})`);
      t.ok(defence !== undefined, 'the rapid-reset defence fired (server sessionError)');
      if (pauseEvery > 0) {
        t.equal(ga?.errorCode, ErrorCode.ENHANCE_YOUR_CALM, 'GOAWAY ENHANCE_YOUR_CALM');
        t.ok(
          ga !== undefined && ga.lastStreamId <= 2 * (limit + 10) + 1,
          `GOAWAY after ≈ maxPrematureResets (${limit}) streams (lastStreamId ${ga?.lastStreamId ?? '-'})`,
        );
      } else if (ga) {
        t.equal(ga.errorCode, ErrorCode.ENHANCE_YOUR_CALM, 'GOAWAY ENHANCE_YOUR_CALM');
      }
      t.ok(
        s.onConnect <= limit,
        `onConnect invocations for cancelled streams bounded (${s.onConnect} ≤ ${limit})`,
      );
      t.equal(s.signalsAborted, s.onConnect, 'every onConnect for a cancelled stream saw req.signal aborted');
      t.ok(s.dials <= 10, `upstream dials for cancelled streams ≈ 0 (${s.dials})`);
      t.equal(s.upstreamOpen, 0, 'no upstream socket left open');
      t.ok((await rig.legit()).ok, 'a legitimate tunnel works after the attack');
    },
  );
}

t.test('A.11 rapid reset spread over fresh connections keeps the process healthy', async (t) => {
  const rig = await startRig(t, { dialDelayMs: DIAL_DELAY_MS });
  const CONNS = 10;
  const PER_CONN = 200;
  let written = 0;
  let closedByServer = 0;
  await Promise.all(
    Array.from({ length: CONNS }, async () => {
      const c = await rig.connect();
      const block = connectBlock(`127.0.0.1:${rig.echoPort}`);
      for (let i = 0; i < PER_CONN; i++) {
        const id = 1 + 2 * i;
        if (!(await c.sendPaced(headersFrame(id, block), rstStreamFrame(id)))) break;
        written++;
      }
      if (await c.waitForClose(2000)) closedByServer++;
      c.destroy();
    }),
  );
  await eventually(() => rig.stats.inFlight === 0, 3000);
  await eventually(() => rig.stats.upstreamOpen === 0, 3000);
  const s = rig.stats;
  t.comment(
    `${CONNS} connections × ${PER_CONN} pairs: written=${written} closedByServer=${closedByServer} onConnect=${s.onConnect} ` +
      `signalsAborted=${s.signalsAborted} dials=${s.dials} maxInFlight=${s.maxInFlight}`,
  );
  t.equal(
    closedByServer,
    CONNS,
    `every attacking connection was closed by the server (${closedByServer}/${CONNS})`,
  );
  t.equal(s.signalsAborted, s.onConnect, 'every cancelled onConnect saw its signal aborted');
  t.ok(s.dials <= 10, `upstream dials ≈ 0 (${s.dials})`);
  t.equal(s.upstreamOpen, 0, 'no upstream socket left open');
  const legit = await rig.legit();
  t.ok(legit.ok, `a legitimate tunnel works (${legit.ms.toFixed(0)} ms)`);
});

t.test(
  'A.11 a CONNECT cancelled while onConnect runs: req.signal aborts and no upstream is dialled',
  async (t) => {
    const rig = await startRig(t, { dialDelayMs: 200 });
    const c = await rig.connect();
    const block = connectBlock(`127.0.0.1:${rig.echoPort}`);
    const STREAMS = 50;
    let started = 0;
    for (let i = 0; i < STREAMS; i++) {
      const id = 1 + 2 * i;
      c.send(headersFrame(id, block));
      if (await eventually(() => rig.stats.onConnect > i, 1000)) started++;
      c.send(rstStreamFrame(id));
    }
    await eventually(() => rig.stats.inFlight === 0, 3000);
    const s = rig.stats;
    t.comment(
      `${STREAMS} streams cancelled after onConnect started: onConnect=${s.onConnect} signalsAborted=${s.signalsAborted} ` +
        `cancelledBeforeDial=${s.cancelledBeforeDial} dials=${s.dials} upstreamOpen=${s.upstreamOpen}`,
    );
    t.equal(started, STREAMS, 'onConnect started for every stream');
    t.equal(s.signalsAborted, STREAMS, 'every req.signal was aborted by the RST_STREAM');
    t.equal(s.cancelledBeforeDial, STREAMS, 'every handler saw the abort before dialling');
    t.equal(s.dials, 0, 'no upstream dial');
    t.notOk(c.closed, 'below maxPrematureResets the connection stays usable');
    c.destroy();
  },
);

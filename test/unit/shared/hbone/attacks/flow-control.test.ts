// SPDX-License-Identifier: Apache-2.0
// Flow-control window overflow against the HBONE server (security-and-reliability.md §4 checklist A.16;
// §1.5 Node CVE-2026-21714: a WINDOW_UPDATE overflowing the stream-0 window got a GOAWAY but leaked
// the Http2Session). RFC 9113 §6.9.1: a window above 2^31−1 is a FLOW_CONTROL_ERROR — a connection
// error on stream 0 (GOAWAY), a stream error on a stream (RST_STREAM). Repeated over fresh
// connections, socket handles and RSS must return to the baseline.
import t from 'tap';
import {
  ErrorCode,
  connectBlock,
  errorCodeName,
  headersFrame,
  windowUpdateFrame,
} from '../../../../helpers/h2-raw.ts';
import type { InFrame } from '../../../../helpers/h2-raw.ts';
import { eventually, settledHeapMiB, settledRssMiB, socketHandles, startRig } from './rig.ts';

const MAX_WINDOW = 0x7fffffff;

t.test('A.16 WINDOW_UPDATE overflow on stream 0 → GOAWAY FLOW_CONTROL_ERROR and close', async (t) => {
  const rig = await startRig(t);
  const c = await rig.connect();
  c.send(windowUpdateFrame(0, MAX_WINDOW));
  const ga = await c.waitFor((f): f is Extract<InFrame, { type: 'GOAWAY' }> => f.type === 'GOAWAY', 3000);
  t.equal(
    ga?.errorCode,
    ErrorCode.FLOW_CONTROL_ERROR,
    `GOAWAY ${ga ? errorCodeName(ga.errorCode) : 'missing'}`,
  );
  t.ok(await c.waitForClose(3000), 'connection closed');
  // Two increments that overflow only together.
  const c2 = await rig.connect();
  c2.send(windowUpdateFrame(0, 0x40000000), windowUpdateFrame(0, 0x40000000));
  const ga2 = await c2.waitFor((f): f is Extract<InFrame, { type: 'GOAWAY' }> => f.type === 'GOAWAY', 3000);
  t.equal(ga2?.errorCode, ErrorCode.FLOW_CONTROL_ERROR, 'cumulative overflow → FLOW_CONTROL_ERROR');
  t.ok(await c2.waitForClose(3000), 'connection closed');
});

t.test(
  'A.16 WINDOW_UPDATE overflow on an open tunnel stream → FLOW_CONTROL_ERROR, tunnel torn down',
  async (t) => {
    const rig = await startRig(t);
    const c = await rig.connect();
    c.send(headersFrame(1, connectBlock(`127.0.0.1:${rig.echoPort}`)));
    const o = await c.outcome(1, 3000);
    t.match(o, { kind: 'status', status: 200 }, 'tunnel established');
    c.send(windowUpdateFrame(1, MAX_WINDOW));
    const err = await c.waitFor(
      (f): f is Extract<InFrame, { type: 'RST_STREAM' | 'GOAWAY' }> =>
        (f.type === 'RST_STREAM' && f.streamId === 1) || f.type === 'GOAWAY',
      3000,
    );
    t.equal(
      err?.errorCode,
      ErrorCode.FLOW_CONTROL_ERROR,
      `${err?.type ?? 'nothing'} ${err ? errorCodeName(err.errorCode) : ''}`,
    );
    t.ok(await eventually(() => rig.stats.upstreamOpen === 0, 3000), 'the upstream socket was closed');
    c.destroy();
  },
);

t.test(
  'A.16 repeated overflows over fresh connections: handles, heap and RSS return to baseline',
  async (t) => {
    const rig = await startRig(t);
    const ROUNDS = 1000;
    const PARALLEL = 10;
    let flowErrors = 0;
    let closedOnly = 0;
    let notClosed = 0;
    let tunnels = 0;
    /** One attack connection: overflow on stream 0, or (odd rounds) first on an open tunnel stream. */
    const attack = async (onStream: boolean): Promise<void> => {
      const c = await rig.connect();
      let sawFlowError = false;
      if (onStream) {
        c.send(headersFrame(1, connectBlock(`127.0.0.1:${rig.echoPort}`)));
        const o = await c.outcome(1, 3000);
        if (o.kind === 'status' && o.status === 200) tunnels++;
        c.send(windowUpdateFrame(1, MAX_WINDOW));
        const e = await c.waitFor(
          (f): f is Extract<InFrame, { type: 'RST_STREAM' | 'GOAWAY' }> =>
            (f.type === 'RST_STREAM' && f.streamId === 1) || f.type === 'GOAWAY',
          3000,
        );
        sawFlowError = e?.errorCode === ErrorCode.FLOW_CONTROL_ERROR;
      }
      c.send(windowUpdateFrame(0, MAX_WINDOW));
      const ga = await c.waitFor((f): f is Extract<InFrame, { type: 'GOAWAY' }> => f.type === 'GOAWAY', 3000);
      sawFlowError ||= ga?.errorCode === ErrorCode.FLOW_CONTROL_ERROR;
      const closed = await c.waitForClose(3000);
      if (sawFlowError) flowErrors++;
      else if (closed) closedOnly++; // GOAWAY lost to the TCP RST of a close with unread input
      if (!closed) notClosed++;
      c.destroy();
    };
    // Warm up TLS, http2 and allocator pools, then take the baseline.
    for (let i = 0; i < 200; i += PARALLEL) {
      await Promise.all(Array.from({ length: PARALLEL }, async (_, j) => attack(j % 2 === 1)));
    }
    await eventually(() => rig.stats.upstreamOpen === 0 && socketHandles() === 0, 2000);
    const baseHandles = socketHandles();
    const baseHeap = await settledHeapMiB();
    const baseRss = await settledRssMiB();
    flowErrors = closedOnly = notClosed = tunnels = 0;
    const started = performance.now();
    let midRss = baseRss;
    for (let i = 0; i < ROUNDS; i += PARALLEL) {
      if (i === ROUNDS / 2) midRss = await settledRssMiB();
      await Promise.all(Array.from({ length: PARALLEL }, async (_, j) => attack(j % 2 === 1)));
    }
    const elapsed = performance.now() - started;
    const upstreamsClosed = await eventually(() => rig.stats.upstreamOpen === 0, 3000);
    const handlesBack = await eventually(() => socketHandles() <= baseHandles, 3000);
    const heap = await settledHeapMiB();
    const rss = await settledRssMiB();
    t.comment(
      `${ROUNDS} overflow connections (${tunnels} with an open tunnel first) in ${elapsed.toFixed(0)} ms: ` +
        `FLOW_CONTROL_ERROR seen ${flowErrors}, closed without a visible GOAWAY ${closedOnly}, not closed ${notClosed}; ` +
        `socket handles ${baseHandles} → ${socketHandles()}; heap ${baseHeap.toFixed(1)} → ${heap.toFixed(1)} MiB; ` +
        `RSS ${baseRss.toFixed(1)} → ${midRss.toFixed(1)} (half-way) → ${rss.toFixed(1)} MiB; ` +
        `upstream sockets open ${rig.stats.upstreamOpen}`,
    );
    t.equal(notClosed, 0, 'the server closed every connection');
    t.ok(flowErrors >= ROUNDS * 0.9, `FLOW_CONTROL_ERROR observed on ${flowErrors}/${ROUNDS} connections`);
    t.equal(tunnels, ROUNDS / 2, 'every odd round had an open tunnel');
    t.ok(upstreamsClosed, `every tunnel's upstream socket closed (${rig.stats.upstreamOpen} open)`);
    t.ok(handlesBack, `socket handles back to baseline (${socketHandles()} ≤ ${baseHandles})`);
    t.ok(heap - baseHeap < 8, `heap growth ${(heap - baseHeap).toFixed(1)} MiB < 8 MiB (no leaked sessions)`);
    // RSS is noisy (allocator and OpenSSL pools keep growing for a while): a per-connection leak
    // shows as growth that continues in the second half, not as the warm-up of the first.
    t.ok(
      rss - midRss < 16,
      `RSS growth over the last ${ROUNDS / 2} connections ${(rss - midRss).toFixed(1)} MiB < 16 MiB`,
    );
    t.ok(rss - baseRss < 64, `total RSS growth ${(rss - baseRss).toFixed(1)} MiB < 64 MiB`);
    t.ok((await rig.legit()).ok, 'a legitimate tunnel works afterwards');
  },
);

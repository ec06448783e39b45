// SPDX-License-Identifier: Apache-2.0
// MadeYouReset against the HBONE server (security-and-reliability.md §4 checklist A.12; §1.4
// CVE-2025-8671). The client opens CONNECT streams and immediately provokes a *server-side* reset
// with a frame the server must treat as a stream error: WINDOW_UPDATE with increment 0 (RFC 9113
// §6.9), DATA on a stream the client already half-closed (§5.1, STREAM_CLOSED), or a second HEADERS
// without END_STREAM (malformed trailers, §8.1). Reset streams no longer count against
// MAX_CONCURRENT_STREAMS, so the server must stop their upstream work: concurrent upstream sockets
// stay within the stream limit, all of them are closed afterwards, and the abuse is bounded (the
// connection is closed) with the process healthy.
import t from 'tap';
import {
  connectBlock,
  dataFrame,
  errorCodeName,
  headersFrame,
  hpackEncode,
  windowUpdateFrame,
} from '../../../../helpers/h2-raw.ts';
import { eventually, startRig } from './rig.ts';

const STREAMS = 2000;
const STREAM_LIMIT = 200; // ambient-protocols.md §1.4: the server advertises 200 concurrent streams

t.test('A.12 MadeYouReset: server-side resets stop upstream work and are bounded', async (t) => {
  const variants: [string, (id: number, block: Buffer) => Buffer[]][] = [
    [
      'WINDOW_UPDATE increment 0 on the stream',
      (id, block) => [headersFrame(id, block), windowUpdateFrame(id, 0)],
    ],
    [
      'DATA after END_STREAM',
      (id, block) => [headersFrame(id, block, { endStream: true }), dataFrame(id, Buffer.from('x'))],
    ],
    [
      'second HEADERS without END_STREAM',
      (id, block) => [headersFrame(id, block), headersFrame(id, hpackEncode([['x-trailer', 'v']]))],
    ],
  ];
  for (const [name, frames] of variants) {
    await t.test(name, async (t) => {
      const rig = await startRig(t);
      const c = await rig.connect();
      const block = connectBlock(`127.0.0.1:${rig.echoPort}`);
      const started = performance.now();
      let streams = 0;
      while (streams < STREAMS) {
        if (!(await c.sendPaced(...frames(1 + 2 * streams, block)))) break;
        streams++;
      }
      const closed = await c.waitForClose(2000);
      await eventually(() => rig.stats.inFlight === 0, 3000);
      const allClosed = await eventually(() => rig.stats.upstreamOpen === 0, 5000);
      const ga = c.goaway();
      const resets = c.resets();
      const codes = new Map<string, number>();
      for (const r of resets)
        codes.set(errorCodeName(r.errorCode), (codes.get(errorCodeName(r.errorCode)) ?? 0) + 1);
      const s = rig.stats;
      t.comment(
        `${name}: ${streams} streams written in ${(performance.now() - started).toFixed(0)} ms; closed=${closed}; ` +
          `GOAWAY ${ga ? errorCodeName(ga.errorCode) : 'none'}; RST_STREAM ${JSON.stringify(Object.fromEntries(codes))}; ` +
          `onConnect=${s.onConnect} dials=${s.dials} maxUpstreamOpen=${s.maxUpstreamOpen} ` +
          `upstreamOpen(after)=${s.upstreamOpen} tunnelsClosed=${s.tunnelsClosed}`,
      );
      t.ok(closed, 'the abuse is bounded: the server closed the connection');
      t.ok(s.onConnect <= STREAM_LIMIT, `onConnect calls bounded (${s.onConnect} ≤ ${STREAM_LIMIT})`);
      t.ok(
        s.maxUpstreamOpen <= STREAM_LIMIT,
        `concurrent upstream sockets ${s.maxUpstreamOpen} ≤ stream limit ${STREAM_LIMIT}`,
      );
      t.ok(allClosed, `every upstream socket of a reset stream was closed (${s.upstreamOpen} left)`);
      c.destroy();
      t.ok((await rig.legit()).ok, 'a legitimate tunnel works afterwards');
    });
  }
});

t.test('A.12 MadeYouReset after the tunnel is up: each provoked reset tears its upstream down', async (t) => {
  const variants: [string, (id: number) => Buffer[]][] = [
    ['WINDOW_UPDATE increment 0 on the stream', (id) => [windowUpdateFrame(id, 0)]],
    [
      'DATA after END_STREAM',
      (id) => [dataFrame(id, Buffer.from('x'), true), dataFrame(id, Buffer.from('y'))],
    ],
    ['second HEADERS without END_STREAM', (id) => [headersFrame(id, hpackEncode([['x-trailer', 'v']]))]],
  ];
  const TUNNELS = 300; // more than the 200-stream limit: leaked upstreams would exceed it
  for (const [name, provoke] of variants) {
    await t.test(name, async (t) => {
      const rig = await startRig(t);
      const c = await rig.connect();
      const block = connectBlock(`127.0.0.1:${rig.echoPort}`);
      let established = 0;
      for (let i = 0; i < TUNNELS && !c.closed; i++) {
        const id = 1 + 2 * i;
        c.send(headersFrame(id, block));
        const o = await c.outcome(id, 3000);
        if (o.kind !== 'status' || o.status !== 200) break;
        established++;
        c.send(...provoke(id));
      }
      const closed = await c.waitForClose(1000);
      const allClosed = await eventually(() => rig.stats.upstreamOpen === 0, 3000);
      const s = rig.stats;
      t.comment(
        `${name}: ${established} tunnels established and reset; connection closed=${closed}; ` +
          `GOAWAY ${c.goaway() ? errorCodeName(c.goaway()?.errorCode ?? 0) : 'none'}; resets ${c.resets().length}; ` +
          `dials=${s.dials} maxUpstreamOpen=${s.maxUpstreamOpen} upstreamOpen(after)=${s.upstreamOpen} tunnelsClosed=${s.tunnelsClosed}`,
      );
      t.ok(established >= 1, 'at least one tunnel was established before its reset');
      t.ok(
        s.maxUpstreamOpen <= STREAM_LIMIT,
        `concurrent upstream sockets ${s.maxUpstreamOpen} ≤ stream limit ${STREAM_LIMIT}`,
      );
      t.ok(allClosed, `every upstream socket of a reset stream was closed (${s.upstreamOpen} left)`);
      t.equal(s.tunnelsClosed, s.dials, 'onTunnelClosed reported every tunnel');
      c.destroy();
    });
  }
});

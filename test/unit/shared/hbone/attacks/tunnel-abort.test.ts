// SPDX-License-Identifier: Apache-2.0
// A client that drops an established HBONE tunnel at any moment: the server closes the upstream
// socket, forgets the stream and the tunnel, reports it to onTunnelClosed, and close() still drains
// (security-and-reliability.md §1.4 CVE-2021-43826 class "client aborts at every stage: no leaked
// sockets/fds"; checklist A.12 "in-flight upstream work is cancelled").
//
// Regression guard for a leak this suite found: relay() forwarded the client's END_STREAM
// (upstream.end()) and then, on the reset in the same tick, called upstream.resetAndDestroy(). On
// Node 24.21 that fails in libuv (uv_tcp_close_reset → EINVAL): the handle is never closed, 'close'
// never fires, relay() never resolves, HboneServer.close() never drains, and the event loop spins
// at 100 % CPU. Fixed in relay.ts resetDuplex (destroy(), not resetAndDestroy(), once end() was
// called). This file runs without the rig's guard, so a regression shows up here; if the upstream
// leaks, the file exits after reporting instead of spinning until the runner's timeout.
import t from 'tap';
import { connectBlock, dataFrame, headersFrame, rstStreamFrame } from '../../../../helpers/h2-raw.ts';
import type { InFrame, RawH2Client } from '../../../../helpers/h2-raw.ts';
import { eventually, startRig } from './rig.ts';
import type { Rig } from './rig.ts';

async function openTunnel(rig: Rig): Promise<RawH2Client> {
  const c = await rig.connect();
  c.send(headersFrame(1, connectBlock(`127.0.0.1:${rig.echoPort}`)));
  const o = await c.outcome(1, 3000);
  if (o.kind !== 'status' || o.status !== 200)
    throw new Error(`tunnel not established: ${JSON.stringify(o)}`);
  c.send(dataFrame(1, Buffer.from('ping')));
  await c.waitFor((f): f is Extract<InFrame, { type: 'DATA' }> => f.type === 'DATA' && f.length > 0, 3000);
  return c;
}

const aborts: [string, (c: RawH2Client) => void][] = [
  ['client closes the TCP connection (FIN)', (c) => c.destroy()],
  ['client resets the TCP connection (RST)', (c) => c.resetTcp()],
  ['client sends END_STREAM then closes', (c) => (c.send(dataFrame(1, Buffer.alloc(0), true)), c.destroy())],
  ['client sends RST_STREAM(CANCEL), connection stays', (c) => c.send(rstStreamFrame(1))],
];

for (const [name, abort] of aborts) {
  t.test(`an established tunnel is torn down when the ${name}`, async (t) => {
    const rig = await startRig(t, { guardResetAfterEnd: false });
    const c = await openTunnel(rig);
    t.equal(rig.stats.upstreamOpen, 1, 'tunnel open with one upstream socket');
    abort(c);
    const upstreamClosed = await eventually(() => rig.stats.upstreamOpen === 0, 1000);
    const serverIdle = await eventually(
      () => rig.server.stats().tunnelsActive === 0 && rig.server.stats().streamsActive === 0,
      1000,
    );
    t.comment(
      `${name}: upstream open ${rig.stats.upstreamOpen}, server ${JSON.stringify(rig.server.stats())}, onTunnelClosed ${rig.stats.tunnelsClosed}`,
    );
    t.ok(upstreamClosed, 'the upstream socket is closed');
    if (!upstreamClosed) {
      // A leaked libuv handle keeps the process spinning: end the file once tap has the result.
      t.teardown(() => setTimeout(() => process.exit(1), 200));
    }
    t.ok(serverIdle, 'the server forgets the tunnel (tunnelsActive = streamsActive = 0)');
    t.equal(rig.stats.tunnelsClosed, 1, 'onTunnelClosed reported the tunnel');
    c.destroy();
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      rig.server.close({ deadlineMs: 300 }).then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), 1000);
      }),
    ]);
    clearTimeout(timer);
    t.ok(closed, 'HboneServer.close({ deadlineMs: 300 }) resolves within 1 s');
  });
}

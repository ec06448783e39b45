// SPDX-License-Identifier: Apache-2.0
// A peer that dies mid-session (checklist I.100 at the transport layer): its kernel closes the
// TCP connection with a bare FIN (or an RST when unread data was queued), with no TLS close_notify
// and no GOAWAY. Both ends must notice at once, from the socket, not after the PING keepalive:
// the client drops the session from the pool and resets its tunnels, the server ends the tunnels
// and their upstream connections.
//
// The sockets here allow half-open on both sides, as ztunnel's socket factory makes them (the
// relay needs half-close for app connections). A TLSSocket inherits allowHalfOpen from the socket
// it wraps, and with it a peer's FIN used to end only the read side: the session stayed in the
// pool for the keepalive's 30 s, taking streams that were never answered (found by the netns
// SIGKILL test).
import net from 'node:net';
import { once } from 'node:events';
import t from 'tap';
import { startEchoServer, startHbonePair, type HbonePair } from '../../../helpers/hbone.ts';
import { waitFor } from '../../../helpers/wait.ts';

/** Far above every deadline below: only the socket can be what ends the session. */
const NO_KEEPALIVE = { pingIntervalMs: 600_000, pingTimeoutMs: 600_000 };
const NOTICED_WITHIN_MS = 2_000;

/** A TCP middlebox standing for the network path; cut() makes the far end "die". */
async function startPath(target: number): Promise<{
  port: number;
  /** Closes both sides of every relayed connection: 'fin' (close) or 'rst' (reset). */
  cut(how: 'fin' | 'rst'): void;
  close(): Promise<void>;
}> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const srv = net.createServer({ allowHalfOpen: true }, (down) => {
    const up = net.connect({ port: target, host: '127.0.0.1', allowHalfOpen: true });
    const pair: [net.Socket, net.Socket] = [down, up];
    pairs.add(pair);
    for (const s of pair) s.on('error', () => undefined);
    down.pipe(up);
    up.pipe(down);
    // pipe() does not pass on an error: when one side is reset, the other (half-open, no longer
    // reading) would never learn that its peer went away, and srv.close() would wait for it.
    down.once('close', () => {
      pairs.delete(pair);
      up.destroy();
    });
    up.once('close', () => down.destroy());
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  return {
    port: (srv.address() as net.AddressInfo).port,
    cut(how) {
      for (const pair of pairs) {
        for (const s of pair) {
          s.unpipe();
          if (how === 'rst') s.resetAndDestroy();
          else s.destroy();
        }
      }
      pairs.clear();
    },
    close: () => {
      for (const pair of pairs) for (const s of pair) s.destroy();
      return new Promise<void>((resolve) => srv.close(() => resolve()));
    },
  };
}

for (const how of ['fin', 'rst'] as const) {
  t.test(`peer gone with a bare ${how.toUpperCase()}: both ends notice at once`, async (t) => {
    const echo = await startEchoServer();
    let tunnelsClosed = 0;
    const pair: HbonePair = await startHbonePair({
      clientSettings: NO_KEEPALIVE,
      serverSettings: NO_KEEPALIVE,
      onTunnelClosed: () => {
        tunnelsClosed++;
      },
      // The client's sockets come from a factory: half-open allowed.
      dial: (peer) => net.connect({ host: peer.host, port: peer.port, allowHalfOpen: true }),
    });
    // The server's sockets too: accepted half-open and handed over, as ztunnel does on 15008.
    const inbound = net.createServer({ allowHalfOpen: true }, (s) => pair.server.handleSocket(s));
    inbound.listen(0, '127.0.0.1');
    await once(inbound, 'listening');
    const path = await startPath((inbound.address() as net.AddressInfo).port);
    const peer = { host: '127.0.0.1', port: path.port };
    t.teardown(async () => {
      await pair.close();
      await path.close();
      await new Promise<void>((resolve) => inbound.close(() => resolve()));
      await echo.close();
    });
    const authority = `127.0.0.1:${echo.port}`;

    const tunnel = await pair.connect(authority, { peer });
    const echoed: Buffer[] = [];
    tunnel.stream.on('data', (d: Buffer) => echoed.push(d));
    tunnel.stream.write('before the cut\n');
    await waitFor(() => Buffer.concat(echoed).toString() === 'before the cut\n', 'the echo');
    t.equal(echo.sockets.size, 1, 'the upstream connection is open');

    const cutAt = Date.now();
    path.cut(how);
    await waitFor(() => tunnel.stream.closed, "the client's tunnel ending", NOTICED_WITHIN_MS);
    t.ok(
      Date.now() - cutAt < NOTICED_WITHIN_MS,
      `the client's tunnel ended ${Date.now() - cutAt} ms after the cut`,
    );
    t.not(tunnel.stream.rstCode, 0, 'the client saw a reset, not a clean end of the tunnel');
    await waitFor(
      () => pair.client.stats().sessionsActive === 0,
      'the client dropping the dead session',
      NOTICED_WITHIN_MS,
    );
    await waitFor(
      () => tunnelsClosed === 1 && echo.sockets.size === 0,
      'the server ending the tunnel',
      NOTICED_WITHIN_MS,
    );
    t.equal(pair.server.stats().tunnelsActive, 0, 'no tunnel left on the server');
    t.equal(pair.server.stats().sessionsActive, 0, 'no session left on the server');

    // The pool hands out a new session, not the dead one.
    const again = await pair.connect(authority, { peer });
    again.stream.end('after the cut\n');
    const reply: Buffer[] = [];
    again.stream.on('data', (d: Buffer) => reply.push(d));
    await once(again.stream, 'end');
    t.equal(Buffer.concat(reply).toString(), 'after the cut\n', 'a new tunnel works');
    t.equal(pair.client.stats().sessionsOpened, 2, 'on a new session');
  });
}

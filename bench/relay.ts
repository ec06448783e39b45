// SPDX-License-Identifier: Apache-2.0
// A plain TCP relay in Node, the `pod-node-relay` path's two ends: no TLS, no HTTP/2, no policy,
// just what any Node proxy pays to carry bytes between two sockets (accept, read, write, with
// backpressure and half-close through `pipe`). It calibrates the netns group: how much of
// ztunnel's cost is Node's socket I/O rather than the mesh (PERFORMANCE.md §5).
//
// Self-contained (no imports beyond node:net) so that the path can run it as JavaScript, type
// stripped ahead of time as ztunnel runs from dist/: its RSS is then Node's own, not the type
// stripper's. Exits when the parent closes stdin, as every bench child does (bench/child.ts).
//
// Usage: node relay.(ts|js) LISTEN=CONNECT [LISTEN=CONNECT ...]
//   LISTEN and CONNECT are IPv4 host:port → prints {"event":"ready"} once every listener is up.
import { connect, createServer, type Socket } from 'node:net';

const BACKLOG = 4096;

interface Relay {
  readonly listenHost: string;
  readonly listenPort: number;
  readonly connectHost: string;
  readonly connectPort: number;
}

function parseRelay(arg: string): Relay {
  const m = /^([\d.]+):(\d+)=([\d.]+):(\d+)$/.exec(arg);
  if (m === null)
    throw new Error(`bad relay ${JSON.stringify(arg)} (expected LISTEN=CONNECT, each IPv4 host:port)`);
  return { listenHost: m[1]!, listenPort: Number(m[2]), connectHost: m[3]!, connectPort: Number(m[4]) };
}

function relayTo(r: Relay): (client: Socket) => void {
  return (client) => {
    const upstream = connect({
      host: r.connectHost,
      port: r.connectPort,
      noDelay: true,
      allowHalfOpen: true,
    });
    const close = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.pipe(upstream);
    upstream.pipe(client);
  };
}

function listen(r: Relay): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer({ noDelay: true, allowHalfOpen: true }, relayTo(r));
    server.once('error', reject);
    server.listen({ host: r.listenHost, port: r.listenPort, backlog: BACKLOG }, () => resolve());
  });
}

async function main(): Promise<void> {
  const relays = process.argv.slice(2).map(parseRelay);
  if (relays.length === 0) throw new Error('usage: relay LISTEN=CONNECT [LISTEN=CONNECT ...]');
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
  process.on('SIGTERM', () => process.exit(0));
  await Promise.all(relays.map(listen));
  process.stdout.write(JSON.stringify({ event: 'ready', relays: relays.length }) + '\n');
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  process.stdout.write(JSON.stringify({ event: 'error', message }) + '\n');
  process.stderr.write(`${message}\n`);
  process.exit(1);
});

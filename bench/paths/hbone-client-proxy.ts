// SPDX-License-Identifier: Apache-2.0
// Client end of the bench's `hbone` path, run as its own child process: one TCP listener per
// route; for each accepted connection it opens an HBONE CONNECT (:authority = the route's
// backend address) through one pooled HboneClient (src/shared/hbone/client.ts) to the server
// proxy and relays bytes both ways (src/shared/hbone/relay.ts). This is the outbound half of
// what ztunnel does for a pod, without redirection.
//
// Usage: node bench/paths/hbone-client-proxy.ts CONFIG.json
//   → {"event":"ready","ports":{"<route name>":N,...}}
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { errorMessage } from '../../src/shared/errors.ts';
import { HboneClient } from '../../src/shared/hbone/client.ts';
import { relay } from '../../src/shared/hbone/relay.ts';
import { asObject, attachToParent, emit, fail, int, str } from '../child.ts';
import { readCertFile } from './hbone-certs.ts';

export interface ClientProxyConfig {
  readonly certFile: string;
  /** The HBONE server proxy. */
  readonly peer: { readonly host: string; readonly port: number };
  /** The identity the server proxy must present. */
  readonly expectedIdentity: string;
  /** Address the TCP listeners bind (port 0 each, reported on stdout). */
  readonly host: string;
  /** One listener per route; its connections are tunnelled to `authority`. */
  readonly routes: readonly { readonly name: string; readonly authority: string }[];
}

function parseConfig(path: string): ClientProxyConfig {
  const o = asObject(JSON.parse(readFileSync(path, 'utf8')), path);
  const peer = asObject(o.peer, 'config: "peer"');
  const routes = o.routes;
  if (!Array.isArray(routes) || routes.length === 0)
    throw new Error('config: "routes" must be a non-empty list');
  return {
    certFile: str(o, 'certFile'),
    peer: { host: str(peer, 'host'), port: int(peer, 'port') },
    expectedIdentity: str(o, 'expectedIdentity'),
    host: str(o, 'host'),
    routes: routes.map((r: unknown) => {
      const route = asObject(r, 'config: route');
      return { name: str(route, 'name'), authority: str(route, 'authority') };
    }),
  };
}

/** Deep backlog: the connection-rate and memory metrics arrive in bursts. */
const BACKLOG = 4096;
const MAX_LOGGED_ERRORS = 20;

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0, backlog: BACKLOG }, () => {
      const addr = server.address();
      if (addr === null || typeof addr === 'string') reject(new Error('no TCP address'));
      else resolve(addr.port);
    });
  });
}

async function main(): Promise<void> {
  const configPath = process.argv[2];
  if (configPath === undefined) throw new Error('usage: hbone-client-proxy.ts CONFIG.json');
  const config = parseConfig(configPath);
  const cert = await readCertFile(config.certFile);
  const client = new HboneClient({ certificate: () => cert });

  let logged = 0;
  const logError = (what: string, err: unknown): void => {
    if (logged++ < MAX_LOGGED_ERRORS)
      process.stderr.write(`hbone-client-proxy: ${what}: ${errorMessage(err)}\n`);
  };

  const accept = (authority: string) => (sock: Socket) => {
    sock.setNoDelay(true);
    // Until the tunnel is up the socket is paused (pauseOnConnect) and needs its own handler.
    const early = (err: Error): void => logError('client socket before the tunnel was up', err);
    sock.on('error', early);
    client.connect({ peer: config.peer, authority, expectedIdentities: [config.expectedIdentity] }).then(
      ({ stream }) => {
        sock.off('error', early);
        void relay(sock, stream);
        sock.resume();
      },
      (err: unknown) => {
        logError(`CONNECT ${authority}`, err);
        sock.resetAndDestroy();
      },
    );
  };

  attachToParent();
  const ports: Record<string, number> = {};
  for (const route of config.routes) {
    const server = createServer(
      { noDelay: true, allowHalfOpen: true, pauseOnConnect: true },
      accept(route.authority),
    );
    ports[route.name] = await listen(server, config.host);
  }
  emit({ event: 'ready', ports });
}

main().catch(fail);

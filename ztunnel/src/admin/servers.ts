// SPDX-License-Identifier: Apache-2.0
// ztunnel's HTTP endpoints (spec §7.3, §7.4, §1.1), each on its own port as upstream keeps them:
//   admin     127.0.0.1:15000  /config_dump, /logging, /quitquitquit (POST), / (index)
//   metrics   :15020           /metrics, /stats/prometheus
//   readiness :15021           /healthz/ready
// Admin binds to loopback only: it exposes configuration and can stop the process.
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readiness } from './readiness.ts';

// process.getBuiltinModule rather than an ES import: importing node:http as a module also
// initialises Node's bundled undici (fetch), ~3.7 MB of resident memory ztunnel never uses.
const { createServer } = process.getBuiltinModule('node:http');

export interface AdminHandlers {
  configDump(): unknown;
  metrics(): Promise<{ contentType: string; body: string }>;
  readiness: Readiness;
  /** Called on POST /quitquitquit; starts a graceful shutdown. */
  quit(): void;
  /** Gets or sets the log level (GET /logging, POST /logging?level=debug). */
  logLevel(level?: string): string;
}

type Route = (req: http.IncomingMessage, url: URL) => Promise<{ status: number; type: string; body: string }>;

const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);

function text(status: number, body: string): { status: number; type: string; body: string } {
  return { status, type: 'text/plain; charset=utf-8', body };
}

function makeServer(routes: Record<string, Route>): http.Server {
  const server = createServer(
    { maxHeaderSize: 8192, requestTimeout: 10_000, headersTimeout: 5_000 },
    (req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const route = routes[url.pathname];
      const respond = (r: { status: number; type: string; body: string }): void => {
        res.writeHead(r.status, { 'content-type': r.type, 'content-length': Buffer.byteLength(r.body) });
        res.end(r.body);
      };
      if (route === undefined) {
        respond(text(404, `not found: ${url.pathname}\n`));
        return;
      }
      route(req, url).then(respond, (err: unknown) => respond(text(500, `${String(err)}\n`)));
    },
  );
  server.keepAliveTimeout = 5_000;
  return server;
}

function listen(server: http.Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

export interface AdminServers {
  admin: AddressInfo;
  metrics: AddressInfo;
  readiness: AddressInfo;
  close(): Promise<void>;
}

export async function startAdminServers(
  h: AdminHandlers,
  opts: { adminPort: number; metricsPort: number; readinessPort: number; metricsHost?: string },
): Promise<AdminServers> {
  const admin = makeServer({
    '/': () =>
      Promise.resolve(text(200, ['/config_dump', '/logging', '/quitquitquit (POST)', ''].join('\n'))),
    '/config_dump': () =>
      Promise.resolve({
        status: 200,
        type: 'application/json',
        body: JSON.stringify(h.configDump(), null, 2),
      }),
    '/logging': (req, url) => {
      const level = url.searchParams.get('level');
      if (level === null) return Promise.resolve(text(200, `current log level is ${h.logLevel()}\n`));
      if (req.method !== 'POST') return Promise.resolve(text(405, 'use POST to change the log level\n'));
      if (!LEVELS.has(level))
        return Promise.resolve(
          text(400, `invalid level ${JSON.stringify(level)}; use one of ${[...LEVELS].join(', ')}\n`),
        );
      return Promise.resolve(text(200, `current log level is ${h.logLevel(level)}\n`));
    },
    '/quitquitquit': (req) => {
      if (req.method !== 'POST') return Promise.resolve(text(405, 'use POST\n'));
      setImmediate(() => h.quit());
      return Promise.resolve(text(200, 'shutting down\n'));
    },
  });
  const metricsRoute: Route = async () => {
    const m = await h.metrics();
    return { status: 200, type: m.contentType, body: m.body };
  };
  const metrics = makeServer({ '/metrics': metricsRoute, '/stats/prometheus': metricsRoute });
  const readiness = makeServer({
    '/healthz/ready': () =>
      Promise.resolve(
        h.readiness.ready
          ? text(200, 'ready\n')
          : text(500, `not ready, pending: {${h.readiness.pending().join(', ')}}\n`),
      ),
  });
  const host = opts.metricsHost ?? '0.0.0.0';
  const servers = [admin, metrics, readiness];
  try {
    const [a, m, r] = await Promise.all([
      listen(admin, opts.adminPort, '127.0.0.1'),
      listen(metrics, opts.metricsPort, host),
      listen(readiness, opts.readinessPort, host),
    ]);
    return {
      admin: a,
      metrics: m,
      readiness: r,
      close: async () => {
        await Promise.all(
          servers.map(
            (s) =>
              new Promise<void>((resolve) => {
                s.close(() => resolve());
                s.closeAllConnections();
              }),
          ),
        );
      },
    };
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
}

// SPDX-License-Identifier: Apache-2.0
// Server end of the bench's `hbone` path, run as its own child process: an HboneServer
// (src/shared/hbone/server.ts: mTLS + HTTP/2 CONNECT) whose onConnect dials the CONNECT's
// :authority — loopback only, this is a benchmark — and lets the server relay the stream.
//
// Usage: node bench/paths/hbone-server-proxy.ts CONFIG.json  → {"event":"ready","port":N}
import { readFileSync } from 'node:fs';
import { errorMessage } from '../../src/shared/errors.ts';
import { connectUpstream, HboneServer } from '../../src/shared/hbone/server.ts';
import { asObject, attachToParent, emit, fail, str } from '../child.ts';
import { readCertFile } from './hbone-certs.ts';

export interface ServerProxyConfig {
  readonly certFile: string;
  readonly trustDomain: string;
  /** Address the HBONE listener binds (port 0: any free port, reported on stdout). */
  readonly host: string;
}

function parseConfig(path: string): ServerProxyConfig {
  const o = asObject(JSON.parse(readFileSync(path, 'utf8')), path);
  return { certFile: str(o, 'certFile'), trustDomain: str(o, 'trustDomain'), host: str(o, 'host') };
}

/** Upstream connect bound; the backend is local, so anything slower is a failure. */
const UPSTREAM_TIMEOUT_MS = 5_000;
/** Report at most this many errors on stderr, so a broken run does not flood the log. */
const MAX_LOGGED_ERRORS = 20;

function isLoopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1';
}

async function main(): Promise<void> {
  const configPath = process.argv[2];
  if (configPath === undefined) throw new Error('usage: hbone-server-proxy.ts CONFIG.json');
  const config = parseConfig(configPath);
  const cert = await readCertFile(config.certFile);

  let logged = 0;
  const logError = (what: string, err: unknown): void => {
    if (logged++ < MAX_LOGGED_ERRORS)
      process.stderr.write(`hbone-server-proxy: ${what}: ${errorMessage(err)}\n`);
  };

  const server = new HboneServer({
    certificate: () => cert,
    trustDomain: config.trustDomain,
    onConnect: async (req) => {
      if (req.target.kind !== 'ip' || !isLoopback(req.target.ip)) {
        return { status: 400, reason: 'the bench server proxy only dials loopback addresses' };
      }
      try {
        const upstream = await connectUpstream({
          host: req.target.ip,
          port: req.target.port,
          timeoutMs: UPSTREAM_TIMEOUT_MS,
          signal: req.signal,
        });
        return { status: 200, upstream };
      } catch (err) {
        logError(`upstream ${req.authority}`, err);
        return { status: 503, reason: errorMessage(err) };
      }
    },
  });
  server.on('tlsError', (err) => logError('TLS', err));
  server.on('peerRejected', (err) => logError('peer rejected', err));
  server.on('handlerError', (err) => logError('onConnect', err));
  server.on('sessionError', (err) => logError('session', err));
  server.on('listenerError', (err) => logError('listener', err));

  attachToParent();
  const addr = await server.listen({ port: 0, host: config.host });
  emit({ event: 'ready', port: addr.port });
}

main().catch(fail);

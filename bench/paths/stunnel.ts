// SPDX-License-Identifier: Apache-2.0
// The `stunnel` path, the C mTLS reference peer of PERFORMANCE.md B.1: load generator →
// stunnel client (127.0.0.1) → mutual TLS (TLS 1.3, TLS_AES_128_GCM_SHA256, ECDSA P-256
// certificates generated with openssl at run time) → stunnel server → backend (one stunnel
// service per backend service: echo, bulk source, and nginx and sockperf server when they run).
// Debian's stunnel4, two foreground processes, one TLS connection per application connection
// (stunnel runs a thread per connection).
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { formatEndpoint } from '../child.ts';
import { freePort, waitForService } from '../net.ts';
import { SERVICE_PROBE, serviceList, servicesFrom, type ServiceName } from '../services.ts';
import { findExecutable } from '../tools.ts';
import type { BackendServices, Endpoint, PathContext, PathModule, TrackedChild } from '../types.ts';

const run = promisify(execFile);

/** The message the brief asks for, verbatim, when the tool is absent. */
export const STUNNEL_MISSING = 'stunnel not found: apt-get install stunnel4';
export const STUNNEL_ENV = 'MESH_BENCH_STUNNEL';
const START_ATTEMPTS = 3;
const READY_TIMEOUT_MS = 10_000;
const HOST = '127.0.0.1';

/** The stunnel binary: MESH_BENCH_STUNNEL if set, else stunnel4/stunnel on PATH; undefined if none. */
export function findStunnel(): string | undefined {
  // MESH_BENCH_STUNNEL names a binary explicitly (hosts where it is not on PATH as stunnel4).
  const override = process.env[STUNNEL_ENV];
  return override !== undefined ? findExecutable([override]) : findExecutable(['stunnel4', 'stunnel']);
}

/**
 * A throwaway CA plus one server and one client certificate, all ECDSA P-256, valid one day,
 * written to `dir` as ca.crt, server.{crt,key}, client.{crt,key}. `serverIps` go into the
 * subjectAltName next to 127.0.0.1 (stunnel verifies the chain, not the name, as configured).
 */
export async function makeCerts(dir: string, serverIps: readonly string[] = []): Promise<void> {
  // Arguments are written as one string each and split on spaces: none of them contains one.
  const openssl = async (args: string): Promise<void> => {
    await run('openssl', args.split(' '), { cwd: dir });
  };
  const p256 = 'genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256';
  await openssl(`${p256} -out ca.key`);
  await openssl(
    'req -x509 -new -key ca.key -subj /CN=mesh-bench-ca -days 1 -sha256 ' +
      '-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out ca.crt',
  );
  for (const [name, usage] of [
    ['server', 'serverAuth'],
    ['client', 'clientAuth'],
  ] as const) {
    writeFileSync(
      join(dir, `${name}.ext`),
      'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' +
        `extendedKeyUsage=${usage}\nsubjectAltName=${[HOST, ...serverIps].map((ip) => `IP:${ip}`).join(',')},DNS:localhost\n`,
    );
    await openssl(`${p256} -out ${name}.key`);
    await openssl(`req -new -key ${name}.key -subj /CN=mesh-bench-${name} -out ${name}.csr`);
    await openssl(
      `x509 -req -in ${name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -sha256 ` +
        `-extfile ${name}.ext -out ${name}.crt`,
    );
  }
}

export interface StunnelService {
  readonly name: string;
  readonly accept: Endpoint;
  readonly connect: Endpoint;
}

/** An stunnel configuration file for one end, with the certificates made by makeCerts in `dir`. */
export function stunnelConfig(
  dir: string,
  role: 'client' | 'server',
  services: readonly StunnelService[],
): string {
  const lines = [
    `; mesh bench stunnel ${role}, generated`,
    'foreground = yes',
    // Errors only: the bench opens and drops thousands of connections on purpose.
    'debug = 3',
    'socket = l:TCP_NODELAY=1',
    'socket = r:TCP_NODELAY=1',
  ];
  for (const s of services) {
    lines.push(
      `[${s.name}]`,
      ...(role === 'client' ? ['client = yes'] : []),
      `accept = ${formatEndpoint(s.accept)}`,
      `connect = ${formatEndpoint(s.connect)}`,
      `cert = ${join(dir, `${role}.crt`)}`,
      `key = ${join(dir, `${role}.key`)}`,
      `CAfile = ${join(dir, 'ca.crt')}`,
      // Mutual TLS: both ends verify the peer's chain; the server requires a client cert.
      'verifyChain = yes',
      ...(role === 'server' ? ['requireCert = yes'] : []),
      'sslVersionMin = TLSv1.3',
      'sslVersionMax = TLSv1.3',
      'ciphersuites = TLS_AES_128_GCM_SHA256',
      'curves = prime256v1',
    );
  }
  return lines.join('\n') + '\n';
}

async function startOnce(ctx: PathContext, bin: string, backend: BackendServices, dir: string) {
  // One stunnel service per backend service (echo, source and, when they run, nginx and the
  // sockperf server): a client-side port tunnelled to a server-side port that connects to it.
  const services = serviceList(backend);
  const serverSide = new Map<ServiceName, number>();
  const clientSide = new Map<ServiceName, number>();
  for (const s of services) {
    serverSide.set(s.name, await freePort(HOST));
    clientSide.set(s.name, await freePort(HOST));
  }
  const ep = (port: number | undefined): Endpoint => ({ host: HOST, port: port! });
  const serverConf = join(dir, 'stunnel-server.conf');
  const clientConf = join(dir, 'stunnel-client.conf');
  writeFileSync(
    serverConf,
    stunnelConfig(
      dir,
      'server',
      services.map((s) => ({ name: s.name, accept: ep(serverSide.get(s.name)), connect: s.target })),
    ),
  );
  writeFileSync(
    clientConf,
    stunnelConfig(
      dir,
      'client',
      services.map((s) => ({
        name: s.name,
        accept: ep(clientSide.get(s.name)),
        connect: ep(serverSide.get(s.name)),
      })),
    ),
  );
  const children: TrackedChild[] = [];
  const alive = new Set<number>();
  const watch = (c: TrackedChild): TrackedChild => {
    alive.add(c.pid);
    void c.exited.then(() => alive.delete(c.pid));
    children.push(c);
    return c;
  };
  const server = watch(ctx.spawn('stunnel-server', bin, [serverConf], { cwd: dir }));
  const client = watch(ctx.spawn('stunnel-client', bin, [clientConf], { cwd: dir }));
  const close = async (): Promise<void> => {
    await Promise.all(children.map((c) => c.kill()));
  };
  try {
    const bothAlive = (): boolean => alive.has(server.pid) && alive.has(client.pid);
    const targets = servicesFrom(
      Object.fromEntries(services.map((s) => [s.name, ep(clientSide.get(s.name))])),
    );
    for (const s of serviceList(targets)) {
      await waitForService(s.target, SERVICE_PROBE[s.name], READY_TIMEOUT_MS, bothAlive);
    }
    return {
      targets,
      processes: [
        { pid: client.pid, end: 'client' as const, label: 'stunnel-client' },
        { pid: server.pid, end: 'server' as const, label: 'stunnel-server' },
      ],
      close,
    };
  } catch (err) {
    const tails = `stunnel-server: ${server.stderrTail()}\nstunnel-client: ${client.stderrTail()}`;
    await close();
    throw new Error(`stunnel did not start: ${err instanceof Error ? err.message : String(err)}\n${tails}`, {
      cause: err,
    });
  }
}

export const stunnelPath: PathModule = {
  name: 'stunnel',
  group: 'loopback',
  description: 'stunnel client → mTLS (TLS 1.3, AES-128-GCM, P-256) → stunnel server → echo server',
  start: async (ctx) => {
    const bin = findStunnel();
    if (bin === undefined) return { kind: 'missing', reason: STUNNEL_MISSING };
    const dir = ctx.tmpDir;
    await makeCerts(dir);
    let last: unknown;
    // Ports are picked free and then bound by stunnel, which can race with other processes.
    for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
      try {
        return { kind: 'ready', instance: await startOnce(ctx, bin, ctx.backend, dir) };
      } catch (err) {
        last = err;
        ctx.log(
          `stunnel start attempt ${attempt} failed: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    throw last;
  },
};

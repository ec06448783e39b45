// SPDX-License-Identifier: Apache-2.0
// A pod's proxy while its certificate is still being fetched (ztunnel/src/inpod/workload-proxy.ts;
// security-and-reliability §3.1 "ztunnel accepts connections immediately but does not forward
// until the cert and workload info are present", checklist I.99). On loopback, no root: the pod's
// listeners on a 127/8 address H of its own, a destination workload at H whose HBONE peer
// (H:15008) is a test HBONE server in front of an echo server, certificates from a test CA behind
// a signer the test holds back or fails.
//
//   - start() resolves with the signer held back: the proxy is up before its certificate;
//   - an outbound connection made meanwhile reaches the peer, over mTLS, once the certificate
//     arrives; an inbound HBONE handshake likewise, presenting the pod's identity;
//   - a failing signer, or one slower than certificateWaitMs: the connection is reset, and not a
//     byte reaches the peer or the upstream, let alone in plaintext.
import net from 'node:net';
import tls from 'node:tls';
import { randomInt } from 'node:crypto';
import t from 'tap';
import type { Test } from 'tap';

import { HboneServer, connectUpstream } from '../../../../src/shared/hbone/server.ts';
import { DefaultSocketFactory } from '../../../../ztunnel/src/inpod/socket-factory.ts';
import { WorkloadProxy } from '../../../../ztunnel/src/inpod/workload-proxy.ts';
import { OverloadGuard } from '../../../../ztunnel/src/proxy/overload.ts';
import { HboneClient } from '../../../../src/shared/hbone/client.ts';
import { HboneError } from '../../../../src/shared/hbone/errors.ts';
import type { PodInfo } from '../../../../ztunnel/src/proxy/context.ts';
import { newWorkload } from '../../../../ztunnel/src/state/types.ts';
import { startEchoServer } from '../../../helpers/hbone.ts';
import { issueWorkloadCert, tlsOptions } from '../../../helpers/pki.ts';
import { memoryLogger, serverWorkload, testProxyContext, until } from '../../zds/fixtures.ts';

const POD: PodInfo = { uid: 'uid-a', name: 'pod-a', namespace: 'demo', serviceAccount: 'sa' };
const POD_ID = 'spiffe://cluster.local/ns/demo/sa/sa';
const SERVER_ID = 'spiffe://cluster.local/ns/server/sa/server';
const CLIENT_ID = 'spiffe://cluster.local/ns/client/sa/client';

/** `p`, or a failure naming `what` after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A signer the test controls: each signature waits for `release()`, then succeeds or fails. */
function heldSigner(): {
  beforeSign: () => Promise<void>;
  release: (outcome: 'sign' | Error) => void;
  calls: () => number;
} {
  let calls = 0;
  let release: (outcome: 'sign' | Error) => void = () => undefined;
  const outcome = new Promise<'sign' | Error>((resolve) => (release = resolve));
  return {
    beforeSign: async () => {
      calls++;
      const o = await outcome;
      if (o instanceof Error) throw o;
    },
    release: (o) => release(o),
    calls: () => calls,
  };
}

/** Listens like DefaultSocketFactory, remembering each listener's port in order. */
class RecordingSocketFactory extends DefaultSocketFactory {
  readonly #servers: net.Server[] = [];

  override async listen(opts: Parameters<DefaultSocketFactory['listen']>[0]): Promise<net.Server> {
    const server = await super.listen(opts);
    this.#servers.push(server);
    return server;
  }

  ports(): number[] {
    return this.#servers.map((s) => (s.address() as net.AddressInfo).port);
  }
}

interface Rig {
  /** The pod's address: its listeners, and the destination the app dials. */
  host: string;
  proxy: WorkloadProxy;
  outboundPort: number;
  hbonePort: number;
  /** CONNECTs the peer's HBONE server received. */
  connects: () => number;
  /** TLS connections the peer's HBONE server completed. */
  peerTls: () => number;
  /** Bytes that reached the upstream behind the peer. */
  upstreamBytes: () => number;
  certs: Awaited<ReturnType<typeof testProxyContext>>['certs'];
  ca: Awaited<ReturnType<typeof testProxyContext>>['ca'];
  store: Awaited<ReturnType<typeof testProxyContext>>['store'];
  metrics: Awaited<ReturnType<typeof testProxyContext>>['metrics'];
  /** The proxy's log lines (info and above). */
  lines: Record<string, unknown>[];
}

async function rig(
  t: Test,
  signer: { beforeSign: () => Promise<void> },
  certificateWaitMs = 10_000,
  overload?: OverloadGuard,
): Promise<Rig> {
  const host = `127.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`;
  const { logger, lines } = memoryLogger('info');
  const ctx = await testProxyContext(logger, {
    beforeSign: signer.beforeSign,
    certificateWaitMs,
    ...(overload && { overload }),
  });
  t.teardown(() => ctx.certs.close());
  ctx.store.upsertWorkload(
    newWorkload({
      uid: 'Kubernetes//Pod/demo/pod-a',
      name: POD.name,
      namespace: POD.namespace,
      serviceAccount: POD.serviceAccount,
      node: ctx.nodeName,
      addresses: ['10.0.0.1'],
      tunnelProtocol: 'HBONE',
    }),
  );
  ctx.store.upsertWorkload(serverWorkload(host));

  let upstreamBytes = 0;
  const echo = await startEchoServer();
  echo.server.on('connection', (s: net.Socket) => s.on('data', (d: Buffer) => (upstreamBytes += d.length)));
  t.teardown(() => echo.close());
  const serverCert = await issueWorkloadCert(ctx.ca, SERVER_ID);
  let connects = 0;
  let peerTls = 0;
  const peer = new HboneServer({
    certificate: () => serverCert,
    trustDomain: 'cluster.local',
    onConnect: async (req) => {
      connects++;
      return {
        status: 200,
        upstream: await connectUpstream({
          host: '127.0.0.1',
          port: echo.port,
          timeoutMs: 2000,
          signal: req.signal,
        }),
      };
    },
  });
  peer.on('session', () => peerTls++);
  await peer.listen({ host, port: 15008 });
  t.teardown(() => peer.close({ deadlineMs: 0 }));

  const sockets = new RecordingSocketFactory();
  const proxy = new WorkloadProxy(ctx, POD, sockets, { outbound: 0, inboundPlaintext: 0, hbone: 0, host });
  t.teardown(() => proxy.stop(0));
  await within(proxy.start(), 5000, 'start() while the CA has not answered');
  // The proxy opens 15001, 15006, 15008 in that order (kernel-chosen ports here).
  const [outboundPort, , hbonePort] = sockets.ports();
  if (outboundPort === undefined || hbonePort === undefined) throw new Error('expected three listeners');
  return {
    host,
    proxy,
    outboundPort,
    hbonePort,
    connects: () => connects,
    peerTls: () => peerTls,
    upstreamBytes: () => upstreamBytes,
    certs: ctx.certs,
    ca: ctx.ca,
    store: ctx.store,
    metrics: ctx.metrics,
    lines,
  };
}

/** Connects like the app would (the "redirect" is the listener itself), sends `data`, collects the reply. */
function appConnect(
  host: string,
  port: number,
  data: string,
): { received: () => string; closed: Promise<{ error: string | undefined }> } {
  const s = net.connect({ host, port });
  let received = '';
  s.on('data', (d: Buffer) => (received += d.toString()));
  s.write(data);
  const closed = new Promise<{ error: string | undefined }>((resolve) => {
    let error: string | undefined;
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () => resolve({ error }));
  });
  return { received: () => received, closed };
}

t.test('the proxy is up before its certificate; an outbound connection waits for it', async (t) => {
  const signer = heldSigner();
  const r = await rig(t, signer);
  t.equal(r.certs.current(POD_ID), undefined, 'started while the CA has not answered');
  await until(() => signer.calls() === 1, 5000, 'the background fetch');

  const app = appConnect(r.host, r.outboundPort, 'hello');
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.equal(r.peerTls(), 0, 'nothing reached the peer before the certificate');
  t.equal(r.upstreamBytes(), 0);

  signer.release('sign');
  await until(() => app.received() === 'hello', 10_000, 'the echo through the tunnel');
  t.equal(r.connects(), 1, 'carried over HBONE once the certificate arrived');
  t.equal(r.certs.current(POD_ID)?.id.uri, POD_ID);
});

t.test('an inbound HBONE handshake made before the certificate completes once it arrives', async (t) => {
  const signer = heldSigner();
  const r = await rig(t, signer);
  const client = await issueWorkloadCert(r.ca, CLIENT_ID);
  let handshaken = false;
  const socket = tls.connect({
    host: r.host,
    port: r.hbonePort,
    ...tlsOptions(client),
    ALPNProtocols: ['h2'],
    checkServerIdentity: () => undefined,
  });
  socket.on('error', () => undefined);
  t.teardown(() => socket.destroy());
  const secure = new Promise<void>((resolve) => socket.once('secureConnect', resolve)).then(() => {
    handshaken = true;
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.notOk(handshaken, 'no handshake without a certificate to present');
  signer.release('sign');
  await within(secure, 10_000, 'the TLS handshake once the certificate arrived');
  t.equal(socket.alpnProtocol, 'h2');
  t.match(socket.getPeerX509Certificate()?.subjectAltName, `URI:${POD_ID}`, "the pod's identity");
});

t.test('a failing CA: the waiting connections are reset, and nothing is sent', async (t) => {
  const signer = heldSigner();
  const r = await rig(t, signer);
  const app = appConnect(r.host, r.outboundPort, 'secret payload');
  const inbound = net.connect({ host: r.host, port: r.hbonePort });
  inbound.on('error', () => undefined);
  const inboundClosed = new Promise<void>((resolve) => inbound.once('close', () => resolve()));
  await until(() => signer.calls() === 1, 5000, 'the background fetch');
  await new Promise((resolve) => setTimeout(resolve, 100));
  signer.release(new Error('the CA is down'));
  const { error } = await app.closed;
  t.equal(error, 'ECONNRESET', 'the outbound connection was reset');
  t.equal(app.received(), '');
  await inboundClosed;
  t.pass('the inbound HBONE connection was closed before any handshake');
  t.equal(r.peerTls(), 0, 'no TLS session with the peer');
  t.equal(r.connects(), 0, 'no CONNECT');
  t.equal(r.upstreamBytes(), 0, 'not a byte reached the upstream');

  // While the certificate manager backs off, new connections are refused at once.
  const again = appConnect(r.host, r.outboundPort, 'more');
  t.equal((await again.closed).error, 'ECONNRESET');
  t.equal(r.upstreamBytes(), 0);
});

t.test('a CA slower than certificateWaitMs: the connection is reset at the bound', async (t) => {
  const signer = heldSigner();
  t.teardown(() => signer.release(new Error('test over')));
  const r = await rig(t, signer, 300);
  const started = performance.now();
  const app = appConnect(r.host, r.outboundPort, 'hello');
  const { error } = await app.closed;
  const ms = performance.now() - started;
  t.equal(error, 'ECONNRESET');
  t.ok(ms >= 250 && ms < 5000, `reset after ${Math.round(ms)} ms (bound 300 ms)`);
  t.equal(r.peerTls(), 0);
  t.equal(r.upstreamBytes(), 0);
});

t.test('an outbound refusal is logged with the workload and identity that made it', async (t) => {
  const signer = heldSigner();
  signer.release('sign');
  const r = await rig(t, signer);
  // The destination now sits behind a waypoint this ztunnel does not know: refused, not bypassed.
  r.store.upsertWorkload(
    serverWorkload(r.host, {
      waypoint: { address: { network: '', address: '198.18.9.9' }, hboneMtlsPort: 15008 },
    }),
  );
  const app = appConnect(r.host, r.outboundPort, 'hello');
  t.equal((await app.closed).error, 'ECONNRESET', 'the connection is reset');
  t.equal(r.connects(), 0, 'nothing reached the destination');
  await until(() => r.lines.some((l) => l.message === 'connection failed'), 5000, 'the log line');
  const line = r.lines.find((l) => l.message === 'connection failed')!;
  t.match(line, {
    level: 'warn',
    scope: 'access',
    direction: 'outbound',
    'src.workload': POD.name,
    'src.namespace': POD.namespace,
    'src.identity': POD_ID,
    error: /waypoint .* is not known to this ztunnel yet/,
  });
});

t.test('under memory pressure new connections are refused and the open ones carry on (F.80)', async (t) => {
  const memory = { used: 50 };
  const guard = new OverloadGuard({
    source: () => ({ usedBytes: memory.used, limitBytes: 100, source: 'test' }),
    shedAt: 0.9,
  });
  const pressure = (used: number): void => {
    memory.used = used;
    guard.sample();
  };
  const signer = heldSigner();
  signer.release('sign');
  const r = await rig(t, signer, 10_000, guard);
  const shed = (listener: string): number => r.metrics.overloadShed.get({ listener });

  // A connection opened before the pressure, and an HBONE session into the pod.
  const open = net.connect({ host: r.host, port: r.outboundPort });
  t.teardown(() => open.destroy());
  let echoed = '';
  open.on('data', (d: Buffer) => (echoed += d.toString()));
  open.write('before|');
  await until(() => echoed === 'before|', 10_000, 'the first echo');
  const client = await issueWorkloadCert(r.ca, CLIENT_ID);
  const hbone = new HboneClient({ certificate: () => client });
  t.teardown(() => hbone.close());
  const connect = (): Promise<unknown> =>
    hbone
      .connect({
        peer: { host: r.host, port: r.hbonePort },
        authority: '10.0.0.1:8080',
        expectedIdentities: [POD_ID],
      })
      .then(
        () => 'opened',
        (e: unknown) => e,
      );
  // Not shedding: the CONNECT is decided on its merits (the pod's app is not on loopback here).
  await connect();
  t.equal(hbone.stats().sessionsActive, 1, 'one HBONE session into the pod');
  t.equal(shed('inbound'), 0);

  pressure(95);
  t.ok(guard.shedding, 'shedding at 95% of the limit');
  const refused = appConnect(r.host, r.outboundPort, 'during');
  t.equal((await refused.closed).error, 'ECONNRESET', 'a new outbound connection is reset');
  t.equal(refused.received(), '');
  t.equal(shed('outbound'), 1);
  const onSession = await connect();
  t.ok(
    onSession instanceof HboneError && onSession.status === 503,
    'a new tunnel on the open session gets 503',
  );
  t.equal(shed('inbound'), 1);
  const raw = net.connect({ host: r.host, port: r.hbonePort });
  const rawClosed = new Promise<string | undefined>((resolve) => {
    let code: string | undefined;
    raw.on('error', (e: NodeJS.ErrnoException) => (code = e.code));
    raw.on('close', () => resolve(code));
  });
  raw.write('\x16\x03\x01'); // the start of a ClientHello: never answered
  t.equal(await rawClosed, 'ECONNRESET', 'a new TCP connection to 15008 is reset before TLS');
  t.equal(shed('inbound'), 2);

  open.write('during|');
  await until(() => echoed === 'before|during|', 5000, 'the open connection still echoing');
  t.pass('the connection opened before the pressure carries on');

  pressure(87);
  t.ok(guard.shedding, 'still shedding above the resume mark (85%)');
  pressure(60);
  t.notOk(guard.shedding, 'shedding over');
  const after = appConnect(r.host, r.outboundPort, 'after');
  await until(() => after.received() === 'after', 10_000, 'a new connection through again');
  t.equal(guard.status().shed, 3, 'three connections were shed');
});

t.test('a destination that leaves the state: its pooled session is not used again', async (t) => {
  const signer = heldSigner();
  signer.release('sign');
  const r = await rig(t, signer);
  const once = async (data: string): Promise<void> => {
    const app = appConnect(r.host, r.outboundPort, data);
    await until(() => app.received() === data, 10_000, `the echo of ${data}`);
  };
  await once('first');
  await once('second');
  t.equal(r.peerTls(), 1, 'one pooled session for both');
  // The destination pod goes away (WDS removes it) and an address like it comes back: the
  // session to the old one must not carry new tunnels (it may have died without a word).
  r.store.removeWorkload(serverWorkload(r.host).uid);
  r.store.upsertWorkload(serverWorkload(r.host));
  await once('third');
  t.equal(r.peerTls(), 2, 'a new session for the address that came back');
});

// SPDX-License-Identifier: Apache-2.0
// Inbound plaintext (15006, spec §1.7 and §1.9): a non-HBONE connection to the pod, redirected to
// ztunnel. RBAC runs with no source identity, which is how PeerAuthentication STRICT refuses it
// (the synthetic DENY `not_principals: [presence]`, spec §5.5); allowed connections are delivered
// from the original source IP with IP_TRANSPARENT.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { relay, resetDuplex } from '../../../src/shared/hbone/relay.ts';
import { errorMessage } from '../../../src/shared/errors.ts';
import { SELF_PORTS } from '../ports.ts';
import type { SocketFactory } from '../inpod/socket-factory.ts';
import { evaluate } from '../rbac/rbac.ts';
import { canonicalIp } from '../../../src/shared/net/ip.ts';
import type { Workload } from '../state/types.ts';
import { workloadIdentity } from '../state/types.ts';
import { connectionLabels } from '../telemetry/metrics.ts';
import { hostPort, type ProxyContext } from './context.ts';

export interface InboundPassthroughDeps {
  readonly ctx: ProxyContext;
  readonly sockets: SocketFactory;
  localWorkload(): Promise<Workload | undefined>;
  readonly track: (s: Duplex) => void;
}

export async function handleInboundPlaintext(
  deps: InboundPassthroughDeps,
  socket: net.Socket,
): Promise<void> {
  const { ctx } = deps;
  const started = performance.now();
  const srcIp = canonicalIp(socket.remoteAddress ?? '') ?? socket.remoteAddress ?? 'unknown';
  const srcAddr = hostPort(srcIp, socket.remotePort);
  const fail = (dstAddr: string, error: string, local?: Workload, deny = false): void => {
    const dstIdentity = local ? workloadIdentity(local) : undefined;
    ctx.metrics.connectionRefused(
      connectionLabels({
        reporter: 'destination',
        source: ctx.store.workloadByIp(ctx.network, srcIp),
        destination: local,
        destinationPrincipal: dstIdentity,
        mutualTls: false,
      }),
      deny ? 'DENY' : 'CONNECT',
    );
    ctx.accessLog.failed({
      direction: 'inbound',
      srcAddr,
      dstAddr,
      error,
      dstWorkload: local?.name,
      dstNamespace: local?.namespace,
      dstIdentity,
    });
    // A reset, not a FIN: the client must not mistake a refusal for an empty answer.
    socket.resetAndDestroy();
  };
  let dst: { address: string; port: number };
  try {
    dst = deps.sockets.originalDst(socket);
  } catch (err) {
    fail('unknown', errorMessage(err));
    return;
  }
  const dstIp = canonicalIp(dst.address) ?? dst.address;
  const dstAddr = hostPort(dstIp, dst.port);
  if (SELF_PORTS.has(dst.port)) {
    fail(dstAddr, `port ${dst.port} is one of ztunnel's own ports; refusing self-call`);
    return;
  }
  const local = await deps.localWorkload();
  if (local === undefined) {
    fail(dstAddr, 'local workload unknown (no WDS entry yet)');
    return;
  }
  if (!local.addresses.some((a) => canonicalIp(a) === dstIp)) {
    fail(dstAddr, `original destination ${dstIp} is not this pod's address`, local);
    return;
  }
  const { policies, missing } = ctx.store.policiesFor(local);
  const decision = evaluate({
    policies,
    missing,
    conn: { srcIdentity: undefined, srcIp, dstIp, dstPort: dst.port },
  });
  if (!decision.allowed) {
    fail(dstAddr, `connection rejected by authorization policy: ${decision.reason}`, local, true);
    return;
  }
  const source = ctx.store.workloadByIp(ctx.network, srcIp);
  const done = ctx.metrics.connectionOpened(
    connectionLabels({
      reporter: 'destination',
      source,
      destination: local,
      destinationPrincipal: workloadIdentity(local),
      mutualTls: false,
    }),
  );
  let upstream: net.Socket;
  try {
    upstream = await deps.sockets.connect({
      host: dstIp,
      port: dst.port,
      localAddress: srcIp,
      transparent: true,
      timeoutMs: ctx.connectTimeoutMs,
    });
  } catch (err) {
    done({ flag: 'CONNECT', bytesFromClient: 0, bytesToClient: 0 });
    ctx.accessLog.failed({ direction: 'inbound', srcAddr, dstAddr, error: errorMessage(err) });
    socket.resetAndDestroy();
    return;
  }
  deps.track(upstream);
  // A policy change that denies it later resets it (C.49); the client side's reset ends the relay.
  let lateRejection: string | undefined;
  const unregister = ctx.authorized.add({
    workloadUid: local.uid,
    conn: { srcIdentity: undefined, srcIp, dstIp, dstPort: dst.port },
    close: (reason) => {
      lateRejection = reason;
      resetDuplex(socket); // not resetAndDestroy: after a half-close libuv refuses the RST close
    },
  });
  const r = await relay(socket, upstream);
  unregister();
  done({ flag: '-', bytesFromClient: r.bytesAToB, bytesToClient: r.bytesBToA });
  ctx.accessLog.complete({
    direction: 'inbound',
    srcAddr,
    dstAddr,
    srcWorkload: source?.name,
    srcNamespace: source?.namespace,
    dstWorkload: local.name,
    dstNamespace: local.namespace,
    bytesSent: r.bytesBToA,
    bytesRecv: r.bytesAToB,
    durationMs: performance.now() - started,
    error: lateRejection ?? (r.error === undefined ? undefined : errorMessage(r.error)),
  });
}

// SPDX-License-Identifier: Apache-2.0
// Outbound (15001, spec §1.6): a connection the pod's app opened, redirected to ztunnel. Read the
// original destination, route it (service VIP → endpoint, workload IP → direct, unknown →
// passthrough), then carry it over HBONE to the destination's 15008 expecting its identity (once
// the pod's certificate is there), or pass it through untouched from inside the pod netns with
// ztunnel's mark.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { HboneClient } from '../../../src/shared/hbone/client.ts';
import { HboneError } from '../../../src/shared/hbone/errors.ts';
import { relay } from '../../../src/shared/hbone/relay.ts';
import { errorMessage } from '../../../src/shared/errors.ts';
import type { SocketFactory } from '../inpod/socket-factory.ts';
import { canonicalIp } from '../../../src/shared/net/ip.ts';
import type { Workload } from '../state/types.ts';
import { workloadIdentity } from '../state/types.ts';
import { connectionLabels, type ResponseFlag } from '../telemetry/metrics.ts';
import { routeOutbound } from './route.ts';
import { hostPort, type ProxyContext } from './context.ts';

/** Maps an HBONE failure to the response flag of spec §7.1. */
export function responseFlagOf(err: unknown): ResponseFlag {
  if (!(err instanceof HboneError)) return 'CONNECT';
  switch (err.code) {
    case 'HBONE_ERR_UNAUTHORIZED':
      return 'DENY';
    case 'HBONE_ERR_TLS':
    case 'HBONE_ERR_HANDSHAKE_TIMEOUT':
      return 'TLS_FAILURE';
    case 'HBONE_ERR_PEER_IDENTITY':
      return 'IDENTITY_ERROR';
    case 'HBONE_ERR_PEER_REVOKED':
      return 'CERT_REVOKED';
    case 'HBONE_ERR_CONNECT_TIMEOUT':
      return 'NETWORK_POLICY';
    case 'HBONE_ERR_ABORTED':
    case 'HBONE_ERR_BAD_REQUEST':
    case 'HBONE_ERR_CERTIFICATE':
    case 'HBONE_ERR_CLOSED':
    case 'HBONE_ERR_CONFIG':
    case 'HBONE_ERR_CONNECT_FAILED':
    case 'HBONE_ERR_PING_TIMEOUT':
    case 'HBONE_ERR_SESSION_CLOSED':
    case 'HBONE_ERR_STATUS':
    case 'HBONE_ERR_STREAM_RESET':
    case 'HBONE_ERR_UNAVAILABLE':
      return 'CONNECT';
  }
}

/** A W3C traceparent for the CONNECT (spec §1.3): random trace and parent ids, not sampled. */
function traceparent(): string {
  const b = randomBytes(24).toString('hex');
  return `00-${b.slice(0, 32)}-${b.slice(32, 48)}-00`;
}

/** The `baggage` header describing the source workload (spec §1.3), empty values omitted. */
function baggage(w: Workload): string {
  const parts: string[] = [];
  const add = (k: string, v: string): void => {
    if (v !== '') parts.push(`${k}=${v}`);
  };
  add('k8s.cluster.name', w.clusterId);
  add('k8s.namespace.name', w.namespace);
  add(
    `k8s.${w.workloadType === 'POD' ? 'pod' : w.workloadType.toLowerCase()}.name`,
    w.workloadName || w.name,
  );
  add('service.name', w.canonicalName);
  add('service.version', w.canonicalRevision);
  return parts.join(',');
}

export interface OutboundDeps {
  readonly ctx: ProxyContext;
  readonly sockets: SocketFactory;
  readonly client: HboneClient;
  /**
   * Resolves once the pod's certificate is there (waiting a bounded time for the fetch in
   * flight); rejects when there is none to be had. Awaited before any HBONE connection.
   */
  awaitCertificate(): Promise<unknown>;
  /** The pod's own workload, waiting briefly for WDS if it has not arrived yet. */
  localWorkload(): Promise<Workload | undefined>;
  readonly track: (s: Duplex) => void;
}

export async function handleOutbound(deps: OutboundDeps, socket: net.Socket): Promise<void> {
  const { ctx } = deps;
  const started = performance.now();
  const srcAddr = hostPort(socket.remoteAddress, socket.remotePort);
  let dst: { address: string; port: number };
  try {
    dst = deps.sockets.originalDst(socket);
  } catch (err) {
    ctx.accessLog.failed({ direction: 'outbound', srcAddr, dstAddr: 'unknown', error: errorMessage(err) });
    socket.destroy();
    return;
  }
  const dstAddr = hostPort(dst.address, dst.port);
  const source = await deps.localWorkload();
  if (source === undefined) {
    // Fail closed (checklist I.99, istio#42610): never fall back to passthrough because our own
    // workload is unknown — that is exactly the restart bug that sent mesh traffic in plaintext.
    ctx.accessLog.failed({
      direction: 'outbound',
      srcAddr,
      dstAddr,
      error: 'local workload unknown (no WDS entry yet)',
    });
    socket.resetAndDestroy();
    return;
  }
  const route = routeOutbound(ctx.store, {
    source,
    origDst: { ip: canonicalIp(dst.address) ?? dst.address, port: dst.port },
    network: ctx.network,
  });
  const srcPrincipal = workloadIdentity(source);
  // Who made the connection, on every line about it: a refusal that names only addresses cannot
  // be traced to a workload once the pod is gone.
  const src = { srcWorkload: source.name, srcNamespace: source.namespace, srcIdentity: srcPrincipal };

  if (route.kind === 'refuse') {
    ctx.metrics.connectionRefused(
      connectionLabels({ reporter: 'source', source, sourcePrincipal: srcPrincipal, mutualTls: false }),
      'CONNECT',
    );
    ctx.accessLog.failed({ direction: 'outbound', srcAddr, dstAddr, ...src, error: route.reason });
    socket.resetAndDestroy();
    return;
  }

  if (route.kind === 'passthrough' || route.kind === 'plaintext') {
    const destination = route.kind === 'plaintext' ? route.destinationWorkload : undefined;
    const service = route.kind === 'plaintext' ? route.service : undefined;
    const done = ctx.metrics.connectionOpened(
      connectionLabels({
        reporter: 'source',
        source,
        sourcePrincipal: srcPrincipal,
        destination,
        destinationService: service,
        mutualTls: false,
      }),
    );
    let upstream: net.Socket;
    try {
      upstream = await deps.sockets.connect({
        host: route.ip,
        port: route.port,
        timeoutMs: ctx.connectTimeoutMs,
      });
    } catch (err) {
      done({ flag: 'CONNECT', bytesFromClient: 0, bytesToClient: 0 });
      ctx.accessLog.failed({
        direction: 'outbound',
        srcAddr,
        dstAddr,
        ...src,
        dstWorkload: destination?.name,
        dstNamespace: destination?.namespace,
        error: errorMessage(err),
      });
      socket.resetAndDestroy();
      return;
    }
    deps.track(upstream);
    const r = await relay(socket, upstream);
    done({ flag: '-', bytesFromClient: r.bytesAToB, bytesToClient: r.bytesBToA });
    ctx.accessLog.complete({
      direction: 'outbound',
      srcAddr,
      dstAddr: hostPort(route.ip, route.port),
      srcWorkload: source.name,
      srcNamespace: source.namespace,
      dstWorkload: destination?.name,
      dstNamespace: destination?.namespace,
      dstService: service?.hostname,
      bytesSent: r.bytesAToB,
      bytesRecv: r.bytesBToA,
      durationMs: performance.now() - started,
      error: r.error === undefined ? undefined : errorMessage(r.error),
    });
    return;
  }

  // HBONE: identity-checked tunnel to the destination pod's 15008 (or its waypoint).
  const destination = route.destinationWorkload;
  const labels = connectionLabels({
    reporter: 'source',
    source,
    sourcePrincipal: srcPrincipal,
    destination,
    destinationPrincipal: workloadIdentity(destination),
    destinationService: route.service,
    mutualTls: true,
  });
  const done = ctx.metrics.connectionOpened(labels);
  const headers: Record<string, string> = {
    forwarded: `for="${srcAddr}"${route.service ? `;host=${route.service.hostname}` : ''}`,
    traceparent: traceparent(),
  };
  const bag = baggage(source);
  if (bag !== '') headers.baggage = bag;
  const peerAddr = hostPort(route.peer.ip, route.peer.port);
  let tunnel;
  try {
    // Not a byte leaves before our certificate is here: a connection made while it is still
    // being fetched waits for it, and is reset if it cannot be had (never sent in plaintext).
    await deps.awaitCertificate();
    tunnel = await deps.client.connect({
      peer: { host: route.peer.ip, port: route.peer.port },
      authority: route.authority,
      expectedIdentities: route.expectedIdentities,
      sourceIp: socket.remoteAddress,
      headers,
    });
  } catch (err) {
    done({ flag: responseFlagOf(err), bytesFromClient: 0, bytesToClient: 0 });
    ctx.accessLog.complete({
      direction: 'outbound',
      srcAddr,
      dstAddr: peerAddr,
      dstHboneAddr: route.authority,
      srcWorkload: source.name,
      srcNamespace: source.namespace,
      srcIdentity: srcPrincipal,
      dstWorkload: destination.name,
      dstNamespace: destination.namespace,
      dstService: route.service?.hostname,
      bytesSent: 0,
      bytesRecv: 0,
      durationMs: performance.now() - started,
      error: errorMessage(err),
    });
    socket.resetAndDestroy();
    return;
  }
  deps.track(tunnel.stream);
  const r = await relay(socket, tunnel.stream);
  done({ flag: '-', bytesFromClient: r.bytesAToB, bytesToClient: r.bytesBToA });
  ctx.accessLog.complete({
    direction: 'outbound',
    srcAddr,
    dstAddr: peerAddr,
    dstHboneAddr: route.authority,
    srcWorkload: source.name,
    srcNamespace: source.namespace,
    srcIdentity: srcPrincipal,
    dstWorkload: destination.name,
    dstNamespace: destination.namespace,
    dstIdentity: tunnel.peer.id.uri,
    dstService: route.service?.hostname,
    bytesSent: r.bytesAToB,
    bytesRecv: r.bytesBToA,
    durationMs: performance.now() - started,
    error: r.error === undefined ? undefined : errorMessage(r.error),
  });
}

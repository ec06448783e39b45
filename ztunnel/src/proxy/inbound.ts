// SPDX-License-Identifier: Apache-2.0
// Inbound HBONE (15008, spec §1.7): the HBONE server has verified the peer's certificate; here we
// validate the CONNECT authority (checklist A.4–A.7), authorize with L4 RBAC (spec §3.8) using the
// verified identity and the tunnel's TCP peer (never a header: C.51), and only then dial the app —
// from the original client's IP (IP_TRANSPARENT), so the app sees the real source. The connection
// stays registered with ctx.authorized, which resets it if a policy change denies it (C.49).
import type { Duplex } from 'node:stream';
import type { InboundConnect, InboundDecision } from '../../../src/shared/hbone/server.ts';
import { parseAuthority } from '../../../src/shared/hbone/authority.ts';
import { resetDuplex } from '../../../src/shared/hbone/relay.ts';
import { errorMessage } from '../../../src/shared/errors.ts';
import { parseIstioIdentity, type IstioIdentity } from '../../../src/shared/identity/spiffe.ts';
import type { SocketFactory } from '../inpod/socket-factory.ts';
import { evaluate } from '../rbac/rbac.ts';
import { canonicalIp } from '../../../src/shared/net/ip.ts';
import type { Workload } from '../state/types.ts';
import { workloadIdentity } from '../state/types.ts';
import { connectionLabels, type ConnectionRecorder } from '../telemetry/metrics.ts';
import { hostPort, type ProxyContext } from './context.ts';
import { validateInbound } from './inbound-validate.ts';

export interface InboundDeps {
  readonly ctx: ProxyContext;
  readonly sockets: SocketFactory;
  localWorkload(): Promise<Workload | undefined>;
  readonly track: (s: Duplex) => void;
}

interface Accepted {
  readonly started: number;
  readonly done: ConnectionRecorder;
  readonly local: Workload;
  readonly source: Workload | undefined;
  readonly upstream: string;
  readonly unregister: () => void;
  /** Set when a policy change closed the connection (the access log's error). */
  lateRejection?: string;
}

/** Inbound HBONE handling for one pod: `onConnect` and `onTunnelClosed` for its HboneServer. */
export class InboundHandler {
  readonly #deps: InboundDeps;
  readonly #accepted = new WeakMap<InboundConnect, Accepted>();

  constructor(deps: InboundDeps) {
    this.#deps = deps;
  }

  readonly onConnect = async (req: InboundConnect): Promise<InboundDecision> => {
    const { ctx } = this.#deps;
    const started = performance.now();
    const srcAddr = hostPort(req.remoteAddress, req.remotePort);
    const refuse = (status: 400 | 401 | 503, reason: string, local?: Workload): InboundDecision => {
      const dstIdentity = local ? workloadIdentity(local) : undefined;
      ctx.metrics.connectionRefused(
        connectionLabels({
          reporter: 'destination',
          sourcePrincipal: req.peer.id.uri,
          destination: local,
          destinationPrincipal: dstIdentity,
          mutualTls: true,
        }),
        status === 401 ? 'DENY' : 'CONNECT',
      );
      ctx.accessLog.failed({
        direction: 'inbound',
        srcAddr,
        dstAddr: req.authority,
        error: reason,
        srcIdentity: req.peer.id.uri,
        dstWorkload: local?.name,
        dstNamespace: local?.namespace,
        dstIdentity,
      });
      return { status, reason };
    };

    // Memory pressure: a new tunnel on a session that already exists is refused as well (F.80).
    // No access-log line or traffic series each: shedding must cost next to nothing (decision 24).
    if (ctx.overload.shedding) {
      ctx.overload.noteShed();
      ctx.metrics.overloadShed.inc({ listener: 'inbound' });
      return { status: 503, reason: 'ztunnel is refusing new connections: its memory use is near its limit' };
    }

    let authority;
    try {
      authority = parseAuthority(req.authority);
    } catch (err) {
      return refuse(400, errorMessage(err));
    }
    const local = await this.#deps.localWorkload();
    const landed = canonicalIp(req.localAddress) ?? req.localAddress;
    const v = validateInbound({ authority, landedIp: landed, localWorkload: local, store: ctx.store });
    if (!v.ok) return refuse(v.status, v.reason, local);
    if (local === undefined) return refuse(503, 'local workload unknown');

    // RBAC with the identity from the verified certificate. A SPIFFE ID outside the Istio form
    // carries no namespace/service account: it can still match principals, never namespaces.
    let srcIdentity: IstioIdentity | undefined;
    try {
      srcIdentity = parseIstioIdentity(req.peer.id.uri);
    } catch {
      srcIdentity = undefined;
    }
    const srcIp = canonicalIp(req.remoteAddress) ?? req.remoteAddress;
    const { policies, missing } = ctx.store.policiesFor(local);
    const decision = evaluate({
      policies,
      missing,
      conn: { srcIdentity, srcIp, dstIp: v.upstream.ip, dstPort: v.upstream.port },
    });
    if (!decision.allowed)
      return refuse(401, `connection rejected by authorization policy: ${decision.reason}`, local);

    // Only now dial the app (checklist A.13: no upstream dial before authz).
    const upstreamAddr = hostPort(v.upstream.ip, v.upstream.port);
    let upstream;
    try {
      upstream = await this.#deps.sockets.connect({
        host: v.upstream.ip,
        port: v.upstream.port,
        localAddress: srcIp,
        transparent: true,
        timeoutMs: ctx.connectTimeoutMs,
      });
    } catch (err) {
      return refuse(503, `cannot connect to the application at ${upstreamAddr}: ${errorMessage(err)}`, local);
    }
    this.#deps.track(upstream);
    const source = ctx.store.workloadByIp(ctx.network, srcIp);
    const done = ctx.metrics.connectionOpened(
      connectionLabels({
        reporter: 'destination',
        source,
        sourcePrincipal: req.peer.id.uri,
        destination: local,
        destinationPrincipal: workloadIdentity(local),
        destinationService: v.service,
        mutualTls: true,
      }),
    );
    const accepted: Accepted = {
      started,
      done,
      local,
      source,
      upstream: upstreamAddr,
      unregister: ctx.authorized.add({
        workloadUid: local.uid,
        conn: { srcIdentity, srcIp, dstIp: v.upstream.ip, dstPort: v.upstream.port },
        close: (reason) => {
          accepted.lateRejection = reason;
          // The relay turns the app side's reset into RST_STREAM for the client. resetDuplex,
          // not resetAndDestroy: after a half-close libuv refuses the RST close.
          resetDuplex(upstream);
        },
      }),
    };
    this.#accepted.set(req, accepted);
    return { status: 200, upstream };
  };

  readonly onTunnelClosed = (
    req: InboundConnect,
    r: { bytesIn: number; bytesOut: number; error?: Error },
  ): void => {
    const a = this.#accepted.get(req);
    if (a === undefined) return;
    this.#accepted.delete(req);
    a.unregister();
    a.done({ flag: '-', bytesFromClient: r.bytesIn, bytesToClient: r.bytesOut });
    this.#deps.ctx.accessLog.complete({
      direction: 'inbound',
      srcAddr: hostPort(req.remoteAddress, req.remotePort),
      dstAddr: a.upstream,
      dstHboneAddr: req.authority,
      srcWorkload: a.source?.name,
      srcNamespace: a.source?.namespace,
      srcIdentity: req.peer.id.uri,
      dstWorkload: a.local.name,
      dstNamespace: a.local.namespace,
      dstIdentity: workloadIdentity(a.local),
      bytesSent: r.bytesOut,
      bytesRecv: r.bytesIn,
      durationMs: performance.now() - a.started,
      error: a.lateRejection ?? (r.error === undefined ? undefined : errorMessage(r.error)),
    });
  };
}

// SPDX-License-Identifier: Apache-2.0
// ztunnel's outbound decision procedure (spec ambient-protocols §1.6, upstream
// src/proxy/outbound.rs `build_request`) as a pure function of the state store: given the source
// pod and the original destination from SO_ORIGINAL_DST, decide where the connection goes.
//
// Deliberately small for now:
// * waypoints: the single `waypoint` is used (`weightedWaypoints` is ignored); when it cannot be
//   resolved in the store we refuse rather than bypass it (fail closed);
// * multi-network (double-HBONE through a network gateway) is not implemented: endpoints on
//   another network are never chosen, and a service whose only endpoints are remote is refused
//   with a reason saying so;
// * workloads addressed only by hostname (DNS-resolved ServiceEntries) are never chosen.
import { PORTS } from '../ports.ts';
import {
  canonicalIp,
  formatHostPort,
  formatIp,
  isLoopback,
  parseIp,
  unmapIp,
} from '../../../src/shared/net/ip.ts';
import type { StateStore } from '../state/store.ts';
import type { GatewayAddress, LoadBalancingScope, Port, Service, Workload } from '../state/types.ts';
import { DEFAULT_HBONE_MTLS_PORT, serviceKey, workloadIdentity } from '../state/types.ts';

/**
 * Ports ztunnel itself listens on inside a pod (spec §1.1): 15001 outbound, 15006 inbound
 * plaintext, 15008 HBONE, 15080 SOCKS5. An outbound connection to one of them on loopback (or
 * on the pod's own IP) would loop back into ztunnel: a self-call, refused.
 */
export const OUTBOUND_SELF_CALL_PORTS: ReadonlySet<number> = new Set([
  PORTS.outbound,
  PORTS.inboundPlaintext,
  PORTS.hbone,
  PORTS.socks5,
]);

export type OutboundRoute =
  | {
      kind: 'hbone';
      /** The HBONE peer to dial (workload or waypoint IP, port 15008). */
      peer: { ip: string; port: number };
      /** The CONNECT `:authority`: `ip:targetPort`, or the original `vip:port` via a waypoint. */
      authority: string;
      /** SANs the peer's certificate must carry one of (spec §1.2). */
      expectedIdentities: string[];
      /** The workload dialled: the destination pod, or the waypoint pod. */
      destinationWorkload: Workload;
      service?: Service | undefined;
      /** Set when the peer is a waypoint rather than the destination itself. */
      waypoint?: boolean | undefined;
    }
  | { kind: 'plaintext'; ip: string; port: number; destinationWorkload?: Workload; service?: Service }
  | { kind: 'passthrough'; ip: string; port: number }
  | { kind: 'refuse'; reason: string };

/** Picks one endpoint among candidates (all eligible); injectable so tests are deterministic. */
export type EndpointChooser = (candidates: readonly Workload[]) => Workload;

export interface OutboundRequest {
  source: Workload;
  origDst: { ip: string; port: number };
  /** Network to resolve the destination on; defaults to the source's network. */
  network?: string;
  hboneMtlsPort?: number;
  chooser?: EndpointChooser;
}

/** Weighted random choice by `capacity` (spec §3.5 field 27); capacity 0 is never chosen if others exist. */
export const randomChooser: EndpointChooser = (candidates) => {
  const total = candidates.reduce((sum, w) => sum + Math.max(0, w.capacity), 0);
  if (total <= 0)
    return candidates[Math.floor(Math.random() * candidates.length)] ?? (candidates[0] as Workload);
  let r = Math.random() * total;
  for (const w of candidates) {
    r -= Math.max(0, w.capacity);
    if (r < 0) return w;
  }
  return candidates[candidates.length - 1] as Workload;
};

/** A round-robin chooser with its own counter (one per proxy, or per test). */
export function roundRobinChooser(): EndpointChooser {
  let next = 0;
  return (candidates) => {
    const w = candidates[next % candidates.length] as Workload;
    next++;
    return w;
  };
}

/** The workload's address in the same family as `preferLike`, else its first address. */
function pickAddress(w: Workload, preferLike: string): string | undefined {
  const v6 = preferLike.includes(':');
  return w.addresses.find((a) => a.includes(':') === v6) ?? w.addresses[0];
}

/** Whether `scope` is shared between the source and an endpoint (for locality routing). */
function sameScope(scope: LoadBalancingScope, src: Workload, ep: Workload): boolean {
  switch (scope) {
    case 'REGION':
      return (src.locality?.region ?? '') === (ep.locality?.region ?? '');
    case 'ZONE':
      return (src.locality?.zone ?? '') === (ep.locality?.zone ?? '');
    case 'SUBZONE':
      return (src.locality?.subzone ?? '') === (ep.locality?.subzone ?? '');
    case 'NODE':
      return src.node === ep.node;
    case 'CLUSTER':
      return src.clusterId === ep.clusterId;
    case 'NETWORK':
      return src.network === ep.network;
    case 'UNSPECIFIED_SCOPE':
      return true;
  }
}

/**
 * Applies `loadBalancing` routing preferences (spec §3.5): STRICT keeps only endpoints that
 * share every listed scope with the source; FAILOVER keeps those sharing the longest prefix of
 * the list (so the closest tier that has endpoints wins).
 */
function applyLocality(svc: Service, src: Workload, eps: Workload[]): Workload[] {
  const lb = svc.loadBalancing;
  if (lb === undefined || lb.routingPreference.length === 0) return eps;
  const rank = (ep: Workload): number => {
    let n = 0;
    for (const s of lb.routingPreference) {
      if (!sameScope(s, src, ep)) break;
      n++;
    }
    return n;
  };
  if (lb.mode === 'STRICT') return eps.filter((ep) => rank(ep) === lb.routingPreference.length);
  if (lb.mode === 'FAILOVER') {
    const best = Math.max(...eps.map(rank));
    return eps.filter((ep) => rank(ep) === best);
  }
  return eps;
}

/** The target port for `servicePort` on `w` (spec §1.6 step 7); undefined when unmapped. */
export function targetPortFor(svc: Service, w: Workload, servicePort: number): number | undefined {
  const perWorkload = w.services[serviceKey(svc)]?.find((p: Port) => p.servicePort === servicePort);
  if (perWorkload !== undefined && perWorkload.targetPort !== 0) return perWorkload.targetPort;
  const sp = svc.ports.find((p) => p.servicePort === servicePort);
  if (sp === undefined) return undefined;
  // targetPort 0 = same as the service port (a named target port with no per-workload mapping).
  return sp.targetPort === 0 ? servicePort : sp.targetPort;
}

interface EndpointPick {
  workload?: Workload;
  /** Why nothing was picked, when nothing was. */
  why?: string;
}

function pickEndpoint(
  store: StateStore,
  svc: Service,
  source: Workload,
  network: string,
  chooser: EndpointChooser,
): EndpointPick {
  const allowUnhealthy = svc.loadBalancing?.healthPolicy === 'ALLOW_ALL';
  const all = store
    .endpointsFor(svc)
    .filter((w) => w.addresses.length > 0 && (allowUnhealthy || w.status === 'HEALTHY'));
  const local = all.filter((w) => w.network === network);
  if (local.length === 0) {
    if (all.length > 0) {
      return {
        why: `service ${serviceKey(svc)} has endpoints only on other networks; multi-network (double-HBONE) is not supported yet`,
      };
    }
    return { why: `no healthy upstream for service ${serviceKey(svc)}` };
  }
  const weighted = local.filter((w) => w.capacity > 0);
  const eligible = applyLocality(svc, source, weighted.length > 0 ? weighted : local);
  if (eligible.length === 0) {
    return { why: `no healthy upstream for service ${serviceKey(svc)} within its load-balancing scope` };
  }
  return { workload: chooser(eligible) };
}

function describeGateway(gw: GatewayAddress): string {
  return 'hostname' in gw
    ? `${gw.hostname.namespace}/${gw.hostname.hostname}`
    : `${gw.address.network}/${gw.address.address}`;
}

/** Resolves a waypoint reference to one workload (spec §1.6 step 2): hostname → service → endpoint, or an address. */
function resolveGateway(
  store: StateStore,
  gw: GatewayAddress,
  source: Workload,
  network: string,
  chooser: EndpointChooser,
): Workload | undefined {
  if ('hostname' in gw) {
    const svc = store.serviceByHostname(gw.hostname.namespace, gw.hostname.hostname);
    if (svc === undefined) return undefined;
    return pickEndpoint(store, svc, source, network, chooser).workload;
  }
  const byIp = store.workloadByIp(gw.address.network, gw.address.address);
  if (byIp !== undefined) return byIp;
  const svc = store.serviceByVip(gw.address.network, gw.address.address);
  return svc === undefined ? undefined : pickEndpoint(store, svc, source, network, chooser).workload;
}

/**
 * True when `source` is (one replica of) the waypoint `gw`: the waypoint's own traffic to the
 * destination must not be sent back to the waypoint (spec §1.6 step 5).
 */
function sourceIsGateway(store: StateStore, gw: GatewayAddress, source: Workload): boolean {
  if ('hostname' in gw) {
    const svc = store.serviceByHostname(gw.hostname.namespace, gw.hostname.hostname);
    return svc !== undefined && store.endpointsFor(svc).some((w) => w.uid === source.uid);
  }
  if (store.workloadByIp(gw.address.network, gw.address.address)?.uid === source.uid) return true;
  const svc = store.serviceByVip(gw.address.network, gw.address.address);
  return svc !== undefined && store.endpointsFor(svc).some((w) => w.uid === source.uid);
}

function viaWaypoint(
  store: StateStore,
  gw: GatewayAddress,
  req: Required<Pick<OutboundRequest, 'source' | 'origDst'>> & {
    network: string;
    hboneMtlsPort: number;
    chooser: EndpointChooser;
  },
  what: string,
  service: Service | undefined,
): OutboundRoute | 'self' {
  if (sourceIsGateway(store, gw, req.source)) return 'self';
  const wp = resolveGateway(store, gw, req.source, req.network, req.chooser);
  if (wp === undefined) {
    return {
      kind: 'refuse',
      reason: `waypoint ${describeGateway(gw)} of ${what} is not known to this ztunnel yet; refusing rather than bypassing it`,
    };
  }
  if (wp.network !== req.network) {
    return {
      kind: 'refuse',
      reason: `waypoint ${describeGateway(gw)} of ${what} is on network ${JSON.stringify(wp.network)}; multi-network (double-HBONE) is not supported yet`,
    };
  }
  const ip = pickAddress(wp, req.origDst.ip);
  if (ip === undefined) return { kind: 'refuse', reason: `waypoint ${describeGateway(gw)} has no address` };
  return {
    kind: 'hbone',
    // ztunnel dials the local HBONE constant (spec §1.6 step 6); a port in the GatewayAddress
    // is only honoured when istiod set a non-zero one.
    peer: { ip, port: gw.hboneMtlsPort > 0 ? gw.hboneMtlsPort : req.hboneMtlsPort },
    authority: formatHostPort(req.origDst.ip, req.origDst.port),
    expectedIdentities: [workloadIdentity(wp)],
    destinationWorkload: wp,
    service,
    waypoint: true,
  };
}

function direct(
  w: Workload,
  ip: string,
  port: number,
  hboneMtlsPort: number,
  service: Service | undefined,
): OutboundRoute {
  if (w.tunnelProtocol === 'HBONE') {
    const sans = [workloadIdentity(w), ...(service?.subjectAltNames ?? [])];
    return {
      kind: 'hbone',
      peer: { ip, port: hboneMtlsPort },
      authority: formatHostPort(ip, port),
      expectedIdentities: [...new Set(sans)],
      destinationWorkload: w,
      service,
    };
  }
  return service === undefined
    ? { kind: 'plaintext', ip, port, destinationWorkload: w }
    : { kind: 'plaintext', ip, port, destinationWorkload: w, service };
}

/** Decides where an outbound connection goes (spec §1.6). Pure: reads the store only. */
export function routeOutbound(store: StateStore, req: OutboundRequest): OutboundRoute {
  const { source } = req;
  const network = req.network ?? source.network;
  const hboneMtlsPort = req.hboneMtlsPort ?? DEFAULT_HBONE_MTLS_PORT;
  const chooser = req.chooser ?? randomChooser;
  const parsed = parseIp(req.origDst.ip);
  if (parsed === undefined) {
    return { kind: 'refuse', reason: `original destination ${req.origDst.ip} is not an IP address` };
  }
  // Canonical form (IPv4-mapped → IPv4), so authorities and returned addresses are stable.
  const origDst = { ip: formatIp(unmapIp(parsed)), port: req.origDst.port };

  // 1. Self-call: ztunnel's own listeners reached through loopback or the pod's own IP.
  if (OUTBOUND_SELF_CALL_PORTS.has(origDst.port)) {
    const own = source.addresses.some((a) => canonicalIp(a) === origDst.ip);
    if (isLoopback(parsed) || own) {
      return {
        kind: 'refuse',
        reason: `refusing self-call to ztunnel port ${origDst.port} on ${origDst.ip}: this port belongs to the proxy, not the application`,
      };
    }
  }
  const ctx = { source, origDst, network, hboneMtlsPort, chooser };

  // 2. Service VIP, preferring the source's namespace when VIPs collide.
  const svc = store.serviceByVip(network, origDst.ip, source.namespace);
  if (svc !== undefined) {
    if (svc.waypoint !== undefined) {
      const r = viaWaypoint(store, svc.waypoint, ctx, `service ${serviceKey(svc)}`, svc);
      if (r !== 'self') return r;
    }
    if (!svc.ports.some((p) => p.servicePort === origDst.port)) {
      return {
        kind: 'refuse',
        reason: `service ${serviceKey(svc)} has no port ${origDst.port} (ports: ${svc.ports.map((p) => p.servicePort).join(', ') || 'none'})`,
      };
    }
    // 3. Upstream selection among the service's endpoints.
    const pick = pickEndpoint(store, svc, source, network, chooser);
    if (pick.workload === undefined) {
      if (svc.loadBalancing?.mode === 'PASSTHROUGH')
        return { kind: 'passthrough', ip: origDst.ip, port: origDst.port };
      return { kind: 'refuse', reason: pick.why ?? `no healthy upstream for service ${serviceKey(svc)}` };
    }
    const w = pick.workload;
    const ip = pickAddress(w, origDst.ip);
    const targetPort = targetPortFor(svc, w, origDst.port);
    if (ip === undefined || targetPort === undefined) {
      return {
        kind: 'refuse',
        reason: `endpoint ${w.uid} of service ${serviceKey(svc)} has no address or port`,
      };
    }
    // Service-addressed traffic never uses the workload's own waypoint (spec §1.6 step 5).
    return direct(w, ip, targetPort, hboneMtlsPort, svc);
  }

  // 3b. A workload IP.
  const w = store.workloadByIp(network, origDst.ip);
  if (w !== undefined) {
    // 5. Workload waypoint, unless the source is that waypoint.
    if (w.waypoint !== undefined) {
      const r = viaWaypoint(store, w.waypoint, ctx, `workload ${w.uid}`, undefined);
      if (r !== 'self') return r;
    }
    // 6. Direct: the port dialled is the target port.
    return direct(w, origDst.ip, origDst.port, hboneMtlsPort, undefined);
  }

  // 6. Unknown to WDS: passthrough as plain TCP to the original destination.
  return { kind: 'passthrough', ip: origDst.ip, port: origDst.port };
}

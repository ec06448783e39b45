// SPDX-License-Identifier: Apache-2.0
// Validation of an inbound HBONE CONNECT target (spec ambient-protocols §1.3 status codes, §1.7
// steps 2–3; checklist A.4–A.7), as a pure function: which upstream the stream may be connected
// to, or which status to answer with. Runs after the authority was parsed and before RBAC and
// before any dial.
//
// The invariant this protects (checklist A.6): the inbound path only ever dials the destination
// pod's own IP. A peer may name the pod IP (the IP the TLS connection landed on) or, in the
// hostname form, a service this pod backs; never loopback, the node, link-local (cloud metadata
// 169.254.169.254) or multicast, and never one of ztunnel's own ports.
import type { Authority } from '../../../src/shared/hbone/authority.ts';
import { SELF_PORTS } from '../ports.ts';
import {
  canonicalIp,
  formatIp,
  isLinkLocal,
  isLoopback,
  isMulticastOrBroadcast,
  isUnspecified,
  parseIp,
  unmapIp,
} from '../../../src/shared/net/ip.ts';
import type { StateStore } from '../state/store.ts';
import type { Service, Workload } from '../state/types.ts';
import { serviceKey } from '../state/types.ts';
import { targetPortFor } from './route.ts';

/** The parsed `:authority` (spec §1.3), from the shared HBONE parser. */
export type { Authority };

export interface InboundRequest {
  authority: Authority;
  /** The local address the TLS connection arrived on (the pod IP the peer dialled). */
  landedIp: string;
  /** The workload this in-pod proxy serves; undefined until WDS has sent it. */
  localWorkload: Workload | undefined;
  store: StateStore;
}

export type InboundValidation =
  | { ok: true; upstream: { ip: string; port: number }; service?: Service }
  | { ok: false; status: 400 | 503; reason: string };

function refuse(status: 400 | 503, reason: string): InboundValidation {
  return { ok: false, status, reason };
}

function selfPortReason(port: number): string {
  return `port ${port} is one of ztunnel's own ports (${[...SELF_PORTS].join(', ')}); refusing self-call`;
}

/** Which forbidden class an address belongs to, if any (checklist A.6). */
function forbiddenClass(ip: string): string | undefined {
  const a = parseIp(ip);
  if (a === undefined) return 'not an IP address';
  if (isLoopback(a)) return 'loopback';
  if (isUnspecified(a)) return 'unspecified';
  if (isLinkLocal(a)) return 'link-local (includes cloud metadata endpoints)';
  if (isMulticastOrBroadcast(a)) return 'multicast or broadcast';
  return undefined;
}

/**
 * TODO(waypoints): a waypoint's ztunnel accepts an authority IP other than its own when this pod
 * is the waypoint of the target (spec §1.8, upstream `validate_destination`). Until waypoints
 * land, nothing is accepted this way.
 */
function isWaypointFor(_store: StateStore, _local: Workload, _targetIp: string): boolean {
  return false;
}

/** The local workload's own IP to dial: the landed IP when it is one of ours, else the first of ours. */
function ownUpstreamIp(local: Workload, landed: string | undefined): string | undefined {
  if (landed !== undefined && local.addresses.some((a) => canonicalIp(a) === landed)) return landed;
  const first = local.addresses[0];
  return first === undefined ? undefined : (canonicalIp(first) ?? first);
}

export function validateInbound(req: InboundRequest): InboundValidation {
  const { authority, localWorkload: local, store } = req;
  if (local === undefined) {
    return refuse(
      503,
      'local workload unknown: this ztunnel has not received the destination pod from WDS yet',
    );
  }
  if (!Number.isInteger(authority.port) || authority.port < 1 || authority.port > 65535) {
    return refuse(400, `invalid port ${authority.port} in authority`);
  }
  const landedParsed = parseIp(req.landedIp);
  const landed = landedParsed === undefined ? undefined : formatIp(unmapIp(landedParsed));

  if (authority.kind === 'ip') {
    const target = canonicalIp(authority.ip);
    const bad = forbiddenClass(authority.ip);
    if (target === undefined || bad !== undefined) {
      return refuse(400, `destination ${authority.ip} is ${bad ?? 'not an IP address'}; refusing`);
    }
    if (target !== landed && !isWaypointFor(store, local, target)) {
      return refuse(
        400,
        `ip mismatch: authority ${target} is not the address this connection arrived on (${landed ?? req.landedIp})`,
      );
    }
    if (!local.addresses.some((a) => canonicalIp(a) === target)) {
      return refuse(400, `ip mismatch: ${target} is not an address of local workload ${local.uid}`);
    }
    if (SELF_PORTS.has(authority.port)) return refuse(503, selfPortReason(authority.port));
    return { ok: true, upstream: { ip: target, port: authority.port } };
  }

  // Hostname form: a service this pod backs, looked up in our own namespace first, then any
  // service of that hostname that lists this workload as an endpoint. Never a DNS query
  // (checklist A.7).
  const host = authority.hostname;
  const candidates = [
    store.serviceByHostname(local.namespace, host),
    ...store.servicesByHostname(host).filter((s) => s.namespace !== local.namespace),
  ].filter((s): s is Service => s !== undefined && Object.hasOwn(local.services, serviceKey(s)));
  const svc = candidates[0];
  if (svc === undefined) {
    return refuse(503, `no service ${host} backed by local workload ${local.uid}`);
  }
  const targetPort = targetPortFor(svc, local, authority.port);
  if (targetPort === undefined) {
    return refuse(503, `no port mapping for ${host}:${authority.port} on local workload ${local.uid}`);
  }
  if (SELF_PORTS.has(targetPort)) return refuse(503, selfPortReason(targetPort));
  const ip = ownUpstreamIp(local, landed);
  if (ip === undefined) return refuse(503, `local workload ${local.uid} has no address`);
  return { ok: true, upstream: { ip, port: targetPort }, service: svc };
}

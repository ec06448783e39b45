// SPDX-License-Identifier: Apache-2.0
// ztunnel's well-known ports (spec §1.1). Kept identical to upstream so manifests, NetworkPolicies
// and dashboards carry over.

export const PORTS = {
  /** Outbound capture inside the pod netns (REDIRECT target). */
  outbound: 15001,
  /** Inbound plaintext capture inside the pod netns. */
  inboundPlaintext: 15006,
  /** Inbound HBONE (mTLS + HTTP/2 CONNECT); never redirected. */
  hbone: 15008,
  /** DNS proxy on the pod's loopback. */
  dns: 15053,
  /** Optional SOCKS5 outbound on the pod's loopback. */
  socks5: 15080,
  /** Admin (/config_dump), 127.0.0.1 only. */
  admin: 15000,
  /** Prometheus metrics. */
  metrics: 15020,
  /** Readiness (/healthz/ready). */
  readiness: 15021,
} as const;

/**
 * Ports a CONNECT or a redirected connection may never target: ztunnel's own listeners
 * (upstream's "illegal ports", a self-call) plus its admin, metrics and readiness ports, which a
 * peer must not reach through a tunnel (checklist A.5).
 */
export const SELF_PORTS: ReadonlySet<number> = new Set([
  PORTS.outbound,
  PORTS.inboundPlaintext,
  PORTS.hbone,
  PORTS.dns,
  PORTS.socks5,
  PORTS.admin,
  PORTS.metrics,
  PORTS.readiness,
]);

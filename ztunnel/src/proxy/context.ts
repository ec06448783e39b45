// SPDX-License-Identifier: Apache-2.0
// What every in-pod proxy shares: the state store, the certificate manager, telemetry and the
// HBONE settings. Built once in app.ts and handed to each WorkloadProxy.
import type { Logger } from '../../../src/shared/telemetry/logger.ts';
import type { CertificateManager } from '../../../src/shared/identity/cert-manager.ts';
import type { HboneSettings } from '../../../src/shared/hbone/settings.ts';
import type { StateStore } from '../state/store.ts';
import type { ZtunnelMetrics } from '../telemetry/metrics.ts';
import type { AccessLog } from '../telemetry/access-log.ts';
import type { AuthorizedConnections } from '../rbac/authorized-connections.ts';
import type { Revocations } from '../identity/revocation.ts';
import type { OverloadGuard } from './overload.ts';

export interface ProxyContext {
  readonly store: StateStore;
  readonly certs: CertificateManager;
  /** The CRLs in force (CRL_PATH), read at every HBONE handshake; empty without CRL_PATH. */
  readonly revocations: Revocations;
  /** Memory pressure: while it sheds, new connections are refused (checklist F.80). */
  readonly overload: OverloadGuard;
  readonly metrics: ZtunnelMetrics;
  readonly accessLog: AccessLog;
  /** Inbound connections RBAC allowed, decided again when policies change (C.49). */
  readonly authorized: AuthorizedConnections;
  readonly logger: Logger;
  readonly nodeName: string;
  readonly trustDomain: string;
  /** '' = the default network. */
  readonly network: string;
  readonly hbone: Partial<HboneSettings>;
  /** Upstream connect timeout (spec §1.3: 10 s). */
  readonly connectTimeoutMs: number;
  /** How long a connection waits for the pod's own workload to arrive from WDS (spec §1.3: 5 s). */
  readonly workloadWaitMs: number;
  /** How long a connection waits for the pod's certificate while it is being fetched. */
  readonly certificateWaitMs: number;
}

/** The ZDS WorkloadInfo of a pod (spec §2.6): how the proxy finds its own WDS workload. */
export interface PodInfo {
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

/** `host:port`, with brackets for IPv6. */
export function hostPort(ip: string | undefined, port: number | undefined): string {
  const h = ip ?? 'unknown';
  return `${h.includes(':') ? `[${h}]` : h}:${port ?? 0}`;
}

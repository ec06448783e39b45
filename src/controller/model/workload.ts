// SPDX-License-Identifier: Apache-2.0
// Pod → istio.workload.Workload (spec ambient-protocols §3.5), as istiod builds it
// (istio/istio pilot/pkg/serviceregistry/ambient/workloads.go): uid `<cluster>//Pod/<ns>/<name>`,
// addresses from status.podIPs, HBONE only once the node agent has annotated the pod
// `ambient.istio.io/redirection: enabled` (spec §2.1 step 3.4), trust domain and service account
// elided when default (§9.13), UNHEALTHY unless Ready and not being deleted, HOST_NETWORK for
// hostNetwork pods, and the per-service port mapping with named target ports resolved through
// the pod's own container ports.
//
// Pure: what the pod backs (services) and which policies it must list are computed by the model
// and passed in.
import type { V1Pod } from '@kubernetes/client-node';
import type { PortList, Workload } from '../../shared/gen/workload.ts';
import {
  AppProtocol,
  NetworkMode,
  TunnelProtocol,
  WorkloadStatus,
  WorkloadType,
} from '../../shared/gen/workload.ts';
import { parseIpBytes } from './ip.ts';
import type { ResolvedModelOptions } from './options.ts';
import {
  ANNOTATION_REDIRECTION,
  ELIDED_SERVICE_ACCOUNT,
  ELIDED_TRUST_DOMAIN,
  LABEL_TUNNEL,
  isPortNumber,
} from './options.ts';
import type { ServicePortSpec } from './service.ts';
import { podIps } from '../../shared/kube/pod-ips.ts';

/** A service a pod is an endpoint of. */
export interface BackedService {
  /** `<namespace>/<hostname>`. */
  readonly key: string;
  readonly ports: readonly ServicePortSpec[];
}

export interface WorkloadContext {
  readonly services: readonly BackedService[];
  /** Keys of the selector-scoped and synthetic policies that apply (spec §3.5 field 16). */
  readonly authorizationPolicies: readonly string[];
}

export interface PodTranslation {
  /** undefined: no workload (terminal pod, no IP yet, or unusable IPs; see warnings). */
  readonly workload: Workload | undefined;
  readonly warnings: readonly string[];
}

export function podUid(clusterId: string, namespace: string, name: string): string {
  return `${clusterId}//Pod/${namespace}/${name}`;
}

/** Succeeded or Failed: no longer a workload, and holds no identity. */
export function isTerminal(pod: V1Pod): boolean {
  const phase = pod.status?.phase;
  return phase === 'Succeeded' || phase === 'Failed';
}

/** The pod's service account as Kubernetes defaults it. */
export function podServiceAccount(pod: V1Pod): string {
  return pod.spec?.serviceAccountName ?? pod.spec?.serviceAccount ?? ELIDED_SERVICE_ACCOUNT;
}

/** deletionTimestamp set (a raw watch may carry it as null when it is not). */
function isBeingDeleted(pod: V1Pod): boolean {
  const ts: unknown = pod.metadata?.deletionTimestamp;
  return ts !== undefined && ts !== null;
}

function isReady(pod: V1Pod): boolean {
  return (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

const CRONJOB_JOB = /^(.+)-\d{8,10}$/;

/**
 * The owning workload's name, by istiod's heuristics (GetDeployMetaFromPod): a generated pod's
 * controlling ReplicaSet minus its pod-template-hash (the Deployment), a Job with a timestamp
 * suffix minus it (the CronJob), otherwise the controller's name; the pod name when there is none.
 */
export function workloadName(pod: V1Pod): string {
  const meta = pod.metadata ?? {};
  const name = meta.name ?? '';
  if ((meta.generateName ?? '') === '') return name;
  const controller = (meta.ownerReferences ?? []).find((r) => r.controller === true);
  if (controller === undefined) return name;
  const hash = meta.labels?.['pod-template-hash'] ?? '';
  if (controller.kind === 'ReplicaSet' && hash !== '' && controller.name.endsWith(`-${hash}`)) {
    return controller.name.slice(0, -(hash.length + 1));
  }
  if (controller.kind === 'Job') return CRONJOB_JOB.exec(controller.name)?.[1] ?? controller.name;
  return controller.name;
}

/** `service.istio.io/canonical-name|revision`, falling back like istiod's kubelabels.CanonicalService. */
function canonicalService(
  labels: Readonly<Record<string, string>>,
  workload: string,
): { name: string; revision: string } {
  const first = (...keys: string[]): string | undefined =>
    keys.map((k) => labels[k]).find((v) => v !== undefined && v !== '');
  return {
    name: first('service.istio.io/canonical-name', 'app.kubernetes.io/name', 'app') ?? workload,
    revision:
      first('service.istio.io/canonical-revision', 'app.kubernetes.io/version', 'version') ?? 'latest',
  };
}

function containerPort(pod: V1Pod, name: string): number | undefined {
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) {
      if (p.name === name && (p.protocol ?? 'TCP') === 'TCP' && isPortNumber(p.containerPort)) {
        return p.containerPort;
      }
    }
  }
  return undefined;
}

/** The pod's mapping for one service; a named target port the pod lacks leaves that port out. */
function resolvePorts(pod: V1Pod, ports: readonly ServicePortSpec[]): PortList {
  const out: PortList = { ports: [] };
  for (const p of ports) {
    const target = typeof p.target === 'number' ? p.target : containerPort(pod, p.target);
    if (target !== undefined) {
      out.ports.push({ servicePort: p.port, targetPort: target, appProtocol: AppProtocol.UNKNOWN });
    }
  }
  return out;
}

function supportsHboneNatively(labels: Readonly<Record<string, string>>): boolean {
  const v = labels[LABEL_TUNNEL];
  return v !== undefined && v.split(',').includes('http');
}

export function translatePod(
  pod: V1Pod,
  meta: { readonly namespace: string; readonly name: string },
  ctx: WorkloadContext,
  opts: ResolvedModelOptions,
): PodTranslation {
  if (isTerminal(pod)) return { workload: undefined, warnings: [] };
  const ips = podIps(pod);
  if (ips.length === 0) return { workload: undefined, warnings: [] };
  const addresses: Uint8Array[] = [];
  for (const ip of ips) {
    const bytes = parseIpBytes(ip);
    if (bytes === undefined) {
      return {
        workload: undefined,
        warnings: [`status.podIPs: ${JSON.stringify(ip)} is not an IP address; the pod is left out of WDS`],
      };
    }
    addresses.push(bytes);
  }
  const labels = pod.metadata?.labels ?? {};
  const annotations = pod.metadata?.annotations ?? {};
  const name = workloadName(pod);
  const canonical = canonicalService(labels, name);
  const serviceAccount = podServiceAccount(pod);
  const native = supportsHboneNatively(labels);
  const services = new Map<string, PortList>();
  for (const s of [...ctx.services].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) {
    services.set(s.key, resolvePorts(pod, s.ports));
  }
  const workload: Workload = {
    uid: podUid(opts.clusterId, meta.namespace, meta.name),
    name: meta.name,
    namespace: meta.namespace,
    addresses,
    network: '',
    tunnelProtocol:
      native || annotations[ANNOTATION_REDIRECTION] === 'enabled'
        ? TunnelProtocol.HBONE
        : TunnelProtocol.NONE,
    trustDomain: opts.trustDomain === ELIDED_TRUST_DOMAIN ? '' : opts.trustDomain,
    serviceAccount: serviceAccount === ELIDED_SERVICE_ACCOUNT ? '' : serviceAccount,
    waypoint: undefined,
    node: pod.spec?.nodeName ?? '',
    canonicalName: canonical.name,
    canonicalRevision: canonical.revision,
    workloadType: WorkloadType.POD,
    workloadName: name,
    nativeTunnel: native,
    authorizationPolicies: [...ctx.authorizationPolicies].sort(),
    status: isReady(pod) && !isBeingDeleted(pod) ? WorkloadStatus.HEALTHY : WorkloadStatus.UNHEALTHY,
    clusterId: opts.clusterId,
    networkGateway: undefined,
    hostname: '',
    services,
    applicationTunnel: undefined,
    locality: undefined,
    networkMode: pod.spec?.hostNetwork === true ? NetworkMode.HOST_NETWORK : NetworkMode.STANDARD,
    extensions: [],
    capacity: undefined,
  };
  return { workload, warnings: [] };
}

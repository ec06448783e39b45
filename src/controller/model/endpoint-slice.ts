// SPDX-License-Identifier: Apache-2.0
// EndpointSlices of Services without a selector (Kubernetes "services without selectors": the
// endpoints are managed by hand or by another controller). Two things come from them, as in
// istiod (workloads.go: matchingServicesWithoutSelectors, endpointSlicesBuilder):
// - an endpoint whose targetRef is a Pod makes that pod's workload list the Service;
// - any other endpoint becomes a workload of its own, uid
//   `<cluster>/discovery.k8s.io/EndpointSlice/<ns>/<slice>/<ip>`, with no identity and
//   NetworkMode HOST_NETWORK (its IP may be shared, so it must not be looked up by IP).
// Slices of Services *with* a selector are derived by Kubernetes from the very pods the selector
// picks, so the model reads those pods directly and ignores their slices.
import type { V1EndpointSlice } from '@kubernetes/client-node';
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
import { ELIDED_TRUST_DOMAIN, LABEL_SERVICE_NAME, isPortNumber } from './options.ts';
import type { ServiceTranslation } from './service.ts';

export interface PodRef {
  readonly namespace: string;
  readonly name: string;
  /** The pod's metadata.uid when the slice records it: a recreated pod of the same name does not match. */
  readonly uid: string | undefined;
}

/** The Service a slice belongs to (its `kubernetes.io/service-name` label), if any. */
export function sliceServiceName(slice: V1EndpointSlice): string | undefined {
  const v = slice.metadata?.labels?.[LABEL_SERVICE_NAME];
  return v === undefined || v === '' ? undefined : v;
}

/** The pods the slice's endpoints point at. */
export function slicePodRefs(slice: V1EndpointSlice, namespace: string): PodRef[] {
  const out: PodRef[] = [];
  for (const ep of slice.endpoints ?? []) {
    const ref = ep.targetRef;
    if (ref?.kind !== 'Pod' || ref.name === undefined) continue;
    out.push({ namespace: ref.namespace ?? namespace, name: ref.name, uid: ref.uid });
  }
  return out;
}

export interface SliceTranslation {
  readonly workloads: readonly Workload[];
  readonly warnings: readonly string[];
}

/** The workloads of a slice's non-pod endpoints; `service` is its (selector-less) Service. */
export function translateEndpointSlice(
  slice: V1EndpointSlice,
  meta: { readonly namespace: string; readonly name: string },
  service: ServiceTranslation,
  opts: ResolvedModelOptions,
): SliceTranslation {
  if (slice.addressType === 'FQDN') return { workloads: [], warnings: [] };
  // A slice port is named after the service port it serves; its number is the target port.
  const portList: PortList = { ports: [] };
  for (const p of slice.ports ?? []) {
    if (!isPortNumber(p.port) || (p.protocol ?? 'TCP') !== 'TCP') continue;
    const svcPort = service.ports.find((sp) => sp.name === (p.name ?? ''));
    if (svcPort !== undefined) {
      portList.ports.push({
        servicePort: svcPort.port,
        targetPort: p.port,
        appProtocol: AppProtocol.UNKNOWN,
      });
    }
  }
  const warnings: string[] = [];
  const seen = new Set<string>();
  const workloads: Workload[] = [];
  for (const [i, ep] of (slice.endpoints ?? []).entries()) {
    if (ep.targetRef?.kind === 'Pod') continue;
    const first = ep.addresses[0];
    if (first === undefined || seen.has(first)) continue;
    seen.add(first);
    const addresses = ep.addresses.map((a) => parseIpBytes(a));
    if (addresses.some((a) => a === undefined)) {
      warnings.push(
        `endpoints[${i}]: ${JSON.stringify(ep.addresses)} holds a value that is not an IP address; the endpoint is left out`,
      );
      continue;
    }
    workloads.push({
      uid: `${opts.clusterId}/discovery.k8s.io/EndpointSlice/${meta.namespace}/${meta.name}/${first}`,
      name: meta.name,
      namespace: meta.namespace,
      addresses: addresses.filter((a) => a !== undefined),
      network: '',
      tunnelProtocol: TunnelProtocol.NONE,
      trustDomain: opts.trustDomain === ELIDED_TRUST_DOMAIN ? '' : opts.trustDomain,
      serviceAccount: '',
      waypoint: undefined,
      node: ep.nodeName ?? '',
      canonicalName: '',
      canonicalRevision: '',
      workloadType: WorkloadType.DEPLOYMENT,
      workloadName: '',
      nativeTunnel: false,
      authorizationPolicies: [],
      status: ep.conditions?.ready === false ? WorkloadStatus.UNHEALTHY : WorkloadStatus.HEALTHY,
      clusterId: opts.clusterId,
      networkGateway: undefined,
      hostname: '',
      services: new Map([[service.key, { ports: portList.ports.map((p) => ({ ...p })) }]]),
      applicationTunnel: undefined,
      locality: undefined,
      networkMode: NetworkMode.HOST_NETWORK,
      extensions: [],
      capacity: undefined,
    });
  }
  return { workloads, warnings };
}

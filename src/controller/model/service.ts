// SPDX-License-Identifier: Apache-2.0
// Kubernetes Service → istio.workload.Service (spec ambient-protocols §3.5), as istiod builds it
// (hostname `<name>.<ns>.svc.<domainSuffix>`, VIPs from clusterIPs, canonical, load balancing
// from internalTrafficPolicy / traffic distribution / publishNotReadyAddresses, IP families),
// plus what workloads need to list themselves as its endpoints: the selector and the port specs.
//
// Only TCP ports are carried: ztunnel proxies TCP, and a UDP port sharing a number with a TCP
// one would otherwise give two mappings for one service port. A named targetPort is sent as 0
// on the Service and resolved per workload through the pod's container ports (./workload.ts).
// ExternalName services are not in WDS (DNS handles them), as upstream.
import type { V1Namespace, V1Service, V1ServicePort } from '@kubernetes/client-node';
import type { AppProtocol, LoadBalancing, NetworkAddress, Service } from '../../shared/gen/workload.ts';
import {
  AppProtocol as AppProtocolValues,
  IPFamilies,
  LoadBalancing_HealthPolicy,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  Service_Visibility,
} from '../../shared/gen/workload.ts';
import { parseIpBytes } from './ip.ts';
import { ANNOTATION_TRAFFIC_DISTRIBUTION, isPortNumber } from './options.ts';
import type { Labels } from './selector.ts';
import { isEmptySelector } from './selector.ts';

export interface ServicePortSpec {
  readonly port: number;
  /** The service port's name ('' when unnamed); EndpointSlice ports refer to it. */
  readonly name: string;
  /** A container port number, or a container port name resolved per pod. */
  readonly target: number | string;
}

export interface ServiceTranslation {
  /** `<namespace>/<hostname>`: the WDS resource name and the key in Workload.services. */
  readonly key: string;
  readonly service: Service;
  /** Non-empty selector, or undefined: endpoints then come from EndpointSlices. */
  readonly selector: Labels | undefined;
  readonly ports: readonly ServicePortSpec[];
  readonly warnings: readonly string[];
}

export function serviceHostname(name: string, namespace: string, domainSuffix: string): string {
  return `${name}.${namespace}.svc.${domainSuffix}`;
}

/** From appProtocol, else the port name's prefix (`http-web` → http), as istiod's ConvertProtocol. */
function appProtocol(p: V1ServicePort): AppProtocol {
  const named = (p.name ?? '').split('-')[0] ?? '';
  const v = (p.appProtocol ?? named).toLowerCase();
  switch (v) {
    case 'http':
      return AppProtocolValues.HTTP11;
    case 'http2':
    case 'kubernetes.io/h2c':
      return AppProtocolValues.HTTP2;
    case 'grpc':
      return AppProtocolValues.GRPC;
    default:
      return AppProtocolValues.UNKNOWN;
  }
}

/** A named port (IANA_SVC_NAME): ≤ 15 lowercase alphanumerics and '-', at least one letter. */
const validPortName = (s: string): boolean =>
  /^(?=.*[a-z])[a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?$/.test(s) && !s.includes('--');

function loadBalancing(svc: V1Service, ns: V1Namespace | undefined): LoadBalancing | undefined {
  const spec = svc.spec ?? {};
  let lb: LoadBalancing | undefined;
  if (spec.internalTrafficPolicy === 'Local') {
    lb = {
      routingPreference: [LoadBalancing_Scope.NODE],
      mode: LoadBalancing_Mode.STRICT,
      healthPolicy: LoadBalancing_HealthPolicy.ONLY_HEALTHY,
    };
  } else {
    const near = [LoadBalancing_Scope.NETWORK, LoadBalancing_Scope.REGION, LoadBalancing_Scope.ZONE];
    switch (trafficDistribution(svc, ns)) {
      case 'zone':
        lb = {
          routingPreference: near,
          mode: LoadBalancing_Mode.FAILOVER,
          healthPolicy: LoadBalancing_HealthPolicy.ONLY_HEALTHY,
        };
        break;
      case 'node':
        lb = {
          routingPreference: [...near, LoadBalancing_Scope.SUBZONE, LoadBalancing_Scope.NODE],
          mode: LoadBalancing_Mode.FAILOVER,
          healthPolicy: LoadBalancing_HealthPolicy.ONLY_HEALTHY,
        };
        break;
      case 'any':
        break;
    }
  }
  if (spec.publishNotReadyAddresses === true) {
    lb = {
      ...(lb ?? { routingPreference: [], mode: LoadBalancing_Mode.UNSPECIFIED_MODE }),
      healthPolicy: LoadBalancing_HealthPolicy.ALLOW_ALL,
    };
  }
  return lb;
}

/** spec.trafficDistribution, else the annotation on the Service, else on its namespace. */
function trafficDistribution(svc: V1Service, ns: V1Namespace | undefined): 'zone' | 'node' | 'any' {
  const field = svc.spec?.trafficDistribution;
  if (field === 'PreferClose' || field === 'PreferSameZone') return 'zone';
  if (field === 'PreferSameNode') return 'node';
  const annotation =
    svc.metadata?.annotations?.[ANNOTATION_TRAFFIC_DISTRIBUTION] ??
    ns?.metadata?.annotations?.[ANNOTATION_TRAFFIC_DISTRIBUTION] ??
    '';
  switch (annotation.toLowerCase()) {
    case 'preferclose':
    case 'prefersamezone':
      return 'zone';
    case 'prefersamenode':
      return 'node';
    default:
      return 'any';
  }
}

function ipFamilies(svc: V1Service): IPFamilies {
  const f = svc.spec?.ipFamilies ?? [];
  if (f.length === 2) return IPFamilies.DUAL;
  if (f.length === 1) return f[0] === 'IPv4' ? IPFamilies.IPV4_ONLY : IPFamilies.IPV6_ONLY;
  return IPFamilies.AUTOMATIC;
}

/**
 * Translates a Service in `namespace` (whose Namespace object, if known, may carry the
 * traffic-distribution annotation). undefined for ExternalName services.
 */
export function translateService(
  svc: V1Service,
  meta: { readonly namespace: string; readonly name: string },
  ns: V1Namespace | undefined,
  domainSuffix: string,
): ServiceTranslation | undefined {
  const spec = svc.spec ?? {};
  if (spec.type === 'ExternalName') return undefined;
  const warnings: string[] = [];
  const hostname = serviceHostname(meta.name, meta.namespace, domainSuffix);
  const ports: ServicePortSpec[] = [];
  const wdsPorts: Service['ports'] = [];
  for (const [i, p] of (spec.ports ?? []).entries()) {
    if ((p.protocol ?? 'TCP') !== 'TCP') continue;
    const target: number | string = p.targetPort ?? p.port;
    if (
      !isPortNumber(p.port) ||
      (typeof target === 'number' ? !isPortNumber(target) : !validPortName(target))
    ) {
      warnings.push(
        `spec.ports[${i}]: port ${JSON.stringify(p.port)} / targetPort ${JSON.stringify(target)} is not a valid port; the port is left out`,
      );
      continue;
    }
    ports.push({ port: p.port, name: p.name ?? '', target });
    wdsPorts.push({
      servicePort: p.port,
      targetPort: typeof target === 'number' ? target : 0,
      appProtocol: appProtocol(p),
    });
  }
  const addresses: NetworkAddress[] = [];
  const vips =
    spec.clusterIPs !== undefined && spec.clusterIPs.length > 0 ? spec.clusterIPs : [spec.clusterIP ?? ''];
  for (const vip of vips) {
    if (vip === '' || vip === 'None') continue;
    const address = parseIpBytes(vip);
    if (address === undefined) {
      warnings.push(`spec.clusterIPs: ${JSON.stringify(vip)} is not an IP address; left out`);
    } else {
      addresses.push({ network: '', address });
    }
  }
  const selector =
    spec.selector !== undefined && !isEmptySelector(spec.selector) ? { ...spec.selector } : undefined;
  return {
    key: `${meta.namespace}/${hostname}`,
    service: {
      name: meta.name,
      namespace: meta.namespace,
      hostname,
      addresses,
      ports: wdsPorts,
      subjectAltNames: [],
      waypoint: undefined,
      loadBalancing: loadBalancing(svc, ns),
      ipFamilies: ipFamilies(svc),
      extensions: [],
      // A Kubernetes Service always wins hostname lookups (spec §3.5 field 11).
      canonical: true,
      ingressUseWaypoint: false,
      weightedWaypoints: [],
      visibility: Service_Visibility.PUBLIC,
    },
    selector,
    ports,
    warnings,
  };
}

// SPDX-License-Identifier: Apache-2.0
// The synthetic cluster of the scale benchmark (PERFORMANCE.md, controller rows: 10k pods, 1k
// services, 100 ztunnels): the Kubernetes objects the API stand-in is seeded with, the WDS
// resource names every simulated ztunnel must end up holding, and the pod changes whose push
// latency is measured.
//
// Layout: one ambient namespace per 100 pods (`istio.io/dataplane-mode: ambient`); in each, the
// services select `app: <service>` and the pods are dealt round-robin to the services (so 10
// pods per service at full scale) and to the nodes (one node per simulated ztunnel). Every pod
// is Running, Ready, annotated `ambient.istio.io/redirection: enabled` and has an IP from
// 10.0.0.0/8 (data only: no traffic is sent). A handful of AuthorizationPolicies, half of them
// namespace-wide ALLOWs and half workload-selector DENYs, so workloads carry policy keys.
//
// Resource names follow spec ambient-protocols §3.2: a workload is `<cluster>//Pod/<ns>/<name>`,
// a service `<ns>/<name>.<ns>.svc.cluster.local`, an authorization `<ns>/<name>`.
import { API_RESOURCES, type JsonObject, type KubeApiServer } from '../../test/helpers/kube-api/index.ts';
import type { ScaleShape } from './shape.ts';

export const CLUSTER_ID = 'Kubernetes';
/** The DNS suffix of service hostnames (`<name>.<ns>.svc.<suffix>`). */
const DOMAIN_SUFFIX = 'cluster.local';
const PODS_PER_NAMESPACE = 100;
const TARGET_PORT = 8080;

/** Names of the objects, derived from indexes so nothing needs to be stored to find them again. */
export class ClusterLayout {
  readonly shape: ScaleShape;
  readonly namespaces: number;

  constructor(shape: ScaleShape) {
    for (const [k, v] of Object.entries(shape)) {
      if (!Number.isSafeInteger(v) || v < 1)
        throw new RangeError(`scale shape: ${k} must be a positive integer`);
    }
    this.namespaces = Math.max(1, Math.ceil(shape.pods / PODS_PER_NAMESPACE));
    if (shape.services < this.namespaces) {
      throw new RangeError(
        `scale shape: ${shape.services} services for ${this.namespaces} namespaces; every namespace needs one`,
      );
    }
    if (shape.pods > 1 << 20 || shape.services >= 1 << 20) {
      throw new RangeError('scale shape: at most 2^20 pods and 2^20 - 1 services fit the address plan');
    }
    this.shape = shape;
  }

  namespace(i: number): string {
    return `scale-${i}`;
  }

  node(i: number): string {
    return `node-${i}`;
  }

  podNamespace(pod: number): number {
    return pod % this.namespaces;
  }

  podName(pod: number): string {
    return `pod-${pod}`;
  }

  /** Round-robin within the namespace, so every node runs pods of every namespace. */
  podNode(pod: number): number {
    return Math.floor(pod / this.namespaces) % this.shape.ztunnels;
  }

  /** Services of namespace `ns`: the indexes j with j % namespaces === ns. */
  servicesIn(ns: number): number {
    const n = this.namespaces;
    return Math.floor(this.shape.services / n) + (ns < this.shape.services % n ? 1 : 0);
  }

  serviceNamespace(svc: number): number {
    return svc % this.namespaces;
  }

  serviceName(svc: number): string {
    return `svc-${svc}`;
  }

  /** The service pod `pod` is an endpoint of: round-robin over its namespace's services. */
  podService(pod: number): number {
    const ns = this.podNamespace(pod);
    const k = Math.floor(pod / this.namespaces) % this.servicesIn(ns);
    return ns + k * this.namespaces;
  }

  /** 10.16.0.0/12 and up: pod i is 10.(16 + i>>16).(i>>8 & 255).(i & 255). */
  podIp(pod: number): string {
    return `10.${16 + (pod >> 16)}.${(pod >> 8) & 255}.${pod & 255}`;
  }

  /** The IP a pod moves to in change `k` (10.200.0.0/16, disjoint from every pod's first IP). */
  changedIp(k: number): string {
    return `10.200.${(k >> 8) & 255}.${k & 255}`;
  }

  /** Service VIPs from 10.96.0.0/12, skipping .0. */
  serviceIp(svc: number): string {
    const n = svc + 1;
    return `10.${96 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
  }

  /** The node's ztunnel pod IP (for its xDS node id): 10.250.x.y. */
  ztunnelIp(node: number): string {
    const n = node + 1;
    return `10.250.${(n >> 8) & 255}.${n & 255}`;
  }

  policyNamespace(p: number): number {
    return p % this.namespaces;
  }

  policyName(p: number): string {
    return p % 2 === 0 ? `allow-namespace-${p}` : `deny-port-${p}`;
  }

  /** Pod changed in change `k`: a prime stride, so changes visit different namespaces and nodes. */
  changedPod(k: number): number {
    return (k * 7919) % this.shape.pods;
  }

  workloadUid(pod: number): string {
    const ns = this.namespace(this.podNamespace(pod));
    return `${CLUSTER_ID}//Pod/${ns}/${this.podName(pod)}`;
  }
}

// ---- objects ----

function namespaceObject(layout: ClusterLayout, ns: number): JsonObject {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: layout.namespace(ns), labels: { 'istio.io/dataplane-mode': 'ambient' } },
  };
}

/** A pod without status (the API server drops status on create; see podStatus). */
function podObject(layout: ClusterLayout, pod: number): JsonObject {
  const app = layout.serviceName(layout.podService(pod));
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: layout.podName(pod),
      namespace: layout.namespace(layout.podNamespace(pod)),
      labels: { app, version: 'v1' },
      annotations: { 'ambient.istio.io/redirection': 'enabled' },
    },
    spec: {
      nodeName: layout.node(layout.podNode(pod)),
      serviceAccountName: app,
      containers: [
        {
          name: 'app',
          image: 'registry.example/app:1',
          ports: [{ name: 'http', containerPort: TARGET_PORT }],
        },
      ],
    },
  };
}

/** A Running, Ready pod's status with `ip`. */
function podStatus(ip: string): JsonObject {
  return {
    phase: 'Running',
    podIP: ip,
    podIPs: [{ ip }],
    conditions: [{ type: 'Ready', status: 'True' }],
  };
}

function serviceObject(layout: ClusterLayout, svc: number): JsonObject {
  const name = layout.serviceName(svc);
  const ip = layout.serviceIp(svc);
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: layout.namespace(layout.serviceNamespace(svc)) },
    spec: {
      type: 'ClusterIP',
      selector: { app: name },
      clusterIP: ip,
      clusterIPs: [ip],
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 'http' }],
    },
  };
}

function policyObject(layout: ClusterLayout, p: number): JsonObject {
  const nsIndex = layout.policyNamespace(p);
  const ns = layout.namespace(nsIndex);
  const metadata = { name: layout.policyName(p), namespace: ns };
  if (p % 2 === 0) {
    return {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata,
      spec: {
        action: 'ALLOW',
        rules: [
          { from: [{ source: { namespaces: [ns, layout.namespace((nsIndex + 1) % layout.namespaces)] } }] },
        ],
      },
    };
  }
  const app = layout.serviceName(nsIndex);
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata,
    spec: {
      selector: { matchLabels: { app } },
      action: 'DENY',
      rules: [{ to: [{ operation: { ports: ['9090'] } }] }],
    },
  };
}

// ---- what every ztunnel must hold ----

/** WDS resource names by type URL, each with a dense index for per-client bitmaps. */
export interface ExpectedResources {
  /** type URL → name → index in [0, count). */
  readonly byType: ReadonlyMap<string, ReadonlyMap<string, number>>;
  readonly total: number;
}

export function expectedResources(
  layout: ClusterLayout,
  addressTypeUrl: string,
  authorizationTypeUrl: string,
): ExpectedResources {
  const addresses = new Map<string, number>();
  for (let i = 0; i < layout.shape.pods; i++) addresses.set(layout.workloadUid(i), addresses.size);
  for (let j = 0; j < layout.shape.services; j++) {
    const ns = layout.namespace(layout.serviceNamespace(j));
    addresses.set(`${ns}/${layout.serviceName(j)}.${ns}.svc.${DOMAIN_SUFFIX}`, addresses.size);
  }
  const authorizations = new Map<string, number>();
  for (let p = 0; p < layout.shape.policies; p++) {
    const ns = layout.namespace(layout.policyNamespace(p));
    authorizations.set(`${ns}/${layout.policyName(p)}`, authorizations.size);
  }
  return {
    byType: new Map([
      [addressTypeUrl, addresses],
      [authorizationTypeUrl, authorizations],
    ]),
    total: addresses.size + authorizations.size,
  };
}

// ---- seeding ----

function podResource(): (typeof API_RESOURCES)[number] {
  const r = API_RESOURCES.find((x) => x.group === '' && x.kind === 'Pod');
  if (r === undefined) throw new Error('the API stand-in does not serve Pods');
  return r;
}

/**
 * Writes the whole cluster straight into the stand-in's store (no HTTP: 20k requests would
 * measure the stand-in, not the controller). Pods get their status in a second write, as the
 * kubelet would: create drops status where the type has a status subresource.
 */
export function seedCluster(api: KubeApiServer, layout: ClusterLayout): void {
  const pods = podResource();
  for (let ns = 0; ns < layout.namespaces; ns++) api.create(namespaceObject(layout, ns));
  for (let j = 0; j < layout.shape.services; j++) api.create(serviceObject(layout, j));
  for (let p = 0; p < layout.shape.policies; p++) api.create(policyObject(layout, p));
  for (let i = 0; i < layout.shape.pods; i++) {
    api.create(podObject(layout, i));
    api.store.update(
      pods,
      layout.namespace(layout.podNamespace(i)),
      layout.podName(i),
      { status: podStatus(layout.podIp(i)) },
      true,
    );
  }
}

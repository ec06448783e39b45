// SPDX-License-Identifier: Apache-2.0
// The model's settings (cluster id, trust domain, root namespace, DNS domain suffix) with their
// istiod defaults, and the well-known label and annotation names the translation reads
// (spec ambient-protocols §3.2, §3.5, §5.1). Settings are validated once, at construction: a
// bad value would otherwise surface as malformed uids, hostnames or SPIFFE principals on every
// resource.
import { MeshError } from '../../shared/errors.ts';
import { parseTrustDomain } from '../../shared/identity/spiffe.ts';

export const CTL_ERR_MODEL_OPTIONS = 'CTL_ERR_MODEL_OPTIONS';

export interface ModelOptions {
  /** Prefix of every workload uid (`<clusterId>//Pod/<ns>/<name>`); istiod's CLUSTER_ID. Default `Kubernetes`. */
  readonly clusterId?: string;
  /** Trust domain of workload identities. Default `cluster.local` (elided on the wire). */
  readonly trustDomain?: string;
  /** Where mesh-wide policies live (AuthorizationPolicy scope GLOBAL, mesh PeerAuthentication). Default `istio-system`. */
  readonly rootNamespace?: string;
  /** Service hostnames are `<name>.<namespace>.svc.<domainSuffix>`. Default `cluster.local`. */
  readonly domainSuffix?: string;
}

export type ResolvedModelOptions = Required<ModelOptions>;

export const DEFAULT_MODEL_OPTIONS: ResolvedModelOptions = {
  clusterId: 'Kubernetes',
  trustDomain: 'cluster.local',
  rootNamespace: 'istio-system',
  domainSuffix: 'cluster.local',
};

/** Default trust domain and service account: elided in WDS (spec §3.5 fields 6–7, §9.13). */
export const ELIDED_TRUST_DOMAIN = 'cluster.local';
export const ELIDED_SERVICE_ACCOUNT = 'default';

/** Set by the node agent once the pod is fully enrolled; makes the workload HBONE (spec §2.1 step 3.4). */
export const ANNOTATION_REDIRECTION = 'ambient.istio.io/redirection';
/** `istio.io/dry-run: "true"` on an AuthorizationPolicy: evaluated and logged, never enforced (spec §5.4). */
export const ANNOTATION_DRY_RUN = 'istio.io/dry-run';
/** Service or namespace annotation: load-balancing preference (spec §3.5). */
export const ANNOTATION_TRAFFIC_DISTRIBUTION = 'networking.istio.io/traffic-distribution';
/** Pod label: the workload speaks HBONE itself (`http` among its comma-separated values). */
export const LABEL_TUNNEL = 'networking.istio.io/tunnel';
/** EndpointSlice label naming its Service. */
export const LABEL_SERVICE_NAME = 'kubernetes.io/service-name';

/** An integer 1–65535 (a value that is not would also make the protobuf encoder throw). */
export function isPortNumber(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** A Kubernetes DNS-1123 label (namespace names, service names). */
export function isDnsLabel(s: unknown): s is string {
  return typeof s === 'string' && DNS_LABEL.test(s);
}

/** A Kubernetes DNS-1123 subdomain (most object names): dot-separated labels, ≤ 253 characters. */
export function isDnsSubdomain(s: unknown): s is string {
  return typeof s === 'string' && s.length <= 253 && s.split('.').every((l) => isDnsLabel(l));
}

function bad(option: string, value: string, rule: string): MeshError {
  return new MeshError(
    CTL_ERR_MODEL_OPTIONS,
    `invalid controller model option ${option}=${JSON.stringify(value)}: ${rule}`,
  );
}

/** Fills defaults and validates; throws MeshError CTL_ERR_MODEL_OPTIONS naming the bad option. */
export function resolveModelOptions(options: ModelOptions = {}): ResolvedModelOptions {
  const o = { ...DEFAULT_MODEL_OPTIONS, ...options };
  if (o.clusterId === '' || /[/\s]/.test(o.clusterId)) {
    throw bad(
      'clusterId',
      o.clusterId,
      "must be non-empty without '/' or whitespace (it prefixes every workload uid)",
    );
  }
  try {
    parseTrustDomain(o.trustDomain);
  } catch (err) {
    throw new MeshError(
      CTL_ERR_MODEL_OPTIONS,
      `invalid controller model option trustDomain: ${String(err)}`,
      {
        cause: err,
      },
    );
  }
  if (!isDnsLabel(o.rootNamespace)) {
    throw bad('rootNamespace', o.rootNamespace, 'must be a Kubernetes namespace name (DNS-1123 label)');
  }
  if (!isDnsSubdomain(o.domainSuffix)) {
    throw bad('domainSuffix', o.domainSuffix, 'must be a DNS name such as cluster.local');
  }
  return o;
}

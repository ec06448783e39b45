// SPDX-License-Identifier: Apache-2.0
// The controller's configuration from flags (local mode and tests) and environment variables
// (the Deployment), validated strictly: a bad value stops start-up naming what to fix.
//
//   --manifests <dir> (repeatable)  file source (local mode; needs --node-tokens); else Kubernetes
//                                   (KUBECONFIG or in-cluster)
//   --listen <host:port>            gRPC for WDS and the CA (default 0.0.0.0:15012)
//   --ca-dir <dir>                  CA root and key, loaded or created (default /var/lib/ambient-mesh/ca)
//   --node-tokens <file>            authenticate ztunnels by node token, not TokenReview
//   --serving-dns <name> (repeatable), --serving-ip <ip> (repeatable)   names in the serving certificate
//   --trust-domain, --cluster-id, --root-namespace
//
// Environment only:
//   CA_TRUSTED_NODE_ACCOUNTS        ServiceAccounts whose tokens may request certificates for the
//                                   pods of their node, comma-separated, each
//                                   `system:serviceaccount:<ns>:<sa>` or Istio's `<ns>/<sa>`
//                                   (default: <root namespace>/ztunnel)
//   SERVING_CERT_TTL_SECONDS        lifetime of the controller's serving certificate, renewed at
//                                   half-life (default 86400)
//   MAX_WORKLOAD_CERT_TTL_SECONDS   longest certificate lifetime the CA grants (default 90 days)
import { nameProblem } from '../shared/kube/resources.ts';
import { isIP } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { MeshError } from '../shared/errors.ts';

export class ControllerConfigError extends MeshError {}

/** Where the CA's files live unless --ca-dir or CA_DIR says otherwise. */
export const DEFAULT_CA_DIR = '/var/lib/ambient-mesh/ca';

/** Why the file source cannot run on TokenReview. */
export const MANIFESTS_NEED_NODE_TOKENS =
  '--manifests needs --node-tokens: there is no Kubernetes API to review tokens';

export interface ControllerConfig {
  readonly manifestDirs: readonly string[] | undefined;
  readonly kubeconfig: string | undefined;
  readonly listen: string;
  readonly caDir: string;
  readonly nodeTokensFile: string | undefined;
  /** TokenReview usernames of node agents, `system:serviceaccount:<ns>:<sa>`. */
  readonly trustedNodeAccounts: readonly string[];
  readonly trustDomain: string;
  readonly clusterId: string;
  readonly rootNamespace: string;
  readonly servingDnsNames: readonly string[];
  readonly servingIps: readonly string[];
  readonly maxWorkloadCertTtlSeconds: number;
  /** Lifetime of each serving certificate; it is renewed at half-life. */
  readonly servingCertTtlSeconds: number;
  readonly logLevel: string;
}

function fail(msg: string): never {
  throw new ControllerConfigError('CTL_ERR_CONFIG', msg);
}

/**
 * CA_TRUSTED_NODE_ACCOUNTS: comma-separated `system:serviceaccount:<ns>:<sa>` or `<ns>/<sa>`
 * (Istio's form), each returned as the TokenReview username.
 */
function parseTrustedNodeAccounts(value: string): string[] {
  const out: string[] = [];
  for (const raw of value.split(',')) {
    const entry = raw.trim();
    const m = /^system:serviceaccount:([^:]*):([^:]*)$/.exec(entry) ?? /^([^/:]*)\/([^/:]*)$/.exec(entry);
    const [ns = '', sa = ''] = m ? [m[1], m[2]] : [];
    // The API server's rules: a namespace is a DNS-1123 label, a ServiceAccount a DNS-1123 subdomain.
    if (
      nameProblem(ns, 'dns1123-label') !== undefined ||
      nameProblem(sa, 'dns1123-subdomain') !== undefined
    ) {
      fail(
        `CA_TRUSTED_NODE_ACCOUNTS: ${JSON.stringify(entry.slice(0, 300))} is not a ServiceAccount; write system:serviceaccount:<namespace>:<name> or <namespace>/<name>, comma-separated`,
      );
    }
    out.push(`system:serviceaccount:${ns}:${sa}`);
  }
  return [...new Set(out)];
}

/** A whole number of seconds from the environment, at least `min`. */
function seconds(name: string, value: string | undefined, def: number, min: number): number {
  if (value === undefined) return def;
  const n = /^\d{1,15}$/.test(value) ? Number(value) : NaN;
  if (!(n >= min)) fail(`${name} must be an integer ≥ ${min} (seconds), got ${JSON.stringify(value)}`);
  return n;
}

export function loadControllerConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = process.env,
): ControllerConfig {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        manifests: { type: 'string', multiple: true },
        listen: { type: 'string' },
        'ca-dir': { type: 'string' },
        'node-tokens': { type: 'string' },
        'serving-dns': { type: 'string', multiple: true },
        'serving-ip': { type: 'string', multiple: true },
        'trust-domain': { type: 'string' },
        'cluster-id': { type: 'string' },
        'root-namespace': { type: 'string' },
        'log-level': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    fail(`${(e as Error).message}; see the flags at the top of src/controller/config.ts`);
  }
  const v = parsed.values;
  const listen = v.listen ?? env.CONTROLLER_LISTEN ?? '0.0.0.0:15012';
  const m = /^(.+):(\d{1,5})$/.exec(listen);
  if (!m || Number(m[2]) > 65535) fail(`--listen ${listen} is not host:port`);
  const ips = v['serving-ip'] ?? [];
  for (const ip of ips) if (isIP(ip) === 0) fail(`--serving-ip ${ip} is not an IP address`);
  const listenHost = m[1] ?? '';
  const defaultIps =
    isIP(listenHost) !== 0 && listenHost !== '0.0.0.0' && listenHost !== '::' ? [listenHost] : [];
  const rootNamespace = v['root-namespace'] ?? env.ROOT_NAMESPACE ?? 'istio-system';
  const rootNsBad = nameProblem(rootNamespace, 'dns1123-label');
  if (rootNsBad !== undefined)
    fail(`--root-namespace ${rootNamespace} is not a namespace name: it ${rootNsBad}`);
  const nodeTokens = v['node-tokens'] ?? env.NODE_TOKENS_FILE;
  if (nodeTokens !== undefined && !isAbsolute(nodeTokens) && !nodeTokens.startsWith('.')) {
    fail(`--node-tokens ${nodeTokens} must be a path`);
  }
  if (v.manifests !== undefined && nodeTokens === undefined) fail(MANIFESTS_NEED_NODE_TOKENS);
  const ttl = seconds('MAX_WORKLOAD_CERT_TTL_SECONDS', env.MAX_WORKLOAD_CERT_TTL_SECONDS, 90 * 86_400, 60);
  const servingTtl = seconds('SERVING_CERT_TTL_SECONDS', env.SERVING_CERT_TTL_SECONDS, 86_400, 60);
  if (servingTtl > ttl) {
    fail(
      `SERVING_CERT_TTL_SECONDS (${servingTtl}) is above MAX_WORKLOAD_CERT_TTL_SECONDS (${ttl}); the CA would refuse it`,
    );
  }
  const trustedNodeAccounts =
    env.CA_TRUSTED_NODE_ACCOUNTS === undefined
      ? [`system:serviceaccount:${rootNamespace}:ztunnel`]
      : parseTrustedNodeAccounts(env.CA_TRUSTED_NODE_ACCOUNTS);
  return Object.freeze({
    manifestDirs: v.manifests?.map((d) => resolve(d)),
    kubeconfig: env.KUBECONFIG,
    listen,
    caDir: resolve(v['ca-dir'] ?? env.CA_DIR ?? DEFAULT_CA_DIR),
    nodeTokensFile: nodeTokens === undefined ? undefined : resolve(nodeTokens),
    trustedNodeAccounts,
    trustDomain: v['trust-domain'] ?? env.TRUST_DOMAIN ?? 'cluster.local',
    clusterId: v['cluster-id'] ?? env.CLUSTER_ID ?? 'Kubernetes',
    rootNamespace,
    servingDnsNames: v['serving-dns'] ?? [`istiod.${rootNamespace}.svc`],
    servingIps: [...new Set([...ips, ...defaultIps])],
    maxWorkloadCertTtlSeconds: ttl,
    servingCertTtlSeconds: servingTtl,
    logLevel: v['log-level'] ?? env.LOG_LEVEL ?? 'info',
  });
}

// SPDX-License-Identifier: Apache-2.0
// The controller's configuration from flags (local mode and tests) and environment variables
// (the Deployment), validated strictly: a bad value stops start-up naming what to fix.
//
//   --manifests <dir> (repeatable)  file source (local mode); else Kubernetes (KUBECONFIG or in-cluster)
//   --listen <host:port>            gRPC for WDS and the CA (default 0.0.0.0:15012)
//   --ca-dir <dir>                  CA root and key, loaded or created (default /var/lib/ambient-mesh/ca)
//   --node-tokens <file>            local mode: authenticate ztunnels by node token, not TokenReview
//   --serving-dns <name> (repeatable), --serving-ip <ip> (repeatable)   names in the serving certificate
//   --trust-domain, --cluster-id, --root-namespace
import { isIP } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { MeshError } from '../shared/errors.ts';

export class ControllerConfigError extends MeshError {}

export interface ControllerConfig {
  readonly manifestDirs: readonly string[] | undefined;
  readonly kubeconfig: string | undefined;
  readonly listen: string;
  readonly caDir: string;
  readonly nodeTokensFile: string | undefined;
  readonly trustDomain: string;
  readonly clusterId: string;
  readonly rootNamespace: string;
  readonly servingDnsNames: readonly string[];
  readonly servingIps: readonly string[];
  readonly maxWorkloadCertTtlSeconds: number;
  readonly logLevel: string;
}

function fail(msg: string): never {
  throw new ControllerConfigError('CTL_ERR_CONFIG', msg);
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
  const nodeTokens = v['node-tokens'] ?? env.NODE_TOKENS_FILE;
  if (nodeTokens !== undefined && !isAbsolute(nodeTokens) && !nodeTokens.startsWith('.')) {
    fail(`--node-tokens ${nodeTokens} must be a path`);
  }
  const ttl = Number(env.MAX_WORKLOAD_CERT_TTL_SECONDS ?? 90 * 86_400);
  if (!Number.isSafeInteger(ttl) || ttl < 60) fail('MAX_WORKLOAD_CERT_TTL_SECONDS must be an integer ≥ 60');
  return Object.freeze({
    manifestDirs: v.manifests?.map((d) => resolve(d)),
    kubeconfig: env.KUBECONFIG,
    listen,
    caDir: resolve(v['ca-dir'] ?? env.CA_DIR ?? '/var/lib/ambient-mesh/ca'),
    nodeTokensFile: nodeTokens === undefined ? undefined : resolve(nodeTokens),
    trustDomain: v['trust-domain'] ?? env.TRUST_DOMAIN ?? 'cluster.local',
    clusterId: v['cluster-id'] ?? env.CLUSTER_ID ?? 'Kubernetes',
    rootNamespace,
    servingDnsNames: v['serving-dns'] ?? [`istiod.${rootNamespace}.svc`],
    servingIps: [...new Set([...ips, ...defaultIps])],
    maxWorkloadCertTtlSeconds: ttl,
    logLevel: v['log-level'] ?? env.LOG_LEVEL ?? 'info',
  });
}

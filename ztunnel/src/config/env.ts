// SPDX-License-Identifier: Apache-2.0
// ztunnel's configuration: environment variables with upstream's names where the meaning matches
// (istio/ztunnel:src/config.rs), parsed once at start-up, validated strictly, frozen, and shown in
// /config_dump. An invalid value stops start-up with a message naming the variable, the value
// and what is expected.
import { DEFAULT_AUTH_TOKEN, DEFAULT_XDS_ROOT_CA, loadWdsConfig, type WdsConfig } from '../xds/config.ts';
import { ConfigError } from './errors.ts';

export { ConfigError } from './errors.ts';

/** Where certificates come from when the controller's CA service signs them (spec §4). */
export interface CaServiceConfig {
  /** host:port (CA_ADDRESS; defaults to XDS_ADDRESS). */
  readonly address: string;
  /** PEM roots the CA's serving certificate must chain to (XDS_ROOT_CA). */
  readonly rootCa: string;
  /** Name to verify in its certificate (ALT_XDS_HOSTNAME); default the address's host. */
  readonly serverName: string | undefined;
  /** AUTH_TOKEN: an absolute path is re-read on every call; anything else is the token. */
  readonly token: { readonly path: string } | { readonly value: string };
}

export interface ZtunnelConfig {
  /** Kubernetes node this ztunnel serves (NODE_NAME). */
  readonly nodeName: string;
  readonly trustDomain: string;
  readonly clusterId: string;
  readonly network: string;
  /** Static workload/service/policy file (LOCAL_XDS_PATH); the no-control-plane mode. */
  readonly localXdsPath: string | undefined;
  /** Directory of the local CA used in static mode (LOCAL_CA_DIR); created if absent. */
  readonly localCaDir: string | undefined;
  /** Static list of in-pod workloads with their netns paths (INPOD_WORKLOADS): ZDS without an agent. */
  readonly inpodWorkloadsPath: string | undefined;
  /** The node agent's ZDS socket (INPOD_UDS); pods arrive over ZDS (spec §2.6). */
  readonly inpodUds: string | undefined;
  /** WDS from the controller (XDS_ADDRESS and friends, see ../xds/config.ts); undefined in static mode. */
  readonly wds: WdsConfig | undefined;
  /** The controller's CA service; undefined when LOCAL_CA_DIR names a local CA. */
  readonly ca: CaServiceConfig | undefined;
  readonly adminPort: number;
  readonly statsPort: number;
  readonly readinessPort: number;
  /** Address the metrics and readiness servers bind to (the ztunnel's own netns). */
  readonly statsAddress: string;
  /** SO_MARK on every socket ztunnel creates in a pod netns (spec §2.3). */
  readonly inpodMark: number;
  /** Graceful drain deadline on SIGTERM (spec security §3.1). */
  readonly drainDeadlineMs: number;
  readonly secretTtlSeconds: number;
  readonly logLevel: string;
  readonly http2: {
    readonly streamWindowBytes: number | undefined;
    readonly connectionWindowBytes: number | undefined;
    readonly frameSize: number | undefined;
    readonly poolMaxStreamsPerConnection: number | undefined;
  };
}

type Env = Readonly<Record<string, string | undefined>>;

function str(env: Env, name: string, def: string): string {
  const v = env[name];
  return v === undefined || v === '' ? def : v;
}

function opt(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === '' ? undefined : v;
}

function int(env: Env, name: string, def: number | undefined, min: number, max: number): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return def;
  if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(v)) {
    throw new ConfigError('ZT_ERR_CONFIG', `invalid env var ${name}=${v} (expected an integer)`);
  }
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(
      'ZT_ERR_CONFIG',
      `invalid env var ${name}=${v} (expected an integer in [${min}, ${max}])`,
    );
  }
  return n;
}

function req(n: number | undefined, name: string): number {
  if (n === undefined) throw new ConfigError('ZT_ERR_CONFIG', `missing env var ${name}`);
  return n;
}

/**
 * The drain deadline: CONNECTION_TERMINATION_DEADLINE (seconds), else
 * TERMINATION_GRACE_PERIOD_SECONDS − 5 s (− 1 s when ≤ 10 s, floor 1 s), else 5 s — upstream's rule.
 */
function drainDeadline(env: Env): number {
  const explicit = int(env, 'CONNECTION_TERMINATION_DEADLINE', undefined, 0, 86_400);
  if (explicit !== undefined) return explicit * 1000;
  const grace = int(env, 'TERMINATION_GRACE_PERIOD_SECONDS', undefined, 0, 86_400);
  if (grace === undefined) return 5000;
  const s = grace <= 10 ? grace - 1 : grace - 5;
  return Math.max(1, s) * 1000;
}

const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);

/** The CA service settings: CA_ADDRESS, else XDS_ADDRESS, unless a local CA is configured. */
function caServiceConfig(env: Env): CaServiceConfig | undefined {
  const local = opt(env, 'LOCAL_CA_DIR');
  const explicit = opt(env, 'CA_ADDRESS');
  if (local !== undefined) {
    if (explicit !== undefined) {
      throw new ConfigError(
        'ZT_ERR_CONFIG',
        'both LOCAL_CA_DIR and CA_ADDRESS are set: certificates come from one CA',
      );
    }
    return undefined;
  }
  const address = (explicit ?? opt(env, 'XDS_ADDRESS'))?.replace(/^https?:\/\//, '');
  if (address === undefined) return undefined;
  const token = str(env, 'AUTH_TOKEN', DEFAULT_AUTH_TOKEN);
  return {
    address,
    rootCa: str(env, 'XDS_ROOT_CA', DEFAULT_XDS_ROOT_CA),
    serverName: opt(env, 'ALT_XDS_HOSTNAME'),
    token: token.startsWith('/') ? { path: token } : { value: token },
  };
}

/** Exactly one source each for state, pods and certificates; the control plane needs its root. */
function checkSources(cfg: ZtunnelConfig): void {
  const fail = (msg: string): never => {
    throw new ConfigError('ZT_ERR_CONFIG', msg);
  };
  if (cfg.localXdsPath !== undefined && cfg.wds !== undefined) {
    fail('both LOCAL_XDS_PATH and XDS_ADDRESS are set: choose the static file or the controller');
  }
  if (cfg.localXdsPath === undefined && cfg.wds === undefined) {
    fail(
      'no configuration source: set XDS_ADDRESS to the controller (host:port) or LOCAL_XDS_PATH to a static config file',
    );
  }
  if (cfg.inpodWorkloadsPath !== undefined && cfg.inpodUds !== undefined) {
    fail(
      'both INPOD_WORKLOADS and INPOD_UDS are set: pods come from the node agent (INPOD_UDS) or a static list',
    );
  }
  if (cfg.localCaDir === undefined && cfg.ca === undefined) {
    fail(
      'no certificate source: set CA_ADDRESS (or XDS_ADDRESS) for the controller CA, or LOCAL_CA_DIR for a local CA',
    );
  }
}

export function loadConfig(env: Env = process.env): ZtunnelConfig {
  const nodeName = opt(env, 'NODE_NAME');
  if (nodeName === undefined) {
    throw new ConfigError(
      'ZT_ERR_CONFIG',
      'missing env var NODE_NAME (the node this ztunnel serves; from the Downward API spec.nodeName)',
    );
  }
  const logLevel = str(env, 'LOG_LEVEL', 'info');
  if (!LEVELS.has(logLevel)) {
    throw new ConfigError(
      'ZT_ERR_CONFIG',
      `invalid env var LOG_LEVEL=${logLevel} (expected one of ${[...LEVELS].join(', ')})`,
    );
  }
  const cfg: ZtunnelConfig = {
    nodeName,
    trustDomain: str(env, 'TRUST_DOMAIN', 'cluster.local'),
    clusterId: str(env, 'CLUSTER_ID', 'Kubernetes'),
    network: str(env, 'NETWORK', ''),
    localXdsPath: opt(env, 'LOCAL_XDS_PATH'),
    localCaDir: opt(env, 'LOCAL_CA_DIR'),
    inpodWorkloadsPath: opt(env, 'INPOD_WORKLOADS'),
    inpodUds: opt(env, 'INPOD_UDS'),
    wds: loadWdsConfig(env, { nodeName, clusterId: str(env, 'CLUSTER_ID', 'Kubernetes') }),
    ca: caServiceConfig(env),
    adminPort: req(int(env, 'ADMIN_PORT', 15000, 0, 65535), 'ADMIN_PORT'),
    statsPort: req(int(env, 'STATS_PORT', 15020, 0, 65535), 'STATS_PORT'),
    readinessPort: req(int(env, 'READINESS_PORT', 15021, 0, 65535), 'READINESS_PORT'),
    statsAddress: str(env, 'STATS_ADDRESS', '0.0.0.0'),
    inpodMark: req(int(env, 'INPOD_MARK', 0x539, 1, 0xffffffff), 'INPOD_MARK'),
    drainDeadlineMs: drainDeadline(env),
    secretTtlSeconds: req(int(env, 'SECRET_TTL', 86_400, 60, 90 * 86_400), 'SECRET_TTL'),
    logLevel,
    http2: {
      streamWindowBytes: int(env, 'HTTP2_STREAM_WINDOW_SIZE', undefined, 65_535, 2 ** 31 - 1),
      connectionWindowBytes: int(env, 'HTTP2_CONNECTION_WINDOW_SIZE', undefined, 65_535, 2 ** 31 - 1),
      frameSize: int(env, 'HTTP2_FRAME_SIZE', undefined, 16_384, 16_777_215),
      poolMaxStreamsPerConnection: int(env, 'POOL_MAX_STREAMS_PER_CONNECTION', undefined, 1, 10_000),
    },
  };
  checkSources(cfg);
  return Object.freeze(cfg);
}

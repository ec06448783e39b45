// SPDX-License-Identifier: Apache-2.0
// ztunnel's configuration: environment variables with upstream's names where the meaning matches
// (istio/ztunnel:src/config.rs), parsed once at start-up, validated strictly, frozen, and shown in
// /config_dump (configForDump). An invalid value stops start-up with a message naming the
// variable, the value and what is expected. No secret is a property of the configuration: a
// literal AUTH_TOKEN lives in its reader's closure (./control-plane.ts), and the XDS_HEADER_*
// values, which often carry credentials, are redacted in the dump.
import { loadWdsConfig, type WdsConfig } from '../xds/config.ts';
import {
  loadControlPlaneSettings,
  parseControlPlaneAddress,
  type BearerToken,
  type ControlPlaneSettings,
  type ControlPlaneTls,
} from './control-plane.ts';
import { ConfigError } from './errors.ts';

export { ConfigError } from './errors.ts';

/** Where certificates come from when the controller's CA service signs them (spec §4). */
export interface CaServiceConfig {
  /** host:port (CA_ADDRESS; defaults to XDS_ADDRESS). */
  readonly address: string;
  /** TLS (XDS_ROOT_CA, ALT_XDS_HOSTNAME), or undefined for plaintext (`http://` to loopback only). */
  readonly tls: ControlPlaneTls | undefined;
  /** AUTH_TOKEN's reader, the same as WDS's. */
  readonly token: BearerToken;
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
  /**
   * Certificate revocation lists (CRL_PATH; Istio's chart mounts /var/run/secrets/istio/crl/ca-crl.pem):
   * peers whose path holds a revoked certificate are refused both ways, and live sessions torn
   * down when the file changes (spec §4 "CRL").
   */
  readonly crlPath: string | undefined;
  /** Static list of in-pod workloads with their netns paths (INPOD_WORKLOADS): ZDS without an agent. */
  readonly inpodWorkloadsPath: string | undefined;
  /**
   * Load shedding under memory pressure (checklist F.80; ztunnel/src/proxy/overload.ts): new
   * connections are refused from OVERLOAD_SHED_FRACTION of the limit on. The limit is the
   * container's cgroup limit, or OVERLOAD_MEMORY_LIMIT (against RSS) when given.
   */
  readonly overload: { readonly memoryLimitBytes: number | undefined; readonly shedFraction: number };
  /** The node agent's ZDS socket (INPOD_UDS); pods arrive over ZDS (spec §2.6). */
  readonly inpodUds: string | undefined;
  /**
   * Uids that may listen on INPOD_UDS and own its directory (INPOD_UDS_TRUSTED_UIDS, a comma
   * list); undefined: root and ztunnel's own uid.
   */
  readonly inpodUdsTrustedUids: readonly number[] | undefined;
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

function uidList(env: Env, name: string): readonly number[] | undefined {
  const v = opt(env, name);
  if (v === undefined) return undefined;
  const uids = v.split(',').map((u) => u.trim());
  if (!uids.every((u) => /^[0-9]{1,10}$/.test(u) && Number(u) <= 0xfffffffe)) {
    throw new ConfigError(
      'ZT_ERR_CONFIG',
      `invalid env var ${name}=${v} (expected a comma-separated list of uids, e.g. 0,1337)`,
    );
  }
  return Object.freeze(uids.map(Number));
}

const QUANTITY_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  K: 1e3,
  M: 1e6,
  G: 1e9,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
};

/** A byte count as Kubernetes writes memory quantities: 536870912, 512Mi, 1Gi, 500M. */
function bytes(env: Env, name: string): number | undefined {
  const v = opt(env, name);
  if (v === undefined) return undefined;
  const m = /^([0-9]+)(Ki|Mi|Gi|K|M|G)?$/.exec(v);
  const n = m ? Number(m[1]) * (QUANTITY_UNITS[m[2] ?? ''] ?? 1) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(
      'ZT_ERR_CONFIG',
      `invalid env var ${name}=${v} (expected a positive byte count such as 536870912, 512Mi or 1Gi)`,
    );
  }
  return n;
}

function fraction(env: Env, name: string, def: number): number {
  const v = opt(env, name);
  if (v === undefined) return def;
  const n = Number(v);
  if (!/^[0-9.]+$/.test(v) || !(n > 0.1 && n <= 1)) {
    throw new ConfigError(
      'ZT_ERR_CONFIG',
      `invalid env var ${name}=${v} (expected a fraction in (0.1, 1], e.g. 0.9)`,
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
function caServiceConfig(env: Env, cp: ControlPlaneSettings): CaServiceConfig | undefined {
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
  const name = explicit !== undefined ? 'CA_ADDRESS' : 'XDS_ADDRESS';
  const raw = explicit ?? opt(env, 'XDS_ADDRESS');
  if (raw === undefined) return undefined;
  const endpoint = parseControlPlaneAddress(name, raw, cp.tls);
  return Object.freeze({ address: endpoint.address, tls: endpoint.tls, token: cp.token });
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
  const clusterId = str(env, 'CLUSTER_ID', 'Kubernetes');
  const controlPlane = loadControlPlaneSettings(env);
  const cfg: ZtunnelConfig = {
    nodeName,
    trustDomain: str(env, 'TRUST_DOMAIN', 'cluster.local'),
    clusterId,
    network: str(env, 'NETWORK', ''),
    localXdsPath: opt(env, 'LOCAL_XDS_PATH'),
    localCaDir: opt(env, 'LOCAL_CA_DIR'),
    crlPath: opt(env, 'CRL_PATH'),
    inpodWorkloadsPath: opt(env, 'INPOD_WORKLOADS'),
    overload: {
      memoryLimitBytes: bytes(env, 'OVERLOAD_MEMORY_LIMIT'),
      shedFraction: fraction(env, 'OVERLOAD_SHED_FRACTION', 0.9),
    },
    inpodUds: opt(env, 'INPOD_UDS'),
    inpodUdsTrustedUids: uidList(env, 'INPOD_UDS_TRUSTED_UIDS'),
    wds: loadWdsConfig(env, { nodeName, clusterId, controlPlane }),
    ca: caServiceConfig(env, controlPlane),
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

/**
 * The configuration as /config_dump shows it (spec §7.3): everything, with the XDS_HEADER_*
 * values redacted. Tokens need no redaction: they are never properties (see the file comment).
 */
export function configForDump(cfg: ZtunnelConfig): Record<string, unknown> {
  return {
    ...cfg,
    ...(cfg.wds && {
      wds: {
        ...cfg.wds,
        headers: Object.fromEntries(Object.keys(cfg.wds.headers).map((k) => [k, '(redacted)'])),
      },
    }),
  };
}

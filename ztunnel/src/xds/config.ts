// SPDX-License-Identifier: Apache-2.0
// How ztunnel reaches the controller's WDS (spec ambient-protocols §3.1), from upstream's
// environment variables:
//
//   XDS_ADDRESS          controller address: `host:port` or `https://host:port` (TLS), or
//                        `http://host:port` (plaintext, loopback only: the bearer token would
//                        otherwise cross the network in clear). Unset: no WDS (static mode).
//   XDS_ROOT_CA          PEM roots the controller's certificate must chain to
//                        (default /var/run/secrets/istio/root-cert.pem); `SYSTEM` = system roots.
//   ALT_XDS_HOSTNAME     name to verify in the controller's certificate instead of XDS_ADDRESS's host.
//   AUTH_TOKEN           bearer token: an absolute path to a file, re-read on every connect so a
//                        rotated projected token is picked up (default
//                        /var/run/secrets/tokens/istio-token), or the token itself.
//   XDS_HEADER_<NAME>    extra call metadata `<name>: <value>`.
//   INSTANCE_IP, POD_NAME, POD_NAMESPACE   the node id `ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`.
//   ISTIO_METAJSON_<K>   JSON value added to the node metadata under <K>.
//   XDS_ON_DEMAND        only `false` is accepted: this ztunnel subscribes to every resource.
//
// NODE_NAME and CLUSTER_ID (sent as `clusterid`) come from the main configuration (../config/env.ts).
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { credentials as grpcCredentials, Metadata, type ChannelOptions } from '@grpc/grpc-js';
import type { Node } from '../../../src/shared/gen/envoy/config/core/v3/base.ts';
import { errorMessage } from '../../../src/shared/errors.ts';
import { ConfigError } from '../config/errors.ts';
import type { WdsClientOptions } from './client.ts';

export const DEFAULT_XDS_ROOT_CA = '/var/run/secrets/istio/root-cert.pem';
export const DEFAULT_AUTH_TOKEN = '/var/run/secrets/tokens/istio-token';

type Env = Readonly<Record<string, string | undefined>>;

export interface WdsConfig {
  /** `host:port` as grpc-js dials it. */
  readonly address: string;
  /** TLS settings, or undefined for plaintext (loopback only). */
  readonly tls: { readonly rootCa: string; readonly serverName: string | undefined } | undefined;
  /** Where the bearer token comes from: a file path, or `(literal)`; never the token itself. */
  readonly authTokenSource: string;
  readonly clusterId: string;
  /** Extra call metadata from XDS_HEADER_*. */
  readonly headers: Readonly<Record<string, string>>;
  readonly node: {
    readonly instanceIp: string;
    readonly podName: string;
    readonly podNamespace: string;
    readonly nodeName: string;
    readonly metaJson: Readonly<Record<string, unknown>>;
  };
  /** Reads the bearer token (the file again each time). Not part of the JSON dump. */
  readonly readToken: () => Promise<string>;
}

function invalid(name: string, value: string, why: string): ConfigError {
  return new ConfigError('ZT_ERR_CONFIG', `invalid env var ${name}=${value} (${why})`);
}

function required(env: Env, name: string, why: string): string {
  const v = env[name];
  if (v === undefined || v === '') throw new ConfigError('ZT_ERR_CONFIG', `missing env var ${name} (${why})`);
  return v;
}

/** `host:port` → [host, port]; IPv6 hosts in brackets. */
function splitHostPort(name: string, value: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/.exec(value);
  const port = Number(m?.[2]);
  if (m === null || port < 1 || port > 65535) {
    throw invalid(
      name,
      value,
      'expected host:port, https://host:port or http://host:port, e.g. istiod.istio-system.svc:15012',
    );
  }
  return { host: (m[1] ?? '').replace(/^\[(.*)\]$/, '$1'), port };
}

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

/** The WDS settings, or undefined when XDS_ADDRESS is unset (static mode). Throws ConfigError. */
export function loadWdsConfig(
  env: Env,
  base: { nodeName: string; clusterId: string },
): WdsConfig | undefined {
  const raw = env.XDS_ADDRESS;
  if (raw === undefined || raw === '') return undefined;
  const scheme = /^(https?):\/\//.exec(raw)?.[1];
  const hostPort = scheme === undefined ? raw : raw.slice(scheme.length + 3);
  const { host } = splitHostPort('XDS_ADDRESS', hostPort);
  const plaintext = scheme === 'http';
  if (plaintext && !isLoopback(host)) {
    throw invalid(
      'XDS_ADDRESS',
      raw,
      'plaintext http:// is allowed only to a loopback address; use https:// (TLS)',
    );
  }
  const onDemand = env.XDS_ON_DEMAND;
  if (onDemand !== undefined && onDemand !== '' && onDemand !== 'false') {
    throw invalid('XDS_ON_DEMAND', onDemand, 'on-demand WDS is not supported; unset it or set false');
  }

  const token = env.AUTH_TOKEN === undefined || env.AUTH_TOKEN === '' ? DEFAULT_AUTH_TOKEN : env.AUTH_TOKEN;
  const tokenFile = token.startsWith('/') ? token : undefined;
  const readToken = async (): Promise<string> => {
    if (tokenFile === undefined) return token;
    try {
      return (await readFile(tokenFile, 'utf8')).trim();
    } catch (err) {
      throw new ConfigError(
        'ZT_ERR_CONFIG',
        `cannot read the xDS bearer token ${tokenFile}: ${errorMessage(err)}; check AUTH_TOKEN and the projected token volume`,
        { cause: err },
      );
    }
  };

  const headers: Record<string, string> = {};
  const metaJson: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (k.startsWith('XDS_HEADER_')) {
      const name = k.slice('XDS_HEADER_'.length).toLowerCase();
      if (!/^[a-z0-9][a-z0-9_.-]*$/.test(name) || name.endsWith('-bin')) {
        throw invalid(k, v, 'the header name after XDS_HEADER_ must be [A-Za-z0-9_.-] and not end in -bin');
      }
      if (/[\x00-\x1f\x7f]/.test(v))
        throw invalid(k, JSON.stringify(v), 'control characters are not allowed in a header value');
      headers[name] = v;
    } else if (k.startsWith('ISTIO_METAJSON_')) {
      try {
        metaJson[k.slice('ISTIO_METAJSON_'.length)] = JSON.parse(v) as unknown;
      } catch (err) {
        throw invalid(k, v, `expected JSON: ${errorMessage(err)}`);
      }
    }
  }

  const why = 'the xDS node id needs it; set it from the Downward API';
  const instanceIp = required(env, 'INSTANCE_IP', why);
  if (isIP(instanceIp) === 0) throw invalid('INSTANCE_IP', instanceIp, 'expected an IP address');
  return Object.freeze({
    address: hostPort,
    tls: plaintext
      ? undefined
      : {
          rootCa:
            env.XDS_ROOT_CA === undefined || env.XDS_ROOT_CA === '' ? DEFAULT_XDS_ROOT_CA : env.XDS_ROOT_CA,
          serverName:
            env.ALT_XDS_HOSTNAME === undefined || env.ALT_XDS_HOSTNAME === ''
              ? undefined
              : env.ALT_XDS_HOSTNAME,
        },
    authTokenSource: tokenFile ?? '(literal)',
    clusterId: base.clusterId,
    headers,
    node: {
      instanceIp,
      podName: required(env, 'POD_NAME', why),
      podNamespace: required(env, 'POD_NAMESPACE', why),
      nodeName: base.nodeName,
      metaJson,
    },
    readToken,
  });
}

/** The xDS node of a ztunnel (spec §3.1). */
export function ztunnelNode(n: WdsConfig['node']): Node {
  return {
    id: `ztunnel~${n.instanceIp}~${n.podName}.${n.podNamespace}~${n.podNamespace}.svc.cluster.local`,
    cluster: '',
    metadata: {
      ...n.metaJson,
      NAME: n.podName,
      NAMESPACE: n.podNamespace,
      INSTANCE_IPS: n.instanceIp,
      NODE_NAME: n.nodeName,
    },
    userAgentName: 'ztunnel',
    clientFeatures: [],
  };
}

/** The connection part of WdsClientOptions: credentials (reading XDS_ROOT_CA), metadata, node. */
export async function wdsConnectionOptions(
  cfg: WdsConfig,
): Promise<Pick<WdsClientOptions, 'address' | 'credentials' | 'channelOptions' | 'metadata' | 'node'>> {
  let credentials;
  const channelOptions: ChannelOptions = {};
  if (cfg.tls === undefined) credentials = grpcCredentials.createInsecure();
  else {
    let roots: Buffer | null = null;
    if (cfg.tls.rootCa !== 'SYSTEM') {
      try {
        roots = await readFile(cfg.tls.rootCa);
      } catch (err) {
        throw new ConfigError(
          'ZT_ERR_CONFIG',
          `cannot read XDS_ROOT_CA ${cfg.tls.rootCa}: ${errorMessage(err)}; mount the mesh root certificate or set XDS_ROOT_CA=SYSTEM`,
          { cause: err },
        );
      }
    }
    credentials = grpcCredentials.createSsl(roots);
    if (cfg.tls.serverName !== undefined)
      channelOptions['grpc.ssl_target_name_override'] = cfg.tls.serverName;
  }
  return {
    address: cfg.address,
    credentials,
    channelOptions,
    node: ztunnelNode(cfg.node),
    metadata: async () => {
      const md = new Metadata();
      for (const [k, v] of Object.entries(cfg.headers)) md.set(k, v);
      md.set('authorization', `Bearer ${await cfg.readToken()}`);
      md.set('clusterid', cfg.clusterId);
      return md;
    },
  };
}

// SPDX-License-Identifier: Apache-2.0
// How ztunnel reaches the controller's WDS (spec ambient-protocols §3.1), from upstream's
// environment variables. The address, roots, server name and token are the control plane's
// (../config/control-plane.ts: XDS_ADDRESS, XDS_ROOT_CA, ALT_XDS_HOSTNAME, AUTH_TOKEN), parsed
// once and shared with the CA client; the rest is WDS's own:
//
//   XDS_HEADER_<NAME>    extra call metadata `<name>: <value>` (shown redacted in /config_dump:
//                        such headers often carry credentials).
//   INSTANCE_IP, POD_NAME, POD_NAMESPACE   the node id `ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`.
//   ISTIO_METAJSON_<K>   JSON value added to the node metadata under <K>.
//   XDS_ON_DEMAND        only `false` is accepted: this ztunnel subscribes to every resource.
//
// NODE_NAME and CLUSTER_ID (sent as `clusterid`) come from the main configuration (../config/env.ts).
//
// No gRPC here: ../config/env.ts parses this in every mode, and static mode must not load grpc-js
// (decision 11). The channel itself is built by ./connection.ts.
import { isIP } from 'node:net';
import type { Node } from '../../../src/shared/gen/envoy/config/core/v3/base.ts';
import { errorMessage } from '../../../src/shared/errors.ts';
import {
  parseControlPlaneAddress,
  type BearerToken,
  type ControlPlaneSettings,
  type ControlPlaneTls,
} from '../config/control-plane.ts';
import { ConfigError } from '../config/errors.ts';

type Env = Readonly<Record<string, string | undefined>>;

export interface WdsConfig {
  /** `host:port` as grpc-js dials it. */
  readonly address: string;
  /** TLS settings, or undefined for plaintext (loopback only). */
  readonly tls: ControlPlaneTls | undefined;
  /** The bearer token's source; its JSON shows the file or `(literal)`, never the token. */
  readonly token: BearerToken;
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
}

function invalid(name: string, value: string, why: string): ConfigError {
  return new ConfigError('ZT_ERR_CONFIG', `invalid env var ${name}=${value} (${why})`);
}

function required(env: Env, name: string, why: string): string {
  const v = env[name];
  if (v === undefined || v === '') throw new ConfigError('ZT_ERR_CONFIG', `missing env var ${name} (${why})`);
  return v;
}

/** The WDS settings, or undefined when XDS_ADDRESS is unset (static mode). Throws ConfigError. */
export function loadWdsConfig(
  env: Env,
  base: { nodeName: string; clusterId: string; controlPlane: ControlPlaneSettings },
): WdsConfig | undefined {
  const raw = env.XDS_ADDRESS;
  if (raw === undefined || raw === '') return undefined;
  const endpoint = parseControlPlaneAddress('XDS_ADDRESS', raw, base.controlPlane.tls);
  const onDemand = env.XDS_ON_DEMAND;
  if (onDemand !== undefined && onDemand !== '' && onDemand !== 'false') {
    throw invalid('XDS_ON_DEMAND', onDemand, 'on-demand WDS is not supported; unset it or set false');
  }

  const headers: Record<string, string> = {};
  const metaJson: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (k.startsWith('XDS_HEADER_')) {
      const name = k.slice('XDS_HEADER_'.length).toLowerCase();
      if (!/^[a-z0-9][a-z0-9_.-]*$/.test(name) || name.endsWith('-bin')) {
        throw invalid(k, v, 'the header name after XDS_HEADER_ must be [A-Za-z0-9_.-] and not end in -bin');
      }
      // The value may be a credential: the error shows the name only.
      if (/[\x00-\x1f\x7f]/.test(v))
        throw new ConfigError(
          'ZT_ERR_CONFIG',
          `invalid env var ${k} (control characters are not allowed in a header value)`,
        );
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
    address: endpoint.address,
    tls: endpoint.tls,
    token: base.controlPlane.token,
    clusterId: base.clusterId,
    headers,
    node: {
      instanceIp,
      podName: required(env, 'POD_NAME', why),
      podNamespace: required(env, 'POD_NAMESPACE', why),
      nodeName: base.nodeName,
      metaJson,
    },
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

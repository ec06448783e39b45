// SPDX-License-Identifier: Apache-2.0
// The WDS channel from its settings (./config.ts): credentials, channel options, call metadata and
// node, as startWdsClient takes them. Loaded only when XDS_ADDRESS is set (it brings grpc-js).
//
// The channel credentials are rebuilt for every connection attempt from the root file as it is
// then (XDS_ROOT_CA), so after a root rotation the next reconnect trusts the new root; the token
// file is likewise read again for every stream.
import { credentials as grpcCredentials, Metadata, type ChannelOptions } from '@grpc/grpc-js';
import { readRootCa } from '../config/control-plane.ts';
import type { WdsClientOptions } from './client.ts';
import { ztunnelNode, type WdsConfig } from './config.ts';

/**
 * The connection part of WdsClientOptions: credentials (XDS_ROOT_CA re-read for every connection
 * attempt), channel options, metadata (the token re-read likewise), node. Reads the root file
 * once now, so an unusable XDS_ROOT_CA stops start-up with a message (ConfigError).
 */
export async function wdsConnectionOptions(
  cfg: WdsConfig,
): Promise<Pick<WdsClientOptions, 'address' | 'credentials' | 'channelOptions' | 'metadata' | 'node'>> {
  const channelOptions: ChannelOptions = {};
  const tls = cfg.tls;
  let credentials: WdsClientOptions['credentials'];
  if (tls === undefined) {
    const insecure = grpcCredentials.createInsecure();
    credentials = () => insecure;
  } else {
    await readRootCa(tls);
    credentials = async () => grpcCredentials.createSsl(await readRootCa(tls));
    if (tls.serverName !== undefined) channelOptions['grpc.ssl_target_name_override'] = tls.serverName;
  }
  return {
    address: cfg.address,
    credentials,
    channelOptions,
    node: ztunnelNode(cfg.node),
    metadata: async () => {
      const md = new Metadata();
      for (const [k, v] of Object.entries(cfg.headers)) md.set(k, v);
      md.set('authorization', `Bearer ${await cfg.token.read()}`);
      md.set('clusterid', cfg.clusterId);
      return md;
    },
  };
}

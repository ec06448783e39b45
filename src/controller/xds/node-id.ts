// SPDX-License-Identifier: Apache-2.0
// The xDS node a client announces on its first request (spec ambient-protocols §3.1):
// `id` = `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`, e.g.
// `ztunnel~10.0.0.5~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local`, and string
// metadata (NAME, NAMESPACE, INSTANCE_IPS, NODE_NAME, …). istiod keys the proxy type off the
// first field. We parse strictly and refuse anything else: the id ends up in every log line and
// metric of the stream, and a client that cannot say who it is gets nothing.
import { isIP } from 'node:net';
import type { Node } from '../../shared/gen/envoy/config/core/v3/base.ts';
import { XdsError, XdsErrorCode } from './errors.ts';

export interface XdsNodeInfo {
  readonly id: string;
  /** `ztunnel`, `sidecar`, `router`, … */
  readonly proxyType: string;
  readonly ip: string;
  readonly podName: string;
  readonly podNamespace: string;
  /** `<namespace>.svc.cluster.local` */
  readonly domain: string;
  /** The string values of the metadata keys in LOGGED_METADATA, for logs and status. */
  readonly metadata: Readonly<Record<string, string>>;
}

/** Metadata keys copied into XdsNodeInfo.metadata (ztunnel sends these, spec §3.1). */
export const LOGGED_METADATA = ['NAME', 'NAMESPACE', 'NODE_NAME', 'INSTANCE_IPS', 'CLUSTER_ID'] as const;

const MAX_ID_LENGTH = 1024;
const MAX_METADATA_VALUE = 256;
const PROXY_TYPE = /^[a-z][a-z0-9-]{0,62}$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

const EXPECTED =
  'expected <type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>, e.g. ztunnel~10.0.0.5~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local';

function refuse(id: string, why: string): never {
  throw new XdsError(
    XdsErrorCode.NODE_ID,
    `xDS node id ${JSON.stringify(id.slice(0, 120))} ${why}; ${EXPECTED}`,
  );
}

/** Parses and validates a node id; throws XdsError (CTL_ERR_XDS_NODE_ID) saying what is wrong. */
export function parseNodeId(id: string): Omit<XdsNodeInfo, 'metadata'> {
  if (id.length > MAX_ID_LENGTH) refuse(id, `is longer than ${MAX_ID_LENGTH} characters`);
  const parts = id.split('~');
  if (parts.length !== 4) refuse(id, `has ${parts.length} '~'-separated fields, not 4`);
  const [proxyType = '', ip = '', podId = '', domain = ''] = parts;
  if (!PROXY_TYPE.test(proxyType)) refuse(id, `has an invalid proxy type ${JSON.stringify(proxyType)}`);
  if (isIP(ip) === 0) refuse(id, `has ${JSON.stringify(ip)} where the proxy's IP address belongs`);
  const dot = domain.indexOf('.');
  const podNamespace = dot < 0 ? '' : domain.slice(0, dot);
  if (!DNS_LABEL.test(podNamespace) || !domain.startsWith(`${podNamespace}.svc.`) || domain.endsWith('.')) {
    refuse(id, `has an invalid DNS domain ${JSON.stringify(domain)}`);
  }
  if (!podId.endsWith(`.${podNamespace}`)) {
    refuse(id, `has pod id ${JSON.stringify(podId)}, which does not end in .${podNamespace}`);
  }
  const podName = podId.slice(0, -podNamespace.length - 1);
  if (!DNS_SUBDOMAIN.test(podName)) refuse(id, `has an invalid pod name ${JSON.stringify(podName)}`);
  return { id, proxyType, ip, podName, podNamespace, domain };
}

/** Parses the node of a first request; throws XdsError when it is missing or malformed. */
export function parseNode(node: Node | undefined): XdsNodeInfo {
  if (node === undefined || node.id === '') {
    throw new XdsError(XdsErrorCode.NODE_ID, `the first request of a stream carries no node id; ${EXPECTED}`);
  }
  const metadata: Record<string, string> = {};
  for (const key of LOGGED_METADATA) {
    const v = node.metadata?.[key];
    if (typeof v === 'string') metadata[key] = v.slice(0, MAX_METADATA_VALUE);
  }
  return { ...parseNodeId(node.id), metadata };
}

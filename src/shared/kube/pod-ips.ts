// SPDX-License-Identifier: Apache-2.0
// A pod's IPs as the API server reports them: status.podIPs, or the older single status.podIP
// when the list is empty. Shared by the controller (WDS workload addresses) and the node agent
// (checking the namespace a running pod is found in). Not validated here: callers decide what a
// malformed address means.
import type { V1Pod } from '@kubernetes/client-node';

export function podIps(pod: V1Pod): string[] {
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip);
  const single = pod.status?.podIP;
  return ips.length === 0 && single !== undefined && single !== '' ? [single] : ips;
}

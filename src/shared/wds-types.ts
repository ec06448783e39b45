// SPDX-License-Identifier: Apache-2.0
// The WDS resource types (ambient-protocols §3): what the controller serves and ztunnel
// subscribes to, wildcard, in this order. One definition for both ends.
export const ADDRESS_TYPE_URL = 'type.googleapis.com/istio.workload.Address';
export const AUTHORIZATION_TYPE_URL = 'type.googleapis.com/istio.security.Authorization';
export const WDS_TYPE_URLS: readonly string[] = [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL];

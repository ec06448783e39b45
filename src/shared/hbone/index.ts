// SPDX-License-Identifier: Apache-2.0
// The HBONE transport (ambient-protocols.md §1): HTTP/2 CONNECT over mutual TLS. Public surface
// of src/shared/hbone for ztunnel, waypoints, tests and the benchmark.
export {
  parseAuthority,
  formatAuthority,
  authorityToString,
  MAX_HOST_LENGTH,
  type Authority,
} from './authority.ts';
export {
  HboneClient,
  type HboneClientOptions,
  type HboneClientStats,
  type HboneConnectRequest,
  type HboneDialer,
  type HboneTunnel,
} from './client.ts';
export { HboneError, statusError, type HboneErrorCode } from './errors.ts';
export { relay, resetDuplex, isHttp2Stream, type RelayResult } from './relay.ts';
export {
  HboneServer,
  type HboneServerEvents,
  type HboneServerOptions,
  type HboneServerStats,
  type InboundConnect,
  type InboundDecision,
  type RejectedConnect,
} from './server.ts';
export { DEFAULT_HBONE_SETTINGS, resolveHboneSettings, type HboneSettings } from './settings.ts';
export { HBONE_ALPN, HBONE_CIPHERS, HBONE_TLS_VERSION } from './tls.ts';
export { connectUpstream, type ConnectUpstreamOptions } from './upstream.ts';

// SPDX-License-Identifier: Apache-2.0
// DeltaDiscoveryResponse encoding from pre-encoded resources, and the gRPC service definition
// that sends those bytes as they are.
//
// The generated DeltaDiscoveryResponse.encode would re-encode every Resource (and its Any) for
// every client. Here each Resource is encoded once, in the XdsResourceStore, and a response is
// the concatenation of `field 2, length, bytes` per resource plus the few scalar fields — the
// same bytes protobuf would produce (tests decode them with the generated decoder). The
// service definition is the generated one with an identity response serializer; only the delta
// method is registered, so StreamAggregatedResources (state of the world) answers UNIMPLEMENTED.
import type { MethodDefinition } from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { AggregatedDiscoveryServiceService } from '../../shared/gen/envoy/service/discovery/v3/ads.ts';
import type { DeltaDiscoveryRequest } from '../../shared/gen/envoy/service/discovery/v3/discovery.ts';
import type { StoredResource } from './resource-store.ts';

export interface DeltaResponseContent {
  readonly typeUrl: string;
  readonly nonce: string;
  /** Debugging only (the type's revision the response brings the client to). */
  readonly systemVersionInfo: string;
  readonly resources: readonly StoredResource[];
  readonly removed: readonly string[];
}

/** The wire bytes of a DeltaDiscoveryResponse (envoy/service/discovery/v3/discovery.proto). */
export function encodeDeltaResponse(r: DeltaResponseContent): Buffer {
  const w = new BinaryWriter();
  if (r.systemVersionInfo !== '') w.uint32((1 << 3) | 2).string(r.systemVersionInfo);
  for (const res of r.resources) w.uint32((2 << 3) | 2).bytes(res.encoded);
  w.uint32((4 << 3) | 2).string(r.typeUrl);
  w.uint32((5 << 3) | 2).string(r.nonce);
  for (const name of r.removed) w.uint32((6 << 3) | 2).string(name);
  const bytes = w.finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const generated = AggregatedDiscoveryServiceService.deltaAggregatedResources;

/** `envoy.service.discovery.v3.AggregatedDiscoveryService` with only DeltaAggregatedResources. */
export const DELTA_ADS_SERVICE: {
  deltaAggregatedResources: MethodDefinition<DeltaDiscoveryRequest, Buffer>;
} = {
  deltaAggregatedResources: {
    path: generated.path,
    requestStream: true,
    responseStream: true,
    requestSerialize: generated.requestSerialize,
    requestDeserialize: generated.requestDeserialize,
    responseSerialize: (b: Buffer): Buffer => b,
    responseDeserialize: (b: Buffer): Buffer => b,
  },
};

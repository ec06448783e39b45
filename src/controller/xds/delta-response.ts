// SPDX-License-Identifier: Apache-2.0
// DeltaDiscoveryResponse encoding from pre-encoded resources, in two parts, and the gRPC service
// definition that writes them.
//
// A response is a *body* — system_version_info (1), resources (2), type_url (4),
// removed_resources (6) — followed by the stream's own nonce (5). Protobuf lets fields appear in
// any order and every decoder (prost in ztunnel, the generated one in our tests) accepts them so,
// which is what makes the body shareable: every wildcard client brought to the same revision
// gets the same body (shared-bodies.ts builds it once), and only the few nonce bytes differ.
// The body is the concatenation of `field 2, length, bytes` per resource, each Resource encoded
// once in the XdsResourceStore, plus the few scalar fields — the bytes the generated encoder
// would produce for those fields — written into one allocation sized beforehand.
//
// A large response is written by the server in slices straight from these two pieces
// (paced-write.ts), with no copy; a small one goes through grpc-js, whose service definition
// here is the generated one with a serializer that appends the nonce to the body. Only the
// delta method is registered, so StreamAggregatedResources (state of the world) answers
// UNIMPLEMENTED.
import type { MethodDefinition } from '@grpc/grpc-js';
import { AggregatedDiscoveryServiceService } from '../../shared/gen/envoy/service/discovery/v3/ads.ts';
import type { DeltaDiscoveryRequest } from '../../shared/gen/envoy/service/discovery/v3/discovery.ts';
import type { StoredResource } from './resource-store.ts';

/** What a response body carries. */
export interface ResponseBodyContent {
  readonly typeUrl: string;
  /** Debugging only (the type's revision the response brings the client to). */
  readonly systemVersionInfo: string;
  readonly resources: readonly StoredResource[];
  readonly removed: readonly string[];
}

/** A DeltaDiscoveryResponse without its nonce, encoded; immutable, and shared where it fits. */
export interface ResponseBody {
  /** Fields 1, 2, 4 and 6 of the response, in that order. */
  readonly bytes: Buffer;
  /** How many resources and removed names it carries (for counters and logs). */
  readonly resources: number;
  readonly removed: number;
}

/** One response of one stream: a body, possibly shared with other streams, and its nonce. */
export interface DeltaResponse {
  readonly body: ResponseBody;
  readonly nonce: string;
}

// Wire-format tags: (field number << 3) | wire type 2 (length-delimited).
const TAG_SYSTEM_VERSION_INFO = (1 << 3) | 2;
const TAG_RESOURCES = (2 << 3) | 2;
const TAG_TYPE_URL = (4 << 3) | 2;
const TAG_NONCE = (5 << 3) | 2;
const TAG_REMOVED_RESOURCES = (6 << 3) | 2;

function varintLength(n: number): number {
  let len = 1;
  for (let v = n; v > 0x7f; v >>>= 7) len++;
  return len;
}

function writeVarint(buf: Buffer, pos: number, n: number): number {
  let v = n;
  let p = pos;
  while (v > 0x7f) {
    buf[p++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  buf[p++] = v;
  return p;
}

/** Bytes of a length-delimited field holding `length` bytes (all our tags are one byte). */
function fieldLength(length: number): number {
  return 1 + varintLength(length) + length;
}

function writeString(buf: Buffer, pos: number, tag: number, s: string): number {
  let p = writeVarint(buf, pos, tag);
  p = writeVarint(buf, p, Buffer.byteLength(s));
  return p + buf.write(s, p, 'utf8');
}

/** Encodes a response body in one allocation. */
export function encodeResponseBody(c: ResponseBodyContent): ResponseBody {
  let size = fieldLength(Buffer.byteLength(c.typeUrl));
  if (c.systemVersionInfo !== '') size += fieldLength(Buffer.byteLength(c.systemVersionInfo));
  for (const r of c.resources) size += fieldLength(r.encoded.byteLength);
  for (const name of c.removed) size += fieldLength(Buffer.byteLength(name));

  const buf = Buffer.allocUnsafe(size);
  let p = 0;
  if (c.systemVersionInfo !== '') p = writeString(buf, p, TAG_SYSTEM_VERSION_INFO, c.systemVersionInfo);
  for (const r of c.resources) {
    p = writeVarint(buf, p, TAG_RESOURCES);
    p = writeVarint(buf, p, r.encoded.byteLength);
    buf.set(r.encoded, p);
    p += r.encoded.byteLength;
  }
  p = writeString(buf, p, TAG_TYPE_URL, c.typeUrl);
  for (const name of c.removed) p = writeString(buf, p, TAG_REMOVED_RESOURCES, name);
  return { bytes: buf, resources: c.resources.length, removed: c.removed.length };
}

function nonceField(nonce: string): Buffer {
  const buf = Buffer.allocUnsafe(fieldLength(Buffer.byteLength(nonce)));
  writeString(buf, 0, TAG_NONCE, nonce);
  return buf;
}

/** Length on the wire of a response (body and nonce field). */
export function responseLength(r: DeltaResponse): number {
  return r.body.bytes.byteLength + fieldLength(Buffer.byteLength(r.nonce));
}

/** The wire bytes of a response as two pieces: the (shared) body, then the nonce field. */
export function responseParts(r: DeltaResponse): [body: Buffer, nonce: Buffer] {
  return [r.body.bytes, nonceField(r.nonce)];
}

/** The wire bytes of a DeltaDiscoveryResponse (envoy/service/discovery/v3/discovery.proto). */
export function responseBytes(r: DeltaResponse): Buffer {
  return Buffer.concat(responseParts(r), responseLength(r));
}

const generated = AggregatedDiscoveryServiceService.deltaAggregatedResources;

/** `envoy.service.discovery.v3.AggregatedDiscoveryService` with only DeltaAggregatedResources. */
export const DELTA_ADS_SERVICE: {
  deltaAggregatedResources: MethodDefinition<DeltaDiscoveryRequest, DeltaResponse>;
} = {
  deltaAggregatedResources: {
    path: generated.path,
    requestStream: true,
    responseStream: true,
    requestSerialize: generated.requestSerialize,
    requestDeserialize: generated.requestDeserialize,
    responseSerialize: responseBytes,
    responseDeserialize: (): DeltaResponse => {
      throw new Error(
        'DELTA_ADS_SERVICE is a server-side definition; clients decode with the generated AggregatedDiscoveryServiceService',
      );
    },
  },
};

// SPDX-License-Identifier: Apache-2.0
// WDS resource types, names and aliases (spec ambient-protocols §3.2): what the model hands to
// the XdsResourceStore for each Workload, Service and Authorization it produces.
//
//   Address (Workload)     name = uid                 aliases = `<network>/<ip>` per address
//   Address (Service)      name = `<ns>/<hostname>`   aliases = `<network>/<vip>` per VIP
//   Authorization          name = `<ns>/<name>`
//
// IPs in aliases are in the canonical text form ztunnel indexes by (RFC 5952 for IPv6), so an
// on-demand lookup for `/10.0.0.1` or `/fd00::1` finds the resource by its alias.
import { Authorization } from '../../shared/gen/authorization.ts';
import { Address, type Service, type Workload } from '../../shared/gen/workload.ts';
import { formatIp } from '../../shared/net/ip.ts';
import { XdsError, XdsErrorCode } from './errors.ts';
import type { ResourceUpsert } from './resource-store.ts';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WDS_TYPE_URLS } from '../../shared/wds-types.ts';

export { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WDS_TYPE_URLS };

/** Text form (RFC 5952 for IPv6, as ztunnel canonicalises) of a raw 4- or 16-byte address; throws on any other length. */
export function formatIpBytes(bytes: Uint8Array): string {
  if (bytes.length !== 4 && bytes.length !== 16) {
    throw new XdsError(
      XdsErrorCode.RESOURCE,
      `an IP address must be 4 or 16 bytes, got ${bytes.length}; fix the model that produced it`,
    );
  }
  return formatIp({ family: bytes.length === 4 ? 4 : 6, bytes });
}

function encodeAddress(address: Address): Uint8Array {
  return Address.encode(address).finish();
}

/** The store entry for a Workload: keyed by uid, aliased by `network/ip`. */
export function workloadResource(w: Workload): [name: string, upsert: ResourceUpsert] {
  return [
    w.uid,
    {
      body: encodeAddress({ type: { $case: 'workload', value: w } }),
      aliases: w.addresses.map((a) => `${w.network}/${formatIpBytes(a)}`),
    },
  ];
}

/** The store entry for a Service: keyed `namespace/hostname`, aliased by `network/vip`. */
export function serviceResource(s: Service): [name: string, upsert: ResourceUpsert] {
  return [
    `${s.namespace}/${s.hostname}`,
    {
      body: encodeAddress({ type: { $case: 'service', value: s } }),
      aliases: s.addresses.map((a) => `${a.network}/${formatIpBytes(a.address)}`),
    },
  ];
}

/** The store entry for an Address, whichever of workload or service it holds. */
export function addressResource(a: Address): [name: string, upsert: ResourceUpsert] {
  switch (a.type?.$case) {
    case 'workload':
      return workloadResource(a.type.value);
    case 'service':
      return serviceResource(a.type.value);
    case undefined:
      throw new XdsError(
        XdsErrorCode.RESOURCE,
        'an Address holds neither a workload nor a service; fix the model',
      );
  }
}

/** The store entry for an Authorization: keyed `namespace/name`. */
export function authorizationResource(a: Authorization): [name: string, upsert: ResourceUpsert] {
  return [`${a.namespace}/${a.name}`, { body: Authorization.encode(a).finish() }];
}

// SPDX-License-Identifier: Apache-2.0
// envoy.service.discovery.v3 subset (our own wire-compatible copy; see src/shared/proto/README.md):
// delta request/response round trips carrying a WDS Address packed in an Any, hand-computed bytes
// for the fields WDS uses (upstream field numbers), fields of the full upstream messages that our
// subset leaves out are skipped on decode, and the ADS method paths.
import t from 'tap';
import { AggregatedDiscoveryServiceService } from '../../../../src/shared/gen/envoy/service/discovery/v3/ads.ts';
import { Node } from '../../../../src/shared/gen/envoy/config/core/v3/base.ts';
import {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  DiscoveryRequest,
  DiscoveryResponse,
  Resource,
} from '../../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';
import { Address, Workload } from '../../../../src/shared/gen/workload.ts';
import { fromHex, hex, withUnknownFields } from './wire-helpers.ts';

const ADDRESS_TYPE_URL = 'type.googleapis.com/istio.workload.Address';

const node: Node = {
  id: 'ztunnel~10.244.1.2~ztunnel-abcde.istio-system~istio-system.svc.cluster.local',
  cluster: 'Kubernetes',
  metadata: {
    NAME: 'ztunnel-abcde',
    NAMESPACE: 'istio-system',
    INSTANCE_IPS: '10.244.1.2',
    NODE_NAME: 'node-a',
  },
  locality: { region: 'r', zone: 'z', subZone: 's' },
  userAgentName: 'ztunnel',
  userAgentVersionType: { $case: 'userAgentVersion', value: '1.0.0' },
  clientFeatures: ['envoy.lb.does_not_support_overprovisioning'],
};

t.test('delta request and response round-trip, with an Address packed in an Any', async (t) => {
  const req: DeltaDiscoveryRequest = {
    node,
    typeUrl: ADDRESS_TYPE_URL,
    resourceNamesSubscribe: ['*'],
    resourceNamesUnsubscribe: ['*'],
    initialResourceVersions: new Map([['Kubernetes//Pod/bookinfo/reviews-v1', '42']]),
    responseNonce: 'nonce-1',
    errorDetail: { code: 3, message: 'a: bad; b: worse', details: [] },
    resourceLocatorsSubscribe: [{ name: 'x', dynamicParameters: new Map([['k', 'v']]) }],
    resourceLocatorsUnsubscribe: [{ name: 'y', dynamicParameters: new Map() }],
  };
  t.same(DeltaDiscoveryRequest.decode(DeltaDiscoveryRequest.encode(req).finish()), req);

  const address: Address = {
    type: { $case: 'workload', value: Workload.fromPartial({ uid: 'u1', name: 'p' }) },
  };
  const res: DeltaDiscoveryResponse = {
    systemVersionInfo: 'v7',
    resources: [
      {
        version: '7',
        resource: { typeUrl: ADDRESS_TYPE_URL, value: Address.encode(address).finish() },
        name: 'u1',
        aliases: ['/10.244.1.7'],
        ttl: { seconds: 30, nanos: 0 },
        cacheControl: { doNotCache: true },
      },
    ],
    typeUrl: ADDRESS_TYPE_URL,
    nonce: 'nonce-2',
    removedResources: ['u0'],
    controlPlane: { identifier: 'istiod-1' },
  };
  const decoded = DeltaDiscoveryResponse.decode(DeltaDiscoveryResponse.encode(res).finish());
  t.same(decoded, res);
  const any = decoded.resources[0]?.resource;
  t.equal(any?.typeUrl, ADDRESS_TYPE_URL);
  t.same(Address.decode(any?.value ?? new Uint8Array()), address, 'the Any unpacks to the Address');
});

t.test('state-of-the-world request and response round-trip', async (t) => {
  const req: DiscoveryRequest = {
    versionInfo: '1',
    node,
    resourceNames: ['a'],
    typeUrl: 'type.googleapis.com/envoy.config.listener.v3.Listener',
    responseNonce: 'n',
    errorDetail: undefined,
    resourceLocators: [],
  };
  t.same(DiscoveryRequest.decode(DiscoveryRequest.encode(req).finish()), req);
  const res: DiscoveryResponse = {
    versionInfo: '2',
    resources: [{ typeUrl: 't', value: new Uint8Array([1]) }],
    canary: true,
    typeUrl: 't',
    nonce: 'n2',
    controlPlane: { identifier: 'c' },
  };
  t.same(DiscoveryResponse.decode(DiscoveryResponse.encode(res).finish()), res);
});

t.test('bytes match hand-computed encodings with the upstream field numbers', async (t) => {
  // ACK: type_url (2) "t", response_nonce (6) "n".
  t.equal(
    hex(
      DeltaDiscoveryRequest.encode(
        DeltaDiscoveryRequest.fromPartial({ typeUrl: 't', responseNonce: 'n' }),
      ).finish(),
    ),
    '120174' + '32016e',
  );
  // NACK adds error_detail (7) Status { message(2) "m" }; subscribe (3) "a"; unsubscribe (4) "b";
  // initial_resource_versions (5) entry { key(1) "a", value(2) "1" }.
  t.equal(
    hex(
      DeltaDiscoveryRequest.encode(
        DeltaDiscoveryRequest.fromPartial({
          resourceNamesSubscribe: ['a'],
          resourceNamesUnsubscribe: ['b'],
          initialResourceVersions: new Map([['a', '1']]),
          errorDetail: { message: 'm' },
        }),
      ).finish(),
    ),
    '1a0161' + '220162' + '2a06' + '0a0161' + '120131' + '3a03' + '12016d',
  );
  // node (1) { id(1) "i", cluster(2) "c" }.
  t.equal(
    hex(
      DeltaDiscoveryRequest.encode(
        DeltaDiscoveryRequest.fromPartial({ node: { id: 'i', cluster: 'c' } }),
      ).finish(),
    ),
    '0a06' + '0a0169' + '120163',
  );
  // Response: resources (2) Resource { version(1) "1", name(3) "r", aliases(4) "x" }, type_url (4),
  // nonce (5), removed_resources (6).
  t.equal(
    hex(
      DeltaDiscoveryResponse.encode(
        DeltaDiscoveryResponse.fromPartial({
          resources: [{ version: '1', name: 'r', aliases: ['x'] }],
          typeUrl: 't',
          nonce: 'n',
          removedResources: ['d'],
        }),
      ).finish(),
    ),
    '1209' + '0a0131' + '1a0172' + '220178' + '220174' + '2a016e' + '320164',
  );
  // Resource.resource (2) Any { type_url(1) "t", value(2) 01 }; ttl (6) Duration { seconds(1) 5 }.
  t.equal(
    hex(
      Resource.encode(
        Resource.fromPartial({ resource: { typeUrl: 't', value: new Uint8Array([1]) }, ttl: { seconds: 5 } }),
      ).finish(),
    ),
    '1206' + '0a0174' + '120101' + '3202' + '0805',
  );
});

t.test('fields of the full upstream messages that our subset omits are skipped', async (t) => {
  // Resource: resource_name (8) and metadata (9) messages; Node: user_agent_build_version (8),
  // extensions (9), dynamic_parameters (12); DeltaDiscoveryResponse: removed_resource_names (8).
  t.same(Resource.decode(fromHex('1a0172' + '42020a00' + '4a00')), Resource.fromPartial({ name: 'r' }));
  t.same(Node.decode(fromHex('0a0169' + '4200' + '4a00' + '6200')), Node.fromPartial({ id: 'i' }));
  t.same(
    DeltaDiscoveryResponse.decode(fromHex('2a016e' + '42030a0178')),
    DeltaDiscoveryResponse.fromPartial({ nonce: 'n' }),
  );
  const req = DeltaDiscoveryRequest.fromPartial({ node, typeUrl: ADDRESS_TYPE_URL });
  t.same(DeltaDiscoveryRequest.decode(withUnknownFields(DeltaDiscoveryRequest.encode(req).finish())), req);
});

t.test('ADS method paths are the upstream ones', async (t) => {
  const delta = AggregatedDiscoveryServiceService.deltaAggregatedResources;
  t.equal(delta.path, '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources');
  t.same([delta.requestStream, delta.responseStream], [true, true], 'bidirectional stream');
  const sotw = AggregatedDiscoveryServiceService.streamAggregatedResources;
  t.equal(sotw.path, '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources');
  t.same([sotw.requestStream, sotw.responseStream], [true, true], 'bidirectional stream');
});

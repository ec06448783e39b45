// SPDX-License-Identifier: Apache-2.0
// istio.workload (WDS) generated code: full round trips of Workload, Service and the Address
// oneof, field-number coverage read back from the wire, byte-exact encodings computed by hand
// from the field numbers of ambient-protocols.md §3.5 (wire compatibility, not just
// self-consistency), and tolerance of unknown fields and enum values.
import t from 'tap';
import {
  Address,
  AppProtocol,
  ApplicationTunnel_Protocol,
  GatewayAddress,
  IPFamilies,
  LoadBalancing,
  LoadBalancing_HealthPolicy,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  NetworkAddress,
  NetworkMode,
  Service,
  Service_Visibility,
  TunnelProtocol,
  Workload,
  WorkloadStatus,
  WorkloadType,
} from '../../../../src/shared/gen/workload.ts';
import { fieldSet, fromHex, hex, range, withUnknownFields } from './wire-helpers.ts';

const IP4 = new Uint8Array([10, 244, 1, 7]);
const IP6 = new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

const waypoint: GatewayAddress = {
  destination: {
    $case: 'hostname',
    value: { namespace: 'bookinfo', hostname: 'waypoint.bookinfo.svc.cluster.local' },
  },
  hboneMtlsPort: 15008,
};

/** A Workload with every field (1–27 except reserved 15) set to a non-default value. */
const fullWorkload: Workload = {
  name: 'reviews-v1-7d9f8b6c5d-x2x9z',
  namespace: 'bookinfo',
  addresses: [IP4, IP6],
  network: 'network-1',
  tunnelProtocol: TunnelProtocol.HBONE,
  trustDomain: 'example.org',
  serviceAccount: 'bookinfo-reviews',
  waypoint,
  node: 'node-a',
  canonicalName: 'reviews',
  canonicalRevision: 'v1',
  workloadType: WorkloadType.POD,
  workloadName: 'reviews-v1',
  nativeTunnel: true,
  authorizationPolicies: ['bookinfo/allow-productpage', 'istio-system/istio_converted_static_strict'],
  status: WorkloadStatus.UNHEALTHY,
  clusterId: 'Kubernetes',
  networkGateway: {
    destination: { $case: 'address', value: { network: 'network-2', address: IP4, length: 32 } },
    hboneMtlsPort: 15008,
  },
  uid: 'Kubernetes//Pod/bookinfo/reviews-v1-7d9f8b6c5d-x2x9z',
  hostname: 'vm.example.com',
  services: new Map([
    [
      'bookinfo/reviews.bookinfo.svc.cluster.local',
      { ports: [{ servicePort: 9080, targetPort: 9080, appProtocol: AppProtocol.HTTP11 }] },
    ],
    [
      'bookinfo/reviews-grpc.bookinfo.svc.cluster.local',
      { ports: [{ servicePort: 80, targetPort: 0, appProtocol: AppProtocol.GRPC }] },
    ],
  ]),
  applicationTunnel: { protocol: ApplicationTunnel_Protocol.PROXY, port: 15088 },
  locality: { region: 'eu-west', zone: 'eu-west-1a', subzone: 'rack-3' },
  networkMode: NetworkMode.HOST_NETWORK,
  extensions: [
    {
      name: 'example.com/ext',
      config: { typeUrl: 'type.googleapis.com/google.protobuf.Empty', value: new Uint8Array() },
    },
  ],
  capacity: 3,
};

/** A Service with every field (1–14) set to a non-default value. */
const fullService: Service = {
  name: 'reviews',
  namespace: 'bookinfo',
  hostname: 'reviews.bookinfo.svc.cluster.local',
  addresses: [
    { network: '', address: new Uint8Array([10, 96, 0, 20]) },
    { network: 'network-1', address: IP6, length: 128 },
  ],
  ports: [
    { servicePort: 9080, targetPort: 9080, appProtocol: AppProtocol.HTTP2 },
    { servicePort: 443, targetPort: 0, appProtocol: AppProtocol.TLS },
  ],
  subjectAltNames: ['spiffe://cluster.local/ns/bookinfo/sa/reviews'],
  waypoint,
  loadBalancing: {
    routingPreference: [LoadBalancing_Scope.NETWORK, LoadBalancing_Scope.REGION, LoadBalancing_Scope.ZONE],
    mode: LoadBalancing_Mode.FAILOVER,
    healthPolicy: LoadBalancing_HealthPolicy.ALLOW_ALL,
  },
  ipFamilies: IPFamilies.DUAL,
  extensions: [{ name: 'x', config: { typeUrl: 'type.googleapis.com/x.Y', value: new Uint8Array([1, 2]) } }],
  canonical: true,
  ingressUseWaypoint: true,
  weightedWaypoints: [
    { destination: waypoint, weight: 90 },
    {
      destination: {
        destination: { $case: 'address', value: { network: '', address: IP4 } },
        hboneMtlsPort: 15008,
      },
      weight: 10,
    },
  ],
  visibility: Service_Visibility.NAMESPACE,
};

t.test('Workload: every field round-trips and all 26 field numbers are on the wire', async (t) => {
  t.same(Object.keys(fullWorkload).sort(), Object.keys(Workload.create()).sort(), 'fixture sets every field');
  const bytes = Workload.encode(fullWorkload).finish();
  t.same(fieldSet(bytes), range(1, 27, [15]), 'fields 1–27, 15 reserved');
  t.same(Workload.decode(bytes), fullWorkload);
});

t.test('Service: every field round-trips and fields 1–14 are on the wire', async (t) => {
  t.same(Object.keys(fullService).sort(), Object.keys(Service.create()).sort(), 'fixture sets every field');
  const bytes = Service.encode(fullService).finish();
  t.same(fieldSet(bytes), range(1, 14));
  t.same(Service.decode(bytes), fullService);
});

t.test('Address oneof: workload = 1, service = 2, presence of an empty member kept', async (t) => {
  for (const a of [
    { type: { $case: 'workload', value: fullWorkload } },
    { type: { $case: 'service', value: fullService } },
  ] satisfies Address[]) {
    t.same(Address.decode(Address.encode(a).finish()), a);
  }
  // Hand-computed: field 1 LEN { Workload field 20 (tag 0xa2 0x01) "u" }.
  const w: Address = { type: { $case: 'workload', value: Workload.fromPartial({ uid: 'u' }) } };
  t.equal(hex(Address.encode(w).finish()), '0a04a2010175');
  // Field 2 LEN { Service field 3 "h" }.
  const s: Address = { type: { $case: 'service', value: Service.fromPartial({ hostname: 'h' }) } };
  t.equal(hex(Address.encode(s).finish()), '12031a0168');
  // An empty Workload is still sent (0a 00) and decodes as the workload case.
  const empty: Address = { type: { $case: 'workload', value: Workload.create() } };
  t.equal(hex(Address.encode(empty).finish()), '0a00');
  t.equal(Address.decode(fromHex('0a00')).type?.$case, 'workload');
  t.equal(Address.decode(new Uint8Array()).type, undefined, 'no member set');
});

t.test('Workload bytes match hand-computed protobuf encodings', async (t) => {
  const enc = (w: Workload): string => hex(Workload.encode(w).finish());
  // uid is field 20: tag (20<<3)|2 = 162 = varint a2 01.
  t.equal(enc(Workload.fromPartial({ uid: 'x' })), 'a2010178');
  // addresses (3, LEN, raw 4 bytes) then tunnel_protocol (5, varint) HBONE = 1.
  t.equal(
    enc(
      Workload.fromPartial({
        addresses: [new Uint8Array([10, 0, 0, 1])],
        tunnelProtocol: TunnelProtocol.HBONE,
      }),
    ),
    '1a040a000001' + '2801',
  );
  // capacity (27) is a UInt32Value: tag (27<<3)|2 = 218 = da 01; { value(1) = 5 }.
  t.equal(enc(Workload.fromPartial({ capacity: 5 })), 'da01020805');
  // A present zero wrapper is still sent (and differs from absent).
  t.equal(enc(Workload.fromPartial({ capacity: 0 })), 'da0100');
  t.equal(Workload.decode(fromHex('da0100')).capacity, 0);
  t.equal(Workload.decode(new Uint8Array()).capacity, undefined);
  // services (22) map entry { key(1) "a", value(2) PortList { ports(1) Port { 1: 80, 2: 8080 } } }.
  const services = new Map([
    ['a', { ports: [{ servicePort: 80, targetPort: 8080, appProtocol: AppProtocol.UNKNOWN }] }],
  ]);
  t.equal(enc(Workload.fromPartial({ services })), 'b2010c' + '0a0161' + '1207' + '0a05' + '0850' + '10903f');
  // Proto3 defaults are not sent.
  t.equal(enc(Workload.create()), '');
});

t.test('smaller messages: GatewayAddress, LoadBalancing, NetworkAddress optional length', async (t) => {
  // destination.hostname (1) { namespace(1) "n", hostname(2) "h" }, hbone_mtls_port (3) = 15008 (a0 75).
  const gw: GatewayAddress = {
    destination: { $case: 'hostname', value: { namespace: 'n', hostname: 'h' } },
    hboneMtlsPort: 15008,
  };
  t.equal(hex(GatewayAddress.encode(gw).finish()), '0a060a016e120168' + '18a075');
  t.same(GatewayAddress.decode(GatewayAddress.encode(gw).finish()), gw);
  // routing_preference (1) packed [NETWORK=6, REGION=1, ZONE=2]; mode (2) FAILOVER = 2.
  const lb = LoadBalancing.fromPartial({
    routingPreference: [LoadBalancing_Scope.NETWORK, LoadBalancing_Scope.REGION, LoadBalancing_Scope.ZONE],
    mode: LoadBalancing_Mode.FAILOVER,
  });
  t.equal(hex(LoadBalancing.encode(lb).finish()), '0a03060102' + '1002');
  // length (3) is proto3 `optional`: a present 0 is sent and kept; absent stays undefined.
  const cidr0: NetworkAddress = { network: '', address: new Uint8Array([10, 0, 0, 1]), length: 0 };
  t.equal(hex(NetworkAddress.encode(cidr0).finish()), '12040a000001' + '1800');
  t.equal(NetworkAddress.decode(fromHex('12040a0000011800')).length, 0);
  t.equal(NetworkAddress.decode(fromHex('12040a000001')).length, undefined);
});

t.test('unknown fields are skipped on decode', async (t) => {
  t.same(Workload.decode(withUnknownFields(Workload.encode(fullWorkload).finish())), fullWorkload);
  t.same(Service.decode(withUnknownFields(Service.encode(fullService).finish())), fullService);
  const a: Address = { type: { $case: 'service', value: fullService } };
  t.same(Address.decode(withUnknownFields(Address.encode(a).finish())), a);
  // The reserved field 15, if a peer sent it, is skipped like any unknown field.
  t.same(Workload.decode(fromHex('7801' + 'a2010178')), Workload.fromPartial({ uid: 'x' }));
});

t.test('enum values unknown to us decode to their number (proto3 open enums)', async (t) => {
  // tunnel_protocol (5) = 7: callers must treat values outside the union as unknown.
  const w = Workload.decode(fromHex('2807'));
  t.equal(w.tunnelProtocol, 7);
  t.equal(hex(Workload.encode(w).finish()), '2807', 're-encodes unchanged');
});

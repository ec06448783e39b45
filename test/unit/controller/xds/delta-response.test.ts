// SPDX-License-Identifier: Apache-2.0
// DeltaDiscoveryResponse assembled from pre-encoded resources (src/controller/xds/delta-response.ts):
// the body must be byte-for-byte what the generated encoder produces for the same fields, the
// nonce field follows it, and the whole decodes back to the same message.
import t from 'tap';
import {
  DELTA_ADS_SERVICE,
  encodeResponseBody,
  responseBytes,
  responseLength,
} from '../../../../src/controller/xds/delta-response.ts';
import { XdsResourceStore } from '../../../../src/controller/xds/resource-store.ts';
import {
  DeltaDiscoveryResponse,
  Resource,
} from '../../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';

const TYPE = 'type.googleapis.com/istio.workload.Address';

function storeWithTwo(): XdsResourceStore {
  const store = new XdsResourceStore([TYPE]);
  store.apply(
    TYPE,
    new Map([
      ['a', { body: Uint8Array.of(1, 2, 3), aliases: ['/10.0.0.1'] }],
      // Long enough for a multi-byte length varint.
      ['b', { body: new Uint8Array(300).fill(7) }],
    ]),
  );
  return store;
}

t.test('the body equals the generated encoding of the same fields; the nonce follows it', async (t) => {
  const resources = [...storeWithTwo().all(TYPE)];
  const body = encodeResponseBody({
    typeUrl: TYPE,
    systemVersionInfo: '2',
    resources,
    removed: ['gone/1', 'gone/ü'],
  });
  t.equal(body.resources, 2);
  t.equal(body.removed, 2);
  const expectedBody = DeltaDiscoveryResponse.encode({
    systemVersionInfo: '2',
    resources: resources.map((r) => Resource.decode(r.encoded)),
    typeUrl: TYPE,
    nonce: '',
    removedResources: ['gone/1', 'gone/ü'],
  }).finish();
  t.equal(body.bytes.toString('hex'), Buffer.from(expectedBody).toString('hex'));

  const wire = responseBytes({ body, nonce: 'n1' });
  t.equal(wire.length, responseLength({ body, nonce: 'n1' }));
  const nonceOnly = DeltaDiscoveryResponse.encode(
    DeltaDiscoveryResponse.fromPartial({ nonce: 'n1' }),
  ).finish();
  t.equal(wire.toString('hex'), Buffer.concat([expectedBody, nonceOnly]).toString('hex'));

  const back = DeltaDiscoveryResponse.decode(wire);
  t.equal(back.nonce, 'n1');
  t.equal(back.systemVersionInfo, '2');
  t.equal(back.typeUrl, TYPE);
  t.same(
    back.resources.map((r) => [r.name, r.version, r.aliases]),
    resources.map((r) => [r.name, r.version, r.aliases]),
  );
  t.same(back.removedResources, ['gone/1', 'gone/ü']);
});

t.test('one body, several nonces: the body bytes are not touched', async (t) => {
  const body = encodeResponseBody({
    typeUrl: TYPE,
    systemVersionInfo: '2',
    resources: [...storeWithTwo().all(TYPE)],
    removed: [],
  });
  const before = Buffer.from(body.bytes);
  const a = responseBytes({ body, nonce: '1' });
  const b = responseBytes({ body, nonce: 'zz' });
  t.equal(DeltaDiscoveryResponse.decode(a).nonce, '1');
  t.equal(DeltaDiscoveryResponse.decode(b).nonce, 'zz');
  t.ok(a.subarray(0, body.bytes.length).equals(b.subarray(0, body.bytes.length)), 'same leading bytes');
  t.ok(body.bytes.equals(before), 'the shared body is unchanged');
});

t.test('an empty response still names its type and nonce', async (t) => {
  const body = encodeResponseBody({ typeUrl: TYPE, systemVersionInfo: '', resources: [], removed: [] });
  const back = DeltaDiscoveryResponse.decode(responseBytes({ body, nonce: 'x' }));
  t.equal(back.typeUrl, TYPE);
  t.equal(back.nonce, 'x');
  t.equal(back.systemVersionInfo, '');
  t.same(back.resources, []);
});

t.test('the service serializes responses; it is not a client definition', async (t) => {
  const method = DELTA_ADS_SERVICE.deltaAggregatedResources;
  const body = encodeResponseBody({ typeUrl: TYPE, systemVersionInfo: '1', resources: [], removed: [] });
  t.equal(DeltaDiscoveryResponse.decode(method.responseSerialize({ body, nonce: 'q' })).nonce, 'q');
  t.throws(() => method.responseDeserialize(Buffer.alloc(0)), /server-side definition/);
});

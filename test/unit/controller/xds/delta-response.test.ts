// SPDX-License-Identifier: Apache-2.0
// DeltaDiscoveryResponse assembled from pre-encoded resources (src/controller/xds/delta-response.ts)
// must be byte-for-byte what the generated encoder produces, and decode back to the same message.
import t from 'tap';
import { encodeDeltaResponse } from '../../../../src/controller/xds/delta-response.ts';
import { XdsResourceStore } from '../../../../src/controller/xds/resource-store.ts';
import {
  DeltaDiscoveryResponse,
  Resource,
} from '../../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';

const TYPE = 'type.googleapis.com/istio.workload.Address';

t.test('equals the generated encoding of the same response', async (t) => {
  const store = new XdsResourceStore([TYPE]);
  store.apply(
    TYPE,
    new Map([
      ['a', { body: Uint8Array.of(1, 2, 3), aliases: ['/10.0.0.1'] }],
      ['b', { body: new Uint8Array(300).fill(7) }],
    ]),
  );
  const resources = [...store.all(TYPE)];
  const mine = encodeDeltaResponse({
    typeUrl: TYPE,
    nonce: 'n1',
    systemVersionInfo: '2',
    resources,
    removed: ['gone/1', 'gone/2'],
  });
  const expected = DeltaDiscoveryResponse.encode({
    systemVersionInfo: '2',
    resources: resources.map((r) => Resource.decode(r.encoded)),
    typeUrl: TYPE,
    nonce: 'n1',
    removedResources: ['gone/1', 'gone/2'],
  }).finish();
  t.equal(mine.toString('hex'), Buffer.from(expected).toString('hex'));
  const back = DeltaDiscoveryResponse.decode(mine);
  t.same(
    back.resources.map((r) => [r.name, r.version, r.aliases]),
    resources.map((r) => [r.name, r.version, r.aliases]),
  );
  t.same(back.removedResources, ['gone/1', 'gone/2']);
});

t.test('an empty response still names its type and nonce', async (t) => {
  const back = DeltaDiscoveryResponse.decode(
    encodeDeltaResponse({ typeUrl: TYPE, nonce: 'x', systemVersionInfo: '', resources: [], removed: [] }),
  );
  t.equal(back.typeUrl, TYPE);
  t.equal(back.nonce, 'x');
  t.same(back.resources, []);
});

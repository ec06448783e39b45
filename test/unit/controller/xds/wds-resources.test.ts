// SPDX-License-Identifier: Apache-2.0
// WDS resource names and aliases (src/controller/xds/wds-resources.ts, spec ambient-protocols
// §3.2) and the IP text in aliases, which must equal ztunnel's canonical form so an on-demand
// `network/ip` lookup finds the resource.
import fc from 'fast-check';
import t from 'tap';
import {
  addressResource,
  authorizationResource,
  formatIpBytes,
  serviceResource,
  workloadResource,
} from '../../../../src/controller/xds/wds-resources.ts';
import { Authorization } from '../../../../src/shared/gen/authorization.ts';
import { Address, Service, Workload } from '../../../../src/shared/gen/workload.ts';
import { formatIp, isIpv4Mapped } from '../../../../src/shared/net/ip.ts';

t.test('formatIpBytes writes RFC 5952 text, the same as ztunnel canonicalises', async (t) => {
  t.equal(formatIpBytes(Uint8Array.of(10, 0, 0, 1)), '10.0.0.1');
  const v6 = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex, 'hex'));
  t.equal(formatIpBytes(v6('fd000000000000000000000000000001')), 'fd00::1');
  t.equal(formatIpBytes(v6('20010db8000000010000000000000001')), '2001:db8:0:1::1', 'the longest zero run');
  t.equal(
    formatIpBytes(v6('20010db8000000000001000000000001')),
    '2001:db8::1:0:0:1',
    'the leftmost of equal runs',
  );
  t.equal(
    formatIpBytes(v6('20010db8000100010001000100010001')),
    '2001:db8:1:1:1:1:1:1',
    'one zero group stays',
  );
  t.equal(formatIpBytes(new Uint8Array(16)), '::');
  t.throws(() => formatIpBytes(Uint8Array.of(1, 2, 3, 4, 5)), /4 or 16 bytes, got 5/);
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ minLength: 4, maxLength: 4 }),
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        // Sparse IPv6, so zero runs of every length and position are common.
        fc
          .array(fc.constantFrom(0, 0, 0, 1, 0xffff), { minLength: 8, maxLength: 8 })
          .map((g) => Uint8Array.from(g.flatMap((x) => [x >> 8, x & 0xff]))),
      ),
      (bytes) => {
        const a = { family: bytes.length === 4 ? (4 as const) : (6 as const), bytes };
        fc.pre(!isIpv4Mapped(a)); // WDS never carries IPv4-mapped addresses (ztunnel refuses them)
        return formatIpBytes(bytes) === formatIp(a);
      },
    ),
    { numRuns: 2000 },
  );
});

t.test('a workload is named by uid and aliased by network/ip', async (t) => {
  const w = Workload.fromPartial({
    uid: 'c1//Pod/ns/p',
    name: 'p',
    namespace: 'ns',
    network: 'net1',
    addresses: [
      Uint8Array.of(10, 0, 0, 1),
      Uint8Array.from(Buffer.from('fd000000000000000000000000000001', 'hex')),
    ],
  });
  const [name, u] = workloadResource(w);
  t.equal(name, 'c1//Pod/ns/p');
  t.same(u.aliases, ['net1/10.0.0.1', 'net1/fd00::1']);
  t.same(Address.decode(u.body), { type: { $case: 'workload', value: w } });
});

t.test('a service is named namespace/hostname and aliased by network/vip', async (t) => {
  const s = Service.fromPartial({
    name: 'echo',
    namespace: 'ns',
    hostname: 'echo.ns.svc.cluster.local',
    addresses: [{ network: '', address: Uint8Array.of(198, 19, 0, 1) }],
  });
  const [name, u] = serviceResource(s);
  t.equal(name, 'ns/echo.ns.svc.cluster.local');
  t.same(u.aliases, ['/198.19.0.1']);
  t.same(Address.decode(u.body), { type: { $case: 'service', value: s } });
});

t.test('addressResource dispatches on the oneof and refuses an empty Address', async (t) => {
  const w = Workload.fromPartial({ uid: 'u1', addresses: [Uint8Array.of(10, 0, 0, 1)] });
  const s = Service.fromPartial({ namespace: 'ns', hostname: 'h.ns.svc.cluster.local' });
  t.same(addressResource({ type: { $case: 'workload', value: w } }), workloadResource(w));
  t.same(addressResource({ type: { $case: 'service', value: s } }), serviceResource(s));
  t.throws(() => addressResource({ type: undefined }), { code: 'CTL_ERR_XDS_RESOURCE' });
});

t.test('an authorization is named namespace/name', async (t) => {
  const a = Authorization.fromPartial({ name: 'allow', namespace: 'ns', scope: 1, action: 0 });
  const [name, u] = authorizationResource(a);
  t.equal(name, 'ns/allow');
  t.equal(u.aliases, undefined);
  t.same(Authorization.decode(u.body), a);
});

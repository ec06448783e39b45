// SPDX-License-Identifier: Apache-2.0
// CaClient configuration is validated when the client is built (so a bad CA_ADDRESS, CLUSTER_ID,
// deadline or CA_HEADER_* stops start-up with a message), and an empty literal token is refused
// before any channel exists.
import t from 'tap';
import { CaClient, CaClientError, type CaClientOptions } from '../../../../ztunnel/src/identity/ca-client.ts';

const base: CaClientOptions = {
  address: '127.0.0.1:15012',
  security: { kind: 'plaintext' },
  token: { value: 'tok' },
  clusterId: 'Kubernetes',
};

t.test('invalid options are refused at construction', async (t) => {
  const cases: [string, Partial<CaClientOptions>, RegExp][] = [
    ['empty address', { address: '' }, /CA address \(CA_ADDRESS\) is empty/],
    ['empty cluster id', { clusterId: '' }, /cluster id \(CLUSTER_ID\) is empty/],
    ['zero deadline', { timeoutMs: 0 }, /timeoutMs must be a positive number/],
    ['NaN deadline', { timeoutMs: Number.NaN }, /timeoutMs must be a positive number/],
    [
      'header overriding the token',
      { headers: { authorization: 'Bearer other' } },
      /extra header "authorization"/,
    ],
    ['header overriding clusterid', { headers: { clusterid: 'x' } }, /extra header "clusterid"/],
    ['uppercase header', { headers: { 'X-Tenant': 'a' } }, /extra header "X-Tenant"/],
    ['binary header', { headers: { 'x-data-bin': 'a' } }, /extra header "x-data-bin"/],
    ['grpc- header', { headers: { 'grpc-timeout': '1S' } }, /extra header "grpc-timeout"/],
    ['control character in a value', { headers: { 'x-tenant': 'a\nb' } }, /must be printable ASCII/],
  ];
  for (const [name, patch, re] of cases) {
    t.throws(() => new CaClient({ ...base, ...patch }), { code: 'ZT_ERR_CA', message: re }, name);
  }
  const ok = new CaClient({ ...base, headers: { 'x-tenant': 'blue', 'x.trace_id-1': 'v' } });
  ok.close();
});

t.test('an empty literal token fails the call before any connection', async (t) => {
  const c = new CaClient({ ...base, token: { value: '' } });
  t.teardown(() => c.close());
  const err: unknown = await c
    .sign({ csrPem: 'x', identity: 'spiffe://cluster.local/ns/a/sa/b', ttlSeconds: 60 })
    .then(
      () => 'accepted',
      (e: unknown) => e,
    );
  t.ok(err instanceof CaClientError, 'a CaClientError');
  t.match((err as CaClientError).message, /literal token \(AUTH_TOKEN\) is empty/);
  t.equal((err as CaClientError).grpcCode, undefined, 'no gRPC status: nothing was sent');
});

// SPDX-License-Identifier: Apache-2.0
// istio.security (WDS Authorization) generated code: a policy with nested rules, clauses, matches
// and every StringMatch kind round-trips; Match's 13 field numbers and Clause's field 2 are on the
// wire; a few encodings are checked byte for byte against hand-computed values from
// ambient-protocols.md §3.6; unknown fields are tolerated.
import t from 'tap';
import {
  Action,
  Authorization,
  Clause,
  Match,
  Scope,
  ServiceAccountMatch,
  StringMatch,
} from '../../../../src/shared/gen/authorization.ts';
import { fieldSet, fromHex, hex, range, withUnknownFields } from './wire-helpers.ts';

const exact: StringMatch = {
  matchType: { $case: 'exact', value: 'cluster.local/ns/bookinfo/sa/productpage' },
};
const prefix: StringMatch = { matchType: { $case: 'prefix', value: 'cluster.local/ns/' } };
const suffix: StringMatch = { matchType: { $case: 'suffix', value: '/sa/admin' } };
const presence: StringMatch = { matchType: { $case: 'presence', value: {} } };

const ext = {
  name: 'x',
  config: { typeUrl: 'type.googleapis.com/google.protobuf.Empty', value: new Uint8Array() },
};

/** A Match with every field (1–13) set. */
const fullMatch: Match = {
  namespaces: [exact, prefix],
  notNamespaces: [suffix],
  principals: [presence, exact],
  notPrincipals: [prefix],
  sourceIps: [{ address: new Uint8Array([10, 0, 0, 0]), length: 8 }],
  notSourceIps: [{ address: new Uint8Array([10, 1, 0, 0]), length: 16 }],
  destinationIps: [{ address: new Uint8Array(16).fill(0xfd, 0, 1), length: 64 }],
  notDestinationIps: [{ address: new Uint8Array([192, 168, 0, 1]), length: 32 }],
  destinationPorts: [80, 443, 9080],
  notDestinationPorts: [15000],
  serviceAccounts: [{ namespace: 'bookinfo', serviceAccount: 'productpage' }],
  notServiceAccounts: [{ namespace: 'default', serviceAccount: 'default' }],
  extensions: [ext],
};

const policy: Authorization = {
  name: 'allow-productpage',
  namespace: 'bookinfo',
  scope: Scope.WORKLOAD_SELECTOR,
  action: Action.DENY,
  rules: [
    { clauses: [{ matches: [fullMatch, { ...Match.create(), principals: [suffix] }] }, { matches: [] }] },
    { clauses: [{ matches: [{ ...Match.create(), destinationPorts: [8080] }] }] },
  ],
  dryRun: true,
  extensions: [ext],
};

t.test('Authorization with nested rules and every StringMatch kind round-trips', async (t) => {
  t.same(Object.keys(policy).sort(), Object.keys(Authorization.create()).sort(), 'fixture sets every field');
  const bytes = Authorization.encode(policy).finish();
  t.same(fieldSet(bytes), range(1, 7));
  t.same(Authorization.decode(bytes), policy);
  for (const m of [exact, prefix, suffix, presence]) {
    t.same(
      StringMatch.decode(StringMatch.encode(m).finish()),
      m,
      `StringMatch ${String(m.matchType?.$case)}`,
    );
  }
});

t.test('Match carries fields 1–13; Clause uses field 2', async (t) => {
  t.same(Object.keys(fullMatch).sort(), Object.keys(Match.create()).sort(), 'fixture sets every field');
  t.same(fieldSet(Match.encode(fullMatch).finish()), range(1, 13));
  t.same(fieldSet(Clause.encode({ matches: [fullMatch] }).finish()), [2]);
});

t.test('bytes match hand-computed protobuf encodings', async (t) => {
  // StringMatch oneof: exact(1) / prefix(2) / suffix(3) strings, presence(4) an empty message.
  t.equal(hex(StringMatch.encode({ matchType: { $case: 'exact', value: 'a' } }).finish()), '0a0161');
  t.equal(hex(StringMatch.encode({ matchType: { $case: 'prefix', value: 'a' } }).finish()), '120161');
  t.equal(hex(StringMatch.encode({ matchType: { $case: 'suffix', value: 'a' } }).finish()), '1a0161');
  t.equal(hex(StringMatch.encode(presence).finish()), '2200');
  t.equal(StringMatch.decode(fromHex('2200')).matchType?.$case, 'presence');
  // destination_ports (9) packed: 80 (50), 443 (bb 03).
  t.equal(hex(Match.encode(Match.fromPartial({ destinationPorts: [80, 443] })).finish()), '4a0350bb03');
  // ...and the unpacked form a proto2-style encoder might send decodes the same.
  t.same(Match.decode(fromHex('4850' + '48bb03')).destinationPorts, [80, 443]);
  // ServiceAccountMatch: namespace(1) "n", serviceAccount(2) "s".
  t.equal(hex(ServiceAccountMatch.encode({ namespace: 'n', serviceAccount: 's' }).finish()), '0a016e120173');
  // Authorization: name(1) "p", scope(3) NAMESPACE = 1, action(4) DENY = 1,
  // rules(5) { clauses(1) { matches(2) { not_principals(4) { presence } } } }.
  const a = Authorization.fromPartial({
    name: 'p',
    scope: Scope.NAMESPACE,
    action: Action.DENY,
    rules: [{ clauses: [{ matches: [{ notPrincipals: [presence] }] }] }],
  });
  t.equal(
    hex(Authorization.encode(a).finish()),
    '0a0170' + '1801' + '2001' + '2a08' + '0a06' + '1204' + '2202' + '2200',
  );
  // Defaults: GLOBAL = 0, ALLOW = 0 are not sent.
  t.equal(
    hex(
      Authorization.encode(Authorization.fromPartial({ scope: Scope.GLOBAL, action: Action.ALLOW })).finish(),
    ),
    '',
  );
});

t.test('unknown fields are skipped on decode', async (t) => {
  t.same(Authorization.decode(withUnknownFields(Authorization.encode(policy).finish())), policy);
  // Clause field 1 (unused upstream) is skipped too.
  t.same(Clause.decode(fromHex('0801' + '1200')), { matches: [Match.create()] });
});

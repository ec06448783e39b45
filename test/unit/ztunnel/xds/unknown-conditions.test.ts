// SPDX-License-Identifier: Apache-2.0
// Checklist C.52 (version skew, the CVE-2022-21679 class): a newer controller sends a policy whose
// matcher uses a field this ztunnel does not know. The decoder drops the field; without the scan
// the Match would arrive empty and be skipped, and a DENY written with it would deny nothing.
// Outcome required: a DENY matches, an ALLOW does not, and a warning says so.
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import t from 'tap';
import * as pbAuth from '../../../../src/shared/gen/authorization.ts';
import { evaluate, type RbacConnection } from '../../../../ztunnel/src/rbac/rbac.ts';
import type { Authorization } from '../../../../ztunnel/src/state/types.ts';
import { convertAuthorization } from '../../../../ztunnel/src/xds/convert.ts';
import { findUnknownConditions } from '../../../../ztunnel/src/xds/unknown-conditions.ts';

/** A field number authorization.proto does not use at any level (a newer schema's). */
const NEW_FIELD = 14;

/** `bytes` followed by a field this schema does not know, as a newer peer sends it. */
function plusNewField(bytes: Uint8Array, fieldNo = NEW_FIELD): Uint8Array {
  const w = new BinaryWriter();
  w.raw(bytes);
  w.tag(fieldNo, WireType.LengthDelimited).bytes(
    new BinaryWriter().tag(1, WireType.Varint).int32(1).finish(),
  );
  return w.finish();
}

function nested(fieldNo: number, children: readonly Uint8Array[]): Uint8Array {
  const w = new BinaryWriter();
  for (const c of children) w.tag(fieldNo, WireType.LengthDelimited).bytes(c);
  return w.finish();
}

interface Shape {
  action: 'ALLOW' | 'DENY';
  /** rules → clauses → matches, each as encoded bytes (so tests can add new fields anywhere). */
  rules: Uint8Array[];
}

function encodePolicy(s: Shape): Uint8Array {
  const head = pbAuth.Authorization.encode(
    pbAuth.Authorization.fromPartial({
      name: 'p',
      namespace: 'ns',
      scope: pbAuth.Scope.NAMESPACE,
      action: s.action === 'DENY' ? pbAuth.Action.DENY : pbAuth.Action.ALLOW,
    }),
  ).finish();
  const w = new BinaryWriter();
  w.raw(head);
  w.raw(nested(5, s.rules));
  return w.finish();
}

const match = (m: Partial<pbAuth.Match> = {}): Uint8Array =>
  pbAuth.Match.encode(pbAuth.Match.fromPartial(m)).finish();
const clause = (...matches: Uint8Array[]): Uint8Array => nested(2, matches);
const rule = (...clauses: Uint8Array[]): Uint8Array => nested(1, clauses);

/** The policy as the WDS client builds it: decoded, scanned, converted. */
function receive(bytes: Uint8Array): Authorization {
  const c = convertAuthorization('ns/p', pbAuth.Authorization.decode(bytes), findUnknownConditions(bytes));
  if (!c.ok) throw new Error(c.reason);
  return c.value;
}

const conn = (dstPort: number): RbacConnection => ({
  srcIdentity: { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'client' },
  srcIp: '198.18.1.10',
  dstIp: '198.18.1.20',
  dstPort,
});

const allowed = (policies: Authorization[], port = 8080): boolean =>
  evaluate({ policies, missing: [], conn: conn(port) }).allowed;

t.test('the scan finds new fields at the rule, clause and match levels, and match extensions', async (t) => {
  const bytes = encodePolicy({
    action: 'DENY',
    rules: [
      rule(clause(match({ destinationPorts: [80] }))),
      plusNewField(rule(clause(match({ destinationPorts: [81] }), plusNewField(match())))),
      rule(plusNewField(clause(match({ destinationPorts: [82] })))),
      rule(clause(match({ extensions: [{ name: 'istio.io/new-matcher' }] }))),
    ],
  });
  const u = findUnknownConditions(bytes);
  t.same([...u.rules], [1]);
  t.same([...u.clauses], ['2/0']);
  t.same([...u.matches].sort(), ['1/0/1', '3/0/0']);

  const p = receive(bytes);
  t.equal(p.rules[0]!.unknown, undefined, 'a policy of known fields is unmarked');
  t.equal(p.rules[1]!.unknown, true);
  t.equal(p.rules[1]!.clauses[0]!.matches[0]!.unknown, undefined);
  t.equal(p.rules[1]!.clauses[0]!.matches[1]!.unknown, true);
  t.equal(p.rules[2]!.clauses[0]!.unknown, true);
  t.equal(p.rules[3]!.clauses[0]!.matches[0]!.unknown, true);

  const plain = encodePolicy({ action: 'DENY', rules: [rule(clause(match({ destinationPorts: [80] })))] });
  const none = findUnknownConditions(plain);
  t.equal(none.rules.size + none.clauses.size + none.matches.size, 0, 'nothing found in a known policy');
  // New fields at the top level are not conditions: the policy is kept as it is.
  const topOnly = findUnknownConditions(plusNewField(plain));
  t.equal(topOnly.rules.size + topOnly.clauses.size + topOnly.matches.size, 0);
});

t.test('a DENY whose only condition is new denies every connection (it used to deny none)', async (t) => {
  const deny = receive(encodePolicy({ action: 'DENY', rules: [rule(clause(plusNewField(match())))] }));
  t.notOk(allowed([deny], 8080));
  t.notOk(allowed([deny], 9090));
  const decision = evaluate({ policies: [deny], missing: [], conn: conn(8080) });
  t.equal(decision.policy, 'ns/p', 'the decision names the policy');

  // Without the scan (what a plain decode gives): the match is empty and skipped.
  const blind = convertAuthorization(
    'ns/p',
    pbAuth.Authorization.decode(
      encodePolicy({ action: 'DENY', rules: [rule(clause(plusNewField(match())))] }),
    ),
  );
  t.ok(blind.ok);
  if (blind.ok) t.ok(allowed([blind.value]), 'the hole this closes: a blind decode denies nothing');
});

t.test('a DENY keeps its known conditions: the new one is taken as holding', async (t) => {
  const deny = receive(
    encodePolicy({
      action: 'DENY',
      rules: [rule(clause(plusNewField(match({ destinationPorts: [8080] }))))],
    }),
  );
  t.notOk(allowed([deny], 8080), 'port 8080 denied');
  t.ok(allowed([deny], 9090), 'other ports are not');

  const ruleLevel = receive(
    encodePolicy({
      action: 'DENY',
      rules: [plusNewField(rule(clause(match({ destinationPorts: [8080] }))))],
    }),
  );
  t.notOk(allowed([ruleLevel], 8080));
  t.ok(allowed([ruleLevel], 9090));

  const clauseLevel = receive(encodePolicy({ action: 'DENY', rules: [rule(plusNewField(clause()))] }));
  t.notOk(allowed([clauseLevel], 9090), 'a clause of only a new condition holds: all denied');
});

t.test('an ALLOW with a new condition allows nothing through it', async (t) => {
  const allow = receive(
    encodePolicy({
      action: 'ALLOW',
      rules: [rule(clause(plusNewField(match({ destinationPorts: [8080] }))))],
    }),
  );
  t.notOk(allowed([allow], 8080), 'not even the port it names');
  const known = receive(
    encodePolicy({ action: 'ALLOW', rules: [rule(clause(match({ destinationPorts: [8080] })))] }),
  );
  t.ok(allowed([known], 8080), 'the same policy without the new field allows 8080');

  // Another match in the same clause still allows what it names (matches are ORed).
  const mixed = receive(
    encodePolicy({
      action: 'ALLOW',
      rules: [
        rule(clause(plusNewField(match({ destinationPorts: [8080] })), match({ destinationPorts: [9090] }))),
      ],
    }),
  );
  t.notOk(allowed([mixed], 8080));
  t.ok(allowed([mixed], 9090));

  for (const bytes of [
    encodePolicy({
      action: 'ALLOW',
      rules: [plusNewField(rule(clause(match({ destinationPorts: [8080] }))))],
    }),
    encodePolicy({
      action: 'ALLOW',
      rules: [rule(plusNewField(clause(match({ destinationPorts: [8080] }))))],
    }),
  ]) {
    t.notOk(allowed([receive(bytes)], 8080), 'new fields on the rule or clause fail an ALLOW too');
  }
});

// SPDX-License-Identifier: Apache-2.0
// Matcher conditions newer than this ztunnel (security-and-reliability.md checklist C.52; the
// CVE-2022-21679 class). A protobuf decoder drops fields it does not know, so a newer controller's
// Match whose only condition is a new field would reach the engine as an empty Match, which is
// skipped: a DENY written with it would deny nothing. This scans the raw `istio.security.
// Authorization` bytes for such conditions so the converter can mark where they were; the engine
// then fails closed: a DENY treats an unknown condition as matching, an ALLOW as not matching.
//
// Unknown means: a field number authorization.proto does not define at the Rule, Clause or Match
// level, or a Match `extensions` entry (extensions are conditions this ztunnel never evaluates).
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';

/** Field numbers of authorization.proto this ztunnel understands, per message. */
const AUTHORIZATION_RULES = 5;
const RULE_CLAUSES = 1;
const CLAUSE_MATCHES = 2;
const RULE_FIELDS = new Set([RULE_CLAUSES]);
const CLAUSE_FIELDS = new Set([CLAUSE_MATCHES]);
/** Match fields 1–12 are conditions the engine evaluates; 13 (`extensions`) it never does. */
const MATCH_EVALUATED_FIELDS = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

/** Where unknown conditions sit, by index in the decoded message's repeated fields. */
export interface UnknownConditions {
  /** Rules that carry an unknown field of their own. */
  readonly rules: ReadonlySet<number>;
  /** `rule/clause` keys of clauses that carry an unknown field of their own. */
  readonly clauses: ReadonlySet<string>;
  /** `rule/clause/match` keys of matches with an unknown field or an extension. */
  readonly matches: ReadonlySet<string>;
}

export const NO_UNKNOWN_CONDITIONS: UnknownConditions = {
  rules: new Set(),
  clauses: new Set(),
  matches: new Set(),
};

/**
 * Each length-delimited occurrence of `field` in `bytes` in order, with whether the message has
 * any field outside `known`. Throws on malformed wire data, as the decoder would.
 */
function scan(
  bytes: Uint8Array,
  known: ReadonlySet<number>,
  field: number | undefined,
): { unknown: boolean; children: Uint8Array[] } {
  const r = new BinaryReader(bytes);
  let unknown = false;
  const children: Uint8Array[] = [];
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === field && wt === WireType.LengthDelimited) {
      children.push(r.bytes());
      continue;
    }
    if (!known.has(no)) unknown = true;
    r.skip(wt, no);
  }
  return { unknown, children };
}

/** The unknown conditions in one encoded `istio.security.Authorization`. */
export function findUnknownConditions(authorization: Uint8Array): UnknownConditions {
  const rules = new Set<number>();
  const clauses = new Set<string>();
  const matches = new Set<string>();
  // The top level is read only for its rules: its other fields are not conditions.
  const top = scan(authorization, new Set(), AUTHORIZATION_RULES);
  top.children.forEach((ruleBytes, i) => {
    const rule = scan(ruleBytes, RULE_FIELDS, RULE_CLAUSES);
    if (rule.unknown) rules.add(i);
    rule.children.forEach((clauseBytes, j) => {
      const clause = scan(clauseBytes, CLAUSE_FIELDS, CLAUSE_MATCHES);
      if (clause.unknown) clauses.add(`${i}/${j}`);
      clause.children.forEach((matchBytes, k) => {
        if (scan(matchBytes, MATCH_EVALUATED_FIELDS, undefined).unknown) matches.add(`${i}/${j}/${k}`);
      });
    });
  });
  return { rules, clauses, matches };
}

// SPDX-License-Identifier: Apache-2.0
// AuthorizationPolicy → istio.security.Authorization, the L4 policy ztunnel enforces (spec
// ambient-protocols §3.6, §3.8, §5.4). Pure: the same view always gives the same message.
//
// Shape (as istiod): each rule becomes a Rule whose Clauses are ANDed: one Clause for `to` (one
// Match per operation, ORed), one for `from` (one Match per source, ORed), one per `when`
// condition. Scope: a selector → WORKLOAD_SELECTOR (the workloads list the policy by key); no
// selector → NAMESPACE, or GLOBAL in the root namespace. targetRef(s) → not for ztunnel.
//
// What ztunnel cannot enforce as written fails closed:
// - HTTP-only fields (checklist C.42, spec §5.4, security §3.4): in an ALLOW the whole rule is
//   dropped (it never matches, so the policy is stricter); in a DENY the HTTP conditions are
//   treated as matching, so the L4 remainder denies a superset of what was asked, and a rule
//   with no L4 condition at all is dropped (upstream's "no effect" DENY, with a warning).
// - An invalid rule (C.52, the CVE-2022-21679 lesson): an ALLOW rule matches nothing, a DENY
//   rule denies everything in its scope.
// - An invalid policy: deny-all in the scope it would have had (an unreadable selector selects
//   every workload in scope).
// - CUSTOM (an external authorizer ztunnel cannot call): enforced as a DENY of every connection
//   its rules could match, HTTP conditions included as matching. Upstream drops it; we do not,
//   because dropping a CUSTOM policy would let through traffic the authorizer might refuse.
// - AUDIT only logs; ignoring it never changes a decision, so it is ignored (as upstream).
import type { Authorization, Clause, Match, Rule, StringMatch } from '../../shared/gen/authorization.ts';
import { Action, Scope } from '../../shared/gen/authorization.ts';
import type {
  AuthorizationPolicyView,
  ConditionView,
  OperationView,
  RuleView,
  SourceView,
  StringPattern,
} from './authorization-policy.ts';
import type { Cidr } from './ip.ts';
import type { Labels } from './selector.ts';

export interface AuthorizationTranslation {
  /** What ztunnel enforces; undefined when the policy is not ztunnel's (targetRefs, AUDIT). */
  readonly authorization: Authorization | undefined;
  /** Which workloads list it: undefined for scope NAMESPACE/GLOBAL (or no authorization). */
  readonly selector: Labels | undefined;
  /** Operator-facing notes: accepted with a change in meaning, or not accepted, and why. */
  readonly warnings: readonly string[];
}

/** A Match with every list empty (which ztunnel skips: it never matches on its own). */
export function emptyMatch(): Match {
  return {
    namespaces: [],
    notNamespaces: [],
    principals: [],
    notPrincipals: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
    serviceAccounts: [],
    notServiceAccounts: [],
    extensions: [],
  };
}

/** StringMatch `presence`: any non-empty value. */
export function presence(): StringMatch {
  return { matchType: { $case: 'presence', value: {} } };
}

/** A rule with no clauses: matches every connection. */
function matchAllRule(): Rule {
  return { clauses: [] };
}

function stringMatch(p: StringPattern): StringMatch {
  return p.kind === 'presence' ? presence() : { matchType: { $case: p.kind, value: p.value } };
}

function address(c: Cidr): { address: Uint8Array; length: number } {
  return { address: c.address, length: c.length };
}

function sourceMatch(s: SourceView): Match {
  return {
    ...emptyMatch(),
    principals: s.principals.map(stringMatch),
    notPrincipals: s.notPrincipals.map(stringMatch),
    namespaces: s.namespaces.map(stringMatch),
    notNamespaces: s.notNamespaces.map(stringMatch),
    sourceIps: s.ipBlocks.map(address),
    notSourceIps: s.notIpBlocks.map(address),
    serviceAccounts: s.serviceAccounts.map((a) => ({ namespace: a.namespace, serviceAccount: a.name })),
    notServiceAccounts: s.notServiceAccounts.map((a) => ({ namespace: a.namespace, serviceAccount: a.name })),
  };
}

function operationMatch(o: OperationView): Match {
  return { ...emptyMatch(), destinationPorts: [...o.ports], notDestinationPorts: [...o.notPorts] };
}

function conditionMatch(c: ConditionView & { kind: 'l4' }): Match {
  const { condition } = c;
  switch (condition.key) {
    case 'source.ip':
      return {
        ...emptyMatch(),
        sourceIps: condition.values.map(address),
        notSourceIps: condition.notValues.map(address),
      };
    case 'destination.ip':
      return {
        ...emptyMatch(),
        destinationIps: condition.values.map(address),
        notDestinationIps: condition.notValues.map(address),
      };
    case 'source.namespace':
      return {
        ...emptyMatch(),
        namespaces: condition.values.map(stringMatch),
        notNamespaces: condition.notValues.map(stringMatch),
      };
    case 'source.principal':
      return {
        ...emptyMatch(),
        principals: condition.values.map(stringMatch),
        notPrincipals: condition.notValues.map(stringMatch),
      };
    case 'destination.port':
      return {
        ...emptyMatch(),
        destinationPorts: [...condition.values],
        notDestinationPorts: [...condition.notValues],
      };
  }
}

function hasL4(entry: SourceView | OperationView): boolean {
  return 'ports' in entry
    ? entry.ports.length > 0 || entry.notPorts.length > 0
    : entry.principals.length > 0 ||
        entry.notPrincipals.length > 0 ||
        entry.namespaces.length > 0 ||
        entry.notNamespaces.length > 0 ||
        entry.ipBlocks.length > 0 ||
        entry.notIpBlocks.length > 0 ||
        entry.serviceAccounts.length > 0 ||
        entry.notServiceAccounts.length > 0;
}

/** The names of the HTTP-only fields and condition keys a valid rule uses. */
function httpOnlyFields(rule: RuleView & { valid: true }): string[] {
  const names = new Set<string>();
  for (const e of [...rule.to, ...rule.from]) for (const f of e.httpOnly) names.add(f);
  for (const c of rule.when) if (c.kind === 'httpOnly') names.add(c.key);
  return [...names].sort();
}

/**
 * A Clause ORing `entries`, with each entry's HTTP-only part read as matching: an entry with
 * no L4 part matches everything, which makes the whole Clause true, so it is left out
 * (undefined). Used for DENY and CUSTOM only: for ALLOW an HTTP field drops the rule instead.
 */
function permissiveClause<E extends SourceView | OperationView>(
  entries: readonly E[],
  toMatch: (e: E) => Match,
): Clause | undefined {
  if (entries.length === 0 || entries.some((e) => !hasL4(e))) return undefined;
  return { matches: entries.map(toMatch) };
}

type RuleOutcome = { rule: Rule } | { dropped: 'http' | 'invalid' };

function translateRule(rule: RuleView, action: 'ALLOW' | 'DENY' | 'CUSTOM'): RuleOutcome {
  if (!rule.valid) return action === 'ALLOW' ? { dropped: 'invalid' } : { rule: matchAllRule() };
  const http = httpOnlyFields(rule).length > 0;
  if (action === 'ALLOW') {
    if (http) return { dropped: 'http' };
    const clauses: Clause[] = [];
    if (rule.to.length > 0) clauses.push({ matches: rule.to.map(operationMatch) });
    if (rule.from.length > 0) clauses.push({ matches: rule.from.map(sourceMatch) });
    for (const c of rule.when) if (c.kind === 'l4') clauses.push({ matches: [conditionMatch(c)] });
    return { rule: { clauses } };
  }
  const anyL4 = [...rule.to, ...rule.from].some(hasL4) || rule.when.some((c) => c.kind === 'l4');
  if (action === 'DENY' && http && !anyL4) return { dropped: 'http' };
  const clauses: Clause[] = [];
  const to = permissiveClause(rule.to, operationMatch);
  if (to !== undefined) clauses.push(to);
  const from = permissiveClause(rule.from, sourceMatch);
  if (from !== undefined) clauses.push(from);
  for (const c of rule.when) if (c.kind === 'l4') clauses.push({ matches: [conditionMatch(c)] });
  return { rule: { clauses } };
}

function scopeFor(selector: Labels | undefined, namespace: string, rootNamespace: string): Scope {
  if (selector !== undefined) return Scope.WORKLOAD_SELECTOR;
  return namespace === rootNamespace ? Scope.GLOBAL : Scope.NAMESPACE;
}

const WAYPOINT_HINT =
  'In ambient mode HTTP rules need a waypoint proxy: bind the policy to it with targetRefs.';

/** Translates one AuthorizationPolicy for ztunnel. */
export function translateAuthorizationPolicy(
  view: AuthorizationPolicyView,
  meta: { readonly namespace: string; readonly name: string },
  rootNamespace: string,
): AuthorizationTranslation {
  const base = { name: meta.name, namespace: meta.namespace, dryRun: false, extensions: [] };
  switch (view.kind) {
    case 'waypoint':
      return { authorization: undefined, selector: undefined, warnings: [] };
    case 'invalid':
      return {
        authorization: {
          ...base,
          scope: scopeFor(view.selector, meta.namespace, rootNamespace),
          action: Action.DENY,
          rules: [matchAllRule()],
        },
        selector: view.selector,
        warnings: [
          `invalid AuthorizationPolicy, so ztunnel denies every connection in its scope until it is fixed: ${view.problems.join('; ')}`,
        ],
      };
    case 'ztunnel':
      break;
  }
  if (view.action === 'AUDIT') {
    return {
      authorization: undefined,
      selector: undefined,
      warnings: [
        'ztunnel does not support the AUDIT action; the policy is ignored (auditing never changes a decision)',
      ],
    };
  }
  const warnings = [...view.warnings];
  const rules: Rule[] = [];
  const http = new Set<string>();
  let droppedHttp = 0;
  let droppedInvalid = 0;
  for (const rv of view.rules) {
    if (rv.valid) for (const f of httpOnlyFields(rv)) http.add(f);
    else warnings.push(...rv.problems.map((p) => `invalid rule: ${p}`));
    const out = translateRule(rv, view.action);
    if ('rule' in out) rules.push(out.rule);
    else if (out.dropped === 'http') droppedHttp++;
    else droppedInvalid++;
  }
  if (droppedInvalid > 0) {
    warnings.push(
      `${droppedInvalid} invalid ALLOW rule(s) omitted; they match nothing, which is more restrictive than requested`,
    );
  } else if (view.action !== 'ALLOW' && view.rules.some((r) => !r.valid)) {
    warnings.push('invalid rule(s) read as matching every connection; this denies more than requested');
  }
  if (http.size > 0) {
    const found = `ztunnel does not support HTTP attributes (found: ${[...http].join(', ')}). ${WAYPOINT_HINT}`;
    if (view.action === 'ALLOW') {
      warnings.push(
        `${found} Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested.`,
      );
    } else if (view.action === 'CUSTOM') {
      warnings.push(`${found} The HTTP conditions are read as matching.`);
    } else if (droppedHttp > 0 && rules.length === 0) {
      warnings.push(
        `${found} After omitting them this DENY policy has no enforceable rules at ztunnel and has no effect.`,
      );
    } else {
      warnings.push(
        `${found} DENY policy with HTTP attributes is enforced without the HTTP rules. This will be more restrictive than requested.`,
      );
    }
  }
  if (view.action === 'CUSTOM') {
    warnings.push(
      `ztunnel cannot call an external authorizer: this CUSTOM policy is enforced as a DENY of every connection its rules match. ${WAYPOINT_HINT}`,
    );
  }
  return {
    authorization: {
      ...base,
      scope: scopeFor(view.selector, meta.namespace, rootNamespace),
      action: view.action === 'ALLOW' ? Action.ALLOW : Action.DENY,
      rules,
      dryRun: view.dryRun,
    },
    selector: view.selector,
    warnings,
  };
}

// SPDX-License-Identifier: Apache-2.0
// The typed, validated view of an AuthorizationPolicy (security.istio.io/v1) as ztunnel's
// translator needs it (spec ambient-protocols §5.4). Reading is separate from translating
// (./authorization.ts) so that translation only ever sees well-formed values: ports are
// numbers, ipBlocks are parsed CIDRs, principals and namespaces are literal string patterns.
//
// What goes wrong is kept at the smallest scope that can be judged on its own:
// - a malformed *rule* (unknown field, bad port, bad CIDR, bad pattern, empty source) is marked
//   invalid and the translator fails it closed (checklist C.52: an ALLOW rule that cannot be
//   understood matches nothing, a DENY rule denies);
// - a malformed *policy* (spec not an object, unknown action, bad selector or targetRefs, unknown
//   top-level field) cannot be attached or enforced as written, and is translated to deny-all.
//
// Fields only a waypoint can evaluate (hosts, methods, paths, requestPrincipals, remoteIpBlocks,
// trustDomains, non-L4 `when` keys) are not problems: they are recorded by name so the
// translator can apply upstream's L7-at-L4 rules (checklist C.42).
import { parseCidr } from './ip.ts';
import type { Cidr } from './ip.ts';
import { Problems, checkKeys, isRecord, readRecordList, readStringList, readStringMap } from './json.ts';
import { ANNOTATION_DRY_RUN } from './options.ts';
import type { Labels } from './selector.ts';
import type { CustomObject } from '../sources/types.ts';

/** A literal string match (never a regex: CVE-2026-39350, istio#59992; checklist C.43). */
export type StringPattern =
  { readonly kind: 'exact' | 'prefix' | 'suffix'; readonly value: string } | { readonly kind: 'presence' };

export interface ServiceAccountRef {
  readonly namespace: string;
  readonly name: string;
}

export interface SourceView {
  readonly principals: readonly StringPattern[];
  readonly notPrincipals: readonly StringPattern[];
  readonly namespaces: readonly StringPattern[];
  readonly notNamespaces: readonly StringPattern[];
  readonly ipBlocks: readonly Cidr[];
  readonly notIpBlocks: readonly Cidr[];
  readonly serviceAccounts: readonly ServiceAccountRef[];
  readonly notServiceAccounts: readonly ServiceAccountRef[];
  /** Names of the fields set that only a waypoint can evaluate. */
  readonly httpOnly: readonly string[];
}

export interface OperationView {
  readonly ports: readonly number[];
  readonly notPorts: readonly number[];
  readonly httpOnly: readonly string[];
}

export type L4Condition =
  | {
      readonly key: 'source.ip' | 'destination.ip';
      readonly values: readonly Cidr[];
      readonly notValues: readonly Cidr[];
    }
  | {
      readonly key: 'source.namespace' | 'source.principal';
      readonly values: readonly StringPattern[];
      readonly notValues: readonly StringPattern[];
    }
  | {
      readonly key: 'destination.port';
      readonly values: readonly number[];
      readonly notValues: readonly number[];
    };

export type ConditionView =
  | { readonly kind: 'l4'; readonly condition: L4Condition }
  | { readonly kind: 'httpOnly'; readonly key: string };

/**
 * One rule. `from`/`to`/`when` absent and `[]` read the same (no constraint of that kind), as in
 * istiod (checklist C.40).
 */
export type RuleView =
  | {
      readonly valid: true;
      readonly from: readonly SourceView[];
      readonly to: readonly OperationView[];
      readonly when: readonly ConditionView[];
    }
  | { readonly valid: false; readonly problems: readonly string[] };

export type PolicyAction = 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';

export type AuthorizationPolicyView =
  /** Bound with targetRef(s) to a waypoint, Service or GatewayClass: enforced by waypoints, never sent to ztunnel. */
  | { readonly kind: 'waypoint' }
  | {
      readonly kind: 'ztunnel';
      /** undefined: no selector (namespace or mesh scope). {} selects every workload in scope. */
      readonly selector: Labels | undefined;
      readonly action: PolicyAction;
      readonly rules: readonly RuleView[];
      readonly dryRun: boolean;
      /** Accepted-with-warning notes (an unreadable dry-run annotation). */
      readonly warnings: readonly string[];
    }
  | {
      readonly kind: 'invalid';
      /** As far as it could be read: undefined when absent; {} (every workload in scope) when unreadable. */
      readonly selector: Labels | undefined;
      readonly problems: readonly string[];
    };

const SPEC_KEYS = ['selector', 'targetRef', 'targetRefs', 'action', 'provider', 'rules'];
const RULE_KEYS = ['from', 'to', 'when'];
const SOURCE_L4 = [
  'principals',
  'notPrincipals',
  'namespaces',
  'notNamespaces',
  'ipBlocks',
  'notIpBlocks',
  'serviceAccounts',
  'notServiceAccounts',
] as const;
const SOURCE_HTTP_ONLY = [
  'requestPrincipals',
  'notRequestPrincipals',
  'remoteIpBlocks',
  'notRemoteIpBlocks',
  'trustDomains',
  'notTrustDomains',
];
const OPERATION_HTTP_ONLY = ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'];
const L4_CONDITION_KEYS = [
  'source.ip',
  'source.namespace',
  'source.principal',
  'destination.ip',
  'destination.port',
] as const;
/** Istio's other `when` keys: valid, but only a waypoint can evaluate them. */
const HTTP_ONLY_CONDITION_KEYS = [
  'remote.ip',
  'source.serviceAccount',
  'request.auth.principal',
  'request.auth.audiences',
  'request.auth.presenter',
  'connection.sni',
];
const HTTP_ONLY_CONDITION_PATTERNS = [
  /^request\.headers\[[^\][]+\]$/,
  /^request\.auth\.claims(?:\[[^\][]+\])+$/,
  /^experimental\.envoy\.filters\.[^\s]+$/,
];
const ACTIONS: readonly PolicyAction[] = ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'];
const TRUE_VALUES = ['1', 't', 'T', 'TRUE', 'true', 'True'];
const FALSE_VALUES = ['0', 'f', 'F', 'FALSE', 'false', 'False'];

/**
 * `*` alone (presence), `*suffix`, `prefix*` or an exact value; `spiffe://` is stripped from
 * principals, which ztunnel compares without it (spec §3.8).
 */
function parsePattern(raw: string, isPrincipal: boolean): StringPattern | string {
  const v = isPrincipal && raw.startsWith('spiffe://') ? raw.slice('spiffe://'.length) : raw;
  if (v === '') return 'empty value';
  if (v === '*') return { kind: 'presence' };
  const stars = v.split('*').length - 1;
  if (stars === 0) return { kind: 'exact', value: v };
  if (stars === 1 && v.startsWith('*')) return { kind: 'suffix', value: v.slice(1) };
  if (stars === 1 && v.endsWith('*')) return { kind: 'prefix', value: v.slice(0, -1) };
  return "'*' is allowed only alone or as the first or last character";
}

/** Decimal 0–65535, as istiod reads policy ports. */
function parsePort(s: string): number | undefined {
  return /^(?:0|[1-9][0-9]{0,4})$/.test(s) && Number(s) <= 65535 ? Number(s) : undefined;
}

function patterns(v: unknown, path: string, isPrincipal: boolean, problems: Problems): StringPattern[] {
  const out: StringPattern[] = [];
  for (const [i, s] of readStringList(v, path, problems).entries()) {
    const p = parsePattern(s, isPrincipal);
    if (typeof p === 'string') problems.add(`${path}[${i}]`, `${p} (${JSON.stringify(s)})`);
    else out.push(p);
  }
  return out;
}

function cidrs(v: unknown, path: string, problems: Problems): Cidr[] {
  const out: Cidr[] = [];
  for (const [i, s] of readStringList(v, path, problems).entries()) {
    const c = parseCidr(s);
    if (c === undefined) problems.add(`${path}[${i}]`, `not an IP address or CIDR: ${JSON.stringify(s)}`);
    else out.push(c);
  }
  return out;
}

function ports(v: unknown, path: string, problems: Problems): number[] {
  const out: number[] = [];
  for (const [i, s] of readStringList(v, path, problems).entries()) {
    const p = parsePort(s);
    if (p === undefined) problems.add(`${path}[${i}]`, `not a port number 0-65535: ${JSON.stringify(s)}`);
    else out.push(p);
  }
  return out;
}

function serviceAccounts(
  v: unknown,
  path: string,
  policyNamespace: string,
  problems: Problems,
): ServiceAccountRef[] {
  const out: ServiceAccountRef[] = [];
  for (const [i, s] of readStringList(v, path, problems).entries()) {
    const parts = s.split('/');
    const [first = '', second = ''] = parts;
    const ref =
      parts.length === 1 ? { namespace: policyNamespace, name: first } : { namespace: first, name: second };
    if (parts.length > 2 || ref.namespace === '' || ref.name === '' || s.includes('*')) {
      problems.add(
        `${path}[${i}]`,
        `expected <namespace>/<service account> or <service account>: ${JSON.stringify(s)}`,
      );
    } else {
      out.push(ref);
    }
  }
  return out;
}

/** Names of the `keys` of `obj` holding a non-empty list (checked to be strings). */
function httpOnlyFields(
  obj: Record<string, unknown>,
  keys: readonly string[],
  path: string,
  problems: Problems,
): string[] {
  return keys.filter((k) => readStringList(obj[k], `${path}.${k}`, problems).length > 0);
}

function readSource(
  entry: Record<string, unknown>,
  path: string,
  policyNamespace: string,
  problems: Problems,
): SourceView | undefined {
  checkKeys(entry, ['source'], path, problems);
  const src = entry.source;
  const p = `${path}.source`;
  if (!isRecord(src)) {
    problems.add(p, 'required object (principals, namespaces, ipBlocks, …)');
    return undefined;
  }
  const before = problems.size;
  checkKeys(src, [...SOURCE_L4, ...SOURCE_HTTP_ONLY], p, problems);
  const view: SourceView = {
    principals: patterns(src.principals, `${p}.principals`, true, problems),
    notPrincipals: patterns(src.notPrincipals, `${p}.notPrincipals`, true, problems),
    namespaces: patterns(src.namespaces, `${p}.namespaces`, false, problems),
    notNamespaces: patterns(src.notNamespaces, `${p}.notNamespaces`, false, problems),
    ipBlocks: cidrs(src.ipBlocks, `${p}.ipBlocks`, problems),
    notIpBlocks: cidrs(src.notIpBlocks, `${p}.notIpBlocks`, problems),
    serviceAccounts: serviceAccounts(src.serviceAccounts, `${p}.serviceAccounts`, policyNamespace, problems),
    notServiceAccounts: serviceAccounts(
      src.notServiceAccounts,
      `${p}.notServiceAccounts`,
      policyNamespace,
      problems,
    ),
    httpOnly: httpOnlyFields(src, SOURCE_HTTP_ONLY, p, problems),
  };
  // Istio rejects an empty source; read as "any source" it would widen an ALLOW.
  if (
    problems.size === before &&
    view.httpOnly.length === 0 &&
    SOURCE_L4.every((k) => view[k].length === 0)
  ) {
    problems.add(p, 'sets no field; an empty source is not allowed');
  }
  return view;
}

function readOperation(
  entry: Record<string, unknown>,
  path: string,
  problems: Problems,
): OperationView | undefined {
  checkKeys(entry, ['operation'], path, problems);
  const op = entry.operation;
  const p = `${path}.operation`;
  if (!isRecord(op)) {
    problems.add(p, 'required object (ports, notPorts, hosts, methods, paths, …)');
    return undefined;
  }
  const before = problems.size;
  checkKeys(op, ['ports', 'notPorts', ...OPERATION_HTTP_ONLY], p, problems);
  const view: OperationView = {
    ports: ports(op.ports, `${p}.ports`, problems),
    notPorts: ports(op.notPorts, `${p}.notPorts`, problems),
    httpOnly: httpOnlyFields(op, OPERATION_HTTP_ONLY, p, problems),
  };
  if (
    problems.size === before &&
    view.ports.length === 0 &&
    view.notPorts.length === 0 &&
    view.httpOnly.length === 0
  ) {
    problems.add(p, 'sets no field; an empty operation is not allowed');
  }
  return view;
}

function readCondition(
  c: Record<string, unknown>,
  path: string,
  problems: Problems,
): ConditionView | undefined {
  checkKeys(c, ['key', 'values', 'notValues'], path, problems);
  const key = c.key;
  if (typeof key !== 'string') {
    problems.add(`${path}.key`, 'required string');
    return undefined;
  }
  const raw = readStringList(c.values, `${path}.values`, problems);
  const rawNot = readStringList(c.notValues, `${path}.notValues`, problems);
  if (raw.length === 0 && rawNot.length === 0) {
    problems.add(path, 'at least one of values or notValues must be set');
    return undefined;
  }
  const vp = `${path}.values`;
  const np = `${path}.notValues`;
  switch (key) {
    case 'source.ip':
    case 'destination.ip':
      return {
        kind: 'l4',
        condition: { key, values: cidrs(raw, vp, problems), notValues: cidrs(rawNot, np, problems) },
      };
    case 'source.namespace':
    case 'source.principal': {
      const principal = key === 'source.principal';
      return {
        kind: 'l4',
        condition: {
          key,
          values: patterns(raw, vp, principal, problems),
          notValues: patterns(rawNot, np, principal, problems),
        },
      };
    }
    case 'destination.port':
      return {
        kind: 'l4',
        condition: { key, values: ports(raw, vp, problems), notValues: ports(rawNot, np, problems) },
      };
  }
  if (HTTP_ONLY_CONDITION_KEYS.includes(key) || HTTP_ONLY_CONDITION_PATTERNS.some((re) => re.test(key))) {
    return { kind: 'httpOnly', key };
  }
  problems.add(
    `${path}.key`,
    `unknown condition key ${JSON.stringify(key)} (L4 keys: ${L4_CONDITION_KEYS.join(', ')})`,
  );
  return undefined;
}

function readRule(rule: unknown, path: string, policyNamespace: string): RuleView {
  const problems = new Problems();
  if (!isRecord(rule)) return { valid: false, problems: [`${path}: must be an object`] };
  checkKeys(rule, RULE_KEYS, path, problems);
  const from: SourceView[] = [];
  for (const { index, value } of readRecordList(rule.from, `${path}.from`, problems)) {
    const s = readSource(value, `${path}.from[${index}]`, policyNamespace, problems);
    if (s !== undefined) from.push(s);
  }
  const to: OperationView[] = [];
  for (const { index, value } of readRecordList(rule.to, `${path}.to`, problems)) {
    const o = readOperation(value, `${path}.to[${index}]`, problems);
    if (o !== undefined) to.push(o);
  }
  const when: ConditionView[] = [];
  for (const { index, value } of readRecordList(rule.when, `${path}.when`, problems)) {
    const c = readCondition(value, `${path}.when[${index}]`, problems);
    if (c !== undefined) when.push(c);
  }
  return problems.size > 0 ? { valid: false, problems: problems.list } : { valid: true, from, to, when };
}

/** `undefined` when absent; the matchLabels otherwise; records problems with an unreadable one. */
function readSelector(spec: Record<string, unknown>, problems: Problems): Labels | undefined {
  const sel = spec.selector;
  if (sel === undefined || sel === null) return undefined;
  if (!isRecord(sel)) {
    problems.add('spec.selector', 'must be an object with matchLabels');
    return {};
  }
  checkKeys(sel, ['matchLabels'], 'spec.selector', problems);
  return readStringMap(sel.matchLabels, 'spec.selector.matchLabels', problems);
}

/** Whether targetRef/targetRefs name at least one target; records malformed references. */
function hasTargetRefs(spec: Record<string, unknown>, problems: Problems): boolean {
  const refs: { path: string; ref: unknown }[] = [];
  if (spec.targetRef !== undefined && spec.targetRef !== null) {
    refs.push({ path: 'spec.targetRef', ref: spec.targetRef });
  }
  if (spec.targetRefs !== undefined && spec.targetRefs !== null) {
    if (!Array.isArray(spec.targetRefs)) problems.add('spec.targetRefs', 'must be a list');
    else for (const [i, ref] of spec.targetRefs.entries()) refs.push({ path: `spec.targetRefs[${i}]`, ref });
  }
  for (const { path, ref } of refs) {
    if (
      !isRecord(ref) ||
      typeof ref.kind !== 'string' ||
      ref.kind === '' ||
      typeof ref.name !== 'string' ||
      ref.name === ''
    ) {
      problems.add(path, 'must be an object with kind and name');
    }
  }
  return refs.length > 0;
}

function readDryRun(obj: CustomObject): { dryRun: boolean; warnings: string[] } {
  const v = obj.metadata?.annotations?.[ANNOTATION_DRY_RUN];
  if (v === undefined || v === '') return { dryRun: false, warnings: [] };
  if (TRUE_VALUES.includes(v)) return { dryRun: true, warnings: [] };
  if (FALSE_VALUES.includes(v)) return { dryRun: false, warnings: [] };
  return {
    dryRun: false,
    warnings: [
      `annotation ${ANNOTATION_DRY_RUN}=${JSON.stringify(v)} is not a boolean (true/false); the policy is enforced`,
    ],
  };
}

/** Reads and validates an AuthorizationPolicy; `namespace` is its (already validated) namespace. */
export function readAuthorizationPolicy(obj: CustomObject, namespace: string): AuthorizationPolicyView {
  const problems = new Problems();
  const spec = obj.spec ?? {};
  if (!isRecord(spec)) return { kind: 'invalid', selector: undefined, problems: ['spec: must be an object'] };
  const targeted = hasTargetRefs(spec, problems);
  if (targeted && problems.size === 0) return { kind: 'waypoint' };
  checkKeys(spec, SPEC_KEYS, 'spec', problems);
  const selector = readSelector(spec, problems);
  const action = spec.action ?? 'ALLOW';
  if (typeof action !== 'string' || !(ACTIONS as readonly string[]).includes(action)) {
    problems.add('spec.action', `must be one of ${ACTIONS.join(', ')} (got ${JSON.stringify(action)})`);
  }
  let rules: RuleView[] = [];
  if (spec.rules !== undefined && spec.rules !== null) {
    if (Array.isArray(spec.rules)) {
      rules = spec.rules.map((r, i) => readRule(r, `spec.rules[${i}]`, namespace));
    } else {
      problems.add('spec.rules', 'must be a list');
    }
  }
  if (problems.size > 0) return { kind: 'invalid', selector, problems: problems.list };
  const { dryRun, warnings } = readDryRun(obj);
  return { kind: 'ztunnel', selector, action: action as PolicyAction, rules, dryRun, warnings };
}

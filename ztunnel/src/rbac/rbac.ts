// SPDX-License-Identifier: Apache-2.0
// The L4 authorization engine: upstream ztunnel's semantics (spec ambient-protocols §3.8,
// security-and-reliability §3.4, checklist C.38–C.45), with one deliberate difference:
// a policy that a workload references but that has not arrived yet denies (C.45), where
// upstream skips it (and so may flip a lone ALLOW to allow-all).
//
// Order: dry-run DENY (recorded only) → DENY (any match denies) → dry-run ALLOW (recorded only)
// → no non-dry-run ALLOW policy: allow; otherwise allow only if one matches.
//
// Matching (upstream src/rbac.rs): an Authorization with zero rules never matches; a Rule
// matches when all its Clauses match (a Clause with no Matches counts as matched); a Clause
// matches when any of its Matches matches; an all-empty Match is skipped (never matches);
// within a Match each field family passes when its positive list is empty or has a match AND
// its `not*` list is empty or has none. A rule, clause or match marked `unknown` (a condition
// newer than this ztunnel, checklist C.52) holds in a DENY and fails in an ALLOW.
//
// String matching is literal (exact/prefix/suffix/presence as string operations). Never build a
// regex from policy text: CVE-2026-39350 / istio#59992 were exactly that (checklist C.43).
import type { IpAddr } from '../../../src/shared/net/ip.ts';
import { parseIp } from '../../../src/shared/net/ip.ts';
import type {
  Authorization,
  CidrAddress,
  IstioIdentity,
  Match,
  ServiceAccountMatch,
  StringMatch,
} from '../state/types.ts';
import { policyKey } from '../state/types.ts';
import { cidrContains } from './cidr.ts';

export interface RbacConnection {
  /** From the verified peer certificate; undefined on the plaintext inbound path (15006). */
  srcIdentity?: IstioIdentity | undefined;
  /** TCP peer of the connection (never a header value: checklist C.51). */
  srcIp: string;
  /** The upstream actually dialled: the pod IP. */
  dstIp: string;
  /** The upstream port: the target (container) port, not the service port (spec §1.7 step 4). */
  dstPort: number;
}

export interface RbacContext {
  policies: readonly Authorization[];
  /** Keys referenced by the workload but not (yet) in the store: deny (checklist C.45). */
  missing: readonly string[];
  conn: RbacConnection;
}

export interface RbacDecision {
  allowed: boolean;
  /** Operator-facing reason, in upstream's words where upstream has them. */
  reason: string;
  /** Key `ns/name` of the policy that decided, when one did. */
  policy?: string;
  /** Keys of dry-run policies that matched: "would have denied" (DENY) or "would have allowed" (ALLOW). */
  dryRunMatches: string[];
}

export const RBAC_REASON_NONE_ALLOWED = 'allow policies exist, but none allowed';
export const RBAC_REASON_NO_ALLOW_POLICIES = 'no allow policies apply; allowed by default';

/** A literal string match; exported for the property test against a reference implementation. */
export function stringMatches(m: StringMatch, value: string): boolean {
  if ('exact' in m) return value === m.exact;
  if ('prefix' in m) return value.startsWith(m.prefix);
  if ('suffix' in m) return value.endsWith(m.suffix);
  return value.length > 0;
}

/** The principal form policies use: the identity without `spiffe://` (`td/ns/x/sa/y`). */
export function principalOf(id: IstioIdentity): string {
  return `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

function serviceAccountMatches(m: ServiceAccountMatch, id: IstioIdentity): boolean {
  return m.namespace === id.namespace && m.serviceAccount === id.serviceAccount;
}

/** Positive list empty or any element matches, and negative list empty or none matches. */
function family<T>(positive: readonly T[], negative: readonly T[], pred: (t: T) => boolean): boolean {
  if (positive.length > 0 && !positive.some(pred)) return false;
  if (negative.length > 0 && negative.some(pred)) return false;
  return true;
}

export function isEmptyMatch(m: Match): boolean {
  return (
    m.namespaces.length === 0 &&
    m.notNamespaces.length === 0 &&
    m.principals.length === 0 &&
    m.notPrincipals.length === 0 &&
    m.sourceIps.length === 0 &&
    m.notSourceIps.length === 0 &&
    m.destinationIps.length === 0 &&
    m.notDestinationIps.length === 0 &&
    m.destinationPorts.length === 0 &&
    m.notDestinationPorts.length === 0 &&
    m.serviceAccounts.length === 0 &&
    m.notServiceAccounts.length === 0
  );
}

/** A connection with its attributes parsed once, for matching against many policies. */
interface PreparedConn {
  identity: IstioIdentity | undefined;
  principal: string | undefined;
  src: IpAddr | undefined;
  dst: IpAddr | undefined;
  dstPort: number;
}

function prepare(conn: RbacConnection): PreparedConn {
  const identity = conn.srcIdentity;
  return {
    identity,
    principal: identity === undefined ? undefined : principalOf(identity),
    src: parseIp(conn.srcIp),
    dst: parseIp(conn.dstIp),
    dstPort: conn.dstPort,
  };
}

function matchMatches(m: Match, c: PreparedConn): boolean {
  // An unparseable connection IP never matches a CIDR: positive lists fail, negative lists pass.
  const inCidr =
    (ip: IpAddr | undefined) =>
    (cidr: CidrAddress): boolean =>
      ip !== undefined && cidrContains(cidr, ip);
  // No identity (plaintext) never matches a principal, namespace or service-account matcher, so
  // a positive list fails and a negative list passes: `notPrincipals: [presence]` therefore
  // matches exactly the connections without an identity (STRICT, spec §5.5).
  const { identity, principal } = c;
  return (
    family(m.destinationIps, m.notDestinationIps, inCidr(c.dst)) &&
    family(m.sourceIps, m.notSourceIps, inCidr(c.src)) &&
    family(m.destinationPorts, m.notDestinationPorts, (p) => p === c.dstPort) &&
    family(
      m.serviceAccounts,
      m.notServiceAccounts,
      (sa) => identity !== undefined && serviceAccountMatches(sa, identity),
    ) &&
    family(m.principals, m.notPrincipals, (s) => principal !== undefined && stringMatches(s, principal)) &&
    family(
      m.namespaces,
      m.notNamespaces,
      (s) => identity !== undefined && stringMatches(s, identity.namespace),
    )
  );
}

function policyMatchesPrepared(p: Authorization, c: PreparedConn): boolean {
  // A condition this ztunnel cannot evaluate (checklist C.52) fails closed: it holds in a DENY
  // (which then denies at least what it would with the condition understood) and fails in an
  // ALLOW (which then allows at most that). It is ANDed with the rest of its rule, clause or
  // match, so a DENY Match with only an unknown condition matches every connection.
  const unknownHolds = p.action === 'DENY';
  const matches = (m: Match): boolean =>
    m.unknown === true
      ? unknownHolds && (isEmptyMatch(m) || matchMatches(m, c))
      : !isEmptyMatch(m) && matchMatches(m, c);
  // Zero rules never matches: ALLOW {} allows nothing, DENY {} denies nothing.
  return p.rules.some(
    (rule) =>
      (rule.unknown !== true || unknownHolds) &&
      rule.clauses.every(
        (clause) =>
          (clause.unknown !== true || unknownHolds) &&
          (clause.matches.length === 0 || clause.matches.some(matches)),
      ),
  );
}

/** Whether one policy's rules match the connection (its action aside). */
export function policyMatches(p: Authorization, conn: RbacConnection): boolean {
  return policyMatchesPrepared(p, prepare(conn));
}

function missingReason(missing: readonly string[]): string {
  return missing.length === 1
    ? `policy ${missing.join('')} referenced but not yet received; denying until it arrives`
    : `policies ${missing.join(', ')} referenced but not yet received; denying until they arrive`;
}

/** Decides one connection. Pure; the caller logs `reason` and `dryRunMatches`. */
export function evaluate(ctx: RbacContext): RbacDecision {
  const c = prepare(ctx.conn);
  const dryRunMatches: string[] = [];

  for (const p of ctx.policies) {
    if (p.dryRun && p.action === 'DENY' && policyMatchesPrepared(p, c)) dryRunMatches.push(policyKey(p));
  }

  // Fail closed: a referenced policy we do not have might be a DENY, or the only ALLOW.
  if (ctx.missing.length > 0) {
    return { allowed: false, reason: missingReason(ctx.missing), dryRunMatches };
  }

  for (const p of ctx.policies) {
    if (!p.dryRun && p.action === 'DENY' && policyMatchesPrepared(p, c)) {
      const key = policyKey(p);
      return { allowed: false, reason: `explicitly denied by: ${key}`, policy: key, dryRunMatches };
    }
  }

  for (const p of ctx.policies) {
    if (p.dryRun && p.action === 'ALLOW' && policyMatchesPrepared(p, c)) dryRunMatches.push(policyKey(p));
  }

  const allows = ctx.policies.filter((p) => !p.dryRun && p.action === 'ALLOW');
  if (allows.length === 0) return { allowed: true, reason: RBAC_REASON_NO_ALLOW_POLICIES, dryRunMatches };
  for (const p of allows) {
    if (policyMatchesPrepared(p, c)) {
      const key = policyKey(p);
      return { allowed: true, reason: `allowed by: ${key}`, policy: key, dryRunMatches };
    }
  }
  return { allowed: false, reason: RBAC_REASON_NONE_ALLOWED, dryRunMatches };
}

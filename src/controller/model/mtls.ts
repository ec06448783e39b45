// SPDX-License-Identifier: Apache-2.0
// PeerAuthentication → the synthetic DENY policies through which ztunnel enforces STRICT mTLS
// (spec ambient-protocols §5.5, §5.6; security-and-reliability §1.1, checklist C.47).
//
// STRICT means "refuse connections without a peer identity": plaintext reaching 15006 has none,
// HBONE always has one. The effective mode of a workload resolves mesh → namespace → workload
// (the oldest policy at each level; UNSET inherits), then port-level settings of its workload
// policy override per port. DISABLE and PERMISSIVE are the same in ambient: plaintext accepted.
//
// Outcome for one workload, from (strict, exceptions = ports whose mode differs from strict):
// - strict, no exceptions      → list `<root>/istio_converted_static_strict`
//                                (DENY `notPrincipals: [presence]`);
// - any exception              → list `<ns>/converted_peer_authentication_<name>` INSTEAD:
//     strict:     DENY {notPrincipals: [presence], notDestinationPorts: exceptions}
//     not strict: DENY {notPrincipals: [presence], destinationPorts: exceptions}
//   (the static policy must not be listed too: any matching DENY wins, so it would refuse
//   plaintext on the permissive ports);
// - otherwise                  → nothing.
//
// The port lists are single Matches, so "any of these ports" / "none of these ports" is the
// list semantics ztunnel applies within one Match. That is the fix for the istio/istio#54146
// class of bug (several strict ports ANDed as separate clauses, which matched nothing and left
// the workload permissive), and the workload's reference and the policy's content come from one
// resolution function, so they cannot disagree (upstream could reference a converted policy it
// then did not emit).
import type { Authorization } from '../../shared/gen/authorization.ts';
import { Action, Scope } from '../../shared/gen/authorization.ts';
import { emptyMatch, presence } from './authorization.ts';
import type { MtlsMode, PeerAuthenticationView } from './peer-authentication.ts';

export const STATIC_STRICT_POLICY_NAME = 'istio_converted_static_strict';
const CONVERTED_PEER_AUTHENTICATION_PREFIX = 'converted_peer_authentication_';

/** A readable PeerAuthentication with its identity, as resolution needs it. */
export interface PeerAuthenticationPolicy {
  readonly namespace: string;
  readonly name: string;
  readonly view: PeerAuthenticationView & { kind: 'policy' };
}

/** The governing policies for one workload; any level may be absent. */
export interface MtlsLevels {
  readonly mesh: PeerAuthenticationPolicy | undefined;
  readonly namespace: PeerAuthenticationPolicy | undefined;
  readonly workload: PeerAuthenticationPolicy | undefined;
}

interface MtlsResolution {
  /** Whether plaintext is refused on ports without a port-level override. */
  readonly strict: boolean;
  /** Sorted ports whose effective mode is the opposite of `strict`. */
  readonly exceptions: readonly number[];
}

/** The oldest policy (ties: by name), as istiod picks one per level. */
export function oldestPolicy(
  policies: Iterable<PeerAuthenticationPolicy>,
): PeerAuthenticationPolicy | undefined {
  let best: PeerAuthenticationPolicy | undefined;
  for (const p of policies) {
    if (
      best === undefined ||
      p.view.created < best.view.created ||
      (p.view.created === best.view.created && p.name < best.name)
    ) {
      best = p;
    }
  }
  return best;
}

const isStrict = (m: MtlsMode): boolean => m === 'STRICT';
const isOpen = (m: MtlsMode): boolean => m === 'PERMISSIVE' || m === 'DISABLE';

function resolveMtls(levels: MtlsLevels): MtlsResolution {
  let strict = levels.mesh !== undefined && isStrict(levels.mesh.view.mode);
  const ns = levels.namespace?.view.mode;
  if (ns !== undefined && ns !== 'UNSET') strict = isStrict(ns);
  const wl = levels.workload?.view;
  if (wl === undefined) return { strict, exceptions: [] };
  if (isStrict(wl.mode)) strict = true;
  else if (isOpen(wl.mode)) strict = false;
  const exceptions = [...wl.portLevel]
    .filter(([, mode]) => (strict ? isOpen(mode) : isStrict(mode)))
    .map(([port]) => port)
    .sort((a, b) => a - b);
  return { strict, exceptions };
}

function convertedPolicyName(peerAuthenticationName: string): string {
  return `${CONVERTED_PEER_AUTHENTICATION_PREFIX}${peerAuthenticationName}`;
}

/** Keys of the synthetic policies a workload governed by `levels` must list. */
export function mtlsPolicyKeys(levels: MtlsLevels, rootNamespace: string): string[] {
  const r = resolveMtls(levels);
  if (r.exceptions.length > 0 && levels.workload !== undefined) {
    return [`${levels.workload.namespace}/${convertedPolicyName(levels.workload.name)}`];
  }
  return r.strict ? [`${rootNamespace}/${STATIC_STRICT_POLICY_NAME}`] : [];
}

/** `<root>/istio_converted_static_strict`: deny anything without a peer identity. */
export function staticStrictPolicy(rootNamespace: string): Authorization {
  return {
    name: STATIC_STRICT_POLICY_NAME,
    namespace: rootNamespace,
    scope: Scope.WORKLOAD_SELECTOR,
    action: Action.DENY,
    rules: [{ clauses: [{ matches: [{ ...emptyMatch(), notPrincipals: [presence()] }] }] }],
    dryRun: false,
    extensions: [],
  };
}

/**
 * The converted policy of a workload-level PeerAuthentication whose port-level settings make
 * exceptions to its effective mode; undefined when it makes none. `levels.workload` is the
 * PeerAuthentication itself.
 */
export function convertedPolicy(
  levels: MtlsLevels & { workload: PeerAuthenticationPolicy },
): Authorization | undefined {
  const r = resolveMtls(levels);
  if (r.exceptions.length === 0) return undefined;
  const ports = [...r.exceptions];
  const match = r.strict
    ? { ...emptyMatch(), notPrincipals: [presence()], notDestinationPorts: ports }
    : { ...emptyMatch(), notPrincipals: [presence()], destinationPorts: ports };
  return {
    name: convertedPolicyName(levels.workload.name),
    namespace: levels.workload.namespace,
    scope: Scope.WORKLOAD_SELECTOR,
    action: Action.DENY,
    rules: [{ clauses: [{ matches: [match] }] }],
    dryRun: false,
    extensions: [],
  };
}

// SPDX-License-Identifier: Apache-2.0
// Which pods belong in the mesh (spec ambient-protocols §2.1 step 1, §5.1). Pure, so the agent,
// its reconcile loop and the tests all apply the same rule:
//
//   enrolled ⇔ not hostNetwork ∧ no sidecar ∧ namespace not excluded ∧
//              (pod label dataplane-mode=ambient ∨ (pod label ≠ none ∧ namespace label = ambient))
//
// The answer carries a reason, logged by the agent and returned to the CNI plugin, so "why is my
// pod (not) in the mesh" is answerable from one log line.
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';

export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
export const DATAPLANE_MODE_AMBIENT = 'ambient';
export const DATAPLANE_MODE_NONE = 'none';
/** Set by the agent: `enabled` once ztunnel acked the pod, `pending` while it has not. */
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';
/** Present on pods that run an Istio sidecar: those are never enrolled in ambient. */
export const SIDECAR_STATUS_ANNOTATION = 'sidecar.istio.io/status';
export const DEFAULT_EXCLUDED_NAMESPACES: readonly string[] = Object.freeze(['kube-system']);

export interface EnrolmentDecision {
  readonly enrol: boolean;
  readonly reason: string;
}

export interface EnrolmentPolicy {
  /** Namespaces whose pods are never enrolled (kube-system and the configured list). */
  readonly excludedNamespaces: ReadonlySet<string>;
}

/**
 * Decides for one pod. `namespace` is undefined when the namespace object is not (yet) known:
 * then only the pod's own label can enrol it — the caller must not read that as "not in the
 * mesh" while the namespace might still be ambient (checklist D.61); see {@link needsNamespace}.
 */
export function decideEnrolment(
  pod: V1Pod,
  namespace: V1Namespace | undefined,
  policy: EnrolmentPolicy,
): EnrolmentDecision {
  const ns = pod.metadata?.namespace ?? 'default';
  if (pod.spec?.hostNetwork === true) return { enrol: false, reason: 'hostNetwork pod' };
  if (pod.metadata?.annotations?.[SIDECAR_STATUS_ANNOTATION] !== undefined) {
    return { enrol: false, reason: 'pod runs an Istio sidecar' };
  }
  if (policy.excludedNamespaces.has(ns)) return { enrol: false, reason: `namespace ${ns} is excluded` };
  const podMode = pod.metadata?.labels?.[DATAPLANE_MODE_LABEL];
  if (podMode === DATAPLANE_MODE_AMBIENT) {
    return { enrol: true, reason: `pod label ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_AMBIENT}` };
  }
  if (podMode === DATAPLANE_MODE_NONE) {
    return { enrol: false, reason: `pod label ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_NONE}` };
  }
  const nsMode = namespace?.metadata?.labels?.[DATAPLANE_MODE_LABEL];
  if (nsMode === DATAPLANE_MODE_AMBIENT) {
    return { enrol: true, reason: `namespace ${ns} label ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_AMBIENT}` };
  }
  return {
    enrol: false,
    reason: `neither pod nor namespace ${ns} is labelled ${DATAPLANE_MODE_LABEL}=ambient`,
  };
}

/** True when the decision depends on a namespace object we do not have. */
export function needsNamespace(
  pod: V1Pod,
  namespace: V1Namespace | undefined,
  policy: EnrolmentPolicy,
): boolean {
  if (namespace !== undefined) return false;
  const d = decideEnrolment(pod, undefined, policy);
  if (d.enrol) return false;
  const mode = pod.metadata?.labels?.[DATAPLANE_MODE_LABEL];
  return (
    pod.spec?.hostNetwork !== true &&
    pod.metadata?.annotations?.[SIDECAR_STATUS_ANNOTATION] === undefined &&
    !policy.excludedNamespaces.has(pod.metadata?.namespace ?? 'default') &&
    mode !== DATAPLANE_MODE_NONE
  );
}

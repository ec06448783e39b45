// SPDX-License-Identifier: Apache-2.0
// The production Redirector: the in-pod rules of redirect/ (spec ambient-protocols §2.2–2.4)
// with the per-pod overrides of §2.5 read from the pod's annotations. A malformed annotation
// fails the enrolment with a message naming it (the rule renderer validates every value it
// interpolates), rather than enrolling the pod with rules the user did not ask for.
import type { V1Pod } from '@kubernetes/client-node';
import { MeshError } from '../../../src/shared/errors.ts';
import { applyRedirection, removeRedirection, type ApplyOptions } from '../redirect/apply.ts';
import type { RedirectOptionsInput } from '../redirect/options.ts';
import type { Redirector } from './agent.ts';

export const BYPASS_INBOUND_ANNOTATION = 'ambient.istio.io/bypass-inbound-capture';
export const DNS_CAPTURE_ANNOTATION = 'ambient.istio.io/dns-capture';
export const REROUTE_INTERFACES_ANNOTATION = 'istio.io/reroute-virtual-interfaces';

export class AnnotationError extends MeshError {}

function boolAnnotation(pod: V1Pod, key: string): boolean | undefined {
  const v = pod.metadata?.annotations?.[key];
  if (v === undefined) return undefined;
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new AnnotationError(
    'CNI_ERR_INVALID_ANNOTATION',
    `annotation ${key}=${JSON.stringify(v)} must be "true" or "false"`,
  );
}

/** The redirect options one pod asks for. */
export function podRedirectOptions(pod: V1Pod, base: RedirectOptionsInput = {}): RedirectOptionsInput {
  const opts: RedirectOptionsInput = { ...base };
  const bypass = boolAnnotation(pod, BYPASS_INBOUND_ANNOTATION);
  if (bypass !== undefined) opts.bypassInboundCapture = bypass;
  if (boolAnnotation(pod, DNS_CAPTURE_ANNOTATION) === true) {
    throw new AnnotationError(
      'CNI_ERR_INVALID_ANNOTATION',
      `annotation ${DNS_CAPTURE_ANNOTATION}="true" asks for DNS capture, but this ztunnel has no DNS proxy; remove the annotation`,
    );
  }
  const reroute = pod.metadata?.annotations?.[REROUTE_INTERFACES_ANNOTATION];
  if (reroute !== undefined) {
    opts.rerouteVirtualInterfaces = reroute
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
  }
  return opts;
}

export class RulesRedirector implements Redirector {
  readonly #base: RedirectOptionsInput;
  readonly #apply: ApplyOptions;

  constructor(base: RedirectOptionsInput, apply: ApplyOptions) {
    this.#base = base;
    this.#apply = apply;
  }

  async apply(netnsPath: string, pod: V1Pod): Promise<void> {
    await applyRedirection(netnsPath, podRedirectOptions(pod, this.#base), this.#apply);
  }

  async release(netnsPath: string, pod: V1Pod): Promise<void> {
    await applyRedirection(
      netnsPath,
      { ...podRedirectOptions(pod, this.#base), capture: false },
      this.#apply,
    );
  }

  async remove(netnsPath: string): Promise<void> {
    await removeRedirection(netnsPath, this.#base);
  }
}

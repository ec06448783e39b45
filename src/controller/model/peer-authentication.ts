// SPDX-License-Identifier: Apache-2.0
// The typed, validated view of a PeerAuthentication (security.istio.io/v1) for ambient (spec
// ambient-protocols §5.6): only the mTLS mode matters, per workload and per port.
//
// Levels: no selector (or empty matchLabels) is namespace-wide, or mesh-wide in the root
// namespace; a selector makes it workload-level. A root-namespace PeerAuthentication with a
// selector is ignored (spec §5.6). portLevelMtls needs a workload selector and port keys
// 1–65535, as Istio's validation requires.
//
// A PeerAuthentication that cannot be read is read as its most restrictive possible meaning:
// STRICT on every port, at the level its selector gives (an unreadable selector: namespace or
// mesh level). Reading it as PERMISSIVE, or ignoring it, could accept plaintext the operator
// meant to refuse.
import { Problems, checkKeys, creationTime, isRecord, readStringMap } from './json.ts';
import type { Labels } from './selector.ts';
import { isEmptySelector } from './selector.ts';
import type { CustomObject } from '../sources/types.ts';

export type MtlsMode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';

const MODES: readonly MtlsMode[] = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];

export type PeerAuthenticationView =
  | { readonly kind: 'ignored'; readonly reason: string }
  | {
      readonly kind: 'policy';
      /** undefined: namespace level (mesh level in the root namespace). Never empty. */
      readonly selector: Labels | undefined;
      readonly mode: MtlsMode;
      /** Port → mode; only on workload-level policies. */
      readonly portLevel: ReadonlyMap<number, MtlsMode>;
      /** creationTimestamp in ms (+Infinity if unknown): the oldest policy wins at each level. */
      readonly created: number;
      /** Non-empty when the object was unreadable and is read as STRICT instead. */
      readonly problems: readonly string[];
    };

function readMode(v: unknown, path: string, problems: Problems): MtlsMode {
  if (v === undefined || v === null) return 'UNSET';
  if (!isRecord(v)) {
    problems.add(path, 'must be an object with mode');
    return 'UNSET';
  }
  checkKeys(v, ['mode'], path, problems);
  const mode = v.mode ?? 'UNSET';
  if (typeof mode === 'string' && (MODES as readonly string[]).includes(mode)) return mode as MtlsMode;
  problems.add(`${path}.mode`, `must be one of ${MODES.join(', ')} (got ${JSON.stringify(mode)})`);
  return 'UNSET';
}

function readPortLevel(v: unknown, problems: Problems): Map<number, MtlsMode> {
  const out = new Map<number, MtlsMode>();
  if (v === undefined || v === null) return out;
  if (!isRecord(v)) {
    problems.add('spec.portLevelMtls', 'must be a map of port number to {mode}');
    return out;
  }
  for (const [k, m] of Object.entries(v)) {
    const path = `spec.portLevelMtls.${k}`;
    const port = /^[1-9][0-9]{0,4}$/.test(k) ? Number(k) : 0;
    if (port < 1 || port > 65535) problems.add(path, 'the key must be a port number 1-65535');
    else if (!isRecord(m)) problems.add(path, 'must be an object with mode');
    else out.set(port, readMode(m, path, problems));
  }
  return out;
}

/** Reads and validates a PeerAuthentication in `namespace`. */
export function readPeerAuthentication(
  obj: CustomObject,
  namespace: string,
  rootNamespace: string,
): PeerAuthenticationView {
  const problems = new Problems();
  const created = creationTime(obj.metadata?.creationTimestamp);
  const spec: unknown = obj.spec ?? {};
  if (!isRecord(spec)) {
    return {
      kind: 'policy',
      selector: undefined,
      mode: 'STRICT',
      portLevel: new Map(),
      created,
      problems: ['spec: must be an object'],
    };
  }
  checkKeys(spec, ['selector', 'mtls', 'portLevelMtls'], 'spec', problems);
  let selector: Labels | undefined;
  let selectorReadable = true;
  if (spec.selector !== undefined && spec.selector !== null) {
    const before = problems.size;
    if (isRecord(spec.selector)) {
      checkKeys(spec.selector, ['matchLabels'], 'spec.selector', problems);
      selector = readStringMap(spec.selector.matchLabels, 'spec.selector.matchLabels', problems);
    } else {
      problems.add('spec.selector', 'must be an object with matchLabels');
    }
    selectorReadable = problems.size === before;
    if (!selectorReadable || (selector !== undefined && isEmptySelector(selector))) selector = undefined;
  }
  if (selector !== undefined && namespace === rootNamespace) {
    return {
      kind: 'ignored',
      reason: `a PeerAuthentication with a selector in the root namespace ${rootNamespace} is ignored; move it to the workload's namespace`,
    };
  }
  const mode = readMode(spec.mtls, 'spec.mtls', problems);
  const portLevel = readPortLevel(spec.portLevelMtls, problems);
  if (portLevel.size > 0 && selector === undefined && selectorReadable) {
    problems.add(
      'spec.portLevelMtls',
      'needs a workload selector (mesh- and namespace-wide policies cannot set port-level mTLS)',
    );
  }
  if (problems.size > 0) {
    return {
      kind: 'policy',
      selector,
      mode: 'STRICT',
      portLevel: new Map(),
      created,
      problems: problems.list,
    };
  }
  return { kind: 'policy', selector, mode, portLevel, created, problems: [] };
}

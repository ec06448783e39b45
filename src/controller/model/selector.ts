// SPDX-License-Identifier: Apache-2.0
// Label selection, and the two indexes that keep it cheap at 10k pods: pods by label (which pods
// does this selector pick?) and selectors by label (which selectors pick this pod?).
//
// Semantics are `matchLabels` only (the only form Istio's WorkloadSelector and a Service's
// spec.selector have): a selector matches when every one of its pairs is among the labels. What
// an *empty* selector means is the caller's decision, never this module's default: a Service
// with an empty selector selects nothing (Kubernetes), a policy's empty selector selects every
// workload in its scope (Istio). Checklist C.40 / the 1.30.5 ServiceEntry bug: "select all" must
// never happen by accident, so the indexes take an explicit `emptyMeans`.

export type Labels = Readonly<Record<string, string>>;

/** Every pair of `selector` is in `labels`. An empty selector matches (callers decide whether to ask). */
function selectorMatches(selector: Labels, labels: Labels | undefined): boolean {
  for (const [k, v] of Object.entries(selector)) {
    if (labels?.[k] !== v) return false;
  }
  return true;
}

export function isEmptySelector(selector: Labels): boolean {
  for (const _ in selector) return false;
  return true;
}

const pairKey = (namespace: string, k: string, v: string): string => `${namespace}\0${k}\0${v}`;

function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (s === undefined) m.set(k, new Set([v]));
  else s.add(v);
}

function removeFrom<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (s === undefined) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}

/** Objects (pods) filed by namespace and by each label pair, for "which objects does this selector pick?". */
export class LabelIndex {
  readonly #byNamespace = new Map<string, Set<string>>();
  readonly #byPair = new Map<string, Set<string>>();
  readonly #entries = new Map<string, { namespace: string; labels: Labels }>();

  /** Files `key`, replacing what it was filed under before. */
  set(key: string, namespace: string, labels: Labels): void {
    this.delete(key);
    this.#entries.set(key, { namespace, labels });
    addTo(this.#byNamespace, namespace, key);
    for (const [k, v] of Object.entries(labels)) addTo(this.#byPair, pairKey(namespace, k, v), key);
  }

  delete(key: string): void {
    const e = this.#entries.get(key);
    if (e === undefined) return;
    this.#entries.delete(key);
    removeFrom(this.#byNamespace, e.namespace, key);
    for (const [k, v] of Object.entries(e.labels)) removeFrom(this.#byPair, pairKey(e.namespace, k, v), key);
  }

  /** Keys in `namespace`. */
  inNamespace(namespace: string): ReadonlySet<string> {
    return this.#byNamespace.get(namespace) ?? new Set();
  }

  namespaces(): Iterable<string> {
    return this.#byNamespace.keys();
  }

  /**
   * Keys in `namespace` that `selector` picks. An empty selector picks all of them when
   * `emptyMeans` is 'all' and none when it is 'none'. Cost: the smallest label bucket of the
   * selector, not the namespace.
   */
  select(namespace: string, selector: Labels, emptyMeans: 'all' | 'none'): string[] {
    const pairs = Object.entries(selector);
    if (pairs.length === 0) return emptyMeans === 'all' ? [...this.inNamespace(namespace)] : [];
    let smallest: ReadonlySet<string> | undefined;
    for (const [k, v] of pairs) {
      const bucket = this.#byPair.get(pairKey(namespace, k, v));
      if (bucket === undefined) return [];
      if (smallest === undefined || bucket.size < smallest.size) smallest = bucket;
    }
    const out: string[] = [];
    for (const key of smallest ?? []) {
      if (selectorMatches(selector, this.#entries.get(key)?.labels)) out.push(key);
    }
    return out;
  }
}

/**
 * Selectors (of services or policies) filed by namespace and by one of their pairs, for "which
 * selectors pick an object with these labels?". Cost per lookup: the object's labels plus the
 * candidates sharing a pair with it, not every selector in the namespace.
 */
export class SelectorIndex {
  readonly #byPair = new Map<string, Set<string>>();
  readonly #matchAll = new Map<string, Set<string>>();
  readonly #entries = new Map<string, { namespace: string; selector: Labels; anchor: string | undefined }>();

  /**
   * Files `key`'s selector, replacing any previous one. An empty selector is filed as matching
   * every object of the namespace when `emptyMeans` is 'all', and not filed at all when 'none'.
   */
  set(key: string, namespace: string, selector: Labels, emptyMeans: 'all' | 'none'): void {
    this.delete(key);
    const first = Object.entries(selector).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))[0];
    if (first === undefined) {
      if (emptyMeans === 'none') return;
      this.#entries.set(key, { namespace, selector, anchor: undefined });
      addTo(this.#matchAll, namespace, key);
      return;
    }
    const anchor = pairKey(namespace, first[0], first[1]);
    this.#entries.set(key, { namespace, selector, anchor });
    addTo(this.#byPair, anchor, key);
  }

  delete(key: string): void {
    const e = this.#entries.get(key);
    if (e === undefined) return;
    this.#entries.delete(key);
    if (e.anchor === undefined) removeFrom(this.#matchAll, e.namespace, key);
    else removeFrom(this.#byPair, e.anchor, key);
  }

  /** Keys of the selectors filed in `namespace` that pick an object labelled `labels`. */
  matching(namespace: string, labels: Labels): string[] {
    const out = [...(this.#matchAll.get(namespace) ?? [])];
    for (const [k, v] of Object.entries(labels)) {
      for (const key of this.#byPair.get(pairKey(namespace, k, v)) ?? []) {
        const e = this.#entries.get(key);
        if (e !== undefined && selectorMatches(e.selector, labels)) out.push(key);
      }
    }
    return out;
  }
}

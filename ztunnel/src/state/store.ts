// SPDX-License-Identifier: Apache-2.0
// ztunnel's state store: workloads, services and authorization policies received over WDS
// (spec ambient-protocols §3.5, §3.6) or loaded from static config, with the indexes the data
// path needs: workload by uid and by `network/ip`, service by `namespace/hostname` and by
// `network/vip`, policies by key, by namespace (NAMESPACE scope) and global (GLOBAL scope), as in
// upstream's src/state/{workload,service,policy}.rs.
//
// Index correctness on updates (checklist C.46, istio/ztunnel#1247): for every object we record
// the index keys it was filed under, and on update or removal we unfile exactly those, so a
// workload whose IP changed is no longer found at the old IP and a policy whose scope changed
// from NAMESPACE to WORKLOAD_SELECTOR stops applying to the whole namespace. Objects are cloned on
// the way in, so a caller mutating its copy cannot corrupt the indexes either.
//
// Pod IP reuse (checklist B.37): when two workloads briefly share an IP (the old pod's removal
// not yet received), lookups by IP return the one filed most recently under that IP, because the
// new pod is the one that holds the address now; removing the old pod leaves the new pod's entry
// in place. (Inbound authorization uses the TLS identity, never this lookup.)
import { EventEmitter } from 'eventemitter3';
import { canonicalIp } from '../../../src/shared/net/ip.ts';
import type { Authorization, Service, StateSnapshot, Workload } from './types.ts';
import { policyKey, serviceKey } from './types.ts';

export type StateChange =
  | { kind: 'workload'; op: 'upsert' | 'remove'; key: string }
  | { kind: 'service'; op: 'upsert' | 'remove'; key: string }
  | { kind: 'policy'; op: 'upsert' | 'remove'; key: string }
  | { kind: 'all'; op: 'replace' };

export interface StateStoreEvents {
  changed: [change: StateChange];
}

/** What `policiesFor` returns: the applicable policies, and referenced keys we do not have. */
export interface ApplicablePolicies {
  policies: Authorization[];
  missing: string[];
}

interface WorkloadFiling {
  addrKeys: string[];
  serviceKeys: string[];
  node: string;
}

interface PolicyFiling {
  namespace?: string;
  global: boolean;
}

function addrKey(network: string, ip: string): string {
  return `${network}/${canonicalIp(ip) ?? ip}`;
}

function addToSetMap<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k);
  if (s === undefined) {
    s = new Set();
    m.set(k, s);
  }
  s.add(v);
}

function removeFromSetMap<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (s === undefined) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}

/** Appends `v` to the list at `k` unless already present (keeps the original position). */
function addToListMap(m: Map<string, string[]>, k: string, v: string): void {
  const l = m.get(k);
  if (l === undefined) m.set(k, [v]);
  else if (!l.includes(v)) l.push(v);
}

function removeFromListMap(m: Map<string, string[]>, k: string, v: string): void {
  const l = m.get(k);
  if (l === undefined) return;
  const i = l.indexOf(v);
  if (i >= 0) l.splice(i, 1);
  if (l.length === 0) m.delete(k);
}

function byKey<T>(key: (t: T) => string): (a: T, b: T) => number {
  return (a, b) => {
    const ka = key(a);
    const kb = key(b);
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  };
}

export class StateStore extends EventEmitter<StateStoreEvents> {
  readonly #workloads = new Map<string, Workload>();
  readonly #workloadFilings = new Map<string, WorkloadFiling>();
  /** `network/ip` → workload uids holding it, oldest first. */
  readonly #workloadsByAddr = new Map<string, string[]>();
  /** `namespace/hostname` → uids of workloads that list the service in `services`. */
  readonly #endpointsByService = new Map<string, Set<string>>();
  readonly #workloadsByNode = new Map<string, Set<string>>();

  readonly #services = new Map<string, Service>();
  readonly #serviceVipKeys = new Map<string, string[]>();
  /** `network/vip` → service keys, in insertion order. */
  readonly #servicesByVip = new Map<string, string[]>();
  readonly #servicesByHostname = new Map<string, Set<string>>();

  readonly #policies = new Map<string, Authorization>();
  readonly #policyFilings = new Map<string, PolicyFiling>();
  readonly #policiesByNamespace = new Map<string, Set<string>>();
  readonly #globalPolicies = new Set<string>();

  // ---- workloads ----

  upsertWorkload(w: Workload): void {
    this.#putWorkload(w);
    this.emit('changed', { kind: 'workload', op: 'upsert', key: w.uid });
  }

  removeWorkload(uid: string): boolean {
    if (!this.#dropWorkload(uid)) return false;
    this.emit('changed', { kind: 'workload', op: 'remove', key: uid });
    return true;
  }

  #putWorkload(input: Workload): void {
    const w = structuredClone(input);
    w.addresses = w.addresses.map((a) => canonicalIp(a) ?? a);
    const filing: WorkloadFiling = { addrKeys: [], serviceKeys: Object.keys(w.services), node: w.node };
    // HOST_NETWORK workloads share the node's IP: looking them up by IP would misattribute every
    // other host-network pod's traffic to them (spec §3.5 NetworkMode).
    if (w.networkMode !== 'HOST_NETWORK') {
      filing.addrKeys = [...new Set(w.addresses.map((a) => addrKey(w.network, a)))];
    }
    // Unfile what the previous version was filed under, except IPs it keeps: those keep their
    // place in the per-IP order, so an update to an old pod does not take a reused IP back.
    this.#unfileWorkload(w.uid, new Set(filing.addrKeys));
    this.#workloads.set(w.uid, w);
    for (const k of filing.addrKeys) addToListMap(this.#workloadsByAddr, k, w.uid);
    for (const k of filing.serviceKeys) addToSetMap(this.#endpointsByService, k, w.uid);
    addToSetMap(this.#workloadsByNode, filing.node, w.uid);
    this.#workloadFilings.set(w.uid, filing);
  }

  #unfileWorkload(uid: string, keepAddrKeys: ReadonlySet<string> = new Set()): void {
    const filing = this.#workloadFilings.get(uid);
    if (filing === undefined) return;
    for (const k of filing.addrKeys) {
      if (!keepAddrKeys.has(k)) removeFromListMap(this.#workloadsByAddr, k, uid);
    }
    for (const k of filing.serviceKeys) removeFromSetMap(this.#endpointsByService, k, uid);
    removeFromSetMap(this.#workloadsByNode, filing.node, uid);
    this.#workloadFilings.delete(uid);
  }

  #dropWorkload(uid: string): boolean {
    if (!this.#workloads.has(uid)) return false;
    this.#unfileWorkload(uid);
    this.#workloads.delete(uid);
    return true;
  }

  workload(uid: string): Workload | undefined {
    return this.#workloads.get(uid);
  }

  /**
   * The workload holding `ip` on `network` ('' = default network), or undefined. IPv4-mapped
   * IPv6 is looked up as IPv4. When two workloads hold the IP, the newest wins (see file comment).
   */
  workloadByIp(network: string, ip: string): Workload | undefined {
    const canon = canonicalIp(ip);
    if (canon === undefined) return undefined;
    const uids = this.#workloadsByAddr.get(`${network}/${canon}`);
    const uid = uids?.[uids.length - 1];
    return uid === undefined ? undefined : this.#workloads.get(uid);
  }

  /** Workloads that list `namespace/hostname` in their `services` map, in no particular order. */
  endpointsFor(svc: { namespace: string; hostname: string }): Workload[] {
    const uids = this.#endpointsByService.get(serviceKey(svc));
    if (uids === undefined) return [];
    const out: Workload[] = [];
    for (const uid of uids) {
      const w = this.#workloads.get(uid);
      if (w !== undefined) out.push(w);
    }
    return out;
  }

  /** Workloads scheduled on `nodeName` (the ones this ztunnel proxies for). */
  localWorkloads(nodeName: string): Workload[] {
    const uids = this.#workloadsByNode.get(nodeName);
    if (uids === undefined) return [];
    const out: Workload[] = [];
    for (const uid of uids) {
      const w = this.#workloads.get(uid);
      if (w !== undefined) out.push(w);
    }
    return out.sort(byKey((x) => x.uid));
  }

  // ---- services ----

  upsertService(s: Service): void {
    this.#putService(s);
    this.emit('changed', { kind: 'service', op: 'upsert', key: serviceKey(s) });
  }

  removeService(key: string): boolean {
    if (!this.#dropService(key)) return false;
    this.emit('changed', { kind: 'service', op: 'remove', key });
    return true;
  }

  #putService(input: Service): void {
    const s = structuredClone(input);
    s.addresses = s.addresses.map((a) => ({
      network: a.network,
      address: canonicalIp(a.address) ?? a.address,
    }));
    const key = serviceKey(s);
    this.#unfileService(key);
    this.#services.set(key, s);
    const vipKeys = [...new Set(s.addresses.map((a) => addrKey(a.network, a.address)))];
    for (const k of vipKeys) addToListMap(this.#servicesByVip, k, key);
    this.#serviceVipKeys.set(key, vipKeys);
    addToSetMap(this.#servicesByHostname, s.hostname, key);
  }

  #unfileService(key: string): void {
    const old = this.#services.get(key);
    if (old === undefined) return;
    for (const k of this.#serviceVipKeys.get(key) ?? []) removeFromListMap(this.#servicesByVip, k, key);
    this.#serviceVipKeys.delete(key);
    removeFromSetMap(this.#servicesByHostname, old.hostname, key);
  }

  #dropService(key: string): boolean {
    if (!this.#services.has(key)) return false;
    this.#unfileService(key);
    this.#services.delete(key);
    return true;
  }

  serviceByHostname(namespace: string, hostname: string): Service | undefined {
    return this.#services.get(`${namespace}/${hostname}`);
  }

  /** Every service with this hostname (ServiceEntries in several namespaces may share one). */
  servicesByHostname(hostname: string): Service[] {
    const keys = this.#servicesByHostname.get(hostname);
    if (keys === undefined) return [];
    const out: Service[] = [];
    for (const k of keys) {
      const s = this.#services.get(k);
      if (s !== undefined) out.push(s);
    }
    return out.sort(byKey(serviceKey));
  }

  /**
   * The service whose VIP is `ip` on `network`. Several services may share a VIP (e.g.
   * ServiceEntries); then the one in `preferNamespace` (the source pod's namespace, spec §1.6
   * step 2) wins, else a `canonical` one, else the first received.
   */
  serviceByVip(network: string, ip: string, preferNamespace?: string): Service | undefined {
    const canon = canonicalIp(ip);
    if (canon === undefined) return undefined;
    const keys = this.#servicesByVip.get(`${network}/${canon}`);
    if (keys === undefined) return undefined;
    const candidates: Service[] = [];
    for (const k of keys) {
      const s = this.#services.get(k);
      if (s !== undefined) candidates.push(s);
    }
    return (
      candidates.find((s) => preferNamespace !== undefined && s.namespace === preferNamespace) ??
      candidates.find((s) => s.canonical) ??
      candidates[0]
    );
  }

  service(key: string): Service | undefined {
    return this.#services.get(key);
  }

  // ---- policies ----

  upsertPolicy(p: Authorization): void {
    this.#putPolicy(p);
    this.emit('changed', { kind: 'policy', op: 'upsert', key: policyKey(p) });
  }

  removePolicy(key: string): boolean {
    if (!this.#dropPolicy(key)) return false;
    this.emit('changed', { kind: 'policy', op: 'remove', key });
    return true;
  }

  #putPolicy(input: Authorization): void {
    const p = structuredClone(input);
    const key = policyKey(p);
    this.#unfilePolicy(key);
    this.#policies.set(key, p);
    const filing: PolicyFiling = { global: false };
    switch (p.scope) {
      case 'GLOBAL':
        this.#globalPolicies.add(key);
        filing.global = true;
        break;
      case 'NAMESPACE':
        addToSetMap(this.#policiesByNamespace, p.namespace, key);
        filing.namespace = p.namespace;
        break;
      case 'WORKLOAD_SELECTOR':
        // Applies only through Workload.authorizationPolicies (spec §3.8).
        break;
    }
    this.#policyFilings.set(key, filing);
  }

  #unfilePolicy(key: string): void {
    const filing = this.#policyFilings.get(key);
    if (filing === undefined) return;
    if (filing.global) this.#globalPolicies.delete(key);
    if (filing.namespace !== undefined) removeFromSetMap(this.#policiesByNamespace, filing.namespace, key);
    this.#policyFilings.delete(key);
  }

  #dropPolicy(key: string): boolean {
    if (!this.#policies.has(key)) return false;
    this.#unfilePolicy(key);
    this.#policies.delete(key);
    return true;
  }

  policy(key: string): Authorization | undefined {
    return this.#policies.get(key);
  }

  /**
   * Policies that apply to a destination workload (spec §3.8): GLOBAL-scope ones, NAMESPACE-scope
   * ones of its namespace, and every key in its `authorizationPolicies`. Referenced keys we have
   * not received are returned in `missing`: RBAC fails closed on them (checklist C.45).
   */
  policiesFor(w: Workload): ApplicablePolicies {
    const seen = new Set<string>();
    const policies: Authorization[] = [];
    const missing: string[] = [];
    const take = (key: string): void => {
      if (seen.has(key)) return;
      seen.add(key);
      const p = this.#policies.get(key);
      if (p === undefined) missing.push(key);
      else policies.push(p);
    };
    // Insertion order; evaluation does not depend on order (any DENY match denies).
    for (const k of this.#globalPolicies) take(k);
    for (const k of this.#policiesByNamespace.get(w.namespace) ?? []) take(k);
    for (const k of w.authorizationPolicies) take(k);
    return { policies, missing };
  }

  // ---- whole state ----

  /** Replaces everything at once (static config reload); emits one 'changed' event. */
  replaceAll(snapshot: StateSnapshot): void {
    for (const m of [
      this.#workloads,
      this.#workloadFilings,
      this.#workloadsByAddr,
      this.#endpointsByService,
      this.#workloadsByNode,
      this.#services,
      this.#serviceVipKeys,
      this.#servicesByVip,
      this.#servicesByHostname,
      this.#policies,
      this.#policyFilings,
      this.#policiesByNamespace,
    ]) {
      m.clear();
    }
    this.#globalPolicies.clear();
    for (const w of snapshot.workloads) this.#putWorkload(w);
    for (const s of snapshot.services) this.#putService(s);
    for (const p of snapshot.policies) this.#putPolicy(p);
    this.emit('changed', { kind: 'all', op: 'replace' });
  }

  /** Everything, sorted by key, as camelCase JSON-ready objects (for /config_dump). */
  snapshot(): StateSnapshot {
    return structuredClone({
      workloads: [...this.#workloads.values()].sort(byKey((w) => w.uid)),
      services: [...this.#services.values()].sort(byKey(serviceKey)),
      policies: [...this.#policies.values()].sort(byKey(policyKey)),
    });
  }

  get size(): { workloads: number; services: number; policies: number } {
    return { workloads: this.#workloads.size, services: this.#services.size, policies: this.#policies.size };
  }
}

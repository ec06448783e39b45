// SPDX-License-Identifier: Apache-2.0
// The controller's model: Kubernetes objects in, the WDS resources ztunnel enforces out
// (`istio.workload.Address` and `istio.security.Authorization`, spec ambient-protocols §3.2),
// kept up to date incrementally.
//
// apply() takes a batch of source events, files the objects and their indexes, then recomputes
// only the resources the batch can affect and reports those whose encoding changed:
//
// | event                           | recomputed                                                   |
// |---------------------------------|--------------------------------------------------------------|
// | Pod                             | its workload                                                 |
// | Service                         | the Service; pods its old or new selector picks; if it has   |
// |                                 | no selector, its EndpointSlices' workloads and pods          |
// | EndpointSlice                   | its endpoint workloads; the pods it (used to) point at       |
// | Namespace                       | its Services (traffic-distribution annotation)               |
// | AuthorizationPolicy             | the Authorization; pods its old or new selector picks (every |
// |                                 | namespace for the root namespace)                            |
// | PeerAuthentication              | its namespace's pods and converted policies (everything for  |
// |                                 | the root namespace); the static STRICT policy                |
// | Gateway                         | nothing yet: waypoint binding is a later issue               |
//
// A pod's recomputation costs the services and policies whose selectors share a label with it
// (./selector.ts), not the cluster. The translation itself is pure and lives in the sibling
// modules; this class owns state, indexes and change detection (by encoded bytes, so a delta
// never carries a resource that did not change).
//
// apply() does not throw on object content: custom resources are read field by field, and a
// built-in object that breaks the Kubernetes schema is reported in diagnostics() and reads as
// absent, so one bad manifest never leaves the model half-applied.
//
// Invariant for ztunnel's fail-closed reading of missing policies (ARCHITECTURE.md decision 5,
// checklist C.45): every key a workload lists in authorization_policies names an Authorization
// this model emits.
import type { V1EndpointSlice, V1Namespace, V1Pod, V1Service } from '@kubernetes/client-node';
import { Authorization } from '../../shared/gen/authorization.ts';
import { Address } from '../../shared/gen/workload.ts';
import type { Workload } from '../../shared/gen/workload.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/telemetry/logger.ts';
import type { CustomObject, SourceEvent } from '../sources/types.ts';
import { readAuthorizationPolicy } from './authorization-policy.ts';
import type { AuthorizationTranslation } from './authorization.ts';
import { translateAuthorizationPolicy } from './authorization.ts';
import { sliceServiceName, slicePodRefs, translateEndpointSlice } from './endpoint-slice.ts';
import type { PodRef } from './endpoint-slice.ts';
import type { MtlsLevels, PeerAuthenticationPolicy } from './mtls.ts';
import {
  convertedPolicy,
  mtlsPolicyKeys,
  oldestPolicy,
  STATIC_STRICT_POLICY_NAME,
  staticStrictPolicy,
} from './mtls.ts';
import type { ModelOptions, ResolvedModelOptions } from './options.ts';
import { isDnsLabel, isDnsSubdomain, resolveModelOptions } from './options.ts';
import type { PeerAuthenticationView } from './peer-authentication.ts';
import { readPeerAuthentication } from './peer-authentication.ts';
import { LabelIndex, SelectorIndex } from './selector.ts';
import type { ServiceTranslation } from './service.ts';
import { serviceHostname, translateService } from './service.ts';
import type { BackedService } from './workload.ts';
import { isTerminal, podServiceAccount, podUid, translatePod } from './workload.ts';

export interface ResourceChanges<T> {
  /** Resources created or changed, by WDS resource name. */
  readonly upserted: ReadonlyMap<string, T>;
  /** Names of resources that no longer exist. */
  readonly removed: readonly string[];
}

export interface ModelDelta {
  /** `type.googleapis.com/istio.workload.Address`: workloads by uid, services by `<ns>/<hostname>`. */
  readonly addresses: ResourceChanges<Address>;
  /** `type.googleapis.com/istio.security.Authorization`, by `<ns>/<name>`. */
  readonly authorizations: ResourceChanges<Authorization>;
}

export interface AmbientModelOptions extends ModelOptions {
  /** Receives a warning whenever an object's diagnostics change to a non-empty set. */
  readonly logger?: Logger;
}

interface PodEntry {
  readonly pod: V1Pod;
  readonly namespace: string;
  readonly name: string;
  /** `<ns>/<serviceAccount>` while the pod holds an identity on `node`. */
  readonly identity: { readonly node: string; readonly key: string } | undefined;
}

interface SliceEntry {
  readonly slice: V1EndpointSlice;
  readonly namespace: string;
  readonly name: string;
  /** `<ns>/<service name>` of its Service, if labelled. */
  readonly serviceKey: string | undefined;
  readonly podRefs: readonly PodRef[];
  /** Set when the slice breaks the Kubernetes schema; it then yields nothing. */
  readonly malformed: string | undefined;
}

interface PolicyEntry {
  readonly namespace: string;
  readonly translation: AuthorizationTranslation;
}

interface PeerAuthEntry {
  readonly namespace: string;
  readonly name: string;
  readonly view: PeerAuthenticationView;
}

/** One WDS type's resources: messages and their encodings (the equality used for deltas). */
class ResourceSet<T> {
  readonly messages = new Map<string, T>();
  readonly encoded = new Map<string, Uint8Array>();
  readonly #encode: (m: T) => Uint8Array;
  /** Encodings before the current apply() of every name touched by it. */
  #before = new Map<string, Uint8Array | undefined>();

  constructor(encode: (m: T) => Uint8Array) {
    this.#encode = encode;
  }

  set(name: string, message: T | undefined): void {
    const encoded = message === undefined ? undefined : this.#encode(message);
    if (!this.#before.has(name)) this.#before.set(name, this.encoded.get(name));
    if (message === undefined || encoded === undefined) {
      this.messages.delete(name);
      this.encoded.delete(name);
    } else {
      this.messages.set(name, message);
      this.encoded.set(name, encoded);
    }
  }

  /** What changed since the last call, comparing encodings; resets the tracking. */
  takeChanges(): ResourceChanges<T> {
    const upserted = new Map<string, T>();
    const removed: string[] = [];
    for (const [name, before] of this.#before) {
      const now = this.encoded.get(name);
      if (now === undefined) {
        if (before !== undefined) removed.push(name);
      } else if (before === undefined || !Buffer.from(now).equals(before)) {
        const m = this.messages.get(name);
        if (m !== undefined) upserted.set(name, m);
      }
    }
    this.#before = new Map();
    return { upserted, removed: removed.sort() };
  }
}

/** What a batch of events made stale. */
interface Dirty {
  readonly pods: Set<string>;
  readonly services: Set<string>;
  readonly slices: Set<string>;
  readonly policies: Set<string>;
  /** Namespaces whose converted PeerAuthentication policies must be recomputed. */
  readonly mtlsNamespaces: Set<string>;
  staticStrict: boolean;
}

function malformed(err: unknown): string {
  return `malformed object (not what the Kubernetes API returns), left out of WDS: ${errorMessage(err)}`;
}

function addAll(into: Set<string>, from: Iterable<string>): void {
  for (const x of from) into.add(x);
}

function addCount(m: Map<string, Map<string, number>>, outer: string, inner: string, delta: number): void {
  const counts = m.get(outer) ?? new Map<string, number>();
  const n = (counts.get(inner) ?? 0) + delta;
  if (n > 0) counts.set(inner, n);
  else counts.delete(inner);
  if (counts.size > 0) m.set(outer, counts);
  else m.delete(outer);
}

function addToIndex(m: Map<string, Set<string>>, k: string, v: string): void {
  const s = m.get(k);
  if (s === undefined) m.set(k, new Set([v]));
  else s.add(v);
}

function removeFromIndex(m: Map<string, Set<string>>, k: string, v: string): void {
  const s = m.get(k);
  if (s === undefined) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}

export class AmbientModel {
  readonly #opts: ResolvedModelOptions;
  readonly #log: Logger | undefined;

  // ---- inputs and their indexes ----
  readonly #namespaces = new Map<string, V1Namespace>();
  readonly #pods = new Map<string, PodEntry>();
  readonly #podKeyByUid = new Map<string, string>();
  readonly #podLabels = new LabelIndex();
  /** node → `<ns>/<sa>` → number of non-terminal pods. */
  readonly #identitiesByNode = new Map<string, Map<string, number>>();
  readonly #services = new Map<
    string,
    { readonly object: V1Service; translation: ServiceTranslation | undefined }
  >();
  readonly #servicesByNamespace = new Map<string, Set<string>>();
  readonly #serviceSelectors = new SelectorIndex();
  readonly #slices = new Map<string, SliceEntry>();
  readonly #slicesByService = new Map<string, Set<string>>();
  readonly #slicesByPod = new Map<string, Set<string>>();
  readonly #policies = new Map<string, PolicyEntry>();
  readonly #policySelectors = new SelectorIndex();
  readonly #peerAuths = new Map<string, PeerAuthEntry>();
  readonly #peerAuthsByNamespace = new Map<string, Set<string>>();
  readonly #peerAuthSelectors = new SelectorIndex();

  // ---- outputs ----
  readonly #addresses = new ResourceSet<Address>((m) => Address.encode(m).finish());
  readonly #authorizations = new ResourceSet<Authorization>((m) => Authorization.encode(m).finish());
  readonly #sliceWorkloads = new Map<string, readonly string[]>();
  readonly #convertedByNamespace = new Map<string, ReadonlySet<string>>();
  readonly #diagnostics = new Map<string, readonly string[]>();
  /** Per-apply cache of the mesh- and namespace-level PeerAuthentications. */
  #levelCache = new Map<string, Omit<MtlsLevels, 'workload'>>();

  /** Throws MeshError CTL_ERR_MODEL_OPTIONS on a bad option. */
  constructor(options: AmbientModelOptions = {}) {
    this.#opts = resolveModelOptions(options);
    this.#log = options.logger?.child({ scope: 'model' });
  }

  get options(): ResolvedModelOptions {
    return this.#opts;
  }

  /** Applies a batch of events in order and returns what changed in WDS terms. */
  apply(events: readonly SourceEvent[]): ModelDelta {
    const dirty: Dirty = {
      pods: new Set(),
      services: new Set(),
      slices: new Set(),
      policies: new Set(),
      mtlsNamespaces: new Set(),
      staticStrict: false,
    };
    for (const e of events) this.#ingest(e, dirty);
    this.#levelCache = new Map();
    for (const key of dirty.services) {
      const t = this.#services.get(key)?.translation;
      const [ns = '', name = ''] = key.split('/');
      const resourceName = `${ns}/${serviceHostname(name, ns, this.#opts.domainSuffix)}`;
      this.#addresses.set(
        resourceName,
        t === undefined ? undefined : { type: { $case: 'service', value: t.service } },
      );
    }
    for (const key of dirty.slices) this.#recomputeSlice(key);
    for (const key of dirty.pods) this.#recomputePod(key);
    for (const key of dirty.policies) {
      this.#authorizations.set(key, this.#policies.get(key)?.translation.authorization);
    }
    for (const ns of dirty.mtlsNamespaces) this.#recomputeConverted(ns);
    if (dirty.staticStrict) {
      const key = `${this.#opts.rootNamespace}/${STATIC_STRICT_POLICY_NAME}`;
      this.#authorizations.set(
        key,
        this.#peerAuths.size > 0 ? staticStrictPolicy(this.#opts.rootNamespace) : undefined,
      );
    }
    return { addresses: this.#addresses.takeChanges(), authorizations: this.#authorizations.takeChanges() };
  }

  /** Every Address (workloads by uid, services by `<ns>/<hostname>`). A live read-only view. */
  addresses(): ReadonlyMap<string, Address> {
    return this.#addresses.messages;
  }

  /** Every Authorization by `<ns>/<name>`. A live read-only view. */
  authorizations(): ReadonlyMap<string, Authorization> {
    return this.#authorizations.messages;
  }

  /** The encoded `istio.workload.Address` of every resource, for the WDS server. A live read-only view. */
  encodedAddresses(): ReadonlyMap<string, Uint8Array> {
    return this.#addresses.encoded;
  }

  /** The encoded `istio.security.Authorization` of every resource. A live read-only view. */
  encodedAuthorizations(): ReadonlyMap<string, Uint8Array> {
    return this.#authorizations.encoded;
  }

  /** Per object (`<Kind> <ns>/<name>`), what could not be translated as written. */
  diagnostics(): ReadonlyMap<string, readonly string[]> {
    return this.#diagnostics;
  }

  /** The pod with this Kubernetes metadata.uid (not the WDS uid). */
  podByUid(uid: string): V1Pod | undefined {
    const key = this.#podKeyByUid.get(uid);
    return key === undefined ? undefined : this.#pods.get(key)?.pod;
  }

  pod(namespace: string, name: string): V1Pod | undefined {
    return this.#pods.get(`${namespace}/${name}`)?.pod;
  }

  /**
   * Whether a non-terminal pod scheduled on `node` runs as `namespace/serviceAccount`: the CA's
   * check before signing for a ztunnel that impersonates a pod identity (spec §4). Pods count
   * from scheduling on, before they have an IP: ztunnel fetches certificates as the pod starts.
   */
  nodeHasIdentity(node: string, namespace: string, serviceAccount: string): boolean {
    return (this.#identitiesByNode.get(node)?.get(`${namespace}/${serviceAccount}`) ?? 0) > 0;
  }

  // ---- ingestion: file the object, mark what it affects ----

  #ingest(e: SourceEvent, dirty: Dirty): void {
    const meta = this.#checkMeta(e);
    if (meta === undefined) return;
    const key = meta.namespace === '' ? meta.name : `${meta.namespace}/${meta.name}`;
    switch (e.kind) {
      case 'Namespace':
        this.#ingestNamespace(meta.name, e.type === 'upsert' ? e.object : undefined, dirty);
        return;
      case 'Pod':
        this.#ingestPod(key, meta, e.type === 'upsert' ? e.object : undefined, dirty);
        return;
      case 'Service':
        this.#ingestService(key, meta, e.type === 'upsert' ? e.object : undefined, dirty);
        return;
      case 'EndpointSlice':
        this.#ingestSlice(key, meta, e.type === 'upsert' ? e.object : undefined, dirty);
        return;
      case 'AuthorizationPolicy':
        this.#ingestPolicy(key, meta, e.type === 'upsert' ? e.object : undefined, dirty);
        return;
      case 'PeerAuthentication':
        this.#ingestPeerAuth(key, meta, e.type === 'upsert' ? e.object : undefined, dirty);
        return;
      case 'Gateway':
        return;
    }
  }

  /** Kubernetes names are required: they make uids and resource names, which must not collide. */
  #checkMeta(e: SourceEvent): { namespace: string; name: string } | undefined {
    const name = e.object.metadata?.name ?? '';
    const namespace = e.kind === 'Namespace' ? '' : (e.object.metadata?.namespace ?? '');
    const ok = e.kind === 'Namespace' ? isDnsLabel(name) : isDnsSubdomain(name) && isDnsLabel(namespace);
    if (ok) return { namespace, name };
    this.#log?.warn(
      { kind: e.kind, namespace, name },
      `ignoring ${e.kind} ${JSON.stringify(namespace === '' ? name : `${namespace}/${name}`)}: not a valid Kubernetes ${e.kind === 'Namespace' ? 'name' : 'namespace and name'} (DNS-1123)`,
    );
    return undefined;
  }

  #setDiagnostics(id: string, warnings: readonly string[]): void {
    const before = this.#diagnostics.get(id);
    if (warnings.length === 0) {
      this.#diagnostics.delete(id);
      return;
    }
    this.#diagnostics.set(id, warnings);
    if (before === undefined || before.join('\n') !== warnings.join('\n')) {
      for (const w of warnings) this.#log?.warn({ object: id }, w);
    }
  }

  /**
   * Runs the translation of one object. Translators trust the Kubernetes schema (lists are
   * lists); an object that breaks it, which the API server never returns but a hand-written
   * manifest can, must not abort the batch and leave the model half-applied, so it reads as
   * absent and is reported.
   */
  #guard<T>(id: string, translate: () => T): { ok: true; value: T } | { ok: false } {
    try {
      return { ok: true, value: translate() };
    } catch (err) {
      this.#setDiagnostics(id, [malformed(err)]);
      return { ok: false };
    }
  }

  #ingestNamespace(name: string, ns: V1Namespace | undefined, dirty: Dirty): void {
    if (ns === undefined) this.#namespaces.delete(name);
    else this.#namespaces.set(name, ns);
    for (const key of this.#servicesByNamespace.get(name) ?? []) {
      this.#retranslateService(key);
      dirty.services.add(key);
    }
  }

  #ingestPod(
    key: string,
    meta: { namespace: string; name: string },
    pod: V1Pod | undefined,
    dirty: Dirty,
  ): void {
    const old = this.#pods.get(key);
    if (old !== undefined) {
      const uid = old.pod.metadata?.uid;
      if (uid !== undefined && this.#podKeyByUid.get(uid) === key) this.#podKeyByUid.delete(uid);
      if (old.identity !== undefined)
        addCount(this.#identitiesByNode, old.identity.node, old.identity.key, -1);
    }
    dirty.pods.add(key);
    if (pod === undefined) {
      this.#pods.delete(key);
      this.#podLabels.delete(key);
      this.#setDiagnostics(`Pod ${key}`, []);
      return;
    }
    const node = pod.spec?.nodeName ?? '';
    const identity =
      node === '' || isTerminal(pod)
        ? undefined
        : { node, key: `${meta.namespace}/${podServiceAccount(pod)}` };
    if (identity !== undefined) addCount(this.#identitiesByNode, identity.node, identity.key, 1);
    const uid = pod.metadata?.uid;
    if (uid !== undefined && uid !== '') this.#podKeyByUid.set(uid, key);
    this.#pods.set(key, { pod, namespace: meta.namespace, name: meta.name, identity });
    this.#podLabels.set(key, meta.namespace, pod.metadata?.labels ?? {});
  }

  #retranslateService(key: string): void {
    const entry = this.#services.get(key);
    if (entry === undefined) return;
    const [namespace = '', name = ''] = key.split('/');
    const id = `Service ${key}`;
    const r = this.#guard(id, () =>
      translateService(
        entry.object,
        { namespace, name },
        this.#namespaces.get(namespace),
        this.#opts.domainSuffix,
      ),
    );
    entry.translation = r.ok ? r.value : undefined;
    if (r.ok) this.#setDiagnostics(id, r.value?.warnings ?? []);
  }

  #ingestService(
    key: string,
    meta: { namespace: string; name: string },
    svc: V1Service | undefined,
    dirty: Dirty,
  ): void {
    const old = this.#services.get(key)?.translation;
    this.#serviceSelectors.delete(key);
    if (svc === undefined) {
      this.#services.delete(key);
      removeFromIndex(this.#servicesByNamespace, meta.namespace, key);
      this.#setDiagnostics(`Service ${key}`, []);
    } else {
      this.#services.set(key, { object: svc, translation: undefined });
      addToIndex(this.#servicesByNamespace, meta.namespace, key);
      this.#retranslateService(key);
    }
    const now = this.#services.get(key)?.translation;
    if (now?.selector !== undefined) this.#serviceSelectors.set(key, meta.namespace, now.selector, 'none');
    dirty.services.add(key);
    for (const t of [old, now]) {
      if (t?.selector !== undefined)
        addAll(dirty.pods, this.#podLabels.select(meta.namespace, t.selector, 'none'));
    }
    // Selector-less (or ExternalName, or gone): its slices' pods and endpoint workloads may change.
    for (const sliceKey of this.#slicesByService.get(key) ?? []) {
      dirty.slices.add(sliceKey);
      for (const ref of this.#slices.get(sliceKey)?.podRefs ?? [])
        dirty.pods.add(`${ref.namespace}/${ref.name}`);
    }
  }

  #ingestSlice(
    key: string,
    meta: { namespace: string; name: string },
    slice: V1EndpointSlice | undefined,
    dirty: Dirty,
  ): void {
    const old = this.#slices.get(key);
    if (old !== undefined) {
      if (old.serviceKey !== undefined) removeFromIndex(this.#slicesByService, old.serviceKey, key);
      for (const ref of old.podRefs) {
        removeFromIndex(this.#slicesByPod, `${ref.namespace}/${ref.name}`, key);
        dirty.pods.add(`${ref.namespace}/${ref.name}`);
      }
      this.#slices.delete(key);
    }
    dirty.slices.add(key);
    if (slice === undefined) return;
    const serviceName = sliceServiceName(slice);
    let podRefs: PodRef[] = [];
    let broken: string | undefined;
    try {
      podRefs = slicePodRefs(slice, meta.namespace);
    } catch (err) {
      broken = malformed(err);
    }
    const entry: SliceEntry = {
      slice,
      namespace: meta.namespace,
      name: meta.name,
      serviceKey: serviceName === undefined ? undefined : `${meta.namespace}/${serviceName}`,
      podRefs,
      malformed: broken,
    };
    this.#slices.set(key, entry);
    if (entry.serviceKey !== undefined) addToIndex(this.#slicesByService, entry.serviceKey, key);
    for (const ref of entry.podRefs) {
      addToIndex(this.#slicesByPod, `${ref.namespace}/${ref.name}`, key);
      dirty.pods.add(`${ref.namespace}/${ref.name}`);
    }
  }

  /** Pods a policy selector picks: in its namespace, or in every namespace from the root namespace. */
  #podsSelectedByPolicy(namespace: string, selector: Readonly<Record<string, string>>): string[] {
    const namespaces =
      namespace === this.#opts.rootNamespace ? [...this.#podLabels.namespaces()] : [namespace];
    return namespaces.flatMap((ns) => this.#podLabels.select(ns, selector, 'all'));
  }

  #ingestPolicy(
    key: string,
    meta: { namespace: string; name: string },
    obj: CustomObject | undefined,
    dirty: Dirty,
  ): void {
    const old = this.#policies.get(key);
    this.#policySelectors.delete(key);
    if (obj === undefined) {
      this.#policies.delete(key);
      this.#setDiagnostics(`AuthorizationPolicy ${key}`, []);
    } else {
      const view = readAuthorizationPolicy(obj, meta.namespace);
      const translation = translateAuthorizationPolicy(view, meta, this.#opts.rootNamespace);
      this.#policies.set(key, { namespace: meta.namespace, translation });
      this.#setDiagnostics(`AuthorizationPolicy ${key}`, translation.warnings);
      if (translation.authorization !== undefined && translation.selector !== undefined) {
        this.#policySelectors.set(key, meta.namespace, translation.selector, 'all');
      }
    }
    dirty.policies.add(key);
    for (const t of [old?.translation, this.#policies.get(key)?.translation]) {
      if (t?.selector !== undefined)
        addAll(dirty.pods, this.#podsSelectedByPolicy(meta.namespace, t.selector));
    }
  }

  #ingestPeerAuth(
    key: string,
    meta: { namespace: string; name: string },
    obj: CustomObject | undefined,
    dirty: Dirty,
  ): void {
    this.#peerAuthSelectors.delete(key);
    if (obj === undefined) {
      this.#peerAuths.delete(key);
      removeFromIndex(this.#peerAuthsByNamespace, meta.namespace, key);
      this.#setDiagnostics(`PeerAuthentication ${key}`, []);
    } else {
      const view = readPeerAuthentication(obj, meta.namespace, this.#opts.rootNamespace);
      this.#peerAuths.set(key, { namespace: meta.namespace, name: meta.name, view });
      addToIndex(this.#peerAuthsByNamespace, meta.namespace, key);
      if (view.kind === 'policy' && view.selector !== undefined) {
        this.#peerAuthSelectors.set(key, meta.namespace, view.selector, 'none');
      }
      const notes =
        view.kind === 'ignored'
          ? [view.reason]
          : view.problems.length > 0
            ? [
                `invalid PeerAuthentication, read as STRICT on every port until it is fixed: ${view.problems.join('; ')}`,
              ]
            : [];
      this.#setDiagnostics(`PeerAuthentication ${key}`, notes);
    }
    dirty.staticStrict = true;
    const namespaces =
      meta.namespace === this.#opts.rootNamespace
        ? [...this.#podLabels.namespaces(), ...this.#peerAuthsByNamespace.keys()]
        : [meta.namespace];
    for (const ns of namespaces) {
      addAll(dirty.pods, this.#podLabels.inNamespace(ns));
      dirty.mtlsNamespaces.add(ns);
    }
  }

  // ---- recomputation ----

  #peerAuthPolicy(key: string): PeerAuthenticationPolicy | undefined {
    const e = this.#peerAuths.get(key);
    return e?.view.kind === 'policy' ? { namespace: e.namespace, name: e.name, view: e.view } : undefined;
  }

  /** The oldest namespace-level PeerAuthentication of `namespace`. */
  #namespaceLevel(namespace: string): PeerAuthenticationPolicy | undefined {
    const candidates: PeerAuthenticationPolicy[] = [];
    for (const key of this.#peerAuthsByNamespace.get(namespace) ?? []) {
      const p = this.#peerAuthPolicy(key);
      if (p !== undefined && p.view.selector === undefined) candidates.push(p);
    }
    return oldestPolicy(candidates);
  }

  #levels(namespace: string): Omit<MtlsLevels, 'workload'> {
    let levels = this.#levelCache.get(namespace);
    if (levels === undefined) {
      const root = this.#opts.rootNamespace;
      levels = {
        mesh: this.#namespaceLevel(root),
        namespace: namespace === root ? undefined : this.#namespaceLevel(namespace),
      };
      this.#levelCache.set(namespace, levels);
    }
    return levels;
  }

  #recomputePod(key: string): void {
    const entry = this.#pods.get(key);
    const [namespace = '', name = ''] = key.split('/');
    const uid = podUid(this.#opts.clusterId, namespace, name);
    if (entry === undefined) {
      this.#addresses.set(uid, undefined);
      return;
    }
    const labels = entry.pod.metadata?.labels ?? {};
    const services = new Map<string, BackedService>();
    for (const svcKey of this.#serviceSelectors.matching(namespace, labels)) {
      const t = this.#services.get(svcKey)?.translation;
      if (t !== undefined) services.set(t.key, { key: t.key, ports: t.ports });
    }
    const podUidValue = entry.pod.metadata?.uid;
    for (const sliceKey of this.#slicesByPod.get(key) ?? []) {
      const slice = this.#slices.get(sliceKey);
      const t =
        slice?.serviceKey === undefined ? undefined : this.#services.get(slice.serviceKey)?.translation;
      if (slice === undefined || t === undefined || t.selector !== undefined) continue;
      const pointsHere = slice.podRefs.some(
        (r) =>
          r.namespace === namespace &&
          r.name === name &&
          (r.uid === undefined || podUidValue === undefined || r.uid === podUidValue),
      );
      if (pointsHere) services.set(t.key, { key: t.key, ports: t.ports });
    }
    const root = this.#opts.rootNamespace;
    const policies = new Set(this.#policySelectors.matching(namespace, labels));
    if (namespace !== root) addAll(policies, this.#policySelectors.matching(root, labels));
    const workloadLevel =
      namespace === root
        ? undefined
        : oldestPolicy(
            this.#peerAuthSelectors
              .matching(namespace, labels)
              .map((k) => this.#peerAuthPolicy(k))
              .filter((p) => p !== undefined),
          );
    addAll(policies, mtlsPolicyKeys({ ...this.#levels(namespace), workload: workloadLevel }, root));
    const id = `Pod ${key}`;
    const r = this.#guard(id, () =>
      translatePod(
        entry.pod,
        { namespace, name },
        { services: [...services.values()], authorizationPolicies: [...policies] },
        this.#opts,
      ),
    );
    if (r.ok) this.#setDiagnostics(id, r.value.warnings);
    const workload = r.ok ? r.value.workload : undefined;
    this.#addresses.set(
      uid,
      workload === undefined ? undefined : { type: { $case: 'workload', value: workload } },
    );
  }

  #recomputeSlice(key: string): void {
    const previous = this.#sliceWorkloads.get(key) ?? [];
    const entry = this.#slices.get(key);
    const service =
      entry?.serviceKey === undefined ? undefined : this.#services.get(entry.serviceKey)?.translation;
    const id = `EndpointSlice ${key}`;
    let workloads: readonly Workload[] = [];
    if (entry?.malformed !== undefined) {
      this.#setDiagnostics(id, [entry.malformed]);
    } else if (entry !== undefined && service !== undefined && service.selector === undefined) {
      const r = this.#guard(id, () => translateEndpointSlice(entry.slice, entry, service, this.#opts));
      if (r.ok) {
        workloads = r.value.workloads;
        this.#setDiagnostics(id, r.value.warnings);
      }
    } else {
      this.#setDiagnostics(id, []);
    }
    const uids = workloads.map((w) => w.uid);
    for (const uid of previous) if (!uids.includes(uid)) this.#addresses.set(uid, undefined);
    for (const w of workloads) this.#addresses.set(w.uid, { type: { $case: 'workload', value: w } });
    if (uids.length > 0) this.#sliceWorkloads.set(key, uids);
    else this.#sliceWorkloads.delete(key);
  }

  /** The converted policies of the workload-level PeerAuthentications of `namespace`. */
  #recomputeConverted(namespace: string): void {
    const previous = this.#convertedByNamespace.get(namespace) ?? new Set<string>();
    const now = new Map<string, Authorization>();
    if (namespace !== this.#opts.rootNamespace) {
      for (const key of this.#peerAuthsByNamespace.get(namespace) ?? []) {
        const pa = this.#peerAuthPolicy(key);
        if (pa?.view.selector === undefined) continue;
        const policy = convertedPolicy({ ...this.#levels(namespace), workload: pa });
        if (policy !== undefined) now.set(`${namespace}/${policy.name}`, policy);
      }
    }
    for (const key of previous) if (!now.has(key)) this.#authorizations.set(key, undefined);
    for (const [key, policy] of now) this.#authorizations.set(key, policy);
    if (now.size > 0) this.#convertedByNamespace.set(namespace, new Set(now.keys()));
    else this.#convertedByNamespace.delete(namespace);
  }
}

// SPDX-License-Identifier: Apache-2.0
// Wiring of the controller: a source (Kubernetes informers or manifest directories) feeds the
// model; the model's changes go to the xDS resource store; the gRPC server on 15012 serves WDS
// and the CA service over TLS with a serving certificate from the mesh CA, renewed in place
// (./ca/serving-certificate.ts).
//
// The controller serves nothing before the source has listed everything and the model holds
// the full state (checklist E.67): a ztunnel connecting to a half-synced controller would be
// told that workloads and policies it knows are gone.
import { Server } from '@grpc/grpc-js';
import { KubeConfig } from '@kubernetes/client-node';
import { MeshError, errorMessage } from '../shared/errors.ts';
import { Authorization } from '../shared/gen/authorization.ts';
import type { Address } from '../shared/gen/workload.ts';
import { CertificateAuthority } from '../shared/identity/ca.ts';
import type { Logger } from '../shared/telemetry/logger.ts';
import { NodeTokenAuthenticator } from './auth/node-token.ts';
import { TokenReviewAuthenticator } from './auth/token-review.ts';
import type { Authenticator } from './auth/types.ts';
import { ServingCertificate } from './ca/serving-certificate.ts';
import { addCaService } from './ca/service.ts';
import { ControllerConfigError, MANIFESTS_NEED_NODE_TOKENS, type ControllerConfig } from './config.ts';
import { AmbientModel, type ModelDelta, type ResourceChanges } from './model/ambient-model.ts';
import { FileSource } from './sources/file.ts';
import { KubeSource } from './sources/kube.ts';
import type { Source } from './sources/types.ts';
import { WDS_SERVER_CHANNEL_OPTIONS, addWdsService, type WdsServer } from './xds/ads-server.ts';
import { XdsResourceStore, type ResourceUpsert } from './xds/resource-store.ts';
import {
  ADDRESS_TYPE_URL,
  AUTHORIZATION_TYPE_URL,
  WDS_TYPE_URLS,
  addressResource,
} from './xds/wds-resources.ts';

export interface Controller {
  readonly model: AmbientModel;
  readonly store: XdsResourceStore;
  readonly wds: WdsServer;
  readonly ca: CertificateAuthority;
  readonly servingCertificate: ServingCertificate;
  /** host:port the gRPC server listens on (the port resolved when 0 was asked). */
  readonly address: string;
  close(): Promise<void>;
}

// ---- publishing the model into the store ----

/**
 * The store's rules for resource names and aliases (xds/resource-store.ts, checkName), checked
 * before anything is applied, so one bad name cannot leave half a delta applied.
 */
const MAX_RESOURCE_NAME_LENGTH = 4096;

function publishError(message: string): MeshError {
  return new MeshError('CTL_ERR_PUBLISH', message);
}

function checkName(typeUrl: string, what: string, name: string): void {
  if (name === '' || name === '*' || name.length > MAX_RESOURCE_NAME_LENGTH) {
    throw publishError(
      `${typeUrl}: ${what} ${JSON.stringify(name.slice(0, 80))} is not a usable resource name (empty, "*" or longer than ${MAX_RESOURCE_NAME_LENGTH} characters)`,
    );
  }
}

/** One resource of the model as the store takes it: [store name, upsert]. */
type Encoder<T> = (key: string, message: T) => [name: string, upsert: ResourceUpsert];

const encodeAddress: Encoder<Address> = (_key, a) => addressResource(a);
const encodeAuthorization: Encoder<Authorization> = (key, p) => [
  key,
  { body: Authorization.encode(p).finish() },
];

/** Encodes one resource and checks its name and aliases; throws when the store would refuse it. */
function encodeChecked<T>(
  typeUrl: string,
  encode: Encoder<T>,
  key: string,
  message: T,
): [string, ResourceUpsert] {
  const [name, upsert] = encode(key, message);
  checkName(typeUrl, 'resource name', name);
  for (const alias of upsert.aliases ?? []) checkName(typeUrl, `an alias of ${name}:`, alias);
  return [name, upsert];
}

/** One store apply: a type's upserts and removals. */
interface Batch {
  readonly typeUrl: string;
  readonly upserts: ReadonlyMap<string, ResourceUpsert>;
  readonly removed: readonly string[];
}

/** A type's share of a model delta, encoded and checked; throws on the first problem. */
function deltaBatch<T>(typeUrl: string, changes: ResourceChanges<T>, encode: Encoder<T>): Batch {
  const upserts = new Map<string, ResourceUpsert>();
  for (const [key, message] of changes.upserted) {
    const [name, upsert] = encodeChecked(typeUrl, encode, key, message);
    upserts.set(name, upsert);
  }
  for (const name of changes.removed) {
    if (upserts.has(name)) {
      throw publishError(`${typeUrl}: ${JSON.stringify(name)} is both upserted and removed`);
    }
  }
  return { typeUrl, upserts, removed: changes.removed };
}

/** What the publisher reads of the model: its current resources, for a full republish. */
export type PublishedModel = Pick<AmbientModel, 'addresses' | 'authorizations'>;

export interface WdsPublisherOptions {
  readonly model: PublishedModel;
  readonly store: XdsResourceStore;
  readonly logger: Logger;
  /** First retry of a failed full republish (default 100 ms), doubling up to maxRetryMs. */
  readonly initialRetryMs?: number;
  /** Default 30 s. */
  readonly maxRetryMs?: number;
}

/**
 * Keeps the xDS resource store equal to the model.
 *
 * A delta is encoded and checked whole, Addresses and Authorizations both, before either type
 * is applied, so a delta with one bad resource changes nothing. It cannot simply be dropped
 * either: the model has already moved on and will never report those changes again. So any
 * failure (an encoding, a name check, or an apply the store refuses for a reason not checked
 * here) schedules a full republish, which reconciles the store with the model's current
 * resources. During that republish, a resource that cannot be encoded keeps its last good
 * version in the store and is logged, as ztunnel does with a resource it NACKs. A republish
 * the store refuses is retried with backoff.
 */
export class WdsPublisher {
  readonly #model: PublishedModel;
  readonly #store: XdsResourceStore;
  readonly #log: Logger;
  readonly #initialRetry: number;
  readonly #maxRetry: number;
  #timer: NodeJS.Timeout | undefined;
  #attempts = 0;
  #pending = false;
  #closed = false;

  constructor(opts: WdsPublisherOptions) {
    this.#model = opts.model;
    this.#store = opts.store;
    this.#log = opts.logger.child({ scope: 'publish' });
    this.#initialRetry = opts.initialRetryMs ?? 100;
    this.#maxRetry = opts.maxRetryMs ?? 30_000;
  }

  /** True while a full republish is scheduled (a delta or a republish failed). */
  get republishPending(): boolean {
    return this.#pending;
  }

  /** Publishes one model delta: both types or, on any failure, a full republish soon after. */
  publish(delta: ModelDelta): void {
    let batches: Batch[];
    try {
      batches = [
        deltaBatch(ADDRESS_TYPE_URL, delta.addresses, encodeAddress),
        deltaBatch(AUTHORIZATION_TYPE_URL, delta.authorizations, encodeAuthorization),
      ];
    } catch (err) {
      this.#log.error(
        { err: errorMessage(err) },
        'a model change could not be encoded; none of it was published; republishing the whole model',
      );
      this.scheduleRepublish();
      return;
    }
    try {
      for (const b of batches) this.#store.apply(b.typeUrl, b.upserts, b.removed);
    } catch (err) {
      // Possibly after the first type was applied: the republish brings the other in line.
      this.#log.error(
        { err: errorMessage(err) },
        'the resource store refused a model change; republishing the whole model',
      );
      this.scheduleRepublish();
    }
  }

  /** Schedules a full republish (at once, then with backoff while it fails). */
  scheduleRepublish(): void {
    if (this.#closed || this.#pending) return;
    this.#pending = true;
    this.#attempts = 0;
    this.#arm(0);
  }

  /**
   * Runs a scheduled republish now, if one is pending, and throws if the store refuses it (the
   * scheduled retries continue). Start-up calls this before serving, so the first client is
   * never served a state that a failed delta left behind.
   */
  flush(): void {
    if (!this.#pending) return;
    clearTimeout(this.#timer);
    this.#attempt(true);
  }

  close(): void {
    this.#closed = true;
    this.#pending = false;
    clearTimeout(this.#timer);
  }

  #arm(delayMs: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#attempt(false), delayMs);
    this.#timer.unref();
  }

  #attempt(rethrow: boolean): void {
    if (this.#closed) return;
    try {
      this.#republishAll();
      this.#pending = false;
      this.#log.info(
        {
          attempts: this.#attempts + 1,
          addresses: this.#store.size(ADDRESS_TYPE_URL),
          authorizations: this.#store.size(AUTHORIZATION_TYPE_URL),
        },
        'republished the whole model',
      );
    } catch (err) {
      const retryInMs = Math.min(this.#initialRetry * 2 ** Math.min(this.#attempts++, 30), this.#maxRetry);
      this.#log.error(
        { err: errorMessage(err), attempts: this.#attempts, retryInMs },
        'the resource store refused the whole model; ztunnels are served a stale state until a republish succeeds',
      );
      this.#arm(retryInMs);
      if (rethrow) throw err;
    }
  }

  #republishAll(): void {
    // Both batches are built before either is applied, from one synchronous read of the model.
    const batches = [
      this.#snapshotBatch(ADDRESS_TYPE_URL, this.#model.addresses(), encodeAddress),
      this.#snapshotBatch(AUTHORIZATION_TYPE_URL, this.#model.authorizations(), encodeAuthorization),
    ];
    for (const b of batches) this.#store.apply(b.typeUrl, b.upserts, b.removed);
  }

  /**
   * Everything the model holds of a type, and the removal of whatever the store holds beyond
   * it. A resource that cannot be encoded is neither upserted nor removed: its last good
   * version keeps serving.
   */
  #snapshotBatch<T>(typeUrl: string, current: ReadonlyMap<string, T>, encode: Encoder<T>): Batch {
    const upserts = new Map<string, ResourceUpsert>();
    const kept = new Set<string>();
    for (const [key, message] of current) {
      try {
        const [name, upsert] = encodeChecked(typeUrl, encode, key, message);
        upserts.set(name, upsert);
      } catch (err) {
        kept.add(key);
        this.#log.error(
          { typeUrl, resource: key, err: errorMessage(err) },
          'a resource of the model cannot be published; its last good version, if any, keeps serving',
        );
      }
    }
    const removed: string[] = [];
    for (const r of this.#store.all(typeUrl)) {
      if (!upserts.has(r.name) && !kept.has(r.name)) removed.push(r.name);
    }
    return { typeUrl, upserts, removed };
  }
}

// ---- start-up ----

function makeSource(cfg: ControllerConfig): { source: Source; kc: KubeConfig | undefined } {
  if (cfg.manifestDirs !== undefined) return { source: new FileSource(cfg.manifestDirs), kc: undefined };
  const kc = new KubeConfig();
  if (cfg.kubeconfig !== undefined) kc.loadFromFile(cfg.kubeconfig);
  else kc.loadFromCluster();
  return { source: new KubeSource(kc), kc };
}

/** Node tokens when a file is given; otherwise TokenReview, which needs the Kubernetes API. */
function makeAuthenticator(
  cfg: ControllerConfig,
  kc: KubeConfig | undefined,
  model: AmbientModel,
): Authenticator {
  if (cfg.nodeTokensFile !== undefined) return NodeTokenAuthenticator.fromFile(cfg.nodeTokensFile);
  // loadControllerConfig refuses this combination; a config built by hand gets the same answer.
  if (kc === undefined) throw new ControllerConfigError('CTL_ERR_CONFIG', MANIFESTS_NEED_NODE_TOKENS);
  return new TokenReviewAuthenticator({
    kubeConfig: kc,
    clusterId: cfg.clusterId,
    nodeServiceAccounts: cfg.trustedNodeAccounts,
    podNode: (ns, name, uid) => {
      const pod = model.pod(ns, name);
      return pod?.metadata?.uid === uid ? pod.spec?.nodeName : undefined;
    },
  });
}

export async function startController(cfg: ControllerConfig, log: Logger): Promise<Controller> {
  const ca = await CertificateAuthority.create({
    trustDomain: cfg.trustDomain,
    dir: cfg.caDir,
    maxTtlSeconds: cfg.maxWorkloadCertTtlSeconds,
  });
  const model = new AmbientModel({
    clusterId: cfg.clusterId,
    trustDomain: cfg.trustDomain,
    rootNamespace: cfg.rootNamespace,
    logger: log,
  });
  const store = new XdsResourceStore(WDS_TYPE_URLS);
  const publisher = new WdsPublisher({ model, store, logger: log });
  const { source, kc } = makeSource(cfg);
  // Before the (possibly long) sync, so a bad token file or setup fails at once.
  const authenticator = makeAuthenticator(cfg, kc, model);
  source.on('warning', (m) => log.warn({ scope: 'source' }, m));
  source.on('change', (events) => {
    let delta: ModelDelta;
    try {
      delta = model.apply(events);
    } catch (e) {
      // The batch may be half applied to the model; its outputs are all that can be trusted.
      log.error({ scope: 'model', err: errorMessage(e) }, 'a batch of source events could not be applied');
      publisher.scheduleRepublish();
      return;
    }
    publisher.publish(delta);
  });
  let serving: ServingCertificate | undefined;
  try {
    await source.start();
    publisher.flush();
    log.info(
      {
        scope: 'controller',
        addresses: store.size(ADDRESS_TYPE_URL),
        authorizations: store.size(AUTHORIZATION_TYPE_URL),
      },
      'source synced; model built',
    );

    serving = await ServingCertificate.start({
      ca,
      identity: `spiffe://${cfg.trustDomain}/ns/${cfg.rootNamespace}/sa/istiod`,
      dnsNames: cfg.servingDnsNames,
      ipAddresses: cfg.servingIps,
      ttlSeconds: cfg.servingCertTtlSeconds,
      logger: log,
    });
  } catch (err) {
    publisher.close();
    await source.stop();
    throw err;
  }
  const server = new Server(WDS_SERVER_CHANNEL_OPTIONS);
  const wds = addWdsService(server, { store, authenticator, logger: log });
  addCaService(server, {
    ca,
    authenticator,
    nodeHasIdentity: (node, ns, sa) => model.nodeHasIdentity(node, ns, sa),
    maxTtlSeconds: cfg.maxWorkloadCertTtlSeconds,
    logger: log,
  });
  const creds = serving.serverCredentials();
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(cfg.listen, creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
  } catch (err) {
    wds.close();
    serving.close();
    publisher.close();
    await source.stop();
    throw err;
  }
  const host = cfg.listen.replace(/:\d+$/, '');
  const address = `${host}:${port}`;
  log.info({ scope: 'controller', address }, 'serving WDS and the CA');
  const servingCertificate = serving;
  return {
    model,
    store,
    wds,
    ca,
    servingCertificate,
    address,
    close: async () => {
      servingCertificate.close();
      publisher.close();
      wds.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await source.stop();
    },
  };
}

// SPDX-License-Identifier: Apache-2.0
// Wiring of the controller: a source (Kubernetes informers or manifest directories) feeds the
// model; the model's changes go to the xDS resource store; the gRPC server on 15012 serves WDS
// and the CA service over TLS with a serving certificate from the mesh CA.
//
// The controller serves nothing before the source has listed everything and the model holds
// the full state (checklist E.67): a ztunnel connecting to a half-synced controller would be
// told that workloads and policies it knows are gone.
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { KubeConfig } from '@kubernetes/client-node';
import { errorMessage } from '../shared/errors.ts';
import { CertificateAuthority } from '../shared/identity/ca.ts';
import type { Logger } from '../shared/telemetry/logger.ts';
import { NodeTokenAuthenticator } from './auth/node-token.ts';
import { TokenReviewAuthenticator } from './auth/token-review.ts';
import type { Authenticator } from './auth/types.ts';
import { addCaService } from './ca/service.ts';
import type { ControllerConfig } from './config.ts';
import { AmbientModel, type ModelDelta } from './model/ambient-model.ts';
import { FileSource } from './sources/file.ts';
import { KubeSource } from './sources/kube.ts';
import type { Source } from './sources/types.ts';
import { WDS_SERVER_CHANNEL_OPTIONS, addWdsService, type WdsServer } from './xds/ads-server.ts';
import { XdsResourceStore } from './xds/resource-store.ts';
import {
  ADDRESS_TYPE_URL,
  AUTHORIZATION_TYPE_URL,
  WDS_TYPE_URLS,
  addressResource,
} from './xds/wds-resources.ts';
import { Authorization } from '../shared/gen/authorization.ts';
import type { ResourceUpsert } from './xds/resource-store.ts';

export interface Controller {
  readonly model: AmbientModel;
  readonly store: XdsResourceStore;
  readonly wds: WdsServer;
  readonly ca: CertificateAuthority;
  /** host:port the gRPC server listens on (the port resolved when 0 was asked). */
  readonly address: string;
  close(): Promise<void>;
}

/** Pushes one model delta into the store (encoded once, shared by every client). */
function publish(store: XdsResourceStore, delta: ModelDelta): void {
  const addresses = new Map<string, ResourceUpsert>();
  for (const a of delta.addresses.upserted.values()) {
    const [name, upsert] = addressResource(a);
    addresses.set(name, upsert);
  }
  store.apply(ADDRESS_TYPE_URL, addresses, delta.addresses.removed);
  const authz = new Map<string, ResourceUpsert>();
  for (const [name, p] of delta.authorizations.upserted) {
    authz.set(name, { body: Authorization.encode(p).finish() });
  }
  store.apply(AUTHORIZATION_TYPE_URL, authz, delta.authorizations.removed);
}

function makeSource(cfg: ControllerConfig): { source: Source; kc: KubeConfig | undefined } {
  if (cfg.manifestDirs !== undefined) return { source: new FileSource(cfg.manifestDirs), kc: undefined };
  const kc = new KubeConfig();
  if (cfg.kubeconfig !== undefined) kc.loadFromFile(cfg.kubeconfig);
  else kc.loadFromCluster();
  return { source: new KubeSource(kc), kc };
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
  const { source, kc } = makeSource(cfg);
  source.on('warning', (m) => log.warn({ scope: 'source' }, m));
  source.on('change', (events) => {
    try {
      publish(store, model.apply(events));
    } catch (e) {
      // The store refuses a whole batch it cannot validate; the previous state keeps serving.
      log.error({ scope: 'model', err: errorMessage(e) }, 'a change could not be published');
    }
  });
  await source.start();
  log.info(
    {
      scope: 'controller',
      addresses: store.size(ADDRESS_TYPE_URL),
      authorizations: store.size(AUTHORIZATION_TYPE_URL),
    },
    'source synced; model built',
  );

  const authenticator: Authenticator =
    cfg.nodeTokensFile !== undefined
      ? NodeTokenAuthenticator.fromFile(cfg.nodeTokensFile)
      : new TokenReviewAuthenticator({
          kubeConfig: kc ?? new KubeConfig(),
          clusterId: cfg.clusterId,
          podNode: (ns, name, uid) => {
            const pod = model.pod(ns, name);
            return pod?.metadata?.uid === uid ? pod.spec?.nodeName : undefined;
          },
        });

  const serving = await ca.issueServingCertificate({
    identity: `spiffe://${cfg.trustDomain}/ns/${cfg.rootNamespace}/sa/istiod`,
    dnsNames: cfg.servingDnsNames,
    ipAddresses: cfg.servingIps,
  });
  const server = new Server(WDS_SERVER_CHANNEL_OPTIONS);
  const wds = addWdsService(server, { store, authenticator, logger: log });
  addCaService(server, {
    ca,
    authenticator,
    nodeHasIdentity: (node, ns, sa) => model.nodeHasIdentity(node, ns, sa),
    maxTtlSeconds: cfg.maxWorkloadCertTtlSeconds,
    logger: log,
  });
  const creds = ServerCredentials.createSsl(
    null,
    [
      {
        private_key: Buffer.from(serving.keyPem),
        cert_chain: Buffer.from(serving.certChainPem.slice(0, -1).join('')),
      },
    ],
    false,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(cfg.listen, creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  const host = cfg.listen.replace(/:\d+$/, '');
  const address = `${host}:${port}`;
  log.info({ scope: 'controller', address }, 'serving WDS and the CA');
  return {
    model,
    store,
    wds,
    ca,
    address,
    close: async () => {
      wds.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await source.stop();
    },
  };
}

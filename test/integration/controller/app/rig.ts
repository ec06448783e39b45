// SPDX-License-Identifier: Apache-2.0
// The real controller (startController) on loopback for the app-level tests: temporary
// manifest, CA and token directories, a log kept for assertions, and raw clients that speak to
// it the way ztunnel does (TLS verified against the mesh roots, `authorization: Bearer <node
// token>`): a delta ADS stream driven by hand, a CreateCertificate call, and a bare TLS
// handshake that shows the serving certificate.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import {
  credentials,
  Metadata,
  type ClientDuplexStream,
  type ServiceError,
  type StatusObject,
} from '@grpc/grpc-js';
import type { Test } from 'tap';
import { startController, type Controller } from '../../../../src/controller/app.ts';
import { writeNodeTokenFile } from '../../../../src/controller/auth/node-token.ts';
import { loadControllerConfig, type ControllerConfig } from '../../../../src/controller/config.ts';
import { IstioCertificateServiceClient } from '../../../../src/shared/gen/citadel.ts';
import { AggregatedDiscoveryServiceClient } from '../../../../src/shared/gen/envoy/service/discovery/v3/ads.ts';
import type {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
} from '../../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';
import { generateKeyAndCsr } from '../../../../src/shared/identity/csr.ts';
import { Logger } from '../../../../src/shared/telemetry/logger.ts';

export const ADDRESS_TYPE_URL = 'type.googleapis.com/istio.workload.Address';
export const NODES = ['node-a', 'node-b'] as const;
export const WAIT_MS = 15_000;

export const NAMESPACE_YAML =
  'apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}\n';

/** A running, enrolled pod as the local runtime writes it: node, IP, service account. */
export function podYaml(name: string, node: string, ip: string): string {
  return [
    'apiVersion: v1',
    'kind: Pod',
    'metadata:',
    `  name: ${name}`,
    '  namespace: apps',
    '  annotations: {ambient.istio.io/redirection: enabled}',
    'spec:',
    `  nodeName: ${node}`,
    `  serviceAccountName: ${name}`,
    '  containers: [{name: app, image: example}]',
    'status:',
    '  phase: Running',
    `  podIP: ${ip}`,
    `  podIPs: [{ip: ${ip}}]`,
    '  conditions: [{type: Ready, status: "True"}]',
    '',
  ].join('\n');
}

export interface LogLine {
  readonly level: string;
  readonly message: string;
  readonly [field: string]: unknown;
}

export interface Rig {
  readonly manifests: string;
  readonly tokens: Readonly<Record<string, string>>;
  readonly config: ControllerConfig;
  readonly logs: LogLine[];
  readonly logger: Logger;
  /** Starts the controller (once); stopped at teardown. */
  start(): Promise<Controller>;
}

/**
 * Temporary directories with `files` in the manifest directory, node tokens for NODES, and
 * the file-source configuration on 127.0.0.1 (`port`, default any), with `overrides` applied.
 */
export function fileRig(
  t: Test,
  files: Record<string, string>,
  opts: { port?: number; overrides?: Partial<ControllerConfig> } = {},
): Rig {
  const dir = mkdtempSync(join(tmpdir(), 'controller-app-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const manifests = join(dir, 'manifests');
  const tokensPath = join(dir, 'node-tokens.yaml');
  mkdirSync(manifests);
  const tokens = writeNodeTokenFile(tokensPath, [...NODES]);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(manifests, name), text);
  const config: ControllerConfig = {
    ...loadControllerConfig(
      [
        '--manifests',
        manifests,
        '--node-tokens',
        tokensPath,
        '--ca-dir',
        join(dir, 'ca'),
        '--listen',
        `127.0.0.1:${opts.port ?? 0}`,
      ],
      {},
    ),
    ...opts.overrides,
  };
  const logs: LogLine[] = [];
  const logger = new Logger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString('utf8').split('\n')) if (l !== '') logs.push(JSON.parse(l) as LogLine);
        cb();
      },
    }),
  });
  let started: Promise<Controller> | undefined;
  return {
    manifests,
    tokens,
    config,
    logs,
    logger,
    start: () => {
      started ??= startController(config, logger).then((ctl) => {
        t.teardown(() => ctl.close());
        return ctl;
      });
      return started;
    },
  };
}

/** The mesh roots, as ztunnel holds them (XDS_ROOT_CA). */
export function rootsOf(ctl: Controller): string {
  return ctl.ca.trustBundle.toPem();
}

export function bearer(token: string): Metadata {
  const md = new Metadata();
  md.set('authorization', `Bearer ${token}`);
  md.set('clusterid', 'Kubernetes');
  return md;
}

/** The certificate the controller presents to a new connection, verified against the roots. */
export async function handshake(ctl: Controller): Promise<tls.PeerCertificate> {
  const [host = '', port = ''] = ctl.address.split(/:(?=\d+$)/);
  // No SNI (an IP is not a server name, RFC 6066): the certificate is checked against the IP.
  const socket = tls.connect({
    host,
    port: Number(port),
    servername: '',
    ca: rootsOf(ctl),
    ALPNProtocols: ['h2'],
  });
  try {
    await once(socket, 'secureConnect');
    return socket.getPeerCertificate();
  } finally {
    socket.destroy();
  }
}

type Call = ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

/** A delta ADS stream whose every request the test writes; responses queue for next(). */
export class RawDeltaStream {
  readonly #client: AggregatedDiscoveryServiceClient;
  readonly #call: Call;
  readonly #queue: DeltaDiscoveryResponse[] = [];
  #wake: (() => void) | undefined;
  #status: StatusObject | undefined;

  constructor(t: Test, ctl: Controller, token: string) {
    this.#client = new AggregatedDiscoveryServiceClient(
      ctl.address,
      credentials.createSsl(Buffer.from(rootsOf(ctl))),
    );
    this.#call = this.#client.deltaAggregatedResources(bearer(token));
    this.#call.on('data', (r: DeltaDiscoveryResponse) => {
      this.#queue.push(r);
      this.#wake?.();
    });
    this.#call.on('error', () => undefined);
    this.#call.on('status', (s: StatusObject) => {
      this.#status = s;
      this.#wake?.();
    });
    t.teardown(() => this.close());
  }

  /** The stream's final status, once it has ended. */
  get status(): StatusObject | undefined {
    return this.#status;
  }

  /** A wildcard subscription to `typeUrl` from a ztunnel on `node`. */
  subscribe(typeUrl: string, node: string): void {
    this.#send({
      typeUrl,
      node: {
        id: `ztunnel~198.18.0.5~ztunnel-${node}.istio-system~istio-system.svc.cluster.local`,
        cluster: '',
        metadata: { NODE_NAME: node },
        userAgentName: 'raw',
        clientFeatures: [],
      },
    });
  }

  ack(r: DeltaDiscoveryResponse): void {
    this.#send({ typeUrl: r.typeUrl, responseNonce: r.nonce });
  }

  async next(timeoutMs = WAIT_MS): Promise<DeltaDiscoveryResponse> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.#queue.shift();
      if (r !== undefined) return r;
      if (this.#status !== undefined) {
        throw new Error(`the stream ended (${this.#status.code}: ${this.#status.details})`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no response within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  close(): void {
    this.#call.cancel();
    this.#client.close();
  }

  #send(req: Partial<DeltaDiscoveryRequest> & Pick<DeltaDiscoveryRequest, 'typeUrl'>): void {
    this.#call.write({
      node: undefined,
      resourceNamesSubscribe: [],
      resourceNamesUnsubscribe: [],
      initialResourceVersions: new Map<string, string>(),
      responseNonce: '',
      errorDetail: undefined,
      resourceLocatorsSubscribe: [],
      resourceLocatorsUnsubscribe: [],
      ...req,
    });
  }
}

/** CreateCertificate as ztunnel sends it: a fresh CSR for `identity`, impersonated with `token`. */
export async function requestCertificate(
  ctl: Controller,
  token: string,
  identity: string,
): Promise<{ ok: true; chain: string[] } | { ok: false; code: number; details: string }> {
  const { csrPem } = await generateKeyAndCsr(identity);
  const client = new IstioCertificateServiceClient(
    ctl.address,
    credentials.createSsl(Buffer.from(rootsOf(ctl))),
  );
  try {
    return await new Promise((resolve) =>
      client.createCertificate(
        { csr: csrPem, validityDuration: 3600, metadata: { ImpersonatedIdentity: identity } },
        bearer(token),
        { deadline: Date.now() + WAIT_MS },
        (err: ServiceError | null, res) => {
          if (err === null) resolve({ ok: true, chain: res.certChain });
          else resolve({ ok: false, code: err.code, details: err.details });
        },
      ),
    );
  } finally {
    client.close();
  }
}

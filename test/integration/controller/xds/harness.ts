// SPDX-License-Identifier: Apache-2.0
// Test harness for the WDS server (src/controller/xds/): a real grpc-js server on 127.0.0.1 with
// the delta ADS service, a token authenticator, WDS resource builders, and RawStream, a delta
// xDS client whose every request the test writes by hand; H2Stream is the same over node:http2
// directly, keeping each response's exact bytes and able to stop reading. Used by the
// controller conformance tests and by the ztunnel client tests (which run against the real
// server).
import http2 from 'node:http2';
import { Writable } from 'node:stream';
import {
  credentials as grpcCredentials,
  Metadata,
  Server,
  ServerCredentials,
  type ChannelCredentials,
  type ClientDuplexStream,
  type StatusObject,
} from '@grpc/grpc-js';
import type { Test } from 'tap';
import type { Authenticator, Caller } from '../../../../src/controller/auth/types.ts';
import {
  WDS_SERVER_CHANNEL_OPTIONS,
  addWdsService,
  type WdsServer,
  type WdsServerOptions,
} from '../../../../src/controller/xds/ads-server.ts';
import {
  XdsResourceStore,
  type XdsResourceStoreOptions,
} from '../../../../src/controller/xds/resource-store.ts';
import {
  ADDRESS_TYPE_URL,
  AUTHORIZATION_TYPE_URL,
  WDS_TYPE_URLS,
  authorizationResource,
  serviceResource,
  workloadResource,
} from '../../../../src/controller/xds/wds-resources.ts';
import { Authorization } from '../../../../src/shared/gen/authorization.ts';
import { AggregatedDiscoveryServiceClient } from '../../../../src/shared/gen/envoy/service/discovery/v3/ads.ts';
import {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
} from '../../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';
import { Address, Service, Workload } from '../../../../src/shared/gen/workload.ts';
import { Logger } from '../../../../src/shared/telemetry/logger.ts';

export { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL };

export const NODE_ID = 'ztunnel~198.18.0.5~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local';
export const NODE_NAME = 'node-a';
/** Generous: the machine is shared and loaded. */
export const WAIT_MS = 15_000;

/** Accepts `authorization: Bearer node:<name>` as a ztunnel on node <name>; refuses anything else. */
export const tokenAuthenticator: Authenticator = {
  authenticate(md: Metadata): Promise<Caller> {
    const value = md.get('authorization')[0];
    const m = typeof value === 'string' ? /^Bearer node:([a-z0-9-]+)$/.exec(value) : null;
    if (m?.[1] === undefined) return Promise.reject(new Error('no valid bearer token'));
    return Promise.resolve({ kind: 'node', node: m[1], subject: `test token for ${m[1]}` });
  },
};

export function nodeMetadata(node = NODE_NAME): Metadata {
  const md = new Metadata();
  md.set('authorization', `Bearer node:${node}`);
  md.set('clusterid', 'Kubernetes');
  return md;
}

/** A debug-level logger whose lines are kept for assertions instead of printed. */
export class MemoryLog {
  readonly #text: string[] = [];
  readonly logger = new Logger({
    level: 'debug',
    destination: new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        this.#text.push(chunk.toString('utf8'));
        cb();
      },
    }),
  });

  lines(): Record<string, unknown>[] {
    return this.#text
      .join('')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

// ---- resources ----

export function ip4(a: number, b: number, c: number, d: number): Uint8Array {
  return Uint8Array.of(a, b, c, d);
}

/** Text of podIp(i). */
export function podIpText(i: number): string {
  return `198.18.${Math.floor(i / 250) + 1}.${(i % 250) + 1}`;
}

/** A pod `w<i>` in namespace `apps`, IP 198.18.<i/250+1>.<i%250+1>, enrolled (HBONE), endpoint of svc0. */
export function podWorkload(i: number, extra: Partial<Workload> = {}): Workload {
  return {
    ...Workload.fromPartial({
      uid: `Kubernetes//Pod/apps/w${i}`,
      name: `w${i}`,
      namespace: 'apps',
      addresses: [ip4(198, 18, Math.floor(i / 250) + 1, (i % 250) + 1)],
      tunnelProtocol: 1,
      serviceAccount: 'app',
      node: NODE_NAME,
      canonicalName: 'app',
      canonicalRevision: 'v1',
      workloadType: 2,
      workloadName: 'app',
      clusterId: 'Kubernetes',
    }),
    services: new Map([
      [
        'apps/svc0.apps.svc.cluster.local',
        { ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 0 }] },
      ],
    ]),
    ...extra,
  };
}

/** Service `svc<i>.apps.svc.cluster.local` with VIP 198.19.0.<i+1>, port 80 → 8080. */
export function appService(i: number, extra: Partial<Service> = {}): Service {
  return {
    ...Service.fromPartial({
      name: `svc${i}`,
      namespace: 'apps',
      hostname: `svc${i}.apps.svc.cluster.local`,
      addresses: [{ network: '', address: ip4(198, 19, 0, i + 1) }],
      ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 0 }],
      canonical: true,
    }),
    ...extra,
  };
}

/** ALLOW policy `apps/p<i>` (namespace scope) allowing principal cluster.local/ns/apps/sa/client<i>. */
export function appPolicy(i: number, extra: Partial<Authorization> = {}): Authorization {
  return {
    ...Authorization.fromPartial({
      name: `p${i}`,
      namespace: 'apps',
      scope: 1,
      action: 0,
      rules: [
        {
          clauses: [
            {
              matches: [
                {
                  principals: [
                    { matchType: { $case: 'exact', value: `cluster.local/ns/apps/sa/client${i}` } },
                  ],
                },
              ],
            },
          ],
        },
      ],
    }),
    ...extra,
  };
}

/** Upserts workloads/services/policies into the store (one apply per type). */
export function put(
  store: XdsResourceStore,
  r: { workloads?: Workload[]; services?: Service[]; policies?: Authorization[] },
): void {
  const addresses = [
    ...(r.workloads ?? []).map(workloadResource),
    ...(r.services ?? []).map(serviceResource),
  ];
  if (addresses.length > 0) store.apply(ADDRESS_TYPE_URL, new Map(addresses));
  if ((r.policies ?? []).length > 0)
    store.apply(AUTHORIZATION_TYPE_URL, new Map((r.policies ?? []).map(authorizationResource)));
}

/** Decodes the Address bodies of a response: name → message. */
export function addressesOf(resp: DeltaDiscoveryResponse): Map<string, Address> {
  return new Map(resp.resources.map((r) => [r.name, Address.decode(r.resource?.value ?? new Uint8Array())]));
}

// ---- server ----

export interface TestWds {
  readonly address: string;
  readonly port: number;
  readonly server: Server;
  readonly wds: WdsServer;
  readonly store: XdsResourceStore;
  readonly log: MemoryLog;
  /** Closes the WDS service and shuts the gRPC server down (forcefully after a grace period). */
  stop(): Promise<void>;
}

export interface TestWdsOptions extends Partial<Omit<WdsServerOptions, 'store' | 'logger'>> {
  readonly store?: XdsResourceStore;
  readonly storeOptions?: XdsResourceStoreOptions;
  readonly credentials?: ServerCredentials;
  /** Listen on this port (to restart a server where the previous one was). */
  readonly port?: number;
}

export async function startTestWds(t: Test, opts: TestWdsOptions = {}): Promise<TestWds> {
  const store = opts.store ?? new XdsResourceStore(WDS_TYPE_URLS, opts.storeOptions);
  const log = new MemoryLog();
  const server = new Server(WDS_SERVER_CHANNEL_OPTIONS);
  const wds = addWdsService(server, {
    authenticator: tokenAuthenticator,
    debounce: { quietMs: 20, maxMs: 200 },
    ...opts,
    store,
    logger: log.logger,
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      `127.0.0.1:${opts.port ?? 0}`,
      opts.credentials ?? ServerCredentials.createInsecure(),
      (err, p) => (err === null ? resolve(p) : reject(err)),
    ),
  );
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= new Promise<void>((resolve) => {
      wds.close();
      const force = setTimeout(() => server.forceShutdown(), 2000);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    }));
  t.teardown(stop);
  return { address: `127.0.0.1:${port}`, port, server, wds, store, log, stop };
}

// ---- raw client ----

type RawCall = ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

/** A delta ADS stream driven request by request; responses are queued for next(). */
export class RawStream {
  readonly #client: AggregatedDiscoveryServiceClient;
  readonly #call: RawCall;
  readonly #queue: DeltaDiscoveryResponse[] = [];
  #waiter: (() => void) | undefined;
  readonly status: Promise<StatusObject>;
  #ended = false;

  constructor(
    address: string,
    metadata: Metadata = nodeMetadata(),
    creds: ChannelCredentials = grpcCredentials.createInsecure(),
  ) {
    this.#client = new AggregatedDiscoveryServiceClient(address, creds, {
      'grpc.max_receive_message_length': 200 * 1024 * 1024,
    });
    this.#call = this.#client.deltaAggregatedResources(metadata);
    this.#call.on('data', (r: DeltaDiscoveryResponse) => {
      this.#queue.push(r);
      this.#waiter?.();
    });
    this.#call.on('error', () => undefined);
    this.status = new Promise((resolve) =>
      this.#call.on('status', (s: StatusObject) => {
        this.#ended = true;
        this.#waiter?.();
        resolve(s);
      }),
    );
  }

  static open(t: Test, address: string, metadata?: Metadata, creds?: ChannelCredentials): RawStream {
    const s = new RawStream(address, metadata, creds);
    t.teardown(() => s.close());
    return s;
  }

  send(req: Partial<DeltaDiscoveryRequest> & Pick<DeltaDiscoveryRequest, 'typeUrl'>): void {
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

  /** The first request of a type: carries the node; wildcard unless names are given. */
  subscribe(
    typeUrl: string,
    opts: {
      names?: string[];
      unsubscribe?: string[];
      initial?: Map<string, string>;
      nodeId?: string;
      nodeName?: string;
    } = {},
  ): void {
    this.send({
      typeUrl,
      node: {
        id: opts.nodeId ?? NODE_ID,
        cluster: '',
        metadata: { NODE_NAME: opts.nodeName ?? NODE_NAME },
        userAgentName: 'raw',
        clientFeatures: [],
      },
      resourceNamesSubscribe: opts.names ?? [],
      resourceNamesUnsubscribe: opts.unsubscribe ?? [],
      initialResourceVersions: opts.initial ?? new Map<string, string>(),
    });
  }

  ack(r: DeltaDiscoveryResponse): void {
    this.send({ typeUrl: r.typeUrl, responseNonce: r.nonce });
  }

  nack(r: DeltaDiscoveryResponse, message: string): void {
    this.send({ typeUrl: r.typeUrl, responseNonce: r.nonce, errorDetail: { code: 3, message, details: [] } });
  }

  /** Responses received and not yet taken. */
  get queued(): number {
    return this.#queue.length;
  }

  /** The next response; rejects when the stream ends first or after `timeoutMs`. */
  async next(timeoutMs = WAIT_MS): Promise<DeltaDiscoveryResponse> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const r = this.#queue.shift();
      if (r !== undefined) return r;
      if (this.#ended) throw new Error('stream ended before the next response');
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no response within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#waiter = undefined;
    }
  }

  /** The next response, which must be of `typeUrl`. */
  async nextOf(typeUrl: string, timeoutMs = WAIT_MS): Promise<DeltaDiscoveryResponse> {
    const r = await this.next(timeoutMs);
    if (r.typeUrl !== typeUrl) throw new Error(`expected a ${typeUrl} response, got ${r.typeUrl}`);
    return r;
  }

  /** Half-closes our side (the server then ends the stream with OK). */
  end(): void {
    this.#call.end();
  }

  close(): void {
    this.#call.cancel();
    this.#client.close();
  }
}

/** name → version of a response's resources. */
export function versionsOf(r: DeltaDiscoveryResponse): Map<string, string> {
  return new Map(r.resources.map((x) => [x.name, x.version]));
}

// ---- HTTP/2 client that sees the bytes ----

const DELTA_ADS_PATH = '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources';
const GRPC_PREFIX_BYTES = 5;

/** How a gRPC stream ended: its grpc-status (-1 when it closed without one) and message. */
export interface GrpcEnd {
  readonly code: number;
  readonly details: string;
}

/** The first request of a type, as RawStream.subscribe sends it (wildcard). */
function firstRequest(typeUrl: string, nodeName: string): DeltaDiscoveryRequest {
  return DeltaDiscoveryRequest.fromPartial({
    typeUrl,
    node: { id: NODE_ID, metadata: { NODE_NAME: nodeName }, userAgentName: 'h2' },
  });
}

/**
 * A delta ADS stream spoken over node:http2 without grpc-js: it keeps the exact bytes of each
 * response message (to compare them between clients), and `pause` stops reading, so its HTTP/2
 * window closes as a stuck ztunnel's does. Plaintext, like the test server.
 */
export class H2Stream {
  readonly #session: http2.ClientHttp2Session;
  readonly #req: http2.ClientHttp2Stream;
  readonly #nodeName: string;
  #pending = Buffer.alloc(0);
  readonly #messages: Buffer[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;
  readonly ended: Promise<GrpcEnd>;

  /** `windowBytes`: the HTTP/2 stream window this client grants (node's default 65 535). */
  constructor(address: string, opts: { nodeName?: string; windowBytes?: number } = {}) {
    this.#nodeName = opts.nodeName ?? NODE_NAME;
    this.#session = http2.connect(`http://${address}`, {
      settings: { initialWindowSize: opts.windowBytes ?? 65_535 },
    });
    this.#session.on('error', () => undefined);
    this.#req = this.#session.request({
      ':method': 'POST',
      ':path': DELTA_ADS_PATH,
      'content-type': 'application/grpc',
      te: 'trailers',
      authorization: `Bearer node:${this.#nodeName}`,
    });
    this.#req.on('error', () => undefined);
    this.#req.on('data', (chunk: Buffer) => {
      this.#pending = Buffer.concat([this.#pending, chunk]);
      for (;;) {
        if (this.#pending.length < GRPC_PREFIX_BYTES) break;
        const end = GRPC_PREFIX_BYTES + this.#pending.readUInt32BE(1);
        if (this.#pending.length < end) break;
        this.#messages.push(Buffer.from(this.#pending.subarray(GRPC_PREFIX_BYTES, end)));
        this.#pending = this.#pending.subarray(end);
      }
      this.#waiter?.();
    });
    let status: GrpcEnd = { code: -1, details: 'closed without a grpc-status' };
    const take = (h: http2.IncomingHttpHeaders): void => {
      const code = h['grpc-status'];
      if (typeof code === 'string') {
        const details = h['grpc-message'];
        status = {
          code: Number(code),
          details: typeof details === 'string' ? decodeURIComponent(details) : '',
        };
      }
    };
    this.#req.on('response', take);
    this.#req.on('trailers', take);
    // The response side ends with the trailers; the stream closes only once we end ours too.
    this.ended = new Promise((resolve) => {
      const ended = (): void => {
        this.#ended = true;
        this.#waiter?.();
        resolve(status);
      };
      this.#req.on('end', ended);
      this.#req.on('close', ended);
    });
  }

  static open(t: Test, address: string, opts?: { nodeName?: string; windowBytes?: number }): H2Stream {
    const s = new H2Stream(address, opts);
    t.teardown(() => s.close());
    return s;
  }

  send(req: DeltaDiscoveryRequest): void {
    const msg = DeltaDiscoveryRequest.encode(req).finish();
    const prefix = Buffer.alloc(GRPC_PREFIX_BYTES);
    prefix.writeUInt32BE(msg.length, 1);
    this.#req.write(Buffer.concat([prefix, msg]));
  }

  /** The first request of a type (wildcard), with the node. */
  subscribe(typeUrl: string): void {
    this.send(firstRequest(typeUrl, this.#nodeName));
  }

  ack(typeUrl: string, nonce: string): void {
    this.send(DeltaDiscoveryRequest.fromPartial({ typeUrl, responseNonce: nonce }));
  }

  /** Stops reading: once its window is full, the server cannot send it more. */
  pause(): void {
    this.#req.pause();
  }

  resume(): void {
    this.#req.resume();
  }

  /** The next response message's bytes; rejects when the stream ends first or after `timeoutMs`. */
  async next(timeoutMs = WAIT_MS): Promise<Buffer> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const m = this.#messages.shift();
      if (m !== undefined) return m;
      if (this.#ended) throw new Error('stream ended before the next response');
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no response within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#waiter = undefined;
    }
  }

  close(): void {
    this.#req.close(http2.constants.NGHTTP2_CANCEL);
    this.#session.destroy();
  }
}

/**
 * A response's bytes without its nonce field, which must be the last field (as the server
 * writes it): what the server may share between streams.
 */
export function bodyOf(raw: Buffer): Buffer {
  const { nonce } = DeltaDiscoveryResponse.decode(raw);
  const field = DeltaDiscoveryResponse.encode(DeltaDiscoveryResponse.fromPartial({ nonce })).finish();
  if (!raw.subarray(raw.length - field.length).equals(field)) {
    throw new Error(`the response does not end with its nonce field (nonce ${JSON.stringify(nonce)})`);
  }
  return raw.subarray(0, raw.length - field.length);
}

// SPDX-License-Identifier: Apache-2.0
// A simulated ztunnel for the scale benchmark: what a real ztunnel does on the wire with WDS,
// nothing more (spec ambient-protocols §3.1–§3.3). It opens one delta ADS stream over TLS on its
// own connection (a ztunnel per node means a connection per node), authenticates with its
// node's token, announces the node id and NODE_NAME metadata, subscribes wildcard to Address and
// Authorization, and ACKs every response at once.
//
// It decodes the DeltaDiscoveryResponse envelope only (names, nonce, removals), never the
// Address/Authorization inside, and keeps one bit per expected resource, so 100 of them fit in
// the bench process next to the Kubernetes API stand-in. Each resource name received is handed
// to the scenario with its arrival time, which is how a pod change is seen to reach a client.
import {
  credentials,
  Metadata,
  status as GrpcStatus,
  type ClientDuplexStream,
  type StatusObject,
} from '@grpc/grpc-js';
import { MeshError } from '../../src/shared/errors.ts';
import { AggregatedDiscoveryServiceClient } from '../../src/shared/gen/envoy/service/discovery/v3/ads.ts';
import type {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
} from '../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';
import type { ExpectedResources } from './cluster.ts';

/**
 * The initial response carries every resource of a type in one message (~2.8 MB at 11k
 * addresses); grpc-js refuses more than 4 MiB by default.
 */
const MAX_RECEIVE_BYTES = 64 * 1024 * 1024;
/** HTTP/2 stream and connection window (grpc-js sets both from one option). */
const FLOW_CONTROL_WINDOW = 2 * 1024 * 1024;
/** Unexpected names kept for the error message. */
const UNEXPECTED_KEPT = 5;

export class ZtunnelClientError extends MeshError {
  constructor(message: string) {
    super('BENCH_ERR_ZTUNNEL_CLIENT', message);
  }
}

/** Who the simulated ztunnel is. */
export interface ZtunnelIdentity {
  readonly node: string;
  /** Its node token (`authorization: Bearer <token>`). */
  readonly token: string;
  /** Its pod IP, for the xDS node id. */
  readonly ip: string;
  /** Its pod name in istio-system, for the xDS node id. */
  readonly podName: string;
  readonly clusterId: string;
  /** The DNS name in the controller's serving certificate, e.g. `istiod.istio-system.svc`. */
  readonly controllerName: string;
}

export interface ZtunnelEvents {
  /** A resource (upsert) of `typeUrl` named `name` arrived at `at` (performance.now()). */
  resource(client: number, typeUrl: string, name: string, at: number): void;
  /** The client holds every expected resource for the first time. */
  synced(client: number, at: number): void;
  /** The stream ended or failed while the client was not being closed. */
  failed(client: number, error: ZtunnelClientError): void;
}

/** What a client received, for the report and the sanity checks. */
export interface ZtunnelCounts {
  readonly responses: number;
  readonly resources: number;
  readonly removals: number;
  /** Expected resources it holds now. */
  readonly held: number;
  readonly unexpected: number;
}

type DeltaCall = ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

function request(
  typeUrl: string,
  fields: Partial<Pick<DeltaDiscoveryRequest, 'node' | 'responseNonce'>>,
): DeltaDiscoveryRequest {
  return {
    typeUrl,
    node: fields.node,
    resourceNamesSubscribe: [],
    resourceNamesUnsubscribe: [],
    initialResourceVersions: new Map<string, string>(),
    responseNonce: fields.responseNonce ?? '',
    errorDetail: undefined,
    resourceLocatorsSubscribe: [],
    resourceLocatorsUnsubscribe: [],
  };
}

export class SimulatedZtunnel {
  readonly index: number;
  readonly identity: ZtunnelIdentity;
  readonly #expected: ExpectedResources;
  readonly #events: ZtunnelEvents;
  /** type URL → one byte per expected resource (1 = held). */
  readonly #held = new Map<string, Uint8Array>();
  #client: AggregatedDiscoveryServiceClient | undefined;
  #call: DeltaCall | undefined;
  #closing = false;
  #synced = false;
  #responses = 0;
  #resources = 0;
  #removals = 0;
  #heldCount = 0;
  #unexpected = 0;
  readonly #unexpectedNames: string[] = [];

  constructor(index: number, identity: ZtunnelIdentity, expected: ExpectedResources, events: ZtunnelEvents) {
    this.index = index;
    this.identity = identity;
    this.#expected = expected;
    this.#events = events;
    for (const [typeUrl, names] of expected.byType) this.#held.set(typeUrl, new Uint8Array(names.size));
  }

  /** Connects to `address` (host:port) trusting `rootCertPem`, and subscribes to every type. */
  start(address: string, rootCertPem: Buffer): void {
    if (this.#client !== undefined) throw new ZtunnelClientError(`ztunnel ${this.index} started twice`);
    const id = this.identity;
    this.#client = new AggregatedDiscoveryServiceClient(address, credentials.createSsl(rootCertPem), {
      'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
      // Its own TCP+TLS connection, as a ztunnel on its own node has; grpc-js would otherwise
      // multiplex every client of this process over one shared connection.
      'grpc.use_local_subchannel_pool': 1,
      // The name a ztunnel checks the controller's certificate against (its XDS_ADDRESS host).
      'grpc.ssl_target_name_override': id.controllerName,
      'grpc.default_authority': id.controllerName,
      // HTTP/2 windows of a real ztunnel's xDS client (hyper's defaults: 2 MiB per stream),
      // rather than grpc-js's 64 KiB, which would make the initial sync measure window updates.
      'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW,
    });
    const md = new Metadata();
    md.set('authorization', `Bearer ${id.token}`);
    const call = this.#client.deltaAggregatedResources(md);
    this.#call = call;
    call.on('data', (r: DeltaDiscoveryResponse) => this.#onResponse(r));
    // Failures arrive as the call's status; 'error' repeats them.
    call.on('error', () => undefined);
    call.on('status', (s: StatusObject) => {
      if (this.#closing) return;
      this.#closing = true;
      this.#events.failed(
        this.index,
        new ZtunnelClientError(
          `ztunnel ${this.index} (${id.node}): the WDS stream ended with ${GrpcStatus[s.code]}: ${s.details}`,
        ),
      );
    });
    const node = {
      id: `ztunnel~${id.ip}~${id.podName}.istio-system~istio-system.svc.cluster.local`,
      cluster: '',
      metadata: {
        NAME: id.podName,
        NAMESPACE: 'istio-system',
        NODE_NAME: id.node,
        INSTANCE_IPS: id.ip,
        CLUSTER_ID: id.clusterId,
      },
      userAgentName: 'mesh-bench-scale',
      clientFeatures: [],
    };
    for (const typeUrl of this.#expected.byType.keys()) call.write(request(typeUrl, { node }));
  }

  get counts(): ZtunnelCounts {
    return {
      responses: this.#responses,
      resources: this.#resources,
      removals: this.#removals,
      held: this.#heldCount,
      unexpected: this.#unexpected,
    };
  }

  /** Up to a few names received that the cluster does not have, for error messages. */
  get unexpectedNames(): readonly string[] {
    return this.#unexpectedNames;
  }

  #onResponse(r: DeltaDiscoveryResponse): void {
    const at = performance.now();
    this.#responses++;
    const held = this.#held.get(r.typeUrl);
    const index = this.#expected.byType.get(r.typeUrl);
    for (const res of r.resources) {
      this.#resources++;
      const i = index?.get(res.name);
      if (i === undefined || held === undefined) this.#noteUnexpected(r.typeUrl, res.name);
      else if (held[i] === 0) {
        held[i] = 1;
        this.#heldCount++;
      }
      this.#events.resource(this.index, r.typeUrl, res.name, at);
    }
    for (const name of r.removedResources) {
      this.#removals++;
      const i = index?.get(name);
      if (i !== undefined && held !== undefined && held[i] === 1) {
        held[i] = 0;
        this.#heldCount--;
      }
    }
    this.#call?.write(request(r.typeUrl, { responseNonce: r.nonce }));
    if (!this.#synced && this.#heldCount === this.#expected.total) {
      this.#synced = true;
      this.#events.synced(this.index, at);
    }
  }

  #noteUnexpected(typeUrl: string, name: string): void {
    this.#unexpected++;
    if (this.#unexpectedNames.length < UNEXPECTED_KEPT) this.#unexpectedNames.push(`${typeUrl} ${name}`);
  }

  /** Cancels the stream and closes the channel; safe to call twice. */
  close(): void {
    this.#closing = true;
    this.#call?.cancel();
    this.#client?.close();
  }
}

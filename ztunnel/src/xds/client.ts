// SPDX-License-Identifier: Apache-2.0
// ztunnel's WDS client (spec ambient-protocols §3.1–§3.3; upstream istio/ztunnel:src/xds/client.rs):
// one `DeltaAggregatedResources` stream to the controller, wildcard subscriptions to
// `istio.workload.Address` and `istio.security.Authorization`, responses applied to the
// StateStore resource by resource.
//
// - Each resource is decoded, converted and validated on its own (./convert.ts). The good ones
//   are applied; the bad ones are NACKed together as `name: reason` joined by `; `, and for those
//   ztunnel keeps whatever version it held before (last good), or nothing.
// - Readiness: `onReady` fires once, after a response of every type has been processed and
//   acknowledged (ACK, or NACK with the good resources applied: one bad resource must not keep
//   a whole node out of service).
// - When the stream breaks, the store keeps serving what it holds; the client reconnects with
//   backoff (10 ms doubling to 15 s, each delay jittered down by up to half so a fleet does not
//   return in lockstep, checklist E.68) and sends `initial_resource_versions` of everything it
//   holds, so the controller sends only what changed and removes what is gone. The backoff is
//   reset after a response arrives and on the closes upstream treats as benign (OK, CANCELLED,
//   UNKNOWN, DEADLINE_EXCEEDED, UNAVAILABLE "transport is closing" / "received prior goaway").
// - Every attempt uses a new channel, so the delays are ours, not grpc-js's own reconnect
//   backoff (which grows to 120 s), and new credentials: a rotated root file is read again.
// - `status()` is what /config_dump shows: per type the versions held, the last nonce, ACK/NACK
//   counts and the last error.
import {
  status as GrpcStatus,
  type ChannelCredentials,
  type ChannelOptions,
  type ClientDuplexStream,
  type Metadata,
  type StatusObject,
} from '@grpc/grpc-js';
import { errorMessage } from '../../../src/shared/errors.ts';
import { Authorization as PbAuthorization } from '../../../src/shared/gen/authorization.ts';
import type { Node } from '../../../src/shared/gen/envoy/config/core/v3/base.ts';
import { AggregatedDiscoveryServiceClient } from '../../../src/shared/gen/envoy/service/discovery/v3/ads.ts';
import type {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  Resource,
} from '../../../src/shared/gen/envoy/service/discovery/v3/discovery.ts';
import { Address as PbAddress } from '../../../src/shared/gen/workload.ts';
import type { Logger } from '../../../src/shared/telemetry/logger.ts';
import { findUnknownConditions } from './unknown-conditions.ts';
import type { StateStore } from '../state/store.ts';
import { policyKey, serviceKey } from '../state/types.ts';
import { convertAddress, convertAuthorization, type Converted } from './convert.ts';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WDS_TYPE_URLS } from '../../../src/shared/wds-types.ts';

export { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WDS_TYPE_URLS };

export const DEFAULT_BACKOFF_INITIAL_MS = 10;
export const DEFAULT_BACKOFF_MAX_MS = 15_000;
/** Largest response accepted (spec §3.1). */
const MAX_RECEIVE_MESSAGE_BYTES = 200 * 1024 * 1024;
/** NACK messages list at most this many rejected resources; the rest are counted. */
const MAX_NACK_ENTRIES = 100;
/** google.rpc.Code INVALID_ARGUMENT, the code of a NACK's error_detail. */
const NACK_CODE = GrpcStatus.INVALID_ARGUMENT;

export interface WdsClientOptions {
  /** `host:port` of the controller's xDS port (15012). */
  readonly address: string;
  /**
   * The channel credentials, asked for again for every connection attempt, so a rotated root
   * file (XDS_ROOT_CA) is trusted from the next reconnect on.
   */
  readonly credentials: () => ChannelCredentials | Promise<ChannelCredentials>;
  /** Extra channel options, e.g. `grpc.ssl_target_name_override` (ALT_XDS_HOSTNAME). */
  readonly channelOptions?: ChannelOptions;
  /**
   * The call metadata of each stream (`authorization: Bearer …`, `clusterid`, XDS_HEADER_*).
   * Called again for every reconnect, so a rotated token file is picked up.
   */
  readonly metadata: () => Metadata | Promise<Metadata>;
  /** Sent on the first request of each type (spec §3.1). */
  readonly node: Node;
  readonly store: StateStore;
  readonly logger: Logger;
  /** Called once: a response of every type has been processed and acknowledged. */
  readonly onReady?: () => void;
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
}

export interface WdsTypeStatus {
  readonly typeUrl: string;
  readonly ready: boolean;
  /** Resource name → version, of everything held. */
  readonly versions: Readonly<Record<string, string>>;
  readonly lastNonce: string | undefined;
  readonly lastSystemVersionInfo: string | undefined;
  readonly acks: number;
  readonly nacks: number;
  readonly lastError: { readonly at: string; readonly message: string } | undefined;
}

export interface WdsClientStatus {
  readonly address: string;
  readonly state: 'connecting' | 'connected' | 'backoff' | 'closed';
  readonly ready: boolean;
  /** Streams opened so far. */
  readonly connects: number;
  readonly lastDisconnect:
    { readonly at: string; readonly code: string; readonly details: string } | undefined;
  readonly types: readonly WdsTypeStatus[];
}

export interface WdsClient {
  status(): WdsClientStatus;
  /** Ends the stream and stops reconnecting; the store keeps what it holds. */
  close(): void;
}

/** Where a held resource lives in the StateStore. */
type Target =
  | { readonly kind: 'workload'; readonly key: string }
  | { readonly kind: 'service'; readonly key: string }
  | { readonly kind: 'policy'; readonly key: string };

interface Held {
  readonly version: string;
  readonly target: Target;
}

interface TypeState {
  readonly held: Map<string, Held>;
  ready: boolean;
  lastNonce: string | undefined;
  lastSystemVersionInfo: string | undefined;
  acks: number;
  nacks: number;
  lastError: { at: string; message: string } | undefined;
}

type DeltaCall = ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

/** Upstream's benign stream ends (spec §3.1): reconnect without growing the backoff. */
const BENIGN_CODES: ReadonlySet<GrpcStatus> = new Set([
  GrpcStatus.OK,
  GrpcStatus.CANCELLED,
  GrpcStatus.UNKNOWN,
  GrpcStatus.DEADLINE_EXCEEDED,
]);

function isBenignClose(s: Pick<StatusObject, 'code' | 'details'>): boolean {
  if (BENIGN_CODES.has(s.code)) return true;
  return s.code === GrpcStatus.UNAVAILABLE && /transport is closing|received prior goaway/i.test(s.details);
}

function sameTarget(a: Target, b: Target): boolean {
  return a.kind === b.kind && a.key === b.key;
}

/** Starts the client; it connects at once and keeps reconnecting until close(). */
export function startWdsClient(opts: WdsClientOptions): WdsClient {
  return new WdsClientImpl(opts);
}

class WdsClientImpl implements WdsClient {
  readonly #opts: WdsClientOptions;
  readonly #log: Logger;
  readonly #types = new Map<string, TypeState>(
    WDS_TYPE_URLS.map((t) => [
      t,
      {
        held: new Map(),
        ready: false,
        lastNonce: undefined,
        lastSystemVersionInfo: undefined,
        acks: 0,
        nacks: 0,
        lastError: undefined,
      },
    ]),
  );
  readonly #initialBackoff: number;
  readonly #maxBackoff: number;
  #backoff: number;
  #state: WdsClientStatus['state'] = 'connecting';
  #client: AggregatedDiscoveryServiceClient | undefined;
  #call: DeltaCall | undefined;
  #retry: NodeJS.Timeout | undefined;
  #connects = 0;
  #lastDisconnect: WdsClientStatus['lastDisconnect'];
  #ready = false;

  constructor(opts: WdsClientOptions) {
    this.#opts = opts;
    this.#log = opts.logger.child({ scope: 'xds.client', address: opts.address });
    this.#initialBackoff = opts.backoff?.initialMs ?? DEFAULT_BACKOFF_INITIAL_MS;
    this.#maxBackoff = opts.backoff?.maxMs ?? DEFAULT_BACKOFF_MAX_MS;
    this.#backoff = this.#initialBackoff;
    this.#attempt();
  }

  /** One connection attempt; whatever goes wrong in it ends in a retry, never an unhandled rejection. */
  #attempt(): void {
    this.#retry = undefined;
    this.#connect().catch((err: unknown) =>
      this.#disconnected({
        code: GrpcStatus.INTERNAL,
        details: `cannot open the stream: ${errorMessage(err)}`,
      }),
    );
  }

  async #connect(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'connecting';
    let credentials: ChannelCredentials;
    try {
      credentials = await this.#opts.credentials();
    } catch (err) {
      this.#disconnected({
        code: GrpcStatus.UNAVAILABLE,
        details: `cannot build the channel credentials: ${errorMessage(err)}`,
      });
      return;
    }
    let metadata: Metadata;
    try {
      metadata = await this.#opts.metadata();
    } catch (err) {
      this.#disconnected({
        code: GrpcStatus.UNAUTHENTICATED,
        details: `cannot build the call metadata: ${errorMessage(err)}`,
      });
      return;
    }
    if (this.#isClosed()) return; // closed while the credentials or metadata were being built
    const client = new AggregatedDiscoveryServiceClient(this.#opts.address, credentials, {
      'grpc.max_receive_message_length': MAX_RECEIVE_MESSAGE_BYTES,
      // A controller that vanished without closing the connection is noticed within ~40 s.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      ...this.#opts.channelOptions,
    });
    let call: DeltaCall;
    try {
      call = client.deltaAggregatedResources(metadata);
    } catch (err) {
      client.close();
      throw err;
    }
    this.#client = client;
    this.#call = call;
    this.#connects++;
    let ended = false;
    call.on('data', (resp: DeltaDiscoveryResponse) => {
      if (!ended) this.#onResponse(call, resp);
    });
    // A non-OK status arrives as 'error' and then 'status'; 'status' alone handles both.
    call.on('error', () => undefined);
    call.on('status', (s: StatusObject) => {
      if (ended) return;
      ended = true;
      client.close();
      if (this.#call === call) {
        this.#call = undefined;
        this.#client = undefined;
      }
      this.#disconnected(s);
    });
    for (const [typeUrl, st] of this.#types) {
      const initialResourceVersions = new Map<string, string>();
      for (const [name, h] of st.held) initialResourceVersions.set(name, h.version);
      call.write(request(typeUrl, { node: this.#opts.node, initialResourceVersions }));
    }
    this.#log.info({ attempt: this.#connects }, 'WDS stream opened');
  }

  #disconnected(s: Pick<StatusObject, 'code' | 'details'>): void {
    if (this.#state === 'closed') return;
    const code = GrpcStatus[s.code] as string | undefined;
    this.#lastDisconnect = { at: new Date().toISOString(), code: code ?? String(s.code), details: s.details };
    const benign = isBenignClose(s);
    if (benign) this.#backoff = this.#initialBackoff;
    const base = this.#backoff;
    this.#backoff = Math.min(this.#maxBackoff, base * 2);
    const delay = Math.round(base / 2 + (Math.random() * base) / 2);
    this.#state = 'backoff';
    this.#log[benign ? 'info' : 'warn'](
      { code: this.#lastDisconnect.code, details: s.details, retryInMs: delay },
      'WDS stream ended; serving the last state received until the controller is back',
    );
    this.#retry = setTimeout(() => this.#attempt(), delay);
  }

  #onResponse(call: DeltaCall, resp: DeltaDiscoveryResponse): void {
    this.#state = 'connected';
    this.#backoff = this.#initialBackoff; // the controller answered: this connection works
    const st = this.#types.get(resp.typeUrl);
    if (st === undefined) {
      // Not something we subscribed to: refuse the whole response.
      call.write(
        request(resp.typeUrl, {
          responseNonce: resp.nonce,
          errorDetail: {
            code: NACK_CODE,
            message: `type URL ${resp.typeUrl} was not subscribed`,
            details: [],
          },
        }),
      );
      return;
    }
    const rejected: string[] = [];
    for (const r of resp.resources) {
      const problem = this.#applyOne(resp.typeUrl, st, r);
      if (problem !== undefined) rejected.push(`${r.name}: ${problem}`);
    }
    for (const name of resp.removedResources) {
      const h = st.held.get(name);
      if (h === undefined) continue; // on-demand "does not exist", or never held
      this.#remove(h.target);
      st.held.delete(name);
    }
    st.lastNonce = resp.nonce;
    st.lastSystemVersionInfo = resp.systemVersionInfo;
    if (rejected.length === 0) {
      st.acks++;
      call.write(request(resp.typeUrl, { responseNonce: resp.nonce }));
    } else {
      st.nacks++;
      const listed = rejected.slice(0, MAX_NACK_ENTRIES);
      const more = rejected.length - listed.length;
      const message = listed.join('; ') + (more > 0 ? `; (and ${more} more rejected resources)` : '');
      st.lastError = { at: new Date().toISOString(), message };
      this.#log.warn(
        { typeUrl: resp.typeUrl, nonce: resp.nonce, rejected: rejected.length, detail: message },
        'rejected WDS resources (NACK); kept the last good version of each and applied the rest',
      );
      call.write(
        request(resp.typeUrl, {
          responseNonce: resp.nonce,
          errorDetail: { code: NACK_CODE, message, details: [] },
        }),
      );
    }
    this.#log.debug(
      {
        typeUrl: resp.typeUrl,
        nonce: resp.nonce,
        upserts: resp.resources.length,
        removals: resp.removedResources.length,
      },
      'WDS response applied',
    );
    if (!st.ready) {
      st.ready = true;
      if (!this.#ready && [...this.#types.values()].every((t) => t.ready)) {
        this.#ready = true;
        this.#log.info(this.#opts.store.size, 'WDS state received for every type; ready');
        this.#opts.onReady?.();
      }
    }
  }

  /** Decodes, converts and applies one resource; returns why it was refused, if it was. */
  #applyOne(typeUrl: string, st: TypeState, r: Resource): string | undefined {
    if (r.name === '') return 'resource has no name';
    if (r.resource === undefined) return 'resource has no body';
    if (r.resource.typeUrl !== typeUrl) {
      return `body is a ${r.resource.typeUrl}, expected ${typeUrl}`;
    }
    const converted = decodeAndConvert(typeUrl, r.name, r.resource.value);
    if (!converted.ok) return converted.reason;
    if (converted.value.unknownConditions > 0) {
      this.#log.warn(
        { resource: r.name, conditions: converted.value.unknownConditions },
        'policy has matcher conditions this ztunnel does not understand (is the controller newer?); ' +
          'they count as matching in a DENY and as not matching in an ALLOW',
      );
    }
    const old = st.held.get(r.name);
    if (old !== undefined && !sameTarget(old.target, converted.value.target)) this.#remove(old.target);
    converted.value.apply(this.#opts.store);
    st.held.set(r.name, { version: r.version, target: converted.value.target });
    return undefined;
  }

  #remove(target: Target): void {
    const store = this.#opts.store;
    switch (target.kind) {
      case 'workload':
        store.removeWorkload(target.key);
        break;
      case 'service':
        store.removeService(target.key);
        break;
      case 'policy':
        store.removePolicy(target.key);
        break;
    }
  }

  /** A method, so the check is not narrowed away across the await in #connect. */
  #isClosed(): boolean {
    return this.#state === 'closed';
  }

  status(): WdsClientStatus {
    return {
      address: this.#opts.address,
      state: this.#state,
      ready: this.#ready,
      connects: this.#connects,
      lastDisconnect: this.#lastDisconnect,
      types: [...this.#types].map(([typeUrl, st]) => ({
        typeUrl,
        ready: st.ready,
        versions: Object.fromEntries([...st.held].map(([name, h]) => [name, h.version])),
        lastNonce: st.lastNonce,
        lastSystemVersionInfo: st.lastSystemVersionInfo,
        acks: st.acks,
        nacks: st.nacks,
        lastError: st.lastError,
      })),
    };
  }

  close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    this.#retry = undefined;
    this.#call?.cancel();
    this.#client?.close();
    this.#call = undefined;
    this.#client = undefined;
    this.#log.info('WDS client closed');
  }
}

/** A DeltaDiscoveryRequest with the unused fields empty. */
function request(
  typeUrl: string,
  fields: Partial<
    Pick<DeltaDiscoveryRequest, 'node' | 'initialResourceVersions' | 'responseNonce' | 'errorDetail'>
  >,
): DeltaDiscoveryRequest {
  return {
    typeUrl,
    node: fields.node,
    resourceNamesSubscribe: [],
    resourceNamesUnsubscribe: [],
    initialResourceVersions: fields.initialResourceVersions ?? new Map<string, string>(),
    responseNonce: fields.responseNonce ?? '',
    errorDetail: fields.errorDetail,
    resourceLocatorsSubscribe: [],
    resourceLocatorsUnsubscribe: [],
  };
}

interface Applicable {
  readonly target: Target;
  apply(store: StateStore): void;
  /** Rules, clauses and matches of a policy that carry conditions this ztunnel cannot evaluate. */
  readonly unknownConditions: number;
}

function decodeAndConvert(typeUrl: string, name: string, body: Uint8Array): Converted<Applicable> {
  try {
    if (typeUrl === ADDRESS_TYPE_URL) {
      const c = convertAddress(name, PbAddress.decode(body));
      if (!c.ok) return c;
      const v = c.value;
      return {
        ok: true,
        value:
          v.kind === 'workload'
            ? {
                target: { kind: 'workload', key: v.workload.uid },
                apply: (s) => s.upsertWorkload(v.workload),
                unknownConditions: 0,
              }
            : {
                target: { kind: 'service', key: serviceKey(v.service) },
                apply: (s) => s.upsertService(v.service),
                unknownConditions: 0,
              },
      };
    }
    const decoded = PbAuthorization.decode(body);
    const unknown = findUnknownConditions(body);
    const c = convertAuthorization(name, decoded, unknown);
    if (!c.ok) return c;
    const p = c.value;
    return {
      ok: true,
      value: {
        target: { kind: 'policy', key: policyKey(p) },
        apply: (s) => s.upsertPolicy(p),
        unknownConditions: unknown.rules.size + unknown.clauses.size + unknown.matches.size,
      },
    };
  } catch (err) {
    return {
      ok: false,
      reason: `cannot decode the ${typeUrl.slice(typeUrl.lastIndexOf('/') + 1)}: ${errorMessage(err)}`,
    };
  }
}

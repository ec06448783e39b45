// SPDX-License-Identifier: Apache-2.0
// The WDS service: `envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources`
// on the controller's gRPC server (spec ambient-protocols §3.1–§3.4), serving the resources of
// an XdsResourceStore (type URLs `istio.workload.Address` and `istio.security.Authorization`).
//
// Per stream: the caller is authenticated from the call metadata before any request is looked
// at (UNAUTHENTICATED otherwise; requests that arrive meanwhile wait, up to a bound); then each
// request goes to the stream's DeltaStream. Store changes are debounced (100 ms quiet, 500 ms
// at most by default) and then offered to every stream, which pushes unless it still has a
// response of that type in flight. A client that stops reading or ACKing therefore holds at
// most one response per type, and is told to reconnect once the store's change log has moved
// past it (checklist E.74). One stream's failure (a bad request, a bug) ends that stream only.
//
// The gRPC server itself (listening, TLS, max message sizes) belongs to the caller; see
// WDS_SERVER_CHANNEL_OPTIONS for the options it should be created with.
import {
  status as GrpcStatus,
  type Server,
  type ServerDuplexStream,
  type ServerErrorResponse,
} from '@grpc/grpc-js';
import type { DeltaDiscoveryRequest } from '../../shared/gen/envoy/service/discovery/v3/discovery.ts';
import type { Logger } from '../../shared/telemetry/logger.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Authenticator, Caller } from '../auth/types.ts';
import { Debouncer, type DebounceOptions } from './debounce.ts';
import { DELTA_ADS_SERVICE } from './delta-response.ts';
import { DeltaStream, type StreamStatus, type WdsCounters } from './delta-stream.ts';
import { XdsError, XdsErrorCode } from './errors.ts';
import type { XdsResourceStore } from './resource-store.ts';

/**
 * Options for the grpc.Server that hosts WDS. A reconnecting ztunnel sends the name and version
 * of everything it holds (~80 bytes per resource), beyond grpc-js's 4 MiB default at ~50k
 * resources; 16 MiB is room for ~200k while bounding what one client can make us buffer
 * (checklist E.70).
 */
export const WDS_SERVER_CHANNEL_OPTIONS = {
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
} as const;

export interface WdsServerOptions {
  readonly store: XdsResourceStore;
  readonly authenticator: Authenticator;
  readonly logger: Logger;
  readonly debounce?: DebounceOptions;
  /** Most explicit (on-demand) subscription keys per type per stream (default 20 000). */
  readonly maxSubscriptions?: number;
  /**
   * Requests buffered per stream while its caller is being authenticated (default 4; ztunnel
   * sends two before it hears anything). More ends the stream: unauthenticated clients must not
   * make us hold their messages.
   */
  readonly maxRequestsBeforeAuth?: number;
}

/** Counters for metrics; a fresh plain object on each read. */
export interface WdsMetrics extends Readonly<WdsCounters> {
  /** Streams currently open and authenticated. */
  readonly connectedClients: number;
  /** Streams the server ended with an error: authentication failed, bad node or request, limits. */
  readonly rejectedStreams: number;
}

export interface WdsServer {
  readonly metrics: WdsMetrics;
  /** One entry per connected, authenticated stream. */
  clients(): StreamStatus[];
  /** Publishes pending store changes now instead of at the end of the debounce. */
  flush(): void;
  /**
   * Graceful close: stops pushing and ends every stream with OK, which ztunnel treats as a
   * benign close and reconnects at once (to another replica, or to this one restarted).
   * Shutting the grpc.Server down is the caller's part.
   */
  close(): void;
}

const DEFAULT_MAX_SUBSCRIPTIONS = 20_000;
const DEFAULT_MAX_REQUESTS_BEFORE_AUTH = 4;

type DeltaCall = ServerDuplexStream<DeltaDiscoveryRequest, Buffer>;

function positiveInt(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) {
    throw new XdsError(XdsErrorCode.OPTIONS, `${name} must be a positive integer, got ${v}`);
  }
  return v;
}

/** Registers the delta ADS service on `server`; returns its handle. */
export function addWdsService(server: Server, opts: WdsServerOptions): WdsServer {
  const { store, authenticator } = opts;
  const logger = opts.logger.child({ scope: 'xds.server' });
  const maxSubscriptions = positiveInt(
    'maxSubscriptions',
    opts.maxSubscriptions ?? DEFAULT_MAX_SUBSCRIPTIONS,
  );
  const maxQueued = positiveInt(
    'maxRequestsBeforeAuth',
    opts.maxRequestsBeforeAuth ?? DEFAULT_MAX_REQUESTS_BEFORE_AUTH,
  );
  const counters: WdsCounters = { pushes: 0, resourcesSent: 0, removalsSent: 0, acks: 0, nacks: 0 };
  let rejectedStreams = 0;
  /** Authenticated streams, with their guarded push and their graceful end. */
  const streams = new Map<DeltaStream, { push(typeUrl: string): void; end(): void }>();
  let closed = false;

  // What pushes may bring clients up to: the revision at the last debounce. Whatever is in the
  // store at start is published already.
  const published = new Map<string, number>(store.typeUrls.map((t) => [t, store.revision(t)]));
  const dirty = new Set<string>();
  const debouncer = new Debouncer(opts.debounce ?? {}, () => {
    const types = [...dirty];
    dirty.clear();
    for (const t of types) published.set(t, store.revision(t));
    for (const s of streams.values()) for (const t of types) s.push(t);
  });
  const onChange = (typeUrl: string): void => {
    dirty.add(typeUrl);
    debouncer.trigger();
  };
  store.on('change', onChange);

  const handler = (call: DeltaCall): void => {
    const peer = call.getPeer();
    let stream: DeltaStream | undefined;
    const queued: DeltaDiscoveryRequest[] = [];
    let done = false;

    const dispose = (): void => {
      if (done) return;
      done = true;
      if (stream !== undefined) {
        stream.dispose();
        streams.delete(stream);
        logger.info({ peer, node: stream.node?.id }, 'xDS client disconnected');
      }
    };
    const end = (code: GrpcStatus, details: string): void => {
      if (done) return;
      if (code !== GrpcStatus.OK) rejectedStreams++;
      dispose();
      if (code === GrpcStatus.OK) call.end();
      else {
        const err: ServerErrorResponse = Object.assign(new Error(details), { code, details });
        call.emit('error', err);
      }
    };

    /** A bug in one stream's handling must end that stream, not the server or other streams. */
    const guarded = (f: () => void): void => {
      try {
        f();
      } catch (err) {
        logger.error({ peer, node: stream?.node?.id, err }, 'xDS stream failed');
        end(GrpcStatus.INTERNAL, `internal error (${errorMessage(err)}); reconnect`);
      }
    };

    call.on('data', (req: DeltaDiscoveryRequest) => {
      if (done) return;
      const s = stream;
      if (s !== undefined) guarded(() => s.handle(req));
      else if (queued.length < maxQueued) queued.push(req);
      else
        end(GrpcStatus.RESOURCE_EXHAUSTED, `more than ${maxQueued} requests before authentication completed`);
    });
    // The client half-closed: nothing more will come, so the stream is over for us too.
    call.on('end', () => end(GrpcStatus.OK, 'client closed the stream'));
    call.on('cancelled', dispose);
    call.on('close', dispose);
    call.on('error', dispose);

    const admit = async (): Promise<void> => {
      let caller: Caller;
      try {
        caller = await authenticator.authenticate(call.metadata);
      } catch (err) {
        logger.warn({ peer, err: errorMessage(err) }, 'xDS stream refused: authentication failed');
        end(GrpcStatus.UNAUTHENTICATED, `authentication failed: ${errorMessage(err)}`);
        return;
      }
      if (done) return;
      if (closed) {
        end(GrpcStatus.UNAVAILABLE, 'the xDS server is shutting down; reconnect');
        return;
      }
      const s = new DeltaStream(
        {
          store,
          published: (t) => published.get(t) ?? 0,
          write: (b) => call.write(b),
          end,
          counters,
          logger,
          maxSubscriptions,
        },
        caller,
        peer,
      );
      stream = s;
      streams.set(s, {
        push: (t) => guarded(() => s.push(t)),
        end: () => end(GrpcStatus.OK, 'server closing'),
      });
      for (const req of queued.splice(0)) guarded(() => s.handle(req));
    };

    if (closed) end(GrpcStatus.UNAVAILABLE, 'the xDS server is shutting down; reconnect');
    else void admit();
  };

  server.addService(DELTA_ADS_SERVICE, { deltaAggregatedResources: handler });

  return {
    get metrics(): WdsMetrics {
      return { ...counters, connectedClients: streams.size, rejectedStreams };
    },
    clients: () => [...streams.keys()].map((s) => s.status()),
    flush: () => debouncer.flush(),
    close: () => {
      if (closed) return;
      closed = true;
      store.off('change', onChange);
      debouncer.cancel();
      for (const s of [...streams.values()]) s.end();
      logger.info('xDS server closed');
    },
  };
}

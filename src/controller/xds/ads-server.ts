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
// Memory at scale (10k pods, 100 ztunnels connecting at once): wildcard streams at the same
// revisions share their response bodies (shared-bodies.ts), so the full state is encoded once;
// a large response is written by the server itself in paced slices of that shared body
// (paced-write.ts), so no per-client copy is made and each connection's TLS buffer stays near
// one slice; and large responses start in turn through one server-wide WriteGate
// (write-gate.ts), one per event-loop turn, while those already started drain to the kernel.
// Each stream's writes stay in order, one at a time (stream-writer.ts).
//
// The gRPC server itself (listening, TLS, max message sizes) belongs to the caller; see
// WDS_SERVER_CHANNEL_OPTIONS for the options it should be created with.
import {
  Metadata,
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
import { DELTA_ADS_SERVICE, responseLength, responseParts, type DeltaResponse } from './delta-response.ts';
import { DeltaStream, type StreamStatus, type WdsCounters } from './delta-stream.ts';
import { XdsError, XdsErrorCode } from './errors.ts';
import { http2StreamOf, writePaced } from './paced-write.ts';
import type { XdsResourceStore } from './resource-store.ts';
import { SharedBodies } from './shared-bodies.ts';
import { StreamWriter } from './stream-writer.ts';
import { WriteGate, type WriteGateOptions } from './write-gate.ts';

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
  /** How large responses take turns across streams (write-gate.ts). */
  readonly writeGate?: WriteGateOptions;
}

/** Counters for metrics; a fresh plain object on each read. */
export interface WdsMetrics extends Readonly<WdsCounters> {
  /** Streams currently open and authenticated. */
  readonly connectedClients: number;
  /** Streams the server ended with an error: authentication failed, bad node or request, limits. */
  readonly rejectedStreams: number;
  /** Large responses waiting for their turn to be written. */
  readonly largeWritesWaiting: number;
  /** Large responses that took longer than the gate's hold time to be written (slow clients). */
  readonly largeWritesOverdue: number;
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

type DeltaCall = ServerDuplexStream<DeltaDiscoveryRequest, DeltaResponse>;

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
  const bodies = new SharedBodies(store);
  const gate = new WriteGate(opts.writeGate);
  let warnedUnpaced = false;
  let streamIds = 0;
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
    const h2 = http2StreamOf(call);
    if (h2 === undefined && !warnedUnpaced) {
      warnedUnpaced = true;
      logger.warn(
        'grpc-js does not expose the HTTP/2 stream of a call as the pinned version does; large xDS responses are written by grpc-js in one piece, so each client connection keeps a TLS buffer the size of its flow-control window (paced-write.ts)',
      );
    }
    const writer = new StreamWriter<DeltaResponse>({
      gate,
      length: responseLength,
      write: (r, written) => guarded(() => call.write(r, written)),
      writeLarge: (r, written) => {
        let stop = (): void => undefined;
        guarded(() => {
          if (h2 === undefined) {
            call.write(r, written);
            return;
          }
          call.sendMetadata(new Metadata());
          stop = writePaced(h2, responseParts(r), () => written());
        });
        return stop;
      },
      onOverdue: () =>
        logger.warn(
          { peer, node: stream?.node?.id },
          'a large response to this xDS client is still not written after the hold time (it reads slowly or not at all); other clients no longer wait for it',
        ),
    });

    /** Stops handling the stream's requests and pushes; false when that was done already. */
    const forget = (): boolean => {
      if (done) return false;
      done = true;
      if (stream !== undefined) {
        stream.dispose();
        streams.delete(stream);
        logger.info({ peer, node: stream.node?.id }, 'xDS client disconnected');
      }
      return true;
    };
    /** The call is gone (cancelled, closed, failed): nothing more can be written to it. */
    const dispose = (): void => {
      forget();
      writer.close();
    };
    /** Ends the call with a status, after the response being written, if any. */
    const end = (code: GrpcStatus, details: string): void => {
      if (!forget()) return;
      if (code !== GrpcStatus.OK) rejectedStreams++;
      writer.finish(() => {
        if (code === GrpcStatus.OK) call.end();
        else {
          const err: ServerErrorResponse = Object.assign(new Error(details), { code, details });
          call.emit('error', err);
        }
      });
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
          id: ++streamIds,
          store,
          bodies,
          published: (t) => published.get(t) ?? 0,
          write: (r) => writer.send(r),
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
      return {
        ...counters,
        connectedClients: streams.size,
        rejectedStreams,
        largeWritesWaiting: gate.waiting,
        largeWritesOverdue: gate.overdue,
      };
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

// SPDX-License-Identifier: Apache-2.0
// ztunnel's Prometheus metrics (spec §7.1): the istio_tcp_* connection metrics with upstream's
// traffic labels, in upstream's order, so existing dashboards and Kiali queries work unchanged.
// Unknown values are rendered as "unknown"; principals are full spiffe:// URIs.
import { Registry, registerProcessMetrics, type Counter, type Gauge, type Series } from './prometheus.ts';

export const TRAFFIC_LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
] as const;

export type TrafficLabel = (typeof TRAFFIC_LABELS)[number];
export type TrafficLabels = Record<TrafficLabel, string>;

/** Response flags of spec §7.1; the ones in FAILURE_FLAGS also count as a failed connection. */
export type ResponseFlag =
  | '-'
  | 'DENY'
  | 'CONNECT'
  | 'TLS_FAILURE'
  | 'H2_HANDSHAKE_FAILURE'
  | 'NETWORK_POLICY'
  | 'IDENTITY_ERROR'
  | 'CERT_REVOKED';

const FAILURE_FLAGS: ReadonlySet<ResponseFlag> = new Set<ResponseFlag>([
  'DENY',
  'CONNECT',
  'TLS_FAILURE',
  'H2_HANDSHAKE_FAILURE',
  'NETWORK_POLICY',
  'IDENTITY_ERROR',
  'CERT_REVOKED',
]);

/** The workload attributes the labels are derived from (a subset of the WDS Workload). */
export interface PeerAttributes {
  readonly name?: string;
  readonly namespace?: string;
  readonly workloadName?: string;
  readonly canonicalName?: string;
  readonly canonicalRevision?: string;
  readonly clusterId?: string;
}

export interface ConnectionLabelsInput {
  readonly reporter: 'source' | 'destination';
  readonly source?: PeerAttributes | undefined;
  readonly sourcePrincipal?: string | undefined;
  readonly destination?: PeerAttributes | undefined;
  readonly destinationPrincipal?: string | undefined;
  readonly destinationService?:
    { readonly hostname: string; readonly namespace: string; readonly name: string } | undefined;
  readonly mutualTls: boolean;
}

const UNKNOWN = 'unknown';

function or(v: string | undefined): string {
  return v === undefined || v === '' ? UNKNOWN : v;
}

/** Builds the label set of a connection, except response_flags, which is known only at the end. */
export function connectionLabels(input: ConnectionLabelsInput): Omit<TrafficLabels, 'response_flags'> {
  const s = input.source;
  const d = input.destination;
  // WDS elides empty strings, so '' means "not set": fall back as upstream does (canonical name →
  // workload name → pod name; revision → "latest"; cluster → "Kubernetes").
  const workload = (p: PeerAttributes | undefined): string | undefined => first(p?.workloadName, p?.name);
  const service = (p: PeerAttributes | undefined): string | undefined => first(p?.canonicalName, workload(p));
  const revision = (p: PeerAttributes | undefined): string | undefined =>
    p === undefined ? undefined : (first(p.canonicalRevision) ?? 'latest');
  const cluster = (p: PeerAttributes | undefined): string | undefined =>
    p === undefined ? undefined : (first(p.clusterId) ?? 'Kubernetes');
  return {
    reporter: input.reporter,
    source_workload: or(workload(s)),
    source_canonical_service: or(service(s)),
    source_canonical_revision: or(revision(s)),
    source_workload_namespace: or(s?.namespace),
    source_principal: or(input.sourcePrincipal),
    source_app: or(service(s)),
    source_version: or(revision(s)),
    source_cluster: or(cluster(s)),
    destination_service: or(input.destinationService?.hostname),
    destination_service_namespace: or(input.destinationService?.namespace),
    destination_service_name: or(input.destinationService?.name),
    destination_workload: or(workload(d)),
    destination_canonical_service: or(service(d)),
    destination_canonical_revision: or(revision(d)),
    destination_workload_namespace: or(d?.namespace),
    destination_principal: or(input.destinationPrincipal),
    destination_app: or(service(d)),
    destination_version: or(revision(d)),
    destination_cluster: or(cluster(d)),
    request_protocol: 'tcp',
    connection_security_policy: input.mutualTls ? 'mutual_tls' : UNKNOWN,
  };
}

function first(...vals: (string | undefined)[]): string | undefined {
  return vals.find((v) => v !== undefined && v !== '');
}

/**
 * The metrics of one ztunnel process. One registry per process; tests create their own.
 * Byte counters are incremented when a connection closes (not per chunk), which keeps the data
 * path free of per-chunk work.
 */
export class ZtunnelMetrics {
  readonly registry: Registry;
  readonly #opened: Counter<TrafficLabel>;
  readonly #closed: Counter<TrafficLabel>;
  readonly #failed: Counter<TrafficLabel>;
  readonly #received: Counter<TrafficLabel>;
  readonly #sent: Counter<TrafficLabel>;
  readonly #socketsOpen: Gauge<'reporter'>;
  readonly #socketsByReporter = new Map<string, Series>();
  readonly activeProxies: Gauge;
  readonly pendingProxies: Gauge;
  readonly proxiesStarted: Counter;
  readonly proxiesStopped: Counter;
  /**
   * Connections refused because a certificate of the peer's path is revoked (spec §7.1):
   * reporter=source when this ztunnel refused a destination (outbound, per connection),
   * reporter=destination when it refused a client's handshake (inbound, per TLS session).
   */
  readonly crlRejections: Counter<'reporter'>;
  /** New connections refused under memory pressure, by the listener that took them (overload.ts). */
  readonly overloadShed: Counter<'listener'>;
  /** 1 while ztunnel sheds new connections under memory pressure. */
  readonly overloadShedding: Gauge;

  constructor(opts: { defaultMetrics?: boolean; version?: string } = {}) {
    const r = (this.registry = new Registry());
    const labelNames = TRAFFIC_LABELS;
    this.#opened = r.counter({
      name: 'istio_tcp_connections_opened_total',
      help: 'The total number of TCP connections opened',
      labelNames,
    });
    this.#closed = r.counter({
      name: 'istio_tcp_connections_closed_total',
      help: 'The total number of TCP connections closed',
      labelNames,
    });
    this.#failed = r.counter({
      name: 'istio_tcp_connections_failed_total',
      help: 'The total number of TCP connections that failed to establish (unstable)',
      labelNames,
    });
    this.#received = r.counter({
      name: 'istio_tcp_received_bytes_total',
      help: 'The size of total bytes received during request in case of a TCP connection',
      labelNames,
    });
    this.#sent = r.counter({
      name: 'istio_tcp_sent_bytes_total',
      help: 'The size of total bytes sent during response in case of a TCP connection',
      labelNames,
    });
    this.#socketsOpen = r.gauge({
      name: 'istio_tcp_sockets_open',
      help: 'The current number of open TCP sockets (unstable)',
      labelNames: ['reporter'],
    });
    const build = r.gauge({
      name: 'istio_build',
      help: 'Istio component build info',
      labelNames: ['component', 'tag'],
    });
    build.set({ component: 'ztunnel', tag: opts.version ?? '0.1.0' }, 1);
    this.activeProxies = r.gauge({
      name: 'workload_manager_active_proxy_count',
      help: 'The total number current workloads with active proxies',
    });
    this.pendingProxies = r.gauge({
      name: 'workload_manager_pending_proxy_count',
      help: 'The total number current workloads with pending proxies',
    });
    this.proxiesStarted = r.counter({
      name: 'workload_manager_proxies_started_total',
      help: 'The total number of proxies that were started',
    });
    this.proxiesStopped = r.counter({
      name: 'workload_manager_proxies_stopped_total',
      help: 'The total number of proxies that were stopped',
    });
    this.crlRejections = r.counter({
      name: 'istio_crl_policy_rejections_total',
      help: 'The total number of connections rejected because a certificate of the peer is revoked by a CRL',
      labelNames: ['reporter'],
    });
    this.overloadShed = r.counter({
      name: 'ztunnel_overload_shed_connections_total',
      help: 'New connections refused because memory use is near its limit',
      labelNames: ['listener'],
    });
    this.overloadShedding = r.gauge({
      name: 'ztunnel_overload_shedding',
      help: '1 while new connections are refused because memory use is near its limit',
    });
    // process_* gauges and counters, computed on scrape (no timers).
    if (opts.defaultMetrics === true) registerProcessMetrics(r);
  }

  /** Records a connection's start; call the returned function exactly once when it ends. */
  connectionOpened(labels: Omit<TrafficLabels, 'response_flags'>): ConnectionRecorder {
    // The five traffic families share TRAFFIC_LABELS: the label set is rendered once per
    // connection (twice when it ends with a flag), not once per increment.
    const base = this.#opened.series({ ...labels, response_flags: '-' });
    this.#opened.incSeries(base);
    const sockets = this.#socketSeries(labels.reporter);
    this.#socketsOpen.addToSeries(sockets, 1);
    let done = false;
    return (result) => {
      if (done) return;
      done = true;
      const final =
        result.flag === '-' ? base : this.#opened.series({ ...labels, response_flags: result.flag });
      this.#socketsOpen.addToSeries(sockets, -1);
      this.#closed.incSeries(final);
      if (FAILURE_FLAGS.has(result.flag)) this.#failed.incSeries(final);
      if (result.flag === 'CERT_REVOKED') this.crlRejections.inc({ reporter: labels.reporter });
      // Istio's meaning, whichever side reports: "received" counts the request direction (client
      // to server) and "sent" the response direction. Upstream ztunnel gets there by flipping its
      // own sent/received for reporter=source (spec §7.1); we count in those terms directly.
      if (result.bytesFromClient > 0) this.#received.incSeries(final, result.bytesFromClient);
      if (result.bytesToClient > 0) this.#sent.incSeries(final, result.bytesToClient);
    };
  }

  #socketSeries(reporter: string): Series {
    let s = this.#socketsByReporter.get(reporter);
    if (s === undefined) {
      s = this.#socketsOpen.series({ reporter });
      this.#socketsByReporter.set(reporter, s);
    }
    return s;
  }

  /** A failure before any connection labels are known (an early deny): counted as failed and closed. */
  connectionRefused(labels: Omit<TrafficLabels, 'response_flags'>, flag: ResponseFlag): void {
    this.connectionOpened(labels)({ flag, bytesFromClient: 0, bytesToClient: 0 });
  }

  render(): Promise<{ contentType: string; body: string }> {
    return Promise.resolve({ contentType: this.registry.contentType, body: this.registry.metrics() });
  }
}

export type ConnectionRecorder = (result: {
  flag: ResponseFlag;
  bytesFromClient: number;
  bytesToClient: number;
}) => void;

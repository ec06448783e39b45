// SPDX-License-Identifier: Apache-2.0
import t from 'tap';
import {
  ZtunnelMetrics,
  connectionLabels,
  TRAFFIC_LABELS,
} from '../../../../ztunnel/src/telemetry/metrics.ts';

const client = {
  name: 'client-0',
  namespace: 'a',
  workloadName: 'client',
  canonicalName: 'client',
  canonicalRevision: 'v1',
};
const server = { name: 'server-0', namespace: 'b', workloadName: 'server' };

t.test('labels follow upstream names and order; unknown values are "unknown"', async (t) => {
  const l = connectionLabels({
    reporter: 'destination',
    source: client,
    sourcePrincipal: 'spiffe://cluster.local/ns/a/sa/c',
    destination: server,
    mutualTls: true,
  });
  t.same(Object.keys({ ...l, response_flags: '-' }).sort(), [...TRAFFIC_LABELS].sort());
  t.equal(l.source_workload, 'client');
  t.equal(l.source_canonical_revision, 'v1');
  t.equal(l.destination_canonical_revision, 'latest');
  t.equal(l.source_principal, 'spiffe://cluster.local/ns/a/sa/c');
  t.equal(l.destination_principal, 'unknown');
  t.equal(l.destination_service, 'unknown');
  t.equal(l.connection_security_policy, 'mutual_tls');
  const elided = connectionLabels({
    reporter: 'source',
    source: {
      name: 'pod-x',
      namespace: 'a',
      workloadName: '',
      canonicalName: '',
      canonicalRevision: '',
      clusterId: '',
    },
    mutualTls: true,
  });
  t.equal(elided.source_workload, 'pod-x', "WDS's empty strings fall back like absent values");
  t.equal(elided.source_canonical_service, 'pod-x');
  t.equal(elided.source_canonical_revision, 'latest');
  t.equal(elided.source_cluster, 'Kubernetes');
  const plain = connectionLabels({ reporter: 'destination', mutualTls: false });
  t.equal(plain.source_workload, 'unknown');
  t.equal(plain.connection_security_policy, 'unknown');
});

t.test(
  'connection counters: opened, closed, failed only for failure flags, bytes by direction',
  async (t) => {
    const m = new ZtunnelMetrics();
    const labels = connectionLabels({
      reporter: 'source',
      source: client,
      destination: server,
      mutualTls: true,
    });
    const done = m.connectionOpened(labels);
    let body = (await m.render()).body;
    t.match(
      body,
      /istio_tcp_connections_opened_total\{reporter="source",source_workload="client",[^}]*response_flags="-"[^}]*\} 1/,
    );
    t.match(body, /istio_tcp_sockets_open\{reporter="source"\} 1/);
    done({ flag: '-', bytesFromClient: 100, bytesToClient: 2500 });
    done({ flag: '-', bytesFromClient: 100, bytesToClient: 2500 }); // second call ignored
    body = (await m.render()).body;
    t.match(body, /istio_tcp_connections_closed_total\{[^}]*\} 1\n/);
    t.match(body, /istio_tcp_received_bytes_total\{[^}]*\} 100\n/);
    t.match(body, /istio_tcp_sent_bytes_total\{[^}]*\} 2500\n/);
    t.match(body, /istio_tcp_sockets_open\{reporter="source"\} 0/);
    t.notMatch(body, /istio_tcp_connections_failed_total\{/);

    m.connectionRefused(connectionLabels({ reporter: 'destination', mutualTls: false }), 'DENY');
    body = (await m.render()).body;
    t.match(
      body,
      /istio_tcp_connections_failed_total\{reporter="destination",[^}]*response_flags="DENY"[^}]*\} 1/,
    );
    t.match(body, /istio_build\{component="ztunnel",tag="[^"]+"\} 1/);
  },
);

// SPDX-License-Identifier: Apache-2.0
import t from 'tap';
import { Writable } from 'node:stream';
import { startAdminServers } from '../../../../ztunnel/src/admin/servers.ts';
import { Readiness } from '../../../../ztunnel/src/admin/readiness.ts';
import { ZtunnelMetrics } from '../../../../ztunnel/src/telemetry/metrics.ts';
import { AccessLog, createLogger } from '../../../../ztunnel/src/telemetry/access-log.ts';

async function get(port: number, path: string, method = 'GET'): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: res.status, body: await res.text() };
}

t.test('admin, metrics and readiness endpoints', async (t) => {
  const readiness = new Readiness();
  const done = readiness.register('state manager');
  const metrics = new ZtunnelMetrics();
  let level = 'info';
  let quits = 0;
  const s = await startAdminServers(
    {
      configDump: () => ({ workloads: [{ uid: 'cluster//Pod/a/x' }] }),
      metrics: () => metrics.render(),
      readiness,
      quit: () => quits++,
      logLevel: (l) => (l === undefined ? level : (level = l)),
    },
    { adminPort: 0, metricsPort: 0, readinessPort: 0, metricsHost: '127.0.0.1' },
  );
  t.teardown(() => s.close());
  t.equal(s.admin.address, '127.0.0.1', 'admin is loopback-only');

  let r = await get(s.readiness.port, '/healthz/ready');
  t.equal(r.status, 500);
  t.match(r.body, 'not ready, pending: {state manager}');
  done();
  r = await get(s.readiness.port, '/healthz/ready');
  t.same(r, { status: 200, body: 'ready\n' });

  r = await get(s.admin.port, '/config_dump');
  t.same(JSON.parse(r.body), { workloads: [{ uid: 'cluster//Pod/a/x' }] });

  r = await get(s.metrics.port, '/stats/prometheus');
  t.match(r.body, /istio_build/);
  r = await get(s.metrics.port, '/metrics');
  t.match(r.body, /workload_manager_active_proxy_count 0/);

  r = await get(s.admin.port, '/logging?level=bogus', 'POST');
  t.equal(r.status, 400);
  r = await get(s.admin.port, '/logging?level=debug', 'POST');
  t.equal(level, 'debug');
  r = await get(s.admin.port, '/quitquitquit');
  t.equal(r.status, 405, 'quit needs POST');
  await get(s.admin.port, '/quitquitquit', 'POST');
  await new Promise((res) => setImmediate(res));
  t.equal(quits, 1);
  r = await get(s.admin.port, '/nope');
  t.equal(r.status, 404);
});

t.test('access log lines are JSON with upstream field names; values cannot inject fields', async (t) => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      cb();
    },
  });
  const log = new AccessLog(createLogger({ destination: sink }));
  log.complete({
    direction: 'inbound',
    srcAddr: '198.18.1.2:4000',
    dstAddr: '198.18.2.3:15008',
    dstHboneAddr: '198.18.2.3:8080',
    srcIdentity: 'spiffe://cluster.local/ns/a/sa/c',
    srcWorkload: 'evil\n{"injected":true}',
    bytesSent: 5,
    bytesRecv: 7,
    durationMs: 12.4,
  });
  log.failed({ direction: 'outbound', srcAddr: 'a', dstAddr: 'b', error: 'denied' });
  await new Promise((res) => setImmediate(res));
  t.equal(lines.length, 2, 'a newline inside a value does not create a line');
  const first = JSON.parse(lines[0]!) as Record<string, unknown>;
  t.equal(first.message, 'connection complete');
  t.equal(first.scope, 'access');
  t.equal(first['dst.hbone_addr'], '198.18.2.3:8080');
  t.equal(first.duration, '12ms');
  t.equal(first['src.workload'], 'evil\n{"injected":true}');
  t.notOk('injected' in first);
  const second = JSON.parse(lines[1]!) as Record<string, unknown>;
  t.equal(second.level, 'warn');
  t.equal(second.message, 'connection failed');
});

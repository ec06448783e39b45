// SPDX-License-Identifier: Apache-2.0
// Unit tests for the PERFORMANCE.md B.1 tool layer of the bench (bench/b1.ts, bench/tools.ts,
// bench/services.ts): the parsers of wrk's and sockperf's output, run against output captured
// from the real tools (Debian 12: wrk 4.1.0, sockperf 3.7, nginx 1.22; sockperf colours some
// lines with ANSI escapes, kept as captured), the command lines as B.1 wrote them, nginx's
// generated configuration, the missing-tool messages and the service lists the tunnel paths map.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  httpUrl,
  nginxConfig,
  parseSockperf,
  parseWrk,
  sockperfClientArgs,
  sockperfServerArgs,
  stripAnsi,
  toolSeconds,
  ToolOutputError,
  wrkArgs,
  wrkTimeUs,
} from '../../../bench/b1.ts';
import { serviceList, servicesFrom, SERVICE_PROBE } from '../../../bench/services.ts';
import {
  b1Available,
  deathSignalPrefix,
  findB1Tools,
  missingToolProblem,
  missingTools,
  toolMissingMessage,
} from '../../../bench/tools.ts';

// ---- Output captured from the real tools on this machine class (not edited). ----

// wrk -t2 -c32 -d2s --latency against nginx (keep-alive), loopback.
const WRK_C32 = `Running 2s test @ http://127.0.0.1:18080/1k.bin
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.18ms    0.91ms  11.76ms   90.77%
    Req/Sec    14.62k     3.14k   22.69k    67.50%
  Latency Distribution
     50%    1.00ms
     75%    1.34ms
     90%    1.87ms
     99%    5.13ms
  58210 requests in 2.00s, 70.17MB read
Requests/sec:  29039.68
Transfer/sec:     35.01MB
`;

// wrk -t2 -c8 -d2s -H 'Connection: close' against nginx.
const WRK_CLOSE = `Running 2s test @ http://127.0.0.1:18080/1k.bin
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   683.12us    1.08ms  15.35ms   94.49%
    Req/Sec     6.12k     1.56k   10.47k    77.50%
  24344 requests in 2.00s, 29.23MB read
Requests/sec:  12160.70
Transfer/sec:     14.60MB
`;

// wrk -t1 -c2 -d1s against a path nginx does not have (every answer a 404).
const WRK_404 = `Running 1s test @ http://127.0.0.1:18080/missing
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   127.97us  226.57us   4.71ms   96.03%
    Req/Sec    18.63k     3.07k   24.73k    81.82%
  20360 requests in 1.10s, 5.98MB read
  Non-2xx or 3xx responses: 20360
Requests/sec:  18509.39
Transfer/sec:      5.44MB
`;

// wrk -t2 -c32 -d1s --latency against a port that does not speak HTTP (sockperf server).
const WRK_SOCKERR = `Running 1s test @ http://127.0.0.1:11111/1k
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  0 requests in 1.10s, 0.00B read
  Socket errors: connect 0, read 23330, write 0, timeout 0
Requests/sec:      0.00
Transfer/sec:       0.00B
`;

// wrk -t1 -c1 -d1s against a closed port: stderr only, exit code 1.
const WRK_REFUSED = `unable to connect to 127.0.0.1:1 Connection refused
`;

// sockperf ping-pong --tcp -m 1024 --mps=1000 --full-rtt -t 2 against sockperf server --tcp.
const SP_OK = `sockperf: \x1b[2;35m== version #3.7-no.git == \x1b[0m
sockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)

[ 0] IP = 127.0.0.1       PORT = 11111 # TCP
sockperf: Warmup stage (sending a few dummy messages)...
sockperf: Starting test...
sockperf: Test end (interrupted by timer)
sockperf: Test ended
sockperf: [Total Run] RunTime=2.001 sec; Warm up time=400 msec; SentMessages=2000; ReceivedMessages=1999
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=1.548 sec; SentMessages=1549; ReceivedMessages=1549
sockperf: \x1b[2;35m====> avg-rtt=82.879 (std-dev=383.662)\x1b[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Round trip is 82.879 usec
sockperf: \x1b[2;35mTotal 1549 observations\x1b[0m; each percentile contains 15.49 observations
sockperf: ---> <MAX> observation = 7798.965
sockperf: ---> percentile 99.999 = 7798.965
sockperf: ---> percentile 99.990 = 7798.965
sockperf: ---> percentile 99.900 = 4843.405
sockperf: ---> percentile 99.000 = 1398.520
sockperf: ---> percentile 90.000 =   92.436
sockperf: ---> percentile 75.000 =   38.056
sockperf: ---> percentile 50.000 =   31.426
sockperf: ---> percentile 25.000 =   22.803
sockperf: ---> <MIN> observation =   13.930
`;

// The same without --full-rtt, -t 1: one-way latency (half the round trip).
const SP_ONEWAY = `sockperf: \x1b[2;35m== version #3.7-no.git == \x1b[0m
sockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)

[ 0] IP = 127.0.0.1       PORT = 11115 # TCP
sockperf: Warmup stage (sending a few dummy messages)...
sockperf: Starting test...
sockperf: Test end (interrupted by timer)
sockperf: Test ended
sockperf: [Total Run] RunTime=1.000 sec; Warm up time=400 msec; SentMessages=1001; ReceivedMessages=1001
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=0.549 sec; SentMessages=550; ReceivedMessages=550
sockperf: \x1b[2;35m====> avg-latency=109.517 (std-dev=106.106)\x1b[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Latency is 109.517 usec
sockperf: \x1b[2;35mTotal 550 observations\x1b[0m; each percentile contains 5.50 observations
sockperf: ---> <MAX> observation = 1611.542
sockperf: ---> percentile 99.999 = 1611.542
sockperf: ---> percentile 99.990 = 1611.542
sockperf: ---> percentile 99.900 = 1584.131
sockperf: ---> percentile 99.000 =  311.161
sockperf: ---> percentile 90.000 =  176.817
sockperf: ---> percentile 75.000 =  155.606
sockperf: ---> percentile 50.000 =   78.972
sockperf: ---> percentile 25.000 =   63.138
sockperf: ---> <MIN> observation =   31.201
`;

// sockperf ping-pong against a closed port: an ERROR line, and exit code 0.
const SP_FAIL = `sockperf: \x1b[2;35m== version #3.7-no.git == \x1b[0m
sockperf: ERROR: Can\`t connect socket (errno=111 Connection refused)
`;

t.test('wrk: requests/s, request count, duration, latency distribution', async (t) => {
  const r = parseWrk(WRK_C32);
  t.equal(r.perS, 29039.68);
  t.equal(r.requests, 58210);
  t.equal(r.seconds, 2);
  t.equal(r.threads, 2);
  t.equal(r.connections, 32);
  t.same(r.latencyUs, { p50: 1000, p75: 1340, p90: 1870, p99: 5130 });
  t.same(r.socketErrors, { connect: 0, read: 0, write: 0, timeout: 0 });
  t.equal(r.non2xx, 0);
});

t.test('wrk: Connection: close run (no --latency), non-2xx answers, socket errors', async (t) => {
  const close = parseWrk(WRK_CLOSE);
  t.equal(close.perS, 12160.7);
  t.equal(close.requests, 24344);
  t.equal(close.connections, 8);
  t.same(close.latencyUs, {}, 'no distribution without --latency');

  const notFound = parseWrk(WRK_404);
  t.equal(notFound.non2xx, 20360);
  t.equal(notFound.requests, 20360);
  t.equal(notFound.seconds, 1.1);

  const broken = parseWrk(WRK_SOCKERR);
  t.equal(broken.requests, 0);
  t.equal(broken.perS, 0);
  t.same(broken.socketErrors, { connect: 0, read: 23330, write: 0, timeout: 0 });
  t.same(broken.latencyUs, { p50: 0, p75: 0, p90: 0, p99: 0 });
});

t.test('wrk: output without a summary throws with its last lines', async (t) => {
  t.throws(() => parseWrk(WRK_REFUSED), ToolOutputError);
  t.throws(
    () => parseWrk(WRK_REFUSED),
    /no "Requests\/sec" summary[\s\S]*unable to connect to 127\.0\.0\.1:1/,
  );
  t.throws(() => parseWrk(''), /wrk: no "Requests\/sec"/);
  // Cut before the summary (killed mid-run).
  t.throws(() => parseWrk(WRK_C32.split('Requests/sec')[0]!), ToolOutputError);
});

t.test('wrk time units', async (t) => {
  t.equal(wrkTimeUs('683.12', 'us'), 683.12);
  t.equal(wrkTimeUs('1.08', 'ms'), 1080);
  t.equal(wrkTimeUs('2.00', 's'), 2e6);
  t.equal(wrkTimeUs('1.00', 'm'), 60e6);
  t.throws(() => wrkTimeUs('1', 'd'), /bad wrk time/);
});

t.test('sockperf: round-trip percentiles from the full-rtt summary (ANSI escapes ignored)', async (t) => {
  const r = parseSockperf(SP_OK);
  t.equal(r.fullRtt, true);
  t.equal(r.p50Us, 31.426);
  t.equal(r.p90Us, 92.436);
  t.equal(r.p99Us, 1398.52);
  t.equal(r.p999Us, 4843.405);
  t.equal(r.maxUs, 7798.965);
  t.equal(r.observations, 1549);
  t.equal(r.validSeconds, 1.548);
  t.equal(r.sent, 1549);
  t.equal(r.received, 1549);
  t.equal(r.avgUs, 82.879);
  t.same([r.dropped, r.duplicated, r.outOfOrder], [0, 0, 0]);
  t.same([...r.percentilesUs.keys()], [99.999, 99.99, 99.9, 99, 90, 75, 50, 25]);
});

t.test('sockperf: one-way output is recognised as such', async (t) => {
  const r = parseSockperf(SP_ONEWAY);
  t.equal(r.fullRtt, false);
  t.equal(r.p50Us, 78.972);
  t.equal(r.avgUs, 109.517);
  t.equal(r.observations, 550);
});

t.test('sockperf: an ERROR line (exit code 0) or a missing summary throws', async (t) => {
  t.throws(() => parseSockperf(SP_FAIL), /sockperf: reported an error: Can`t connect socket \(errno=111/);
  // Killed before the statistics.
  t.throws(() => parseSockperf(SP_OK.split('Test ended')[0]!), /no percentile summary/);
  t.throws(() => parseSockperf(SP_OK.replace('percentile 99.000', 'percentile 98.000')), /no percentile/);
  t.throws(
    () => parseSockperf(SP_OK.replace('Total 1549 observations', 'Total 0 observations')),
    /no percentile/,
  );
  t.equal(stripAnsi('a\x1b[2;35mb\x1b[0mc'), 'abc');
});

t.test('command lines are B.1’s, with the window in whole seconds', async (t) => {
  const target = { host: '198.18.1.5', port: 18080 };
  t.same(wrkArgs('rps', target, 5), ['-t2', '-c32', '-d5s', '--latency', 'http://198.18.1.5:18080/1k']);
  t.same(wrkArgs('conns', target, 2), [
    '-t2',
    '-c8',
    '-d2s',
    '-H',
    'Connection: close',
    'http://198.18.1.5:18080/1k',
  ]);
  t.same(sockperfClientArgs({ host: '127.0.0.1', port: 11111 }, 5), [
    'ping-pong',
    '--tcp',
    '-i',
    '127.0.0.1',
    '-p',
    '11111',
    '-m',
    '1024',
    '--mps=1000',
    '--full-rtt',
    '-t',
    '5',
  ]);
  t.same(sockperfServerArgs({ host: '0.0.0.0', port: 11111 }), [
    'server',
    '--tcp',
    '-i',
    '0.0.0.0',
    '-p',
    '11111',
  ]);
  t.equal(httpUrl({ host: '::1', port: 80 }), 'http://[::1]:80/1k');
  t.equal(toolSeconds(5000), 5);
  t.equal(toolSeconds(2000), 2);
  t.equal(toolSeconds(2400), 2);
  t.equal(toolSeconds(2500), 3);
  t.equal(toolSeconds(300), 1, 'at least 1 s');
});

t.test('nginx config: foreground, one worker, no access log, everything under the prefix', async (t) => {
  const conf = nginxConfig({
    prefix: '/tmp/mesh-bench-x/b1-host/nginx/',
    listen: { host: '127.0.0.1', port: 40123 },
  });
  for (const line of [
    'daemon off;',
    'master_process off;',
    'worker_processes 1;',
    'pid /tmp/mesh-bench-x/b1-host/nginx/nginx.pid;',
    'error_log stderr warn;',
    'access_log off;',
    'keepalive_requests 100000000;',
    'client_body_temp_path /tmp/mesh-bench-x/b1-host/nginx/client_body;',
    'listen 127.0.0.1:40123 backlog=4096;',
    'root /tmp/mesh-bench-x/b1-host/nginx/html;',
  ]) {
    t.ok(
      conf.split('\n').some((l) => l.trim() === line),
      line,
    );
  }
  // Nothing outside the prefix: no /var/lib/nginx, /run/nginx.pid or /var/log/nginx.
  const paths = [...conf.matchAll(/\s(\/[^\s;]+)/g)].map((m) => m[1]!);
  t.ok(paths.length >= 7);
  t.ok(
    paths.every((p) => p.startsWith('/tmp/mesh-bench-x/b1-host/nginx/')),
    paths.join(' '),
  );
  // Balanced braces.
  t.equal([...conf].filter((c) => c === '{').length, [...conf].filter((c) => c === '}').length);
});

t.test('missing tools: the package to install, the rows not measured', async (t) => {
  t.equal(toolMissingMessage('wrk'), 'wrk not found: apt-get install wrk');
  t.equal(toolMissingMessage('nginx'), 'nginx not found: apt-get install nginx-light');
  t.equal(toolMissingMessage('sockperf'), 'sockperf not found: apt-get install sockperf');
  const none = {};
  t.same(missingTools(none, { http: true, latency: true }), ['wrk', 'nginx', 'sockperf']);
  t.same(missingTools(none, { http: false, latency: true }), ['sockperf']);
  t.same(missingTools(none, { http: false, latency: false }), []);
  t.same(missingTools({ wrk: '/usr/bin/wrk' }, { http: true, latency: false }), ['nginx']);
  t.match(
    missingToolProblem('wrk'),
    /^wrk not found: apt-get install wrk — rps_c32_1k, .*new_connections_per_s .*not measured; scripts\/bootstrap\.sh installs it$/,
  );
  t.match(missingToolProblem('sockperf'), /rtt_p50_at_1000rps, rtt_p99_at_1000rps, added_rtt_\*/);
  t.same(b1Available({ wrk: 'w', sockperf: 's' }), { http: false, latency: true }, 'wrk alone has no server');
  t.same(b1Available({ wrk: 'w', nginx: 'n', sockperf: 's' }), { http: true, latency: true });
  t.same(deathSignalPrefix({ setpriv: '/usr/bin/setpriv' }), [
    '/usr/bin/setpriv',
    '--pdeathsig',
    'KILL',
    '--',
  ]);
  t.same(deathSignalPrefix({}), []);
});

t.test('tool lookup: MESH_BENCH_<TOOL> names the binary; a wrong name is missing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'b1-tools-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fake = join(dir, 'my-wrk');
  writeFileSync(fake, '#!/bin/sh\n');
  chmodSync(fake, 0o755);
  const notExec = join(dir, 'not-exec');
  writeFileSync(notExec, '');
  const tools = findB1Tools({
    PATH: dir,
    MESH_BENCH_WRK: fake,
    MESH_BENCH_NGINX: notExec,
    MESH_BENCH_SOCKPERF: join(dir, 'nope'),
  });
  t.equal(tools.wrk, fake);
  t.equal(tools.nginx, undefined, 'not executable');
  t.equal(tools.sockperf, undefined, 'absent');
});

t.test('services: the list a tunnel maps, and back', async (t) => {
  const echo = { host: '127.0.0.1', port: 1 };
  const source = { host: '127.0.0.1', port: 2 };
  const http = { host: '127.0.0.1', port: 3 };
  const sockperf = { host: '127.0.0.1', port: 4 };
  t.same(
    serviceList({ echo, source }).map((s) => s.name),
    ['echo', 'source'],
    'without the B.1 tools',
  );
  const all = serviceList({ sockperf, echo, http, source });
  t.same(
    all.map((s) => s.name),
    ['echo', 'source', 'http', 'sockperf'],
  );
  t.same(servicesFrom(Object.fromEntries(all.map((s) => [s.name, s.target]))), {
    echo,
    source,
    http,
    sockperf,
  });
  t.same(servicesFrom({ echo, source }), { echo, source });
  t.throws(() => servicesFrom({ echo, http }), /echo and source/);
  t.same(SERVICE_PROBE, { echo: 'echo', source: 'source', http: 'http', sockperf: 'open' });
});

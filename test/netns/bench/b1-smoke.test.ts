// SPDX-License-Identifier: Apache-2.0
// End-to-end smoke test of the PERFORMANCE.md B.1 tools in the bench's netns group: nginx and
// sockperf server run inside each server pod (plain and meshed test beds), wrk and sockperf
// ping-pong inside the client pod; pod-stunnel and pod-node-relay map a relayed service to each of
// them and the ztunnel path reaches them transparently at the server pod's IP. `--duration 1` keeps it short.
// The tools are required (scripts/bootstrap.sh installs them). Afterwards no tool server and no
// namespace of the run may be left. Nothing about speed is asserted.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ownNamespaces } from '../../../bench/paths/pods.ts';
import {
  leftoverToolServers,
  readRecords,
  requireB1Tools,
  runBench,
  toolServerPids,
} from '../../helpers/run-bench.ts';

/** Two test beds, a ztunnel build if dist is stale, 4 paths × 4 short windows. */
const RUN_TIMEOUT_MS = 300_000;

if (process.getuid?.() !== 0) throw new Error('this suite needs root (network namespaces); run it as root');
requireB1Tools();

t.test(
  'pod-direct, pod-stunnel, pod-node-relay and ztunnel measured with wrk and sockperf inside the pods',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-b1-netns-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const json = join(dir, 'netns.jsonl');
    const out = await runBench(
      ['--paths', 'netns', '--metrics', 'rps,latency', '--duration', '1', '--json', json],
      RUN_TIMEOUT_MS,
    );
    t.equal(out.code, 0, 'the bench measured what it was asked', { stderr: out.stderr.slice(-3000) });

    const records = readRecords(json);
    for (const path of ['pod-direct', 'pod-stunnel', 'pod-node-relay', 'ztunnel']) {
      for (const metric of [
        'rps_c32_1k',
        'rtt_p50_at_1000rps',
        'rtt_p99_at_1000rps',
        'rps_c32_1k_node_echo',
      ]) {
        const r = records.find((x) => x.path === path && x.metric === metric);
        t.ok(r !== undefined && Number.isFinite(r.value) && r.value > 0, `${path} ${metric}`);
      }
    }
    for (const path of ['pod-stunnel', 'pod-node-relay', 'ztunnel']) {
      const r = records.find((x) => x.path === path && x.metric === 'rps_c32_1k');
      t.ok(typeof r?.ratio_to_direct === 'number', `${path} rps_c32_1k has a ratio against pod-direct`);
      t.ok(records.some((x) => x.path === path && x.metric === 'tunnel_cpu_cores_per_1000rps'));
    }
    t.match(out.stdout, /requests\/s \(wrk → nginx\) ≥ 0\.50× pod-direct\s+[\d.]+×\s+(pass|BELOW)/);
    t.match(out.stdout, /added p50 \(sockperf\) ≤ 250 µs\s+-?[\d.]+ µs\s+(pass|BELOW)/);

    // One nginx and one sockperf server in each server pod, none on the host.
    t.same([...toolServerPids(out.stderr).keys()].sort(), [
      'nginx-mesh-server',
      'nginx-plain-server',
      'sockperf-server-mesh-server',
      'sockperf-server-plain-server',
    ]);
    t.same(leftoverToolServers(out.stderr), [], 'no nginx or sockperf server left running');
    const namespaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n !== '');
    t.same(ownNamespaces(namespaces, out.pid), [], 'no namespace of the run left');
  },
);

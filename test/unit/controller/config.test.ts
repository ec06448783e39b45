// SPDX-License-Identifier: Apache-2.0
import t from 'tap';
import { loadControllerConfig } from '../../../src/controller/config.ts';

t.test('defaults: Kubernetes source, 0.0.0.0:15012, istiod names in the serving certificate', async (t) => {
  const c = loadControllerConfig([], {});
  t.equal(c.manifestDirs, undefined);
  t.equal(c.listen, '0.0.0.0:15012');
  t.same(c.servingDnsNames, ['istiod.istio-system.svc']);
  t.same(c.servingIps, [], 'a wildcard listen address names no IP');
  t.equal(c.trustDomain, 'cluster.local');
  t.equal(c.clusterId, 'Kubernetes');
});

t.test('local mode flags', async (t) => {
  const c = loadControllerConfig([
    '--manifests',
    '/a',
    '--manifests',
    'b',
    '--listen',
    '198.18.255.254:15012',
    '--node-tokens',
    '/t.yaml',
    '--ca-dir',
    '/ca',
  ]);
  t.equal(c.manifestDirs?.[0], '/a');
  t.ok(c.manifestDirs?.[1]?.endsWith('/b'), 'relative directories are resolved');
  t.same(c.servingIps, ['198.18.255.254'], 'the listen IP is in the certificate');
  t.equal(c.nodeTokensFile, '/t.yaml');
});

t.test('bad input says what to fix', async (t) => {
  t.throws(() => loadControllerConfig(['--listen', 'nope']), /--listen nope is not host:port/);
  t.throws(() => loadControllerConfig(['--serving-ip', 'x']), /--serving-ip x is not an IP address/);
  t.throws(() => loadControllerConfig(['--bogus']), /Unknown option '--bogus'/);
  t.throws(() => loadControllerConfig([], { MAX_WORKLOAD_CERT_TTL_SECONDS: '5' }), /≥ 60/);
});

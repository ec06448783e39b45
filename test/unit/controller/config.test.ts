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
  t.equal(c.servingCertTtlSeconds, 86_400, 'the serving certificate has an explicit lifetime');
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

t.test('--manifests without --node-tokens is refused: there is no API for TokenReview', async (t) => {
  t.throws(() => loadControllerConfig(['--manifests', '/m'], {}), {
    code: 'CTL_ERR_CONFIG',
    message: '--manifests needs --node-tokens: there is no Kubernetes API to review tokens',
  });
  t.equal(loadControllerConfig(['--manifests', '/m'], { NODE_TOKENS_FILE: '/t' }).nodeTokensFile, '/t');
  t.equal(
    loadControllerConfig(['--node-tokens', '/t'], {}).manifestDirs,
    undefined,
    'node tokens with the API is fine',
  );
});

t.test(
  'trusted node accounts: <root namespace>/ztunnel by default, or CA_TRUSTED_NODE_ACCOUNTS',
  async (t) => {
    t.same(loadControllerConfig([], {}).trustedNodeAccounts, ['system:serviceaccount:istio-system:ztunnel']);
    t.same(
      loadControllerConfig(['--root-namespace', 'mesh-root'], {}).trustedNodeAccounts,
      ['system:serviceaccount:mesh-root:ztunnel'],
      'follows --root-namespace',
    );
    t.same(
      loadControllerConfig([], {
        CA_TRUSTED_NODE_ACCOUNTS:
          'system:serviceaccount:kube-system:ztunnel, mesh/node-agent.v2,kube-system/ztunnel',
      }).trustedNodeAccounts,
      ['system:serviceaccount:kube-system:ztunnel', 'system:serviceaccount:mesh:node-agent.v2'],
      "both forms (Istio's <ns>/<sa> too), trimmed, duplicates dropped",
    );
    for (const bad of [
      '',
      'ztunnel',
      'system:serviceaccount:istio-system',
      'system:serviceaccount:istio-system:ztunnel:x',
      'system:serviceaccount::ztunnel',
      'istio-system/',
      'Istio-System/ztunnel',
      'istio-system/ztunnel,',
      `ns/${'a'.repeat(254)}`,
      'system:node:node-a',
    ]) {
      t.throws(
        () => loadControllerConfig([], { CA_TRUSTED_NODE_ACCOUNTS: bad }),
        {
          code: 'CTL_ERR_CONFIG',
          message:
            /CA_TRUSTED_NODE_ACCOUNTS: .* is not a ServiceAccount; write system:serviceaccount:<namespace>:<name>/,
        },
        JSON.stringify(bad.slice(0, 60)),
      );
    }
    t.throws(
      () => loadControllerConfig(['--root-namespace', 'a:b'], {}),
      /--root-namespace a:b is not a namespace name/,
    );
  },
);

t.test('SERVING_CERT_TTL_SECONDS: whole seconds, ≥ 60, within what the CA grants', async (t) => {
  t.equal(loadControllerConfig([], { SERVING_CERT_TTL_SECONDS: '3600' }).servingCertTtlSeconds, 3600);
  for (const bad of ['', '59', '1h', '-1', '1e5', '0x100']) {
    t.throws(
      () => loadControllerConfig([], { SERVING_CERT_TTL_SECONDS: bad }),
      /SERVING_CERT_TTL_SECONDS must be an integer ≥ 60/,
      JSON.stringify(bad),
    );
  }
  t.throws(
    () =>
      loadControllerConfig([], { SERVING_CERT_TTL_SECONDS: '7200', MAX_WORKLOAD_CERT_TTL_SECONDS: '3600' }),
    /SERVING_CERT_TTL_SECONDS \(7200\) is above MAX_WORKLOAD_CERT_TTL_SECONDS \(3600\)/,
  );
});

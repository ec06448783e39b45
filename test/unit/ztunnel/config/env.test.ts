// SPDX-License-Identifier: Apache-2.0
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { inspect } from 'node:util';
import t from 'tap';
import { configForDump, loadConfig } from '../../../../ztunnel/src/config/env.ts';

const base = {
  NODE_NAME: 'node-1',
  LOCAL_XDS_PATH: '/etc/ztunnel/local.yaml',
  LOCAL_CA_DIR: '/var/lib/ztunnel/ca',
};

t.test('defaults match upstream', async (t) => {
  const c = loadConfig(base);
  t.equal(c.trustDomain, 'cluster.local');
  t.equal(c.adminPort, 15000);
  t.equal(c.statsPort, 15020);
  t.equal(c.readinessPort, 15021);
  t.equal(c.inpodMark, 1337);
  t.equal(c.drainDeadlineMs, 5000);
  t.equal(c.secretTtlSeconds, 86400);
  t.ok(Object.isFrozen(c));
});

t.test('drain deadline follows the termination grace period rule', async (t) => {
  t.equal(loadConfig({ ...base, TERMINATION_GRACE_PERIOD_SECONDS: '30' }).drainDeadlineMs, 25_000);
  t.equal(loadConfig({ ...base, TERMINATION_GRACE_PERIOD_SECONDS: '10' }).drainDeadlineMs, 9_000);
  t.equal(loadConfig({ ...base, TERMINATION_GRACE_PERIOD_SECONDS: '1' }).drainDeadlineMs, 1_000);
  t.equal(
    loadConfig({ ...base, CONNECTION_TERMINATION_DEADLINE: '3', TERMINATION_GRACE_PERIOD_SECONDS: '30' })
      .drainDeadlineMs,
    3_000,
  );
});

t.test('bad values name the variable, the value and what is expected', async (t) => {
  t.throws(() => loadConfig({ LOCAL_XDS_PATH: 'x' }), /missing env var NODE_NAME/);
  t.throws(() => loadConfig({ NODE_NAME: 'n' }), /no configuration source: set XDS_ADDRESS/);
  t.throws(
    () => loadConfig({ ...base, ADMIN_PORT: 'abc' }),
    /invalid env var ADMIN_PORT=abc \(expected an integer\)/,
  );
  t.throws(
    () => loadConfig({ ...base, STATS_PORT: '70000' }),
    /invalid env var STATS_PORT=70000 \(expected an integer in \[0, 65535\]\)/,
  );
  t.throws(() => loadConfig({ ...base, LOG_LEVEL: 'loud' }), /invalid env var LOG_LEVEL=loud/);
  t.equal(loadConfig({ ...base, INPOD_MARK: '0x539' }).inpodMark, 1337);
});

t.test(
  'control-plane mode: one source each; the CA follows the controller unless a local CA is set',
  async (t) => {
    const cp = {
      NODE_NAME: 'n',
      XDS_ADDRESS: 'https://198.18.255.254:15012',
      XDS_ROOT_CA: '/r.pem',
      AUTH_TOKEN: '/t',
      INSTANCE_IP: '198.18.255.1',
      POD_NAME: 'ztunnel-n',
      POD_NAMESPACE: 'istio-system',
    };
    const c = loadConfig(cp);
    t.equal(c.wds?.address, '198.18.255.254:15012', 'scheme stripped');
    t.match(
      c.ca,
      {
        address: '198.18.255.254:15012',
        tls: { rootCa: '/r.pem', serverName: undefined },
        token: { source: '/t' },
      },
      'the CA defaults to the controller, with its root and token',
    );
    t.equal(loadConfig({ ...cp, CA_ADDRESS: '198.18.255.253:15012' }).ca?.address, '198.18.255.253:15012');
    const literal = loadConfig({ ...cp, AUTH_TOKEN: 'abc' });
    t.equal(literal.ca?.token.source, '(literal)', 'a literal token');
    t.equal(await literal.ca?.token.read(), 'abc');
    t.equal(loadConfig({ ...cp, LOCAL_CA_DIR: '/ca' }).ca, undefined, 'a local CA replaces the CA service');
    t.throws(() => loadConfig({ ...cp, LOCAL_XDS_PATH: '/x' }), /both LOCAL_XDS_PATH and XDS_ADDRESS/);
    t.throws(
      () => loadConfig({ ...cp, LOCAL_CA_DIR: '/ca', CA_ADDRESS: 'h:1' }),
      /both LOCAL_CA_DIR and CA_ADDRESS/,
    );
    t.throws(() => loadConfig({ ...cp, INSTANCE_IP: '' }), /missing env var INSTANCE_IP/);
    t.throws(
      () => loadConfig({ ...cp, INPOD_UDS: '/u', INPOD_WORKLOADS: '/w' }),
      /both INPOD_WORKLOADS and INPOD_UDS/,
    );
    t.throws(() => loadConfig({ NODE_NAME: 'n', LOCAL_XDS_PATH: '/x' }), /no certificate source/);
  },
);

const controlPlane = {
  NODE_NAME: 'n',
  XDS_ADDRESS: 'https://198.18.255.254:15012',
  INSTANCE_IP: '198.18.255.1',
  POD_NAME: 'ztunnel-n',
  POD_NAMESPACE: 'istio-system',
};

t.test(
  'CA_ADDRESS is validated like XDS_ADDRESS: plaintext only to loopback, and then really plaintext',
  async (t) => {
    t.throws(() => loadConfig({ ...controlPlane, CA_ADDRESS: 'http://istiod.istio-system.svc:15012' }), {
      code: 'ZT_ERR_CONFIG',
      message:
        /invalid env var CA_ADDRESS=http:\/\/istiod\.istio-system\.svc:15012 \(plaintext http:\/\/ is allowed only to a loopback address/,
    });
    t.throws(
      () => loadConfig({ ...controlPlane, CA_ADDRESS: 'istiod' }),
      /CA_ADDRESS=istiod \(expected host:port/,
    );
    const plain = loadConfig({ ...controlPlane, CA_ADDRESS: 'http://127.0.0.1:15010' }).ca;
    t.same(
      { address: plain?.address, tls: plain?.tls },
      { address: '127.0.0.1:15010', tls: undefined },
      'http:// to loopback: no TLS at all',
    );
    const tls = loadConfig({ ...controlPlane, CA_ADDRESS: 'https://ca.example:15012' }).ca;
    t.same(tls?.tls, { rootCa: '/var/run/secrets/istio/root-cert.pem', serverName: undefined });
    t.equal(
      loadConfig({ ...controlPlane, XDS_ADDRESS: 'http://127.0.0.1:15010' }).ca?.tls,
      undefined,
      'a CA that follows a plaintext XDS_ADDRESS is plaintext too',
    );
  },
);

t.test('AUTH_TOKEN, XDS_ROOT_CA and ALT_XDS_HOSTNAME are parsed once, for WDS and the CA', async (t) => {
  const c = loadConfig({
    ...controlPlane,
    AUTH_TOKEN: '/run/token',
    XDS_ROOT_CA: '/r.pem',
    ALT_XDS_HOSTNAME: 'istiod.istio-system.svc',
  });
  t.equal(c.ca?.token, c.wds?.token, 'one token reader');
  t.equal(c.ca?.tls, c.wds?.tls, 'one TLS setting');
  t.same(c.wds?.tls, { rootCa: '/r.pem', serverName: 'istiod.istio-system.svc' });
});

t.test('no token or XDS_HEADER_* value in the configuration, its dump or its log form', async (t) => {
  const cfg = loadConfig({
    ...controlPlane,
    AUTH_TOKEN: 'literal-secret-token',
    XDS_HEADER_X_API_KEY: 'header-secret-value',
  });
  const dump = JSON.stringify(configForDump(cfg));
  t.notMatch(dump, /literal-secret-token/, 'no literal token in /config_dump');
  t.notMatch(dump, /header-secret-value/, 'no header value in /config_dump');
  t.match(JSON.parse(dump), {
    wds: { headers: { x_api_key: '(redacted)' }, token: { source: '(literal)' } },
    ca: { token: { source: '(literal)' } },
  });
  t.notMatch(JSON.stringify(cfg), /literal-secret-token/, 'nor in the configuration object itself');
  t.notMatch(
    inspect(cfg, { depth: Infinity, showHidden: true }),
    /literal-secret-token/,
    'nor in a log of it',
  );
  t.equal(await cfg.ca?.token.read(), 'literal-secret-token', 'yet the token is there to send');
  t.equal(cfg.wds?.headers.x_api_key, 'header-secret-value', 'and the header too');
});

t.test('INPOD_UDS_TRUSTED_UIDS: a list of uids', async (t) => {
  t.equal(loadConfig(base).inpodUdsTrustedUids, undefined, 'default: root and our own uid');
  t.same(loadConfig({ ...base, INPOD_UDS_TRUSTED_UIDS: '0, 1337' }).inpodUdsTrustedUids, [0, 1337]);
  t.throws(
    () => loadConfig({ ...base, INPOD_UDS_TRUSTED_UIDS: '0,root' }),
    /invalid env var INPOD_UDS_TRUSTED_UIDS=0,root \(expected a comma-separated list of uids/,
  );
});

t.test('parsing the configuration does not load grpc-js (static mode pays nothing for it)', async (t) => {
  const env = pathToFileURL(join(import.meta.dirname, '../../../../ztunnel/src/config/env.ts')).href;
  const script = `
    import { createRequire } from 'node:module';
    const { loadConfig } = await import(${JSON.stringify(env)});
    loadConfig(${JSON.stringify(base)});
    const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('@grpc'));
    process.stdout.write(String(loaded.length));
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  t.equal(out, '0', 'no @grpc module loaded (decision 11)');
});

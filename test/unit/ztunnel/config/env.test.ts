// SPDX-License-Identifier: Apache-2.0
import t from 'tap';
import { loadConfig } from '../../../../ztunnel/src/config/env.ts';

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
    t.same(
      c.ca,
      { address: '198.18.255.254:15012', rootCa: '/r.pem', serverName: undefined, token: { path: '/t' } },
      'the CA defaults to the controller, with its root and token',
    );
    t.equal(loadConfig({ ...cp, CA_ADDRESS: '198.18.255.253:15012' }).ca?.address, '198.18.255.253:15012');
    t.same(loadConfig({ ...cp, AUTH_TOKEN: 'abc' }).ca?.token, { value: 'abc' }, 'a literal token');
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

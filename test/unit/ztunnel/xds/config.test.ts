// SPDX-License-Identifier: Apache-2.0
// WDS connection settings from the environment (ztunnel/src/xds/config.ts, connection.ts; spec
// ambient-protocols §3.1): address forms, TLS and plaintext rules, token file vs literal,
// XDS_HEADER_*, node id and metadata, and the errors that name the variable. The control-plane
// part (address, roots, token) is ztunnel/src/config/control-plane.ts's, shared with the CA client.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadControlPlaneSettings } from '../../../../ztunnel/src/config/control-plane.ts';
import { loadWdsConfig as loadWds, ztunnelNode, type WdsConfig } from '../../../../ztunnel/src/xds/config.ts';
import { wdsConnectionOptions } from '../../../../ztunnel/src/xds/connection.ts';

const base = { nodeName: 'node-1', clusterId: 'Kubernetes' };

/** What loadConfig does: the control-plane settings parsed once, then WDS's own. */
function loadWdsConfig(env: Record<string, string>, b: typeof base): WdsConfig | undefined {
  return loadWds(env, { ...b, controlPlane: loadControlPlaneSettings(env) });
}
const pod = { INSTANCE_IP: '10.0.0.5', POD_NAME: 'ztunnel-abc', POD_NAMESPACE: 'istio-system' };

t.test('no XDS_ADDRESS: no WDS', async (t) => {
  t.equal(loadWdsConfig({}, base), undefined);
  t.equal(loadWdsConfig({ XDS_ADDRESS: '' }, base), undefined);
});

t.test('TLS by default, with upstream defaults for the root CA and token', async (t) => {
  const c = loadWdsConfig({ ...pod, XDS_ADDRESS: 'istiod.istio-system.svc:15012' }, base);
  t.equal(c?.address, 'istiod.istio-system.svc:15012');
  t.same(c?.tls, { rootCa: '/var/run/secrets/istio/root-cert.pem', serverName: undefined });
  t.equal(c?.token.source, '/var/run/secrets/tokens/istio-token');
  const h = loadWdsConfig(
    {
      ...pod,
      XDS_ADDRESS: 'https://[fd00::1]:15012',
      XDS_ROOT_CA: 'SYSTEM',
      ALT_XDS_HOSTNAME: 'istiod.istio-system.svc',
    },
    base,
  );
  t.equal(h?.address, '[fd00::1]:15012');
  t.same(h?.tls, { rootCa: 'SYSTEM', serverName: 'istiod.istio-system.svc' });
});

t.test('plaintext only to loopback', async (t) => {
  t.equal(loadWdsConfig({ ...pod, XDS_ADDRESS: 'http://127.0.0.1:15010' }, base)?.tls, undefined);
  t.equal(loadWdsConfig({ ...pod, XDS_ADDRESS: 'http://[::1]:15010' }, base)?.tls, undefined);
  t.throws(() => loadWdsConfig({ ...pod, XDS_ADDRESS: 'http://istiod:15010' }, base), {
    code: 'ZT_ERR_CONFIG',
    message:
      /invalid env var XDS_ADDRESS=http:\/\/istiod:15010 \(plaintext http:\/\/ is allowed only to a loopback address/,
  });
});

t.test('refuses what it cannot use, naming the variable', async (t) => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ ...pod, XDS_ADDRESS: 'istiod' }, /XDS_ADDRESS=istiod \(expected host:port/],
    [{ ...pod, XDS_ADDRESS: 'istiod:99999' }, /XDS_ADDRESS=istiod:99999/],
    [
      { ...pod, XDS_ADDRESS: 'istiod:15012', XDS_ON_DEMAND: 'true' },
      /XDS_ON_DEMAND=true \(on-demand WDS is not supported/,
    ],
    [{ ...pod, XDS_ADDRESS: 'istiod:15012', XDS_HEADER_x_y: 'a\nb' }, /control characters/],
    [{ ...pod, XDS_ADDRESS: 'istiod:15012', 'XDS_HEADER_a b': 'v' }, /header name after XDS_HEADER_/],
    [
      { ...pod, XDS_ADDRESS: 'istiod:15012', ISTIO_METAJSON_LABELS: '{' },
      /ISTIO_METAJSON_LABELS=\{ \(expected JSON/,
    ],
    [{ POD_NAME: 'p', POD_NAMESPACE: 'n', XDS_ADDRESS: 'istiod:15012' }, /missing env var INSTANCE_IP/],
    [
      { ...pod, INSTANCE_IP: 'ten', XDS_ADDRESS: 'istiod:15012' },
      /INSTANCE_IP=ten \(expected an IP address\)/,
    ],
  ];
  for (const [env, re] of cases)
    t.throws(() => loadWdsConfig(env, base), { code: 'ZT_ERR_CONFIG', message: re });
});

t.test('node id and metadata (spec §3.1)', async (t) => {
  const c = loadWdsConfig(
    { ...pod, XDS_ADDRESS: 'istiod:15012', ISTIO_METAJSON_LABELS: '{"app":"ztunnel"}' },
    base,
  );
  if (c === undefined) throw new Error('expected a config');
  const node = ztunnelNode(c.node);
  t.equal(node.id, 'ztunnel~10.0.0.5~ztunnel-abc.istio-system~istio-system.svc.cluster.local');
  t.same(node.metadata, {
    LABELS: { app: 'ztunnel' },
    NAME: 'ztunnel-abc',
    NAMESPACE: 'istio-system',
    INSTANCE_IPS: '10.0.0.5',
    NODE_NAME: 'node-1',
  });
});

t.test('call metadata: bearer token re-read from its file, clusterid, extra headers', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'wds-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, 'first\n');
  const ca = join(dir, 'missing-ca.pem');
  const c = loadWdsConfig(
    { ...pod, XDS_ADDRESS: 'http://127.0.0.1:15010', AUTH_TOKEN: tokenFile, XDS_HEADER_X_TENANT: 'blue' },
    base,
  );
  if (c === undefined) throw new Error('expected a config');
  t.notMatch(JSON.stringify(c), /first/, 'the token itself is not in the config dump');
  const o = await wdsConnectionOptions(c);
  const md1 = await o.metadata();
  t.same(md1.get('authorization'), ['Bearer first']);
  t.same(md1.get('clusterid'), ['Kubernetes']);
  t.same(md1.get('x_tenant'), ['blue']);
  writeFileSync(tokenFile, 'rotated');
  t.same((await o.metadata()).get('authorization'), ['Bearer rotated'], 'a rotated token is picked up');
  rmSync(tokenFile);
  await t.rejects(
    Promise.resolve(o.metadata()),
    /cannot read the token file .*\(AUTH_TOKEN\).*projected ServiceAccount token/,
  );

  const literal = loadWdsConfig(
    { ...pod, XDS_ADDRESS: 'http://127.0.0.1:15010', AUTH_TOKEN: 'secret-jwt' },
    base,
  );
  if (literal === undefined) throw new Error('expected a config');
  t.equal(literal.token.source, '(literal)');
  t.notMatch(JSON.stringify(literal), /secret-jwt/);
  t.same((await (await wdsConnectionOptions(literal)).metadata()).get('authorization'), [
    'Bearer secret-jwt',
  ]);

  const tls = loadWdsConfig({ ...pod, XDS_ADDRESS: 'istiod:15012', XDS_ROOT_CA: ca }, base);
  if (tls === undefined) throw new Error('expected a config');
  await t.rejects(wdsConnectionOptions(tls), /cannot read XDS_ROOT_CA .*missing-ca\.pem/);
});

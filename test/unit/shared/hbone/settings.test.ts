// SPDX-License-Identifier: Apache-2.0
// HBONE settings defaults and validation (src/shared/hbone/settings.ts; spec §1.4, §1.5, security §3.1).
import t from 'tap';
import { DEFAULT_HBONE_SETTINGS, resolveHboneSettings } from '../../../../src/shared/hbone/settings.ts';

t.test('defaults are the spec values', async (t) => {
  const d = DEFAULT_HBONE_SETTINGS;
  t.equal(d.streamWindowBytes, 4194304);
  t.equal(d.connectionWindowBytes, 16777216);
  t.equal(d.maxFrameSize, 1048576);
  t.equal(d.clientMaxHeaderListBytes, 16384);
  t.equal(d.serverMaxHeaderListBytes, 65536);
  t.equal(d.serverMaxConcurrentStreams, 200);
  t.equal(d.poolMaxStreamsPerConnection, 100);
  t.equal(d.pingIntervalMs, 10_000);
  t.equal(d.pingTimeoutMs, 20_000);
  t.equal(d.handshakeTimeoutMs, 10_000);
  t.equal(d.poolIdleReleaseMs, 300_000);
  t.equal(d.upstreamConnectTimeoutMs, 10_000);
  t.equal(d.connectTimeoutMs, 10_000);
  // maxSessionMemory must hold at least the connection window plus a stream window (B.5).
  t.ok(d.maxSessionMemoryMb * 1024 * 1024 >= d.connectionWindowBytes + d.streamWindowBytes);
  t.ok(Object.isFrozen(d));
});

t.test('overrides merge and are validated', async (t) => {
  const s = resolveHboneSettings({ pingIntervalMs: 50, poolMaxStreamsPerConnection: 2 });
  t.equal(s.pingIntervalMs, 50);
  t.equal(s.poolMaxStreamsPerConnection, 2);
  t.equal(s.streamWindowBytes, DEFAULT_HBONE_SETTINGS.streamWindowBytes);
  t.ok(Object.isFrozen(s));
  t.same(resolveHboneSettings({ pingIntervalMs: undefined }), DEFAULT_HBONE_SETTINGS);

  t.throws(() => resolveHboneSettings({ maxFrameSize: 1000 }), {
    code: 'HBONE_ERR_CONFIG',
    message: /maxFrameSize=1000.*16384/,
  });
  t.throws(() => resolveHboneSettings({ streamWindowBytes: 2 ** 31 }), { code: 'HBONE_ERR_CONFIG' });
  t.throws(() => resolveHboneSettings({ pingTimeoutMs: 1.5 }), { code: 'HBONE_ERR_CONFIG' });
  t.throws(() => resolveHboneSettings({ poolMaxStreamsPerConnection: 0 }), { code: 'HBONE_ERR_CONFIG' });
  t.throws(() => resolveHboneSettings({ maxHeaderListPairs: 3 }), { code: 'HBONE_ERR_CONFIG' });
  t.throws(() => resolveHboneSettings({ connectionWindowBytes: 1_000_000, streamWindowBytes: 2_000_000 }), {
    code: 'HBONE_ERR_CONFIG',
    message: /deadlock/,
  });
  t.throws(() => resolveHboneSettings({ bogus: 1 } as never), {
    code: 'HBONE_ERR_CONFIG',
    message: /unknown/,
  });
});

// SPDX-License-Identifier: Apache-2.0
// A whole ztunnel (ztunnel/src/app.ts startZtunnel) on loopback, fed by a scripted node agent over
// ZDS, pods served through a loopback socket factory, certificates from a test CA:
//
//   - shutdown while an AddWorkload is still being handled (its listeners not bound yet) does not
//     wait for it: it is done within the drain deadline, and the pod's proxy never comes up;
//   - readiness has one gate per condition: with the snapshot in and a pod pending, only the
//     manager's gate (and WDS's) is pending, not the ZDS one;
//   - /config_dump shows neither the bearer token nor XDS_HEADER_* values.
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';
import type { Test } from 'tap';

import type { WorkloadRequest } from '../../../src/shared/gen/zds.ts';
import { closeFd } from '../../../src/shared/native/index.ts';
import { ZdsConnection } from '../../../src/shared/zds/connection.ts';
import { ZDS_LIMITS } from '../../../src/shared/zds/framing.ts';
import { SeqpacketListener } from '../../../src/shared/zds/seqpacket.ts';
import { startZtunnel, type Ztunnel, type ZtunnelOptions } from '../../../ztunnel/src/app.ts';
import { loadConfig } from '../../../ztunnel/src/config/env.ts';
import type { NetnsRef } from '../../../ztunnel/src/inpod/workload-manager.ts';
import { newTestCa } from '../../helpers/pki.ts';
import {
  LOOPBACK_PORTS,
  loopbackSocketFactory,
  memoryLogger,
  scratchDir,
  scratchNetns,
  until,
} from '../zds/fixtures.ts';

const SECRET_TOKEN = 'literal-secret-token';
const SECRET_HEADER = 'header-secret-value';
const DRAIN_MS = 1000;

const netns = await scratchNetns();
t.teardown(() => netns.destroy());
const ca = await newTestCa();

const addReq = (uid: string): WorkloadRequest => ({
  payload: {
    $case: 'add',
    value: { uid, workloadInfo: { name: uid, namespace: 'demo', serviceAccount: 'sa' } },
  },
});
const snapshotSent: WorkloadRequest = { payload: { $case: 'snapshotSent', value: {} } };

/** `p`, or a failure naming `what` after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

interface Rig {
  zt: Ztunnel;
  /** The agent's end of ztunnel's ZDS connection, after the hello. */
  conn: ZdsConnection;
}

async function rig(
  t: Test,
  over: Partial<ZtunnelOptions> = {},
  env: Record<string, string> = {},
): Promise<Rig> {
  const { dir, cleanup } = scratchDir();
  t.teardown(cleanup);
  const path = `${dir}/ztunnel.sock`;
  const listener = new SeqpacketListener(path, { mode: 0o600, limits: ZDS_LIMITS });
  t.teardown(() => listener.close());
  const accepted = new Promise<ZdsConnection>((resolve) =>
    listener.once('connection', (s) => resolve(new ZdsConnection(s))),
  );
  const cfg = loadConfig({
    NODE_NAME: 'node-0',
    // Nobody listens there: WDS stays unanswered, which this test does not need.
    XDS_ADDRESS: 'http://127.0.0.1:1',
    AUTH_TOKEN: SECRET_TOKEN,
    XDS_HEADER_X_API_KEY: SECRET_HEADER,
    INSTANCE_IP: '127.0.0.1',
    POD_NAME: 'ztunnel-test',
    POD_NAMESPACE: 'istio-system',
    INPOD_UDS: path,
    ADMIN_PORT: '0',
    STATS_PORT: '0',
    READINESS_PORT: '0',
    STATS_ADDRESS: '127.0.0.1',
    CONNECTION_TERMINATION_DEADLINE: String(DRAIN_MS / 1000),
    ...env,
  });
  const zt = await startZtunnel(cfg, {
    logger: memoryLogger('silent').logger,
    socketFactory: loopbackSocketFactory,
    proxyPorts: LOOPBACK_PORTS,
    signer: async (req) =>
      (await ca.sign({ csrPem: req.csrPem, identity: req.identity, ttlSeconds: req.ttlSeconds }))
        .certChainPem,
    ...over,
  });
  t.teardown(() => zt.shutdown());
  const conn = await accepted;
  await conn.readHello();
  return { zt, conn };
}

t.test('shutdown during an Add: done within the drain deadline, and no proxy comes up after', async (t) => {
  let bind: () => void = () => undefined;
  const slowBind = new Promise<void>((resolve) => (bind = resolve));
  t.teardown(() => bind());
  const servers: net.Server[] = [];
  const { zt, conn } = await rig(t, {
    socketFactory: (ns: NetnsRef) => {
      const f = loopbackSocketFactory(ns);
      const listen = f.listen.bind(f);
      f.listen = async (o) => {
        await slowBind;
        const server = await listen(o);
        servers.push(server);
        return server;
      };
      return f;
    },
  });
  const fd = netns.open();
  const answer = conn.request(addReq('a'), fd).catch((err: unknown) => err);
  await until(() => zt.workloads.has('a'), 5000, 'the Add being handled');
  closeFd(fd);

  const started = performance.now();
  await within(zt.shutdown(), 5000, 'shutdown');
  const ms = performance.now() - started;
  t.ok(ms < DRAIN_MS, `shut down in ${Math.round(ms)} ms, within the ${DRAIN_MS} ms drain deadline`);
  t.match(await answer, { code: 'ZDS_ERR_CLOSED' }, 'the Add was never acked');

  bind();
  await until(() => servers.length > 0, 5000, 'the late listener');
  await until(() => servers.every((s) => !s.listening), 5000, 'the late listeners to close');
  t.equal(zt.metrics.proxiesStarted.get(), 0, 'no proxy came up after shutdown');
  t.same(zt.workloads.uids(), []);
});

t.test('readiness: one gate per condition; the snapshot opens the ZDS gate', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((r) => blocker.close(r)));
  const port = (blocker.address() as net.AddressInfo).port;
  const { zt, conn } = await rig(t, { proxyPorts: { ...LOOPBACK_PORTS, hbone: port } });
  t.same(zt.readiness.pending(), ['state manager', 'zds snapshot'], 'before the snapshot');
  const fd = netns.open();
  t.match(await conn.request(addReq('a'), fd), /cannot listen/, 'the pod cannot start: NACK');
  closeFd(fd);
  t.equal(await conn.request(snapshotSent), '');
  t.same(
    zt.readiness.pending(),
    ['state manager', 'workload proxy manager'],
    'a pending pod is the manager gate; the ZDS gate is open',
  );
  const res = await fetch(`http://127.0.0.1:${zt.admin.readiness.port}/healthz/ready`);
  t.equal(res.status, 500);
  t.equal(await res.text(), 'not ready, pending: {state manager, workload proxy manager}\n');
});

t.test('/config_dump shows neither the token nor XDS_HEADER_* values', async (t) => {
  const { zt } = await rig(t);
  const res = await fetch(`http://127.0.0.1:${zt.admin.admin.port}/config_dump`);
  t.equal(res.status, 200);
  const body = await res.text();
  t.notMatch(body, SECRET_TOKEN, 'no token');
  t.notMatch(body, SECRET_HEADER, 'no header value');
  t.match(JSON.parse(body), {
    config: {
      wds: { headers: { x_api_key: '(redacted)' }, token: { source: '(literal)' } },
      ca: { token: { source: '(literal)' } },
    },
  });
});

t.test('CRL_PATH: ztunnel does not start without the revocation lists it was told to enforce', async (t) => {
  const { dir, cleanup } = scratchDir();
  t.teardown(cleanup);
  const cases: [string, string | undefined, RegExp][] = [
    ['missing', undefined, /CRL_PATH=.*: cannot read CRL file .*ENOENT/],
    ['empty', '', /holds no PEM CRL .*ztunnel does not start without the revocation lists/],
    ['truncated', '-----BEGIN X509 CRL-----\nMIIB\n', /BEGIN line without its matching END line/],
    ['a certificate', ca.trustBundle.toPem(), /block #1 is "CERTIFICATE"; only X509 CRL blocks are allowed/],
  ];
  for (const [name, content, message] of cases) {
    const path = `${dir}/${name}.pem`;
    if (content !== undefined) writeFileSync(path, content);
    await t.rejects(rig(t, {}, { CRL_PATH: path }), { code: 'ZT_ERR_CRL', message }, `${name}: refused`);
  }
  // A good file: it starts, and /config_dump shows where the lists come from.
  const good = `${dir}/good.pem`;
  writeFileSync(good, (await ca.issueCrl({ revoke: ['0a'] })).pem);
  const { zt } = await rig(t, {}, { CRL_PATH: good });
  const dump = (await (await fetch(`http://127.0.0.1:${zt.admin.admin.port}/config_dump`)).json()) as {
    config: { crlPath?: string };
    certificates: unknown[];
  };
  t.equal(dump.config.crlPath, good);
  t.same(dump.certificates, [], 'no pod yet, no certificate');
});

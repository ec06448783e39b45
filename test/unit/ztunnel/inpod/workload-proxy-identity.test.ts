// SPDX-License-Identifier: Apache-2.0
// A new pod's proxy before WDS has described the pod (ztunnel/src/inpod/workload-proxy.ts, file
// header "Identity" and "The pod's own WDS workload"; bench/README.md, enrolment group). On
// loopback, no root: the pod's listeners on a 127/8 address H of its own, so the "original
// destination" of a connection to its outbound listener is H; a mesh workload at H whose HBONE
// peer H:15008 is a test HBONE server in front of an echo server.
//
//   - the certificate is fetched from the start, for the identity of the ZDS WorkloadInfo;
//   - an outbound connection to a mesh workload WDS knows goes at once over HBONE with that
//     identity, although WDS has not sent the pod's own workload (it used to wait for it);
//   - a destination WDS does not know still waits for the pod's own workload and is reset
//     without it (never passthrough: istio#42610, decision 6);
//   - a WDS entry of the pod's name with another service account (stale, or disagreeing) is not
//     the pod's: its service account is never taken, the pod keeps the ZDS identity, and nothing
//     goes provisionally while WDS disagrees: outbound waits for a matching workload and is reset
//     without one (fail closed, as upstream).
import net from 'node:net';
import { randomInt } from 'node:crypto';
import t from 'tap';
import type { Test } from 'tap';

import { HboneServer, connectUpstream } from '../../../../src/shared/hbone/server.ts';
import { DefaultSocketFactory } from '../../../../ztunnel/src/inpod/socket-factory.ts';
import { WorkloadManager } from '../../../../ztunnel/src/inpod/workload-manager.ts';
import { WorkloadProxy } from '../../../../ztunnel/src/inpod/workload-proxy.ts';
import type { PodInfo, ProxyContext } from '../../../../ztunnel/src/proxy/context.ts';
import { newWorkload, type Workload } from '../../../../ztunnel/src/state/types.ts';
import { startEchoServer } from '../../../helpers/hbone.ts';
import { issueWorkloadCert } from '../../../helpers/pki.ts';
import {
  loopbackSocketFactory,
  memoryLogger,
  serverWorkload,
  testProxyContext,
  until,
} from '../../../integration/zds/fixtures.ts';

const POD: PodInfo = { uid: 'uid-a', name: 'pod-a', namespace: 'demo', serviceAccount: 'sa' };
const ZDS_ID = 'spiffe://cluster.local/ns/demo/sa/sa';
const WDS_ID = 'spiffe://cluster.local/ns/demo/sa/other';
const SERVER_ID = 'spiffe://cluster.local/ns/server/sa/server';

function randomHost(): string {
  return `127.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`;
}

/** The pod's own workload as WDS would send it. */
function ownWorkload(ctx: ProxyContext, serviceAccount: string): Workload {
  return newWorkload({
    uid: 'Kubernetes//Pod/demo/pod-a',
    name: POD.name,
    namespace: POD.namespace,
    serviceAccount,
    node: ctx.nodeName,
    addresses: ['10.0.0.1'],
    tunnelProtocol: 'HBONE',
  });
}

/** Listens like DefaultSocketFactory, remembering each listener's port in order. */
class RecordingSocketFactory extends DefaultSocketFactory {
  readonly servers: net.Server[] = [];
  override async listen(opts: Parameters<DefaultSocketFactory['listen']>[0]): Promise<net.Server> {
    const server = await super.listen(opts);
    this.servers.push(server);
    return server;
  }
  get outboundPort(): number {
    return (this.servers[0]?.address() as net.AddressInfo).port;
  }
}

interface Rig {
  ctx: Awaited<ReturnType<typeof testProxyContext>>;
  host: string;
  /** Identities the CA was asked to sign, in order. */
  signed: string[];
  /** The client identity of every CONNECT the peer received. */
  connectedAs: string[];
}

/**
 * A context whose pods wait up to `workloadWaitMs` for their own workload, and a mesh workload
 * at a fresh loopback address H with its HBONE peer on H:15008 (unless `meshPeer` is false: then
 * nothing is at H and WDS does not know it).
 */
async function rig(t: Test, opts: { workloadWaitMs: number; meshPeer?: boolean }): Promise<Rig> {
  const host = randomHost();
  const signed: string[] = [];
  const { logger } = memoryLogger('silent');
  const base = await testProxyContext(logger, {
    beforeSign: async (identity) => {
      signed.push(identity);
    },
  });
  t.teardown(() => base.certs.close());
  const ctx = { ...base, workloadWaitMs: opts.workloadWaitMs };
  const connectedAs: string[] = [];
  if (opts.meshPeer !== false) {
    ctx.store.upsertWorkload(serverWorkload(host));
    const echo = await startEchoServer();
    t.teardown(() => echo.close());
    const serverCert = await issueWorkloadCert(ctx.ca, SERVER_ID);
    const peer = new HboneServer({
      certificate: () => serverCert,
      trustDomain: 'cluster.local',
      onConnect: async (req) => {
        connectedAs.push(req.peer.id.uri);
        return {
          status: 200,
          upstream: await connectUpstream({
            host: '127.0.0.1',
            port: echo.port,
            timeoutMs: 2000,
            signal: req.signal,
          }),
        };
      },
    });
    await peer.listen({ host, port: 15008 });
    t.teardown(() => peer.close({ deadlineMs: 0 }));
  }
  return { ctx, host, signed, connectedAs };
}

async function startProxy(t: Test, r: Rig): Promise<{ proxy: WorkloadProxy; outboundPort: number }> {
  const sockets = new RecordingSocketFactory();
  const proxy = new WorkloadProxy(r.ctx, POD, sockets, {
    outbound: 0,
    inboundPlaintext: 0,
    hbone: 0,
    host: r.host,
  });
  t.teardown(() => proxy.stop(0));
  await proxy.start();
  return { proxy, outboundPort: sockets.outboundPort };
}

/** Connects like the app would, sends `data`; resolves with what came back and how it ended. */
function appRequest(
  host: string,
  port: number,
  data: string,
): Promise<{ received: string; error?: string; ms: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    let received = '';
    let error: string | undefined;
    s.on('data', (d: Buffer) => {
      received += d.toString();
      if (received === data) s.end();
    });
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () =>
      resolve({ received, ...(error !== undefined && { error }), ms: performance.now() - started }),
    );
    s.write(data);
  });
}

t.test('before WDS has the pod: its certificate is fetched at start, for the ZDS identity', async (t) => {
  const r = await rig(t, { workloadWaitMs: 5000 });
  const { proxy } = await startProxy(t, r);
  t.equal(proxy.identity, ZDS_ID);
  await until(() => r.ctx.certs.current(ZDS_ID) !== undefined, 5000, 'the certificate');
  t.same(r.signed, [ZDS_ID], 'fetched once, for the ZDS identity, with no WDS workload of the pod');
});

t.test('outbound to a mesh workload goes at once, before WDS has the pod', async (t) => {
  const r = await rig(t, { workloadWaitMs: 5000 });
  const { outboundPort } = await startProxy(t, r);
  await until(() => r.ctx.certs.current(ZDS_ID) !== undefined, 5000, 'the certificate');
  const res = await appRequest(r.host, outboundPort, 'hello');
  t.equal(res.received, 'hello', 'carried to the echo server');
  t.equal(res.error, undefined);
  t.ok(res.ms < 2500, `answered in ${Math.round(res.ms)} ms, not after the 5 s wait for WDS`);
  t.same(r.connectedAs, [ZDS_ID], 'over HBONE, presenting the ZDS identity');
  t.notOk(
    r.ctx.store.localWorkloads(r.ctx.nodeName).some((w) => w.name === POD.name),
    'WDS still has not described the pod',
  );
});

t.test('a destination WDS does not know still waits for the pod and is reset without it', async (t) => {
  const r = await rig(t, { workloadWaitMs: 400, meshPeer: false });
  const { outboundPort } = await startProxy(t, r);
  await until(() => r.ctx.certs.current(ZDS_ID) !== undefined, 5000, 'the certificate');
  const res = await appRequest(r.host, outboundPort, 'hello');
  t.equal(res.error, 'ECONNRESET', 'reset: never passthrough without the pod own workload');
  t.equal(res.received, '');
  t.ok(res.ms >= 350, `after waiting for WDS (${Math.round(res.ms)} ms, bound 400 ms)`);
});

t.test('a WDS entry of the pod name with another service account is never taken', async (t) => {
  const r = await rig(t, { workloadWaitMs: 400 });
  // Say a deleted pod of the same name, still in WDS, ran as another service account.
  r.ctx.store.upsertWorkload(ownWorkload(r.ctx, 'other'));
  const { proxy, outboundPort } = await startProxy(t, r);
  t.equal(proxy.identity, ZDS_ID, 'the ZDS identity');
  await until(() => r.ctx.certs.current(ZDS_ID) !== undefined, 5000, 'the certificate');
  const res = await appRequest(r.host, outboundPort, 'hello');
  t.equal(res.error, 'ECONNRESET', 'WDS disagrees: no provisional source, the wait for WDS ends in a reset');
  t.ok(res.ms >= 350, `after waiting for a matching workload (${Math.round(res.ms)} ms, bound 400 ms)`);
  t.same(r.connectedAs, [], 'nothing reached the peer');
  t.same(r.signed, [ZDS_ID], "the other service account's identity was never fetched");
  // WDS catches up with the pod: its own workload matches, and traffic flows as that workload.
  r.ctx.store.upsertWorkload(ownWorkload(r.ctx, 'sa'));
  t.equal((await appRequest(r.host, outboundPort, 'again')).received, 'again');
  t.same(r.connectedAs, [ZDS_ID]);
  t.equal(proxy.identity, ZDS_ID);
});

t.test('the workload manager holds the ZDS identity whatever WDS says', async (t) => {
  const r = await rig(t, { workloadWaitMs: 0, meshPeer: false });
  const m = new WorkloadManager(r.ctx, {
    delDrainMs: 0,
    socketFactory: loopbackSocketFactory,
    ports: { outbound: 0, inboundPlaintext: 0, hbone: 0, host: '127.0.0.1' },
  });
  t.teardown(() => m.stopAll(0));
  r.ctx.store.upsertWorkload(ownWorkload(r.ctx, 'other'));
  await m.add(POD, { path: '/proc/self/ns/net' });
  await until(() => r.ctx.certs.current(ZDS_ID) !== undefined, 5000, 'the ZDS certificate');
  t.equal(r.ctx.certs.current(WDS_ID), undefined, 'no certificate for the service account WDS names');
  await m.del(POD.uid);
  t.equal(r.ctx.certs.current(ZDS_ID), undefined, "the pod's deletion releases its identity");
});

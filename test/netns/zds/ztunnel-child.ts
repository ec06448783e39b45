// SPDX-License-Identifier: Apache-2.0
// A ztunnel's in-pod half as a separate process, for the ZDS netns tests: the real ZDS client,
// WorkloadManager, WorkloadProxy and InPodSocketFactory (listeners created inside each pod's
// netns from the fd received over ZDS), with certificates from the test CA in CA_DIR. It is what
// app.ts does for INPOD_UDS, minus WDS and the admin servers, so a test can run two ztunnels
// against one agent and kill or stop either.
//
// Run with child_process.fork(this file, [zdsPath, caDir]). IPC: it sends {type:'ready', ready}
// as readiness changes; it answers {type:'status'} with {type:'status', status, pods, fds,
// started} and {type:'stop', drainMs} (ZDS closed, listeners closed, connections drained, then
// exit 0; exit 2 if the drain hangs past drainMs + 2 s) with {type:'stopping'} before it begins.
import { readdirSync } from 'node:fs';

import { Logger } from '../../../src/shared/telemetry/logger.ts';
import { InPodSocketFactory } from '../../../ztunnel/src/inpod/socket-factory.ts';
import { WorkloadManager, type NetnsRef } from '../../../ztunnel/src/inpod/workload-manager.ts';
import { startZdsClient } from '../../../ztunnel/src/inpod/zds-client.ts';
import { testProxyContext } from '../../integration/zds/fixtures.ts';

export type ChildRequest = { type: 'status' } | { type: 'stop'; drainMs: number };

export type ChildMessage =
  | { type: 'ready'; ready: boolean }
  | {
      type: 'status';
      status: ReturnType<ReturnType<typeof startZdsClient>['status']>;
      pods: ReturnType<WorkloadManager['snapshot']>;
      fds: number;
      started: number;
    }
  | { type: 'stopping' };

const [zdsPath, caDir] = process.argv.slice(2);
if (zdsPath === undefined || caDir === undefined || process.send === undefined) {
  throw new Error('usage: fork(ztunnel-child.ts, [zdsPath, caDir]) with an IPC channel');
}
const send = (m: ChildMessage): void => {
  process.send?.(m);
};

const logger = new Logger({ level: process.env.LOG_LEVEL ?? 'warn', destination: process.stderr });
const ctx = await testProxyContext(logger, { caDir });
const manager = new WorkloadManager(ctx, {
  delDrainMs: 0,
  socketFactory: (ns: NetnsRef) =>
    new InPodSocketFactory('path' in ns ? { netnsPath: ns.path } : { netnsFd: ns.fd }),
});
// Ready as app.ts has it: the snapshot received (the ZDS gate) and no pod pending (the manager's).
let snapshot = false;
let ready = false;
const updateReady = (): void => {
  const now = snapshot && manager.pendingCount === 0;
  if (now === ready) return;
  ready = now;
  send({ type: 'ready', ready });
};
manager.on('pending', updateReady);
const zds = startZdsClient({
  path: zdsPath,
  manager,
  logger,
  onReady: () => {
    snapshot = true;
    updateReady();
  },
});

process.on('message', (m: ChildRequest) => {
  if (m.type === 'status') {
    send({
      type: 'status',
      status: zds.status(),
      pods: manager.snapshot(),
      fds: readdirSync('/proc/self/fd').length - 1,
      started: ctx.metrics.proxiesStarted.get(),
    });
    return;
  }
  send({ type: 'stopping' });
  // Like a pod's grace period: if the drain has not finished by drainMs + 2 s, exit anyway, with
  // code 2 so the test can tell a drain that hung from a clean one (code 0).
  setTimeout(() => process.exit(2), m.drainMs + 2000).unref();
  void (async () => {
    await zds.close();
    await manager.stopAll(m.drainMs);
    ctx.certs.close();
    process.exit(0);
  })();
});

// SPDX-License-Identifier: Apache-2.0
// Wiring of a ztunnel process: state (WDS from the controller, or a static config file),
// certificates (the controller's CA service, or a local CA in static mode), pods (ZDS from the
// node agent, or a static list) into the in-pod workload manager, telemetry and the
// admin/metrics/readiness endpoints. main.ts parses the environment and calls startZtunnel.
//
// Readiness (spec §7.4) is one gate per condition: `state manager` (WDS answered for both types,
// or the static file loaded), `zds snapshot` (with INPOD_UDS: the agent's snapshot received) and
// `workload proxy manager` (no pod pending). Shutdown marks ztunnel not ready, stops taking state and pods,
// closes every in-pod listener at once and drains established connections until the deadline.
import { AuthorizedConnections } from './rbac/authorized-connections.ts';
import type { Logger } from '../../src/shared/telemetry/logger.ts';
import { CertificateAuthority } from '../../src/shared/identity/ca.ts';
import { CertificateManager, type CertificateSigner } from '../../src/shared/identity/cert-manager.ts';
import { errorMessage } from '../../src/shared/errors.ts';
import { startAdminServers, type AdminServers } from './admin/servers.ts';
import { Readiness } from './admin/readiness.ts';
import { configForDump, type ZtunnelConfig } from './config/env.ts';
import { watchStaticConfig, type StaticConfigWatcher } from './config/static-config.ts';
import { Revocations, watchCrlFile } from './identity/revocation.ts';
import { cgroupMemorySource, OverloadGuard, rssMemorySource, type MemorySource } from './proxy/overload.ts';
import { readFileSync } from 'node:fs';
import type { WatchedFile } from '../../src/shared/watch-file.ts';
import type { RevocationList } from '../../src/shared/identity/crl.ts';
import type { WdsClient } from './xds/client.ts';
import { InPodSocketFactory } from './inpod/socket-factory.ts';
import { loadStaticWorkloads } from './inpod/static-workloads.ts';
import { startZdsClient, type ZdsClient } from './inpod/zds-client.ts';
import { WorkloadManager, type ManagedSocketFactory, type NetnsRef } from './inpod/workload-manager.ts';
import type { WorkloadProxyPorts } from './inpod/workload-proxy.ts';
import type { ProxyContext } from './proxy/context.ts';
import { StateStore } from './state/store.ts';
import { AccessLog, createLogger } from './telemetry/access-log.ts';
import { ZtunnelMetrics } from './telemetry/metrics.ts';

export interface ZtunnelOptions {
  readonly logger?: Logger;
  /** Override the in-pod socket factory (tests without network namespaces). */
  readonly socketFactory?: (netns: NetnsRef) => ManagedSocketFactory;
  readonly proxyPorts?: WorkloadProxyPorts;
  /** A certificate signer other than the local CA (the controller's CA service). */
  readonly signer?: CertificateSigner;
}

export interface Ztunnel {
  readonly config: ZtunnelConfig;
  readonly store: StateStore;
  readonly workloads: WorkloadManager;
  readonly metrics: ZtunnelMetrics;
  readonly readiness: Readiness;
  readonly admin: AdminServers;
  readonly logger: Logger;
  /** Graceful shutdown: stop accepting, drain up to the deadline, close everything. */
  shutdown(): Promise<void>;
}

async function localCaSigner(cfg: ZtunnelConfig): Promise<CertificateSigner> {
  if (cfg.localCaDir === undefined) {
    throw new Error('static mode needs LOCAL_CA_DIR (a directory holding, or to hold, the local CA root)');
  }
  const ca = await CertificateAuthority.create({ trustDomain: cfg.trustDomain, dir: cfg.localCaDir });
  return async (req) =>
    (await ca.sign({ csrPem: req.csrPem, identity: req.identity, ttlSeconds: req.ttlSeconds })).certChainPem;
}

export async function startZtunnel(cfg: ZtunnelConfig, opts: ZtunnelOptions = {}): Promise<Ztunnel> {
  const logger = opts.logger ?? createLogger({ level: cfg.logLevel });
  const metrics = new ZtunnelMetrics({ defaultMetrics: true });
  const store = new StateStore();
  const readiness = new Readiness();
  const stateReady = readiness.register('state manager');
  const proxiesReady = readiness.register('workload proxy manager');

  // First, and before any proxy exists: a CRL that does not load stops the start with nothing
  // else opened, and the first handshake already enforces the lists.
  const revocations = new Revocations();
  let crlWatcher: WatchedFile<RevocationList> | undefined;
  if (cfg.crlPath !== undefined) crlWatcher = await watchCrlFile(cfg.crlPath, revocations, logger);

  let watcher: StaticConfigWatcher | undefined;
  if (cfg.localXdsPath !== undefined) {
    const path = cfg.localXdsPath;
    watcher = watchStaticConfig(
      path,
      (snapshot) => {
        store.replaceAll(snapshot);
        stateReady();
        logger.info(
          {
            scope: 'state',
            workloads: snapshot.workloads.length,
            services: snapshot.services.length,
            policies: snapshot.policies.length,
          },
          `loaded ${path}`,
        );
      },
      (err) =>
        logger.error({ scope: 'state', err: err.message }, `rejected ${path}; keeping the last good config`),
    );
    await watcher.ready;
  }

  let wds: WdsClient | undefined;
  if (cfg.wds !== undefined) {
    const { startWdsClient } = await import('./xds/client.ts');
    const { wdsConnectionOptions } = await import('./xds/connection.ts');
    wds = startWdsClient({
      ...(await wdsConnectionOptions(cfg.wds)),
      store,
      logger,
      onReady: () => {
        stateReady();
        logger.info({ scope: 'xds', address: cfg.wds?.address }, 'state received from the controller');
      },
    });
  }

  let closeSigner: (() => void) | undefined;
  let signer: CertificateSigner;
  if (opts.signer !== undefined) signer = opts.signer;
  else if (cfg.ca !== undefined) {
    // Loaded on demand: grpc-js costs memory that static mode need not pay (decision 11).
    const { CaClient } = await import('./identity/ca-client.ts');
    const tls = cfg.ca.tls;
    const client = new CaClient({
      address: cfg.ca.address,
      security:
        tls === undefined
          ? { kind: 'plaintext' }
          : {
              kind: 'tls',
              rootCertPath: tls.rootCa,
              ...(tls.serverName !== undefined && { serverName: tls.serverName }),
            },
      token: cfg.ca.token,
      clusterId: cfg.clusterId,
    });
    signer = client.sign;
    closeSigner = () => client.close();
  } else signer = await localCaSigner(cfg);
  const certs = new CertificateManager({ signer, ttlSeconds: cfg.secretTtlSeconds });
  const overload = startOverloadGuard(cfg, logger, metrics);
  const ctx: ProxyContext = {
    store,
    certs,
    revocations,
    overload,
    metrics,
    accessLog: new AccessLog(logger),
    authorized: new AuthorizedConnections(store),
    logger,
    nodeName: cfg.nodeName,
    trustDomain: cfg.trustDomain,
    network: cfg.network,
    hbone: {
      ...(cfg.http2.streamWindowBytes !== undefined && { streamWindowBytes: cfg.http2.streamWindowBytes }),
      ...(cfg.http2.connectionWindowBytes !== undefined && {
        connectionWindowBytes: cfg.http2.connectionWindowBytes,
      }),
      ...(cfg.http2.frameSize !== undefined && { maxFrameSize: cfg.http2.frameSize }),
      ...(cfg.http2.poolMaxStreamsPerConnection !== undefined && {
        poolMaxStreamsPerConnection: cfg.http2.poolMaxStreamsPerConnection,
      }),
    },
    connectTimeoutMs: 10_000,
    workloadWaitMs: 5_000,
    // The CA client's own deadline per call (ca-client.ts), plus the odd queued CSR.
    certificateWaitMs: 15_000,
  };
  const socketFactory =
    opts.socketFactory ??
    ((ns: NetnsRef): ManagedSocketFactory =>
      new InPodSocketFactory(
        'path' in ns ? { netnsPath: ns.path, mark: cfg.inpodMark } : { netnsFd: ns.fd, mark: cfg.inpodMark },
      ));
  const workloads = new WorkloadManager(ctx, {
    socketFactory,
    delDrainMs: cfg.drainDeadlineMs,
    ...(opts.proxyPorts && { ports: opts.proxyPorts }),
  });
  // Readiness follows the pending count both ways (spec §7.4): any pending pod makes ztunnel not ready.
  workloads.on('pending', (n) => {
    if (n > 0) readiness.markPending('workload proxy manager');
    else proxiesReady();
  });

  let shuttingDown: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    shuttingDown ??= (async () => {
      logger.info({ scope: 'app', deadlineMs: cfg.drainDeadlineMs }, 'draining');
      readiness.markPending('shutdown');
      watcher?.close();
      wds?.close();
      // Stop taking pods (without waiting for an Add being handled: the manager refuses it from
      // here on), then close every listener at once and drain.
      await zds?.close();
      await workloads.stopAll(cfg.drainDeadlineMs);
      // After the drain: revocations keep cutting off draining tunnels until they are gone.
      crlWatcher?.close();
      ctx.authorized.stop();
      overload.stop();
      certs.close();
      closeSigner?.();
      await admin.close();
      logger.info({ scope: 'app' }, 'stopped');
    })();
    return shuttingDown;
  };

  const admin = await startAdminServers(
    {
      configDump: () => ({
        ...store.snapshot(),
        workloadState: workloads.snapshot(),
        certificates: certs.snapshot(),
        overload: overload.status(),
        ...(wds && { wds: wds.status() }),
        ...(zds && { zds: zds.status() }),
        config: configForDump(cfg),
        version: { component: 'ztunnel', tag: '0.1.0' },
      }),
      metrics: () => metrics.render(),
      readiness,
      quit: () => void shutdown(),
      logLevel: (level) => {
        if (level !== undefined) logger.level = level;
        return logger.level;
      },
    },
    {
      adminPort: cfg.adminPort,
      metricsPort: cfg.statsPort,
      readinessPort: cfg.readinessPort,
      metricsHost: cfg.statsAddress,
    },
  );

  let zds: ZdsClient | undefined;
  if (cfg.inpodUds !== undefined) {
    // Not ready until the agent's snapshot has arrived (spec §2.6); that every pod in it is up is
    // the 'workload proxy manager' gate above.
    zds = startZdsClient({
      path: cfg.inpodUds,
      manager: workloads,
      logger,
      onReady: readiness.register('zds snapshot'),
      ...(cfg.inpodUdsTrustedUids !== undefined && { trustedUids: cfg.inpodUdsTrustedUids }),
    });
  }
  if (cfg.inpodWorkloadsPath !== undefined) {
    const pods = await loadStaticWorkloads(cfg.inpodWorkloadsPath);
    const results = await Promise.allSettled(pods.map((p) => workloads.add(p.info, { path: p.netnsPath })));
    results.forEach((r, i) => {
      if (r.status === 'rejected') {
        logger.error(
          { scope: 'inpod', pod: pods[i]?.info.name, err: errorMessage(r.reason) },
          'pod proxy pending',
        );
      }
    });
  }
  if (workloads.pendingCount === 0) proxiesReady();
  return { config: cfg, store, workloads, metrics, readiness, admin, logger, shutdown };
}

/** The memory the guard protects: OVERLOAD_MEMORY_LIMIT against RSS, else the container's cgroup limit. */
function memorySource(cfg: ZtunnelConfig): MemorySource | undefined {
  if (cfg.overload.memoryLimitBytes !== undefined) return rssMemorySource(cfg.overload.memoryLimitBytes);
  try {
    return cgroupMemorySource(
      readFileSync('/proc/self/cgroup', 'utf8'),
      '/sys/fs/cgroup',
      readFileSync('/proc/self/mountinfo', 'utf8'),
    );
  } catch {
    return undefined; // not Linux, or no /proc: nothing to read a limit from
  }
}

function startOverloadGuard(cfg: ZtunnelConfig, logger: Logger, metrics: ZtunnelMetrics): OverloadGuard {
  const source = memorySource(cfg);
  const guard = new OverloadGuard({ source, shedAt: cfg.overload.shedFraction });
  const mb = (n: number | undefined): string => (n === undefined ? '?' : `${(n / 1e6).toFixed(1)} MB`);
  guard.on('changed', (shedding, s) => {
    metrics.overloadShedding.set(shedding ? 1 : 0);
    const fields = { scope: 'overload', used: mb(s?.usedBytes), limit: mb(s?.limitBytes), source: s?.source };
    if (shedding)
      logger.warn(fields, 'memory near its limit: refusing new connections, keeping the open ones');
    else logger.info(fields, 'memory pressure over: accepting new connections again');
  });
  guard.on('error', (err) =>
    logger.error({ scope: 'overload', err: err.message }, 'cannot read memory use; not shedding'),
  );
  // start() takes the first sample (a failing source is reported on 'error' and sheds nothing).
  guard.start();
  const first = guard.status();
  logger.info(
    first.limitBytes === undefined
      ? { scope: 'overload' }
      : { scope: 'overload', limit: mb(first.limitBytes), source: first.source, shedAt: first.shedAt },
    first.limitBytes === undefined ? 'no memory limit known: load shedding off' : 'load shedding armed',
  );
  return guard;
}

// SPDX-License-Identifier: Apache-2.0
// The node agent's entry point (DaemonSet, host network, privileged):
//
//   node cni-plugin/src/agent/main.ts            run the agent
//   node cni-plugin/src/agent/main.ts uninstall  take the plugin out of the node's CNI config
//
// Start-up order matters for failing closed: the cluster view lists pods and the agent
// reconciles its registry first; then the ZDS socket opens (so the first snapshot a ztunnel gets
// is complete), then the plugin-event socket (so no CNI ADD is answered before the agent can
// decide), and only then is the plugin chained into the node's conflist. Stopping the agent
// leaves the plugin installed: pods created while it is down fail their ADD and are retried by
// the runtime, instead of starting outside the mesh (checklist D.57).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { errorMessage } from '../../../src/shared/errors.ts';
import { Logger } from '../../../src/shared/telemetry/logger.ts';
import { installPlugin, uninstallPlugin } from '../install/install.ts';
import { watchPluginConfig, type PluginConfigWatcher } from '../install/watch.ts';
import { detectIptablesBackend } from '../redirect/apply.ts';
import { NodeAgent, type ZdsPort } from './agent.ts';
import type { ClusterView } from './cluster-view.ts';
import { loadAgentConfig, type AgentConfig } from './config.ts';
import { KubeClusterView } from './kube-view.ts';
import { ManifestClusterView } from './manifest-view.ts';
import { AgentNotReadyError, startPluginEventServer } from './plugin-events.ts';
import { PodRegistry } from './pod-registry.ts';
import { findPodNetns } from './proc-netns.ts';
import { RulesRedirector } from './redirector.ts';
import { ZdsServer } from './zds-server.ts';
import { HostProbes } from '../redirect/host-probe.ts';

function clusterView(cfg: AgentConfig): ClusterView {
  if (cfg.manifestDirs !== undefined && cfg.liveDir !== undefined) {
    return new ManifestClusterView({ nodeName: cfg.nodeName, dirs: cfg.manifestDirs, liveDir: cfg.liveDir });
  }
  const kc = new KubeConfig();
  if (cfg.kubeconfig !== undefined) kc.loadFromFile(cfg.kubeconfig);
  else kc.loadFromCluster();
  return new KubeClusterView(kc, cfg.nodeName);
}

function pluginConfig(cfg: AgentConfig): Record<string, unknown> {
  return {
    cni_agent_run_dir: cfg.runDir,
    exclude_namespaces: [...cfg.excludedNamespaces],
    log_level: cfg.logLevel === 'debug' ? 'debug' : 'info',
  };
}

async function run(cfg: AgentConfig, log: Logger): Promise<void> {
  mkdirSync(cfg.runDir, { recursive: true, mode: 0o700 });
  const registry = PodRegistry.load(join(cfg.runDir, 'pods.json'), (m) => log.error({ scope: 'agent' }, m));
  const iptablesVariant = cfg.redirectBackend === 'iptables' ? await detectIptablesBackend() : undefined;
  const redirector = new RulesRedirector(
    {},
    { backend: cfg.redirectBackend, ...(iptablesVariant !== undefined && { iptablesVariant }) },
  );
  // ZDS listens only once the agent has reconciled, so the first snapshot a ztunnel receives is
  // complete (a partial one would make it drain running pods). Until then the agent's ZDS calls
  // find no ztunnel, which is the truth.
  const late: { zds?: ZdsServer } = {};
  const zdsPort: ZdsPort = {
    addWorkload: (uid, info, fd) =>
      late.zds
        ? late.zds.addWorkload(uid, info, fd)
        : Promise.reject(new Error('the ZDS socket is not open yet')),
    delWorkload: async (uid) => {
      await late.zds?.delWorkload(uid);
    },
  };
  const agent = new NodeAgent({
    nodeName: cfg.nodeName,
    view: clusterView(cfg),
    registry,
    zds: zdsPort,
    redirector,
    policy: { excludedNamespaces: cfg.excludedNamespaces },
    logger: log,
    // Reply routing of a pod leaving the mesh outlives ztunnel's drain of its connections.
    releaseDrainMs: (cfg.ztunnelDrainSeconds + 5) * 1000,
    // In a cluster, pods that predate the agent are found through /proc; local mode's pods all
    // come through the CNI chain.
    ...(cfg.manifestDirs === undefined && {
      findNetns: (uid: string, podIps: readonly string[]) => findPodNetns(uid, { podIps }),
    }),
    probes: new HostProbes(),
  });
  await agent.start();
  const zds = ZdsServer.listen({ path: cfg.ztunnelUds, snapshot: () => agent.snapshot(), logger: log });
  late.zds = zds;
  zds.on('ready', (p) => {
    log.info({ scope: 'zds', peer: p.pid }, 'ztunnel received the snapshot');
    agent.retryPending();
  });
  zds.on('disconnect', (p, err) =>
    log.warn({ scope: 'zds', peer: p.pid, ...(err && { err: err.message }) }, 'ztunnel disconnected'),
  );
  const events = await startPluginEventServer({
    runDir: cfg.runDir,
    logger: log,
    handlers: {
      add: async (e) => {
        try {
          return await agent.handleAdd({
            podNamespace: e.podNamespace,
            podName: e.podName,
            podUid: e.podUid,
            netns: e.netns,
            ips: e.ips.map((ip) => ip.address.split('/')[0] ?? ip.address),
          });
        } catch (err) {
          if ((err as { code?: string }).code === 'CNI_ERR_AGENT_NOT_READY') {
            throw new AgentNotReadyError(errorMessage(err), { cause: err });
          }
          throw err;
        }
      },
      check: (e) =>
        agent.handleCheck({
          podNamespace: e.podNamespace,
          podName: e.podName,
          podUid: e.podUid,
          netns: e.netns,
        }),
      // Like upstream, deletions are learnt from the cluster view (the pod object goes away);
      // the plugin's DEL is acknowledged so the runtime's teardown is never blocked by it.
      del: () => Promise.resolve(),
    },
  });
  let watcher: PluginConfigWatcher | undefined;
  if (cfg.cniBinDir !== undefined && cfg.cniConfDir !== undefined && cfg.cniPluginBinary !== undefined) {
    const installed = await installPlugin({
      cniBinDir: cfg.cniBinDir,
      cniConfDir: cfg.cniConfDir,
      binarySource: cfg.cniPluginBinary,
      pluginConfig: pluginConfig(cfg),
    });
    log.info(
      { scope: 'cni-install', config: installed.configPath, binary: installed.binaryPath },
      'CNI plugin chained',
    );
    watcher = watchPluginConfig({ cniConfDir: cfg.cniConfDir, pluginConfig: pluginConfig(cfg), logger: log });
  }
  log.info(
    { scope: 'agent', node: cfg.nodeName, zds: cfg.ztunnelUds, events: events.socketPath },
    'node agent ready',
  );

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) process.exit(1);
    stopping = true;
    log.info(
      { scope: 'agent', signal },
      'stopping (the CNI plugin stays installed: new pods wait for the agent)',
    );
    setTimeout(() => process.exit(1), 10_000).unref();
    void (async () => {
      await watcher?.close();
      await events.close();
      await agent.stop();
      await zds.close();
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function main(): Promise<void> {
  let cfg: AgentConfig;
  try {
    cfg = loadAgentConfig();
  } catch (err) {
    process.stderr.write(`node agent: ${errorMessage(err)}\n`);
    process.exit(2);
  }
  const log = new Logger({ level: cfg.logLevel });
  if (process.argv[2] === 'uninstall') {
    if (cfg.cniBinDir === undefined || cfg.cniConfDir === undefined) {
      process.stderr.write('node agent uninstall: set CNI_BIN_DIR and CNI_CONF_DIR\n');
      process.exit(2);
    }
    const r = await uninstallPlugin({ cniBinDir: cfg.cniBinDir, cniConfDir: cfg.cniConfDir });
    log.info({ scope: 'cni-install', ...r }, 'CNI plugin removed');
    await new HostProbes().uninstall();
    log.info({ scope: 'host-probes' }, 'probe SNAT and anti-spoofing tables removed');
    return;
  }
  await run(cfg, log);
}

main().catch((err: unknown) => {
  process.stderr.write(`node agent: fatal: ${errorMessage(err)}\n`);
  process.exit(1);
});

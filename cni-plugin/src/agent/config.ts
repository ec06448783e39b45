// SPDX-License-Identifier: Apache-2.0
// The node agent's configuration: environment variables, parsed once, validated strictly and
// frozen. A bad value stops start-up with a message naming the variable and what is expected.
import { isAbsolute } from 'node:path';
import { MeshError } from '../../../src/shared/errors.ts';
import type { RedirectBackend } from '../redirect/apply.ts';
import { DEFAULT_EXCLUDED_NAMESPACES } from './enrolment.ts';

export class AgentConfigError extends MeshError {}

export interface AgentConfig {
  readonly nodeName: string;
  /** Holds pluginevent.sock and the pod registry (AGENT_RUN_DIR, default /var/run/ambient-mesh). */
  readonly runDir: string;
  /** The ZDS socket ztunnel connects to (ZTUNNEL_UDS). */
  readonly ztunnelUds: string;
  /** Cluster mode: a kubeconfig path (KUBECONFIG) or, when unset and no manifests, in-cluster. */
  readonly kubeconfig: string | undefined;
  /** Local mode: manifest directories in override order (LOCAL_MANIFEST_DIRS, ':'-separated). */
  readonly manifestDirs: readonly string[] | undefined;
  /** Local mode: the runtime's live-object directory, where annotations are written (LOCAL_LIVE_DIR). */
  readonly liveDir: string | undefined;
  readonly excludedNamespaces: ReadonlySet<string>;
  readonly redirectBackend: RedirectBackend;
  /** Where the plugin binary and its conflist entry go (CNI_BIN_DIR, CNI_CONF_DIR); unset = do not install. */
  readonly cniBinDir: string | undefined;
  readonly cniConfDir: string | undefined;
  /** The plugin binary to install (CNI_PLUGIN_BINARY). */
  readonly cniPluginBinary: string | undefined;
  readonly logLevel: string;
  /**
   * ztunnel's drain deadline for a removed pod's connections (ZTUNNEL_DRAIN_SECONDS, default 5:
   * ztunnel's default); the agent keeps a leaving pod's reply routing 5 s longer.
   */
  readonly ztunnelDrainSeconds: number;
}

type Env = Readonly<Record<string, string | undefined>>;

function opt(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === '' ? undefined : v;
}

function fail(msg: string): never {
  throw new AgentConfigError('CNI_ERR_CONFIG', msg);
}

function absPath(env: Env, name: string, def?: string): string | undefined {
  const v = opt(env, name) ?? def;
  if (v !== undefined && !isAbsolute(v)) fail(`invalid env var ${name}=${v} (expected an absolute path)`);
  return v;
}

function drainSeconds(env: Env): number {
  const v = opt(env, 'ZTUNNEL_DRAIN_SECONDS') ?? '5';
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 3600)
    fail(`invalid env var ZTUNNEL_DRAIN_SECONDS=${v} (expected whole seconds, 0–3600)`);
  return n;
}

export function loadAgentConfig(env: Env = process.env): AgentConfig {
  const nodeName =
    opt(env, 'NODE_NAME') ?? fail('missing env var NODE_NAME (the node this agent serves; spec.nodeName)');
  const runDir = absPath(env, 'AGENT_RUN_DIR', '/var/run/ambient-mesh') ?? '/var/run/ambient-mesh';
  const ztunnelUds =
    absPath(env, 'ZTUNNEL_UDS', '/var/run/ztunnel/ztunnel.sock') ?? '/var/run/ztunnel/ztunnel.sock';
  const dirs = opt(env, 'LOCAL_MANIFEST_DIRS')
    ?.split(':')
    .filter((d) => d !== '');
  for (const d of dirs ?? []) {
    if (!isAbsolute(d)) fail(`invalid env var LOCAL_MANIFEST_DIRS: ${d} is not an absolute path`);
  }
  const liveDir = absPath(env, 'LOCAL_LIVE_DIR');
  if ((dirs === undefined) !== (liveDir === undefined)) {
    fail('local mode needs both LOCAL_MANIFEST_DIRS and LOCAL_LIVE_DIR (set neither for a cluster)');
  }
  const kubeconfig = absPath(env, 'KUBECONFIG');
  if (dirs !== undefined && kubeconfig !== undefined) {
    fail(
      'both KUBECONFIG and LOCAL_MANIFEST_DIRS are set: the agent reads a cluster or local manifests, not both',
    );
  }
  const backend = opt(env, 'REDIRECT_BACKEND') ?? 'iptables';
  if (backend !== 'iptables' && backend !== 'nftables') {
    fail(`invalid env var REDIRECT_BACKEND=${backend} (expected iptables or nftables)`);
  }
  const excluded = new Set(DEFAULT_EXCLUDED_NAMESPACES);
  for (const ns of (opt(env, 'EXCLUDED_NAMESPACES') ?? '').split(',')) {
    const n = ns.trim();
    if (n === '') continue;
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(n)) {
      fail(`invalid env var EXCLUDED_NAMESPACES: ${JSON.stringify(n)} is not a namespace name`);
    }
    excluded.add(n);
  }
  const cniBinDir = absPath(env, 'CNI_BIN_DIR');
  const cniConfDir = absPath(env, 'CNI_CONF_DIR');
  const cniPluginBinary = absPath(env, 'CNI_PLUGIN_BINARY');
  if ([cniBinDir, cniConfDir, cniPluginBinary].some((v) => v !== undefined)) {
    if (cniBinDir === undefined || cniConfDir === undefined || cniPluginBinary === undefined) {
      fail('installing the CNI plugin needs CNI_BIN_DIR, CNI_CONF_DIR and CNI_PLUGIN_BINARY together');
    }
  }
  return Object.freeze({
    nodeName,
    runDir,
    ztunnelUds,
    kubeconfig,
    manifestDirs: dirs,
    liveDir,
    excludedNamespaces: excluded,
    redirectBackend: backend,
    cniBinDir,
    cniConfDir,
    cniPluginBinary,
    logLevel: opt(env, 'LOG_LEVEL') ?? 'info',
    ztunnelDrainSeconds: drainSeconds(env),
  });
}

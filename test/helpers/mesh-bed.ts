// SPDX-License-Identifier: Apache-2.0
// A whole mesh in network namespaces (DESIGN.md §4): the test bed's nodes and pods, the in-pod
// redirection rules in every meshed pod, one real ztunnel process per node running inside the
// node netns from a static configuration, and a shared local CA. Used by the ztunnel netns
// proofs and the benchmark's ztunnel path.
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { applyRedirection, type RedirectBackend } from '../../cni-plugin/src/redirect/apply.ts';
import { CA_FILES, CertificateAuthority } from '../../src/shared/identity/ca.ts';
import { NODE_BIN } from './testbed-apps.ts';
import { createTestbed, type Pod, type Testbed } from './testbed.ts';
import { httpGetInNetns } from './netns-net.ts';

export interface MeshPodSpec {
  name: string;
  node: number;
  namespace: string;
  serviceAccount?: string;
  /** Enrolled in the mesh (rules applied, proxied by its node's ztunnel). Default true. */
  mesh?: boolean;
}

/** The common two-node case: `client` on node 0 and `server` on node 1, namespace demo. */
export const CLIENT_SERVER_PODS: readonly MeshPodSpec[] = [
  { name: 'client', node: 0, namespace: 'demo', serviceAccount: 'client' },
  { name: 'server', node: 1, namespace: 'demo', serviceAccount: 'server' },
];

/**
 * The static-config workload of a test-bed pod: HBONE, on `node-<node>`, in the pod's namespace;
 * its service account is the pod's name unless `extra` says otherwise.
 */
export function meshWorkload(
  pod: Pod,
  node: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    name: pod.name,
    namespace: pod.namespace,
    serviceAccount: pod.name,
    addresses: [pod.ip],
    tunnelProtocol: 'HBONE',
    node: `node-${node}`,
    ...extra,
  };
}

/** Istio's converted STRICT PeerAuthentication (spec §3.8) as a static-config policy. */
export const STRICT_POLICY = {
  name: 'istio_converted_static_strict',
  namespace: 'istio-system',
  scope: 'WORKLOAD_SELECTOR',
  action: 'DENY',
  rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: true }] }] }] }],
} as const;
/** What a workload lists in `authorizationPolicies` to be STRICT. */
export const STRICT_POLICY_REF = `${STRICT_POLICY.namespace}/${STRICT_POLICY.name}`;

/** The workload/service/policy document, built once pod IPs are known (static config shape). */
export type ConfigBuilder = (pods: Record<string, Pod>) => Record<string, unknown>;

export interface MeshBed {
  tb: Testbed;
  pods: Record<string, Pod>;
  ca: CertificateAuthority;
  caDir: string;
  configPath: string;
  ztunnels: ZtunnelProc[];
  /** Rewrites the static config (ztunnels reload it on change). */
  writeConfig(doc: Record<string, unknown>): void;
  /**
   * Starts a fresh ztunnel on a node whose ztunnel has exited (as the DaemonSet would), with the
   * same pods to take over, and resolves once it is ready; `ztunnels[node]` is replaced.
   */
  restart(node: number): Promise<ZtunnelProc>;
  destroy(): Promise<void>;
}

export interface ZtunnelProc {
  node: number;
  child: ChildProcess;
  logs: string[];
  netnsPath: string;
  /** GET on one of ztunnel's ports inside the node netns. */
  get(port: number, path: string): Promise<{ status: number; body: string }>;
  /** Parsed access-log lines seen so far. */
  accessLogs(): Record<string, unknown>[];
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Resolves with the exit code (null when killed by a signal) once the process has exited. */
  readonly exited: Promise<number | null>;
}

export const ZTUNNEL_MAIN = join(import.meta.dirname, '../../ztunnel/src/main.ts');

/**
 * Node flags every ztunnel runs with (deploy manifests should use the same). A 1 MiB young
 * generation semi-space instead of V8's default (up to 16 MiB) keeps the young generation from
 * growing during start-up and the first connections and then staying resident: idle RSS 96-99 MB
 * → 86-87 MB per ztunnel in `npm run bench -- --quick --paths ztunnel --metrics rps,memory`
 * (2 MiB: 88-89 MB, 4 MiB: 93-94 MB), with no requests/s or CPU-per-request change beyond the
 * run-to-run noise in interleaved runs.
 */
export const ZTUNNEL_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];

function waitFor(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      cond().then(
        (ok) => {
          if (ok) resolve();
          else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
          else setTimeout(tick, 100);
        },
        () => {
          if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
          else setTimeout(tick, 100);
        },
      );
    };
    tick();
  });
}

export async function startMeshBed(opts: {
  nodes: number;
  pods: MeshPodSpec[];
  config: ConfigBuilder;
  env?: Record<string, string>;
  /** Extra environment for one node's ztunnel only (after `env`). */
  nodeEnv?: (node: number) => Record<string, string>;
  trustDomain?: string;
  /**
   * The ztunnel entry script each node runs (default ZTUNNEL_MAIN, the .ts source run through
   * type stripping); the benchmark passes the tsc-emitted dist/ztunnel/src/main.js.
   */
  ztunnelMain?: string;
  /** The in-pod rules' backend (default iptables, as the node agent's default). */
  redirectBackend?: RedirectBackend;
  /**
   * Enforce certificate revocation lists: the CA's CRL file (caDir/ca-crl.pem, written empty
   * before the ztunnels start, as `controller ca-revoke` writes it) is every ztunnel's CRL_PATH.
   */
  crl?: boolean;
}): Promise<MeshBed> {
  const tb = await createTestbed({ nodes: opts.nodes });
  const ztunnels: ZtunnelProc[] = [];
  try {
    const pods: Record<string, Pod> = {};
    for (const spec of opts.pods) {
      pods[spec.name] = await tb.addPod({ node: spec.node, name: spec.name, namespace: spec.namespace });
    }
    for (const spec of opts.pods) {
      if (spec.mesh === false) continue;
      await applyRedirection(pods[spec.name]!.netnsPath, {}, { backend: opts.redirectBackend ?? 'iptables' });
    }
    const dir = join(tb.stateDir, 'mesh');
    const caDir = join(dir, 'ca');
    mkdirSync(caDir, { recursive: true });
    const trustDomain = opts.trustDomain ?? 'cluster.local';
    const ca = await CertificateAuthority.create({ trustDomain, dir: caDir });
    const crlPath = join(caDir, CA_FILES.crl);
    if (opts.crl === true) writeFileSync(crlPath, (await ca.issueCrl({ revoke: [] })).pem);
    const configPath = join(dir, 'config.yaml');
    const writeConfig = (doc: Record<string, unknown>): void => {
      const tmp = `${configPath}.tmp`;
      writeFileSync(tmp, stringify(doc));
      // Rename into place so a reader never sees a half-written file.
      renameSync(tmp, configPath);
    };
    writeConfig(opts.config(pods));

    const spawnZtunnel = (node: Testbed['nodes'][number]): ZtunnelProc => {
      const inpod = opts.pods
        .filter((p) => p.mesh !== false && p.node === node.index)
        .map((p) => ({
          uid: `uid-${p.name}`,
          name: p.name,
          namespace: p.namespace,
          serviceAccount: p.serviceAccount ?? 'default',
          netns: pods[p.name]!.netnsPath,
        }));
      const inpodPath = join(dir, `inpod-node-${node.index}.yaml`);
      writeFileSync(inpodPath, stringify({ workloads: inpod }));
      const child = node.spawn(NODE_BIN, [...ZTUNNEL_NODE_FLAGS, opts.ztunnelMain ?? ZTUNNEL_MAIN], {
        env: {
          ...process.env,
          NODE_NAME: `node-${node.index}`,
          TRUST_DOMAIN: trustDomain,
          LOCAL_XDS_PATH: configPath,
          LOCAL_CA_DIR: caDir,
          INPOD_WORKLOADS: inpodPath,
          TERMINATION_GRACE_PERIOD_SECONDS: '3',
          ...(opts.crl === true && { CRL_PATH: crlPath }),
          ...opts.env,
          ...opts.nodeEnv?.(node.index),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const logs: string[] = [];
      let partial = '';
      const onData = (b: Buffer): void => {
        partial += b.toString('utf8');
        const lines = partial.split('\n');
        partial = lines.pop() ?? '';
        logs.push(...lines.filter((l) => l !== ''));
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      return {
        node: node.index,
        child,
        logs,
        netnsPath: node.netnsPath,
        get: (port, path) => httpGetInNetns(node.netnsPath, port, path),
        accessLogs: () =>
          logs
            .filter((l) => l.includes('"scope":"access"'))
            .map((l) => JSON.parse(l) as Record<string, unknown>),
        exited,
        stop: async (signal = 'SIGTERM') => {
          if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
          child.kill(signal);
          return exited;
        },
      };
    };
    const waitReady = (zt: ZtunnelProc): Promise<void> =>
      waitFor(
        async () => {
          if (zt.child.exitCode !== null)
            throw new Error(`ztunnel on node ${zt.node} exited: ${zt.logs.join('\n')}`);
          return (await zt.get(15021, '/healthz/ready')).status === 200;
        },
        20_000,
        `ztunnel on node ${zt.node} to be ready (logs: ${zt.logs.slice(-5).join(' | ')})`,
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}\nlogs:\n${zt.logs.join('\n')}`);
      });

    for (const node of tb.nodes) ztunnels.push(spawnZtunnel(node));
    for (const zt of ztunnels) await waitReady(zt);
    return {
      tb,
      pods,
      ca,
      caDir,
      configPath,
      ztunnels,
      writeConfig,
      restart: async (node) => {
        const old = ztunnels[node];
        if (old === undefined) throw new Error(`no ztunnel on node ${node}`);
        if (old.child.exitCode === null && old.child.signalCode === null) {
          throw new Error(`ztunnel on node ${node} is still running; stop it first`);
        }
        const zt = spawnZtunnel(tb.nodes[node]!);
        ztunnels[node] = zt;
        await waitReady(zt);
        return zt;
      },
      destroy: async () => {
        await Promise.all(ztunnels.map((z) => z.stop('SIGKILL')));
        await tb.destroy();
      },
    };
  } catch (err) {
    await Promise.all(ztunnels.map((z) => z.stop('SIGKILL')));
    await tb.destroy();
    throw err;
  }
}

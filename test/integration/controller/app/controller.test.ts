// SPDX-License-Identifier: Apache-2.0
// The real controller (startController) on loopback, as local mode runs it: the file source
// over a manifest directory, node tokens, the CA in a temporary directory. It serves nothing
// until the source has synced (checklist E.67); a ztunnel's delta ADS stream, authenticated by
// its node token, receives the manifest directory's workloads; the CA signs the identity of a
// pod on the caller's node and refuses one on another node. Then the Kubernetes source against
// the API stand-in: node agents are the ServiceAccount `<root namespace>/ztunnel` (or
// CA_TRUSTED_NODE_ACCOUNTS), checked by TokenReview. Finally, a file source without node tokens
// is refused before anything starts.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startController } from '../../../../src/controller/app.ts';
import { loadControllerConfig } from '../../../../src/controller/config.ts';
import { Address } from '../../../../src/shared/gen/workload.ts';
import { parseCertificate } from '../../../../src/shared/identity/certificate.ts';
import { pemCertificatesToDer } from '../../../../src/shared/identity/pem.ts';
import { Logger } from '../../../../src/shared/telemetry/logger.ts';
import { startKubeApi, writeKubeconfig } from '../../../helpers/kube-api/index.ts';
import {
  ADDRESS_TYPE_URL,
  NAMESPACE_YAML,
  RawDeltaStream,
  podYaml,
  fileRig,
  requestCertificate,
} from './rig.ts';

const WEB = 'spiffe://cluster.local/ns/apps/sa/web';
const DB = 'spiffe://cluster.local/ns/apps/sa/db';

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function tcpConnect(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve();
    });
    s.on('error', reject);
  });
}

/**
 * Holds every read of `path` until release(): the file source cannot finish its initial list
 * meanwhile. The manifest reader imports `readFile` from node:fs/promises; the builtin's export
 * is replaced and the ES module bindings re-synced (module.syncBuiltinESMExports) so it sees the
 * replacement. Restored on release and at teardown.
 */
function holdReads(t: Test, path: string): { reached: Promise<void>; release: () => void } {
  const fsp = process.getBuiltinModule('node:fs/promises');
  const original = fsp.readFile;
  let signalReached!: () => void;
  const reached = new Promise<void>((resolve) => (signalReached = resolve));
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  fsp.readFile = (async (file: unknown, ...rest: unknown[]) => {
    if (file === path) {
      signalReached();
      await opened;
    }
    return (original as (...a: unknown[]) => Promise<unknown>)(file, ...rest);
  }) as typeof fsp.readFile;
  syncBuiltinESMExports();
  const release = (): void => {
    open();
    fsp.readFile = original;
    syncBuiltinESMExports();
  };
  t.teardown(release);
  return { reached, release };
}

t.test('file source: nothing served before the sync; WDS and the CA for node-token callers', async (t) => {
  const port = await freePort();
  const rig = fileRig(
    t,
    {
      'ns.yaml': NAMESPACE_YAML,
      'web.yaml': podYaml('web', 'node-a', '198.18.1.10'),
      'db.yaml': podYaml('db', 'node-b', '198.18.2.10'),
    },
    { port },
  );
  const tokenA = rig.tokens['node-a']!;

  await t.test('nothing is served before the source has synced', async (t) => {
    const held = holdReads(t, join(rig.manifests, 'web.yaml'));
    const starting = rig.start();
    await held.reached;
    await t.rejects(tcpConnect(port), { code: 'ECONNREFUSED' }, 'the port is not open mid-sync');
    t.notOk(rig.logs.some((l) => l.message === 'source synced; model built'));
    held.release();
    const ctl = await starting;
    t.equal(ctl.address, `127.0.0.1:${port}`);
    await tcpConnect(port);
    const order = rig.logs.map((l) => l.message);
    t.ok(order.indexOf('source synced; model built') < order.indexOf('serving WDS and the CA'));
  });

  await t.test('a ztunnel with a node token receives the workloads of the manifest directory', async (t) => {
    const ctl = await rig.start();
    const stream = new RawDeltaStream(t, ctl, tokenA);
    stream.subscribe(ADDRESS_TYPE_URL, 'node-a');
    const r = await stream.next();
    t.equal(r.typeUrl, ADDRESS_TYPE_URL);
    t.same(r.resources.map((x) => x.name).sort(), ['Kubernetes//Pod/apps/db', 'Kubernetes//Pod/apps/web']);
    const web = r.resources.find((x) => x.name === 'Kubernetes//Pod/apps/web');
    const decoded = Address.decode(web?.resource?.value ?? new Uint8Array());
    t.match(decoded.type, { $case: 'workload', value: { node: 'node-a', serviceAccount: 'web' } });

    const stranger = new RawDeltaStream(t, ctl, 'x'.repeat(43));
    stranger.subscribe(ADDRESS_TYPE_URL, 'node-a');
    await t.rejects(stranger.next(), /stream ended \(16:/, 'an unknown token: UNAUTHENTICATED');
  });

  await t.test("the CA signs a pod on the caller's node and refuses one on another node", async (t) => {
    const ctl = await rig.start();
    const signed = await requestCertificate(ctl, tokenA, WEB);
    if (!signed.ok) throw new Error(`refused: ${signed.details}`);
    const leaf = parseCertificate(pemCertificatesToDer(signed.chain[0]!, 'leaf')[0]!);
    t.same(
      leaf.subjectAltNames.map((n) => Buffer.from(n.value).toString('latin1')),
      [WEB],
      'the leaf carries the identity asked for',
    );
    t.match(await requestCertificate(ctl, tokenA, DB), { ok: false, code: status.PERMISSION_DENIED });
    t.match(await requestCertificate(ctl, rig.tokens['node-b']!, DB), { ok: true }, 'from its own node');
  });
});

t.test('Kubernetes source: node agents are <root namespace>/ztunnel, checked by TokenReview', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  const dir = mkdtempSync(join(tmpdir(), 'controller-app-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'kubeconfig');
  await writeKubeconfig(api, kubeconfig);
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'apps' } });
  api.create({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', namespace: 'apps' },
    spec: { nodeName: 'node-a', serviceAccountName: 'web', containers: [{ name: 'app', image: 'example' }] },
    status: { phase: 'Running', podIP: '198.18.1.10', podIPs: [{ ip: '198.18.1.10' }] },
  });
  const ztunnel = (token: string, namespace: string, name = 'ztunnel'): void =>
    api.registerServiceAccountToken(token, { namespace, name, nodeName: 'node-a' }, ['istio-ca']);
  ztunnel('tok-mesh-root', 'mesh-root');
  ztunnel('tok-istio-system', 'istio-system');
  ztunnel('tok-agent', 'kube-system', 'node-agent');

  const start = async (env: Record<string, string>) => {
    const cfg = loadControllerConfig(
      ['--root-namespace', 'mesh-root', '--listen', '127.0.0.1:0', '--ca-dir', join(dir, 'ca')],
      { KUBECONFIG: kubeconfig, ...env },
    );
    const ctl = await startController(cfg, new Logger({ level: 'silent' }));
    t.teardown(() => ctl.close());
    return ctl;
  };

  const derived = await start({});
  t.match(
    await requestCertificate(derived, 'tok-mesh-root', WEB),
    { ok: true },
    'mesh-root/ztunnel is a node agent',
  );
  t.match(
    await requestCertificate(derived, 'tok-istio-system', WEB),
    { ok: false, code: status.PERMISSION_DENIED },
    'istio-system/ztunnel is only a workload here: it may not impersonate',
  );
  await derived.close();

  const configured = await start({ CA_TRUSTED_NODE_ACCOUNTS: 'kube-system/node-agent' });
  t.match(await requestCertificate(configured, 'tok-agent', WEB), { ok: true }, 'the configured account');
  t.match(await requestCertificate(configured, 'tok-mesh-root', WEB), {
    ok: false,
    code: status.PERMISSION_DENIED,
  });
});

t.test('a file source without node tokens is refused before anything starts', async (t) => {
  const rig = fileRig(t, { 'ns.yaml': NAMESPACE_YAML });
  await t.rejects(startController({ ...rig.config, nodeTokensFile: undefined }, rig.logger), {
    code: 'CTL_ERR_CONFIG',
    message: '--manifests needs --node-tokens: there is no Kubernetes API to review tokens',
  });
  t.notOk(
    rig.logs.some((l) => l.message === 'source synced; model built'),
    'the source never started',
  );
});

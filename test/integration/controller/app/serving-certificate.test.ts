// SPDX-License-Identifier: Apache-2.0
// The controller's serving certificate on its gRPC port, end to end through startController:
// with a lifetime of seconds, a client that connects after the first certificate expired still
// completes its handshake (against the mesh roots) and sees a new certificate, while a delta
// ADS stream opened before the renewal stays up and keeps receiving pushes. A root rotation
// switches new connections to a certificate from the new root at once.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import { ADDRESS_TYPE_URL, NAMESPACE_YAML, RawDeltaStream, fileRig, handshake, podYaml } from './rig.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));

t.test(
  'renewed in place: new handshakes after the first expiry succeed, established streams carry on',
  async (t) => {
    const rig = fileRig(
      t,
      { 'ns.yaml': NAMESPACE_YAML, 'web.yaml': podYaml('web', 'node-a', '198.18.1.10') },
      { overrides: { servingCertTtlSeconds: 3 } },
    );
    const ctl = await rig.start();
    const token = rig.tokens['node-a']!;
    const first = await handshake(ctl);

    const stream = new RawDeltaStream(t, ctl, token);
    stream.subscribe(ADDRESS_TYPE_URL, 'node-a');
    const initial = await stream.next();
    t.same(
      initial.resources.map((r) => r.name),
      ['Kubernetes//Pod/apps/web'],
    );
    stream.ack(initial);

    // X.509 times have one-second resolution and notAfter is inclusive.
    await sleep(Date.parse(first.valid_to) - Date.now() + 1100);
    const later = await handshake(ctl); // verified against the roots: an expired certificate fails here
    t.not(later.fingerprint256, first.fingerprint256, 'a new certificate');
    t.ok(Date.parse(later.valid_to) > Date.now(), `valid until ${later.valid_to}`);
    t.match(
      rig.logs.filter((l) => l.message === 'serving certificate renewed'),
      [{ level: 'info', reason: 'half-life' }],
      'renewals are logged',
    );

    const fresh = new RawDeltaStream(t, ctl, token);
    fresh.subscribe(ADDRESS_TYPE_URL, 'node-a');
    t.same(
      (await fresh.next()).resources.map((r) => r.name),
      ['Kubernetes//Pod/apps/web'],
      'a new gRPC client',
    );

    writeFileSync(join(rig.manifests, 'db.yaml'), podYaml('db', 'node-b', '198.18.2.10'));
    const push = await stream.next();
    t.same(
      push.resources.map((r) => r.name),
      ['Kubernetes//Pod/apps/db'],
      'the old stream still gets pushes',
    );
    t.equal(stream.status, undefined, 'and never ended');
  },
);

t.test('a root rotation switches new connections to a certificate from the new root', async (t) => {
  const rig = fileRig(t, { 'ns.yaml': NAMESPACE_YAML });
  const ctl = await rig.start();
  const before = await handshake(ctl);
  const renewals = async (n: number): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (
      rig.logs.filter((l) => l.message === 'serving certificate renewed' && l.reason === 'roots changed')
        .length < n
    ) {
      if (Date.now() > deadline) throw new Error(`no renewal ${n} after the root rotation step`);
      await sleep(10);
    }
  };
  await ctl.ca.addNextRoot();
  await renewals(1);
  ctl.ca.activateNextRoot();
  await renewals(2);
  const [host = '', port = ''] = ctl.address.split(/:(?=\d+$)/);
  const socket = tls.connect({
    host,
    port: Number(port),
    servername: '',
    ca: ctl.ca.signingCertificatePem, // the new root alone, as after dropOldRoot()
    ALPNProtocols: ['h2'],
  });
  t.teardown(() => socket.destroy());
  await once(socket, 'secureConnect');
  t.not(socket.getPeerCertificate().fingerprint256, before.fingerprint256);
});

// SPDX-License-Identifier: Apache-2.0
// Certificate revocation end to end (checklist B.31; spec §4 "CRL"; upstream's
// TestZtunnelCrlInbound / TestZtunnelCrlOutbound and ztunnel's
// crl_{inbound,outbound}_terminates_existing_connection_on_revocation): two nodes, every ztunnel
// with CRL_PATH on the CA's CRL file, revocations written by the operator's command
// (`controller ca-revoke`, run in-process here on the bed's CA directory).
//
//   - revoking the client pod's certificate: the destination ztunnel closes the open connection
//     within a second or two, refuses new handshakes, and counts them (reporter=destination);
//   - a new client certificate (a restarted ztunnel) gets through again: revocation is per
//     certificate, not per identity;
//   - revoking the server pod's certificate: the source ztunnel closes its open connection,
//     refuses the destination, and reports CERT_REVOKED (reporter=source);
//   - a broken CRL file keeps the last good lists in force.
import { writeFileSync } from 'node:fs';
import t from 'tap';
import { runCaRevoke } from '../../../src/controller/ca/revoke-cli.ts';
import { normalizeSerial } from '../../../src/shared/identity/crl.ts';
import {
  CLIENT_SERVER_PODS,
  meshWorkload,
  startMeshBed,
  type MeshBed,
  type ZtunnelProc,
} from '../../helpers/mesh-bed.ts';
import { holdConnection, startTcpServer, tcpRequest } from '../../helpers/testbed-apps.ts';
import { waitFor } from '../../helpers/wait.ts';

/** Enforcement latency target (security-and-reliability.md: ≤ 1 s p99), with room for a busy CI box. */
const TORN_DOWN_MS = 3_000;

if (process.getuid?.() !== 0) {
  t.fail('the ztunnel netns suite needs root (network namespaces, iptables)');
  t.end();
} else {
  let bed: MeshBed;
  t.before(async () => {
    bed = await startMeshBed({
      nodes: 2,
      pods: [...CLIENT_SERVER_PODS],
      config: (p) => ({ workloads: [meshWorkload(p.client!, 0), meshWorkload(p.server!, 1)] }),
      crl: true,
    });
    await startTcpServer(bed.pods.server!, 'server', [8080]);
  });
  t.teardown(async () => {
    await bed.destroy();
  });

  const request = (): ReturnType<typeof tcpRequest> =>
    tcpRequest(bed.pods.client!, bed.pods.server!.ip, 8080, { timeoutMs: 3000 });

  /** The serial of the leaf certificate a ztunnel holds for `identity` (its /config_dump). */
  async function serialOf(zt: ZtunnelProc, identity: string): Promise<string> {
    const dump = JSON.parse((await zt.get(15000, '/config_dump')).body) as {
      certificates: { identity: string; state: string; certChain: { serialNumber: string }[] }[];
    };
    const entry = dump.certificates.find((c) => c.identity === identity);
    const serial = entry?.certChain[0]?.serialNumber;
    if (entry?.state !== 'Available' || serial === undefined) {
      throw new Error(`no certificate for ${identity} in node ${zt.node}'s config_dump`);
    }
    return serial;
  }

  async function metric(zt: ZtunnelProc, re: RegExp): Promise<number> {
    const m = re.exec((await zt.get(15020, '/metrics')).body);
    return m ? Number(m[1]) : 0;
  }

  async function revoke(serial: string): Promise<string> {
    let out = '';
    let err = '';
    const status = await runCaRevoke(['--serial', serial, '--ca-dir', bed.caDir], {
      out: (s) => (out += s),
      err: (s) => (err += s),
    });
    if (status !== 0) throw new Error(`ca-revoke failed (${status}): ${err}`);
    return out;
  }

  const CLIENT_ID = 'spiffe://cluster.local/ns/demo/sa/client';
  const SERVER_ID = 'spiffe://cluster.local/ns/demo/sa/server';

  t.test(
    'a revoked client: the destination closes its connection and refuses it',
    { timeout: 120_000 },
    async (t) => {
      const before = await request();
      t.ok(before.ok, `before: ${before.output}`);
      const [zt0, zt1] = bed.ztunnels as [ZtunnelProc, ZtunnelProc];
      const clientSerial = await serialOf(zt0, CLIENT_ID);

      const held = holdConnection(bed.pods.client!, bed.pods.server!.ip, 8080, 4 * TORN_DOWN_MS);
      await held.established;
      t.match(await revoke(clientSerial), normalizeSerial(clientSerial), 'ca-revoke lists the serial');
      held.mark();
      const r = await held.ended;
      t.not(r.how, 'still open', `the open connection ended: ${r.how}`);
      t.ok(r.echoed > 0, `it carried ${r.echoed} echoes before`);
      t.ok(r.afterMarkMs < TORN_DOWN_MS, `closed ${r.afterMarkMs} ms after the CRL was written`);

      const after = await request();
      t.notOk(after.ok, `a new connection is refused: ${after.output}`);
      t.equal(after.server, undefined, 'it reached no app');
      t.ok(
        (await metric(zt1, /^istio_crl_policy_rejections_total\{reporter="destination"\} (\d+)/m)) >= 1,
        'the destination counts the rejection',
      );
      t.ok(
        zt1.logs.some(
          (l) => l.includes('closed the HBONE session of a revoked peer') && l.includes(clientSerial),
        ),
        'the destination logged the teardown, naming the serial',
      );
    },
  );

  t.test(
    'a new client certificate gets through: revocation is per certificate',
    { timeout: 120_000 },
    async (t) => {
      await bed.ztunnels[0]!.stop('SIGTERM');
      const zt0 = await bed.restart(0);
      const r = await request();
      t.ok(r.ok, `through with the new certificate: ${r.output}`);
      t.match(r.output, `peer=${bed.pods.client!.ip}`);
      t.not(await serialOf(zt0, CLIENT_ID), '', 'a new serial');
    },
  );

  t.test(
    'a revoked server: the source closes its connection and reports CERT_REVOKED',
    { timeout: 120_000 },
    async (t) => {
      const [zt0, zt1] = bed.ztunnels as [ZtunnelProc, ZtunnelProc];
      const serverSerial = await serialOf(zt1, SERVER_ID);
      const held = holdConnection(bed.pods.client!, bed.pods.server!.ip, 8080, 4 * TORN_DOWN_MS);
      await held.established;
      await revoke(serverSerial);
      held.mark();
      const r = await held.ended;
      t.not(r.how, 'still open', `the open connection ended: ${r.how}`);
      t.ok(r.afterMarkMs < TORN_DOWN_MS, `closed ${r.afterMarkMs} ms after the CRL was written`);
      t.ok(
        zt0.logs.some(
          (l) => l.includes('closed the HBONE session of a revoked peer') && l.includes(SERVER_ID),
        ),
        'the source logged the teardown',
      );

      const after = await request();
      t.notOk(after.ok, `a new connection is refused: ${after.output}`);
      t.equal(after.server, undefined, 'it reached no app');
      t.ok(
        (await metric(zt0, /^istio_crl_policy_rejections_total\{reporter="source"\} (\d+)/m)) >= 1,
        'the source counts the rejection',
      );
      t.ok(
        (await metric(
          zt0,
          /^istio_tcp_connections_failed_total\{reporter="source".*response_flags="CERT_REVOKED".*\} (\d+)/m,
        )) >= 1,
        'the failed connection carries CERT_REVOKED',
      );
      t.ok(
        zt0
          .accessLogs()
          .some(
            (l) =>
              typeof l.error === 'string' &&
              l.error.includes(`serial ${serverSerial}) is revoked by the CRL`),
          ),
        'the access log names the revoked serial',
      );
    },
  );

  t.test('a broken CRL file keeps the last good lists in force', { timeout: 60_000 }, async (t) => {
    writeFileSync(
      `${bed.caDir}/ca-crl.pem`,
      '-----BEGIN X509 CRL-----\nnot base64!\n-----END X509 CRL-----\n',
    );
    const [zt0, zt1] = bed.ztunnels as [ZtunnelProc, ZtunnelProc];
    const rejected = (zt: ZtunnelProc): boolean => zt.logs.some((l) => l.includes('CRL file rejected'));
    await waitFor(() => rejected(zt0) && rejected(zt1), 'both ztunnels to report the bad file', 10_000, 50);
    t.pass('both ztunnels report the bad file');
    const after = await request();
    t.notOk(after.ok, 'the server is still refused');
    t.equal((await zt0.get(15021, '/healthz/ready')).status, 200, 'ztunnel stays ready');
  });
}

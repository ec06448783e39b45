// SPDX-License-Identifier: Apache-2.0
// Who ztunnel takes pods from (ztunnel/src/inpod/zds-client.ts): a ZDS listener run by another
// uid is refused before the hello, even when its socket sits in a trusted directory (planted
// there by rename), and so is a socket directory owned by another uid; the client keeps retrying
// and connects once a trusted agent listens. Needs root: the foreign listener runs as nobody
// (uid 65534), and the directories are chowned.
import { spawn } from 'node:child_process';
import { chownSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';

import type { WorkloadRequest } from '../../../src/shared/gen/zds.ts';
import { ZdsConnection } from '../../../src/shared/zds/connection.ts';
import { ZDS_LIMITS } from '../../../src/shared/zds/framing.ts';
import { SeqpacketListener } from '../../../src/shared/zds/seqpacket.ts';
import { WorkloadManager } from '../../../ztunnel/src/inpod/workload-manager.ts';
import { startZdsClient } from '../../../ztunnel/src/inpod/zds-client.ts';
import {
  LOOPBACK_PORTS,
  loopbackSocketFactory,
  memoryLogger,
  testProxyContext,
  until,
} from '../../integration/zds/fixtures.ts';

const NOBODY = 65534;
const SEQPACKET = pathToFileURL(join(import.meta.dirname, '../../../src/shared/zds/seqpacket.ts')).href;

/** A SEQPACKET listener at `path`, run as uid/gid nobody; resolves once it listens. */
async function foreignListener(path: string): Promise<{ kill: () => void }> {
  const script = `
    import { SeqpacketListener } from ${JSON.stringify(SEQPACKET)};
    const l = new SeqpacketListener(${JSON.stringify(path)}, { mode: 0o666, limits: { maxBytes: 1024, maxFds: 1 } });
    l.on('connection', () => undefined);
    process.stdout.write('listening\\n');
    setInterval(() => undefined, 60_000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) =>
      reject(new Error(`the nobody listener exited (${String(code)}): ${stderr}`)),
    );
    child.stdout.once('data', () => resolve());
  });
  child.removeAllListeners('exit');
  return { kill: () => child.kill('SIGKILL') };
}

if (process.getuid?.() !== 0) {
  t.fail('the ZDS peer-check suite needs root (a listener run as another uid, chown)');
} else {
  t.test(
    'a listener of another uid, or a directory another uid owns, gets no hello; then a trusted one does',
    async (t) => {
      const { logger, lines } = memoryLogger('debug');
      const ctx = await testProxyContext(logger);
      t.teardown(() => ctx.certs.close());

      // nobody listens in a directory of its own; its socket is then moved into a root-owned 0700
      // directory, where only root could have put it: the directory check passes, SO_PEERCRED must not.
      const theirs = mkdtempSync(join(tmpdir(), 'zds-nobody-'));
      chownSync(theirs, NOBODY, NOBODY);
      const ours = mkdtempSync(join(tmpdir(), 'zds-root-'));
      t.teardown(() => {
        rmSync(theirs, { recursive: true, force: true });
        rmSync(ours, { recursive: true, force: true });
      });
      const planted = await foreignListener(join(theirs, 'agent.sock'));
      t.teardown(() => planted.kill());
      const path = join(ours, 'ztunnel.sock');
      renameSync(join(theirs, 'agent.sock'), path);

      const manager = new WorkloadManager(ctx, {
        delDrainMs: 0,
        socketFactory: loopbackSocketFactory,
        ports: LOOPBACK_PORTS,
      });
      const client = startZdsClient({ path, manager, logger, initialBackoffMs: 10, maxBackoffMs: 50 });
      t.teardown(async () => {
        await client.close();
        await manager.stopAll(0);
      });

      await until(() => /runs as uid/.test(client.status().lastError ?? ''), 5000, 'the peer refusal');
      t.match(
        client.status().lastError,
        new RegExp(
          `the process listening on .*ztunnel\\.sock \\(pid \\d+\\) runs as uid ${NOBODY}, not a trusted uid \\(0\\)`,
        ),
      );
      t.equal(client.status().connections, 0, 'no hello was sent to it');
      const refusals = (): number =>
        lines.filter((l) => l.message === 'refused to take pods from the ZDS socket').length;
      await until(() => refusals() >= 2, 5000, 'a retry');
      t.pass('and it keeps retrying');

      // The directory itself handed to another uid: refused before connecting at all.
      planted.kill();
      rmSync(path, { force: true });
      chownSync(ours, NOBODY, NOBODY);
      await until(() => /owned by uid/.test(client.status().lastError ?? ''), 5000, 'the directory refusal');
      t.match(
        client.status().lastError,
        new RegExp(`directory .* is owned by uid ${NOBODY}, not a trusted uid`),
      );

      // A trusted agent (root, in a root directory): the client connects and says hello.
      chownSync(ours, 0, 0);
      const listener = new SeqpacketListener(path, { mode: 0o600, limits: ZDS_LIMITS });
      t.teardown(() => listener.close());
      const conn = await new Promise<ZdsConnection>((resolve) =>
        listener.once('connection', (s) => resolve(new ZdsConnection(s))),
      );
      await conn.readHello();
      t.pass('hello from the client once a trusted agent listens');
      const snapshotSent: WorkloadRequest = { payload: { $case: 'snapshotSent', value: {} } };
      t.equal(await conn.request(snapshotSent), '');
      t.equal(client.status().connections, 1);
      conn.close();
    },
  );
}

// SPDX-License-Identifier: Apache-2.0
// Root-only proofs of the addon's ZDS support with real network namespaces: NS_GET_NSTYPE tells a
// netns from other namespaces and from plain files; a netns fd sent over SOCK_SEQPACKET as
// SCM_RIGHTS arrives in another process as the same namespace and works there (a listener created
// through it lives in that netns), while a non-netns fd arrives as what it is; writeNetSysctl
// changes the sysctl of the target netns only, returns the thread to its own netns, and refuses
// keys outside /proc/sys/net. The namespace is named amz-<pid> and deleted in teardown.
import { execFileSync, fork } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';

import {
  closeFd,
  currentNetns,
  namespaceType,
  netnsInode,
  openNetns,
  writeNetSysctl,
} from '../../../src/shared/native/index.ts';
import { ZDS_LIMITS } from '../../../src/shared/zds/framing.ts';
import { SeqpacketListener, type SeqpacketSocket } from '../../../src/shared/zds/seqpacket.ts';
import type { ReceiverReport } from './netns-fd-receiver.ts';

const NS = `amz-${process.pid}`;
const RECEIVER = join(import.meta.dirname, 'netns-fd-receiver.ts');

if (process.getuid?.() !== 0) {
  t.fail('the native netns suite needs root');
} else {
  execFileSync('ip', ['netns', 'add', NS]);
  const dir = mkdtempSync(join(tmpdir(), 'zdsn-'));
  t.teardown(() => {
    execFileSync('ip', ['netns', 'del', NS]);
    rmSync(dir, { recursive: true, force: true });
  });
  const nsPath = `/run/netns/${NS}`;

  t.test('NS_GET_NSTYPE: net, other namespaces, not a namespace, closed', async (t) => {
    const net = openNetns(nsPath);
    t.equal(namespaceType(net), 'net');
    closeFd(net);
    for (const [kind, file] of [
      ['mnt', '/proc/self/ns/mnt'],
      ['uts', '/proc/self/ns/uts'],
      ['ipc', '/proc/self/ns/ipc'],
      ['pid', '/proc/self/ns/pid'],
    ] as const) {
      const fd = openSync(file, 'r');
      t.equal(namespaceType(fd), kind, file);
      closeSync(fd);
    }
    const file = openSync('/dev/null', 'r');
    t.equal(namespaceType(file), null, 'a device is no namespace');
    closeSync(file);
    t.throws(() => namespaceType(file), { code: 'EBADF' }, 'a closed fd is an error, not "no namespace"');
  });

  /** Sends `fd` to a freshly forked receiver and returns its report. */
  async function sendTo(t: Test, fd: number): Promise<ReceiverReport> {
    const listener = new SeqpacketListener(join(dir, `r${String(fd)}.sock`), {
      mode: 0o600,
      limits: ZDS_LIMITS,
    });
    const connected = new Promise<SeqpacketSocket>((resolve) => listener.once('connection', resolve));
    const child = fork(RECEIVER, [listener.path], {
      execArgv: [],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    try {
      const report = new Promise<ReceiverReport>((resolve, reject) => {
        child.once('message', (m: ReceiverReport) => resolve(m));
        child.once('exit', (code) =>
          reject(new Error(`receiver exited with ${String(code)} before reporting`)),
        );
      });
      const conn = await connected;
      t.equal(conn.peer?.pid, child.pid, 'SO_PEERCRED names the receiver process');
      await conn.send(Buffer.from('add'), fd);
      conn.close();
      return await report;
    } finally {
      listener.close();
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }

  t.test('a netns fd crosses to another process as the same, usable namespace', async (t) => {
    const fd = openNetns(nsPath);
    const report = await sendTo(t, fd);
    closeFd(fd);
    t.equal(report.fds, 1, 'one fd arrived');
    t.equal(report.type, 'net', 'NS_GET_NSTYPE there: a network namespace');
    t.equal(report.inode, statSync(nsPath).ino, 'the same namespace');
    t.equal(report.listenerInode, statSync(nsPath).ino, 'a listener made through it lives in that netns');
  });

  t.test('a non-netns fd arrives as what it is, and the receiver can refuse it', async (t) => {
    const fd = openSync('/proc/self/ns/uts', 'r');
    const report = await sendTo(t, fd);
    closeSync(fd);
    t.equal(report.fds, 1);
    t.equal(report.type, 'uts', 'the receiver sees a uts namespace, not a netns');
    t.equal(report.listenerInode, undefined, 'and does not use it');
  });

  t.test('writeNetSysctl writes the target netns only and returns to our own', async (t) => {
    const rootValue = readFileSync('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8');
    const before = currentNetns();
    const fd = openNetns(nsPath);
    for (const v of ['1', '0', '1']) {
      writeNetSysctl(fd, 'ipv4/tcp_migrate_req', v);
      const got = execFileSync('ip', ['netns', 'exec', NS, 'sysctl', '-n', 'net.ipv4.tcp_migrate_req'], {
        encoding: 'utf8',
      });
      t.equal(got.trim(), v, `the namespace reads ${v}`);
    }
    t.equal(
      readFileSync('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8'),
      rootValue,
      'our own netns is untouched',
    );
    const after = currentNetns();
    t.equal(netnsInode(after), netnsInode(before), 'the thread is back in its own netns');
    closeFd(after);
    closeFd(before);
    for (const bad of ['../../kernel/hostname', '/ipv4/x', 'ipv4//x', 'IPv4/x', 'ipv4/x y']) {
      t.throws(() => writeNetSysctl(fd, bad, '1'), { code: 'ERR_INVALID_ARG_VALUE' }, `refused key ${bad}`);
    }
    t.throws(() => writeNetSysctl(fd, 'ipv4/no_such_sysctl', '1'), { code: 'ENOENT', syscall: 'open' });
    closeFd(fd);
  });
}

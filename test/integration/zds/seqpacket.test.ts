// SPDX-License-Identifier: Apache-2.0
// The ZDS transport on real Unix SOCK_SEQPACKET sockets (src/shared/native seqpacket* and poll*,
// src/shared/zds/seqpacket.ts), no root needed: the socket file is 0600, peers are identified by
// SO_PEERCRED, datagrams arrive whole and in order, an fd travels as SCM_RIGHTS and arrives
// close-on-exec, MSG_TRUNC and MSG_CTRUNC are errors that leak nothing, EOF is seen at once,
// a full socket buffer is waited out through writability (no polling), and closing everything
// brings the process's fd count back to where it was.
import { closeSync, fstatSync, openSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';

import {
  NativeError,
  POLL_READABLE,
  closeFd,
  peerCredentials,
  pollClose,
  pollStart,
  pollUpdate,
  seqpacketAccept,
  seqpacketConnect,
  seqpacketListen,
  seqpacketRecv,
  seqpacketSend,
} from '../../../src/shared/native/index.ts';
import {
  SeqpacketListener,
  SeqpacketSocket,
  type Datagram,
  type DatagramLimits,
} from '../../../src/shared/zds/seqpacket.ts';
import { openFdCount, scratchDir, settledFdCount } from './fixtures.ts';

const LIMITS: DatagramLimits = { maxBytes: 1024, maxFds: 1 };

const { dir, cleanup } = scratchDir();
t.teardown(cleanup);
let n = 0;
const sockPath = (): string => join(dir, `s${String(n++)}.sock`);

/** A listener and one connected pair (client, server side). */
async function pair(
  limits: DatagramLimits = LIMITS,
): Promise<{ listener: SeqpacketListener; client: SeqpacketSocket; server: SeqpacketSocket }> {
  const listener = new SeqpacketListener(sockPath(), { mode: 0o600, limits });
  const accepted = new Promise<SeqpacketSocket>((resolve) => listener.once('connection', resolve));
  const client = SeqpacketSocket.connect(listener.path, limits);
  const server = await accepted;
  return { listener, client, server };
}

function closeAll(p: {
  listener: SeqpacketListener;
  client: SeqpacketSocket;
  server: SeqpacketSocket;
}): void {
  p.client.close();
  p.server.close();
  p.listener.close();
}

function closed(s: SeqpacketSocket): Promise<Error | undefined> {
  return new Promise((resolve) => s.once('close', resolve));
}

/** O_CLOEXEC as /proc/self/fdinfo reports it (octal flags). */
function cloexec(fd: number): boolean {
  const flags = /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${String(fd)}`, 'utf8'))?.[1];
  return flags !== undefined && (parseInt(flags, 8) & 0o2000000) !== 0;
}

const baseline = openFdCount();

t.test('the socket file is a root-only (0600) socket, and both ends know who the peer is', async (t) => {
  const p = await pair();
  const st = statSync(p.listener.path);
  t.ok(st.isSocket(), 'a socket file');
  t.equal(st.mode & 0o777, 0o600, 'mode 0600');
  const me = { pid: process.pid, uid: process.getuid?.(), gid: process.getgid?.() };
  t.same(p.server.peer, me, 'SO_PEERCRED of the accepted connection names this process');
  t.equal(p.client.peer, undefined, 'a connecting socket is not asked for its peer');
  closeAll(p);
});

t.test(
  'datagrams arrive whole, one per send, in order; an fd arrives as a new close-on-exec fd to the same file',
  async (t) => {
    const p = await pair();
    const got: Datagram[] = [];
    const all = new Promise<void>((resolve) =>
      p.server.on('datagram', (d) => {
        got.push(d);
        if (got.length === 3) resolve();
      }),
    );
    const file = openSync('/dev/null', 'r');
    await p.client.send(Buffer.from('one'));
    await p.client.send(Buffer.alloc(1000, 7), file);
    await p.client.send(Buffer.from('three'));
    closeSync(file);
    await all;
    t.same(
      got.map((d) => d.data.length),
      [3, 1000, 5],
      'three datagrams of the sent sizes',
    );
    t.equal(got[0]!.data.toString(), 'one');
    t.equal(got[2]!.data.toString(), 'three');
    t.same([got[0]!.fds.length, got[1]!.fds.length, got[2]!.fds.length], [0, 1, 0]);
    const received = got[1]!.fds[0]!;
    t.equal(fstatSync(received).ino, statSync('/dev/null').ino, 'the received fd is /dev/null');
    t.ok(cloexec(received), 'received with close-on-exec');
    closeFd(received);
    closeAll(p);
  },
);

t.test('every fd the addon creates or receives is close-on-exec', async (t) => {
  const path = sockPath();
  const lfd = seqpacketListen(path, 0o600);
  const fd = seqpacketConnect(path);
  // A Unix connect completes at once, so the connection is already queued.
  const accepted = seqpacketAccept(lfd);
  t.ok(accepted, 'accepted without waiting');
  t.ok(cloexec(lfd), 'listening socket');
  t.ok(cloexec(fd), 'connected socket');
  t.ok(cloexec(accepted!.fd), 'accepted socket');
  t.same(peerCredentials(fd).pid, process.pid, 'SO_PEERCRED works on the connecting side too');
  t.equal(seqpacketAccept(lfd), null, 'nothing more queued: null, not a blocking call');
  for (const f of [accepted!.fd, fd, lfd]) closeFd(f);
  unlinkSync(path);
});

t.test(
  'a datagram larger than the receive buffer (MSG_TRUNC) closes the receiver with EMSGSIZE',
  async (t) => {
    const p = await pair();
    const why = closed(p.server);
    await p.client.send(Buffer.alloc(2000, 1));
    const err = await why;
    t.ok(err instanceof NativeError, 'a NativeError');
    t.equal((err as NativeError).code, 'EMSGSIZE');
    t.match(err?.message, /larger than 1024 bytes \(MSG_TRUNC\)/);
    t.equal(await closed(p.client), undefined, 'the sender then sees an orderly EOF');
    p.listener.close();
  },
);

t.test(
  'an fd where none fits (MSG_CTRUNC) is an EMSGSIZE error, and the fd that arrived is closed',
  async (t) => {
    const p = await pair({ maxBytes: 1024, maxFds: 0 });
    const before = openFdCount();
    const why = closed(p.server);
    const file = openSync('/dev/null', 'r');
    await p.client.send(Buffer.from('x'), file);
    closeSync(file);
    const err = await why;
    t.equal((err as NativeError).code, 'EMSGSIZE');
    t.match(err?.message, /more than 0 file descriptor\(s\) attached \(MSG_CTRUNC\)/);
    // The server socket's own fd is gone too, hence one fewer.
    t.equal(await settledFdCount(before - 1), before - 1, 'nothing received was left open');
    p.client.close();
    p.listener.close();
  },
);

t.test('the peer closing is seen at once as an orderly close', async (t) => {
  const p = await pair();
  const why = closed(p.server);
  p.client.close();
  t.equal(await why, undefined);
  t.ok(p.server.closed);
  await t.rejects(p.server.send(Buffer.from('late')), { code: 'ZDS_ERR_CLOSED' }, 'send after close rejects');
  p.listener.close();
});

t.test(
  'a full socket buffer is waited out: sends queue, then drain in order once the peer reads',
  async (t) => {
    const path = sockPath();
    const listener = new SeqpacketListener(path, { mode: 0o600, limits: LIMITS });
    // The reading end is a bare fd (no watcher), so nothing is read until the test reads it.
    const reader = seqpacketConnect(path);
    const sender = await new Promise<SeqpacketSocket>((resolve) => listener.once('connection', resolve));
    const payload = (i: number): Buffer => Buffer.alloc(512, i % 251);
    let count = 0;
    // Fill the buffer: a send that does not complete at once means the kernel said EAGAIN.
    const sends: Promise<void>[] = [];
    let stalled = false;
    for (let i = 0; i < 100_000 && !stalled; i++) {
      let done = false;
      const p = sender.send(payload(i)).then(() => {
        done = true;
      });
      sends.push(p);
      count++;
      await Promise.resolve();
      await Promise.resolve();
      stalled = !done;
    }
    t.ok(stalled, `the socket buffer filled after ${count} datagrams`);
    // Queue a few more behind the stalled one.
    for (let i = 0; i < 5; i++) sends.push(sender.send(payload(count++)));
    const all = Promise.all(sends);
    // Read everything, waiting for readability through a poll watcher of our own.
    const received: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const w = pollStart(reader, POLL_READABLE, (err) => {
        if (err !== null) {
          reject(err);
          return;
        }
        for (;;) {
          const d = seqpacketRecv(reader, 1024, 0);
          if (d === null) return;
          received.push(d.data[0]!);
          if (received.length === count) {
            pollClose(w);
            resolve();
            return;
          }
        }
      });
    });
    await all;
    t.equal(received.length, count, 'every datagram arrived');
    t.ok(
      received.every((b, i) => b === i % 251),
      'in the order sent',
    );
    closeFd(reader);
    sender.close();
    listener.close();
  },
);

t.test('closing the listener removes its socket file, but not one another listener put there', async (t) => {
  const path = sockPath();
  const first = new SeqpacketListener(path, { mode: 0o600, limits: LIMITS });
  unlinkSync(path);
  const second = new SeqpacketListener(path, { mode: 0o600, limits: LIMITS });
  first.close();
  t.ok(statSync(path).isSocket(), "the second listener's file is still there");
  second.close();
  t.throws(() => statSync(path), { code: 'ENOENT' }, 'and goes with the second listener');
});

t.test('errors say what to fix', async (t) => {
  const missing = join(dir, 'nobody.sock');
  t.throws(() => seqpacketConnect(missing), { code: 'ENOENT', message: /has not started listening/ });
  const path = sockPath();
  const listener = new SeqpacketListener(path, { mode: 0o600, limits: LIMITS });
  listener.close();
  writeFileSync(path, '');
  t.throws(() => new SeqpacketListener(path, { mode: 0o600, limits: LIMITS }), {
    code: 'EADDRINUSE',
    message: /remove it only when no process is listening/,
  });
  unlinkSync(path);
  t.throws(() => seqpacketConnect(join(dir, 'x'.repeat(120))), {
    code: 'ERR_INVALID_ARG_VALUE',
    message: /sun_path/,
  });
  t.throws(() => seqpacketSend(0, new Uint16Array(2) as unknown as Uint8Array), {
    code: 'ERR_INVALID_ARG_TYPE',
  });
  const file = openSync('/dev/null', 'r');
  t.throws(() => pollStart(file, POLL_READABLE, () => undefined), {
    code: 'EPERM',
    message: /cannot be polled/,
  });
  closeSync(file);
  const other = new SeqpacketListener(sockPath(), { mode: 0o600, limits: LIMITS });
  const fd = seqpacketConnect(other.path);
  const w = pollStart(fd, 0, () => undefined);
  pollClose(w);
  pollClose(w);
  t.throws(
    () => pollUpdate(w, POLL_READABLE),
    { message: /closed watcher/ },
    'a closed watcher refuses updates',
  );
  closeFd(fd);
  other.close();
});

t.test('everything closed: the fd count is back to the baseline', async (t) => {
  t.equal(await settledFdCount(baseline), baseline);
});

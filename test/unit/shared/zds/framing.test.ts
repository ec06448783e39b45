// SPDX-License-Identifier: Apache-2.0
// ZDS framing rules (src/shared/zds/framing.ts, spec 2.6): the wire bytes of hello and Ack, every
// request kind round-trips, messages must stay below 1 KiB on send and on receive, exactly one fd
// travels with an AddWorkload and none with anything else, malformed or payload-less messages are
// protocol errors — and every refused message has its fds closed.
import { closeSync, fstatSync, openSync } from 'node:fs';
import t from 'tap';
import type { Test } from 'tap';

import { WorkloadRequest, WorkloadResponse, ZdsHello } from '../../../../src/shared/gen/zds.ts';
import {
  MAX_MESSAGE_BYTES,
  ZDS_LIMITS,
  ZdsError,
  decodeAck,
  decodeHello,
  decodeRequest,
  encodeAck,
  encodeHello,
  encodeRequest,
} from '../../../../src/shared/zds/framing.ts';
import type { Datagram } from '../../../../src/shared/zds/seqpacket.ts';

const add = (uid: string): WorkloadRequest => ({
  payload: {
    $case: 'add',
    value: { uid, workloadInfo: { name: 'web', namespace: 'demo', serviceAccount: 'sa' } },
  },
});
const keep: WorkloadRequest = { payload: { $case: 'keep', value: { uid: 'u1' } } };
const del: WorkloadRequest = { payload: { $case: 'del', value: { uid: 'u1' } } };
const snapshotSent: WorkloadRequest = { payload: { $case: 'snapshotSent', value: {} } };

function dg(data: Uint8Array, fds: number[] = []): Datagram {
  return { data: Buffer.from(data), fds };
}

function newFd(): number {
  return openSync('/dev/null', 'r');
}

function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

/** Asserts `fn` throws ZDS_ERR_PROTOCOL matching `message`, and that every fd in `fds` was closed. */
function refused(t: Test, fn: () => unknown, fds: number[], message: RegExp): void {
  t.throws(fn, { code: 'ZDS_ERR_PROTOCOL', message }, `refused: ${message.source}`);
  t.ok(
    fds.every((fd) => !isOpen(fd)),
    'and its fds were closed',
  );
  for (const fd of fds) if (isOpen(fd)) closeSync(fd);
}

t.test('wire bytes: hello is ZdsHello{V1}, an empty Ack is two bytes', async (t) => {
  t.same([...encodeHello()], [0x08, 0x01], 'field 1 varint 1');
  t.same([...encodeAck('')], [0x0a, 0x00], 'WorkloadResponse{ack: Ack{}}');
  t.equal(WorkloadResponse.decode(encodeAck('boom')).payload?.value.error, 'boom');
  t.same(
    [...WorkloadRequest.encode(del).finish()],
    [0x12, 0x04, 0x12, 0x02, 0x75, 0x31],
    'DelWorkload uid is field 2',
  );
  t.same(ZDS_LIMITS, { maxBytes: 1024, maxFds: 1 }, 'receive: a 1024-byte buffer and room for one fd');
});

t.test('every request kind round-trips; an Add keeps its one fd and hands it over', async (t) => {
  const fd = newFd();
  const a = decodeRequest(dg(encodeRequest(add('u1')), [fd]));
  t.same(a, {
    kind: 'add',
    uid: 'u1',
    info: { name: 'web', namespace: 'demo', serviceAccount: 'sa' },
    netnsFd: fd,
  });
  t.ok(isOpen(fd), 'the fd is handed over open');
  closeSync(fd);
  t.same(decodeRequest(dg(encodeRequest(keep))), { kind: 'keep', uid: 'u1' });
  t.same(decodeRequest(dg(encodeRequest(del))), { kind: 'del', uid: 'u1' });
  t.same(decodeRequest(dg(encodeRequest(snapshotSent))), { kind: 'snapshotSent' });
  decodeHello(dg(encodeHello()));
  t.equal(decodeAck(dg(encodeAck(''))), '');
  t.equal(decodeAck(dg(encodeAck('bind failed'))), 'bind failed');
});

t.test('below 1 KiB on send: 1023 bytes go, 1024 are refused with a hint', async (t) => {
  let uid = '';
  while (WorkloadRequest.encode(add(uid)).finish().length < MAX_MESSAGE_BYTES) uid += 'x';
  t.equal(encodeRequest(add(uid)).length, 1023, 'a 1023-byte message is accepted');
  t.throws(() => encodeRequest(add(`${uid}x`)), {
    code: 'ZDS_ERR_TOO_LARGE',
    message: /1024 bytes; ZDS messages must stay below 1 KiB .* shorten/,
  });
});

t.test('below 1 KiB on receive: a 1024-byte datagram is a protocol error and its fd is closed', async (t) => {
  const big = WorkloadRequest.encode({
    payload: { $case: 'add', value: { uid: 'u'.repeat(1018), workloadInfo: undefined } },
  }).finish();
  t.equal(big.length, 1024, 'the crafted message is 1024 bytes');
  const fd = newFd();
  refused(t, () => decodeRequest(dg(big, [fd])), [fd], /of 1024 bytes: ZDS messages must stay below 1 KiB/);
  refused(t, () => decodeAck(dg(new Uint8Array(1024))), [], /must stay below 1 KiB/);
  refused(t, () => decodeHello(dg(new Uint8Array(2000))), [], /must stay below 1 KiB/);
});

t.test('fd rules: exactly one on AddWorkload, none anywhere else', async (t) => {
  refused(t, () => decodeRequest(dg(encodeRequest(add('u1')))), [], /AddWorkload carried 0 .* exactly 1/);
  const two = [newFd(), newFd()];
  refused(t, () => decodeRequest(dg(encodeRequest(add('u1')), two)), two, /AddWorkload carried 2/);
  for (const [name, req] of [
    ['KeepWorkload', keep],
    ['DelWorkload', del],
    ['SnapshotSent', snapshotSent],
  ] as const) {
    const fd = [newFd()];
    refused(
      t,
      () => decodeRequest(dg(encodeRequest(req), fd)),
      fd,
      new RegExp(`${name} carried 1 .* only AddWorkload`),
    );
  }
  let fd = [newFd()];
  refused(t, () => decodeHello(dg(encodeHello(), fd)), fd, /ZdsHello carried 1/);
  fd = [newFd()];
  refused(t, () => decodeAck(dg(encodeAck(''), fd)), fd, /WorkloadResponse carried 1/);
});

t.test('malformed, empty and unknown messages are protocol errors', async (t) => {
  const fd = [newFd()];
  refused(t, () => decodeRequest(dg(Buffer.from([0xff, 0xff, 0xff]), fd)), fd, /not a valid protobuf/);
  refused(t, () => decodeRequest(dg(new Uint8Array(0))), [], /without a payload/);
  // Field 4 is not a payload this ztunnel knows (upstream left the number free).
  refused(t, () => decodeRequest(dg(Buffer.from([0x22, 0x00]))), [], /without a payload/);
  refused(t, () => decodeHello(dg(ZdsHello.encode({ version: 0 }).finish())), [], /version 0; .* only V1/);
  refused(t, () => decodeHello(dg(Buffer.from([0x08, 0x02]))), [], /version 2/);
  refused(t, () => decodeAck(dg(new Uint8Array(0))), [], /without an Ack/);
});

t.test('a long NACK reason is cut to fit, even inside a multi-byte character', async (t) => {
  const reason = 'é'.repeat(600);
  const bytes = encodeAck(reason);
  t.ok(bytes.length <= MAX_MESSAGE_BYTES, `${bytes.length} bytes`);
  const text = decodeAck(dg(bytes));
  t.ok(text.endsWith('...'), 'marked as cut');
  t.notOk(text.includes('\uFFFD'), 'no broken character');
  t.ok(reason.startsWith(text.slice(0, -3)), 'a prefix of the reason');
  t.ok(new ZdsError('ZDS_ERR_NACK', 'x') instanceof Error);
});

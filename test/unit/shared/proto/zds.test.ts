// SPDX-License-Identifier: Apache-2.0
// istio.workload.zds generated code (ambient-protocols.md §2.6, §3.7): every WorkloadRequest
// payload round-trips, DelWorkload's uid is field 2 on the wire (tag 0x12), hand-computed bytes
// for the hello, snapshot marker, keep and ack, unknown fields tolerated, and messages for
// realistic and worst-case pods stay below ztunnel's 1024-byte datagram buffer.
import t from 'tap';
import {
  AddWorkload,
  DelWorkload,
  Version,
  WorkloadRequest,
  WorkloadResponse,
  ZdsHello,
} from '../../../../src/shared/gen/zds.ts';
import { fromHex, hex, withUnknownFields } from './wire-helpers.ts';

const POD_UID = '6f1c2a5e-9b3d-4c8e-a1f0-2d7b9e4c3a11';
const ZTUNNEL_DATAGRAM_BUFFER = 1024;

const add: WorkloadRequest = {
  payload: {
    $case: 'add',
    value: {
      uid: POD_UID,
      workloadInfo: {
        name: 'reviews-v1-7d9f8b6c5d-x2x9z',
        namespace: 'bookinfo',
        serviceAccount: 'bookinfo-reviews',
      },
    },
  },
};

t.test('every WorkloadRequest payload round-trips', async (t) => {
  const requests: WorkloadRequest[] = [
    add,
    { payload: { $case: 'del', value: { uid: POD_UID } } },
    { payload: { $case: 'snapshotSent', value: {} } },
    { payload: { $case: 'keep', value: { uid: POD_UID } } },
  ];
  for (const r of requests) {
    t.same(WorkloadRequest.decode(WorkloadRequest.encode(r).finish()), r, String(r.payload?.$case));
  }
  const responses: WorkloadResponse[] = [
    { payload: { $case: 'ack', value: { error: '' } } },
    { payload: { $case: 'ack', value: { error: 'failed to bind 15008: address in use' } } },
  ];
  for (const r of responses) t.same(WorkloadResponse.decode(WorkloadResponse.encode(r).finish()), r);
  t.same(ZdsHello.decode(ZdsHello.encode({ version: Version.V1 }).finish()), { version: Version.V1 });
});

t.test("DelWorkload's uid is field 2 (tag 0x12), not 1", async (t) => {
  t.equal(hex(DelWorkload.encode({ uid: 'ab' }).finish()), '12026162');
  // WorkloadRequest.del is field 2 as well: 12 04 { 12 02 "ab" }.
  const del: WorkloadRequest = { payload: { $case: 'del', value: { uid: 'ab' } } };
  t.equal(hex(WorkloadRequest.encode(del).finish()), '1204' + '12026162');
  // A uid on field 1 is not DelWorkload's uid: it is skipped as unknown.
  t.equal(DelWorkload.decode(fromHex('0a026162')).uid, '');
});

t.test('bytes match hand-computed protobuf encodings', async (t) => {
  t.equal(hex(ZdsHello.encode({ version: Version.V1 }).finish()), '0801');
  // snapshot_sent (3) is an empty message that is still sent: 1a 00.
  t.equal(hex(WorkloadRequest.encode({ payload: { $case: 'snapshotSent', value: {} } }).finish()), '1a00');
  // keep is field 5: tag (5<<3)|2 = 0x2a; KeepWorkload.uid is field 1.
  t.equal(
    hex(WorkloadRequest.encode({ payload: { $case: 'keep', value: { uid: 'u' } } }).finish()),
    '2a030a0175',
  );
  // add (1) { uid(1) "u", workload_info(2) { name(1) "n", namespace(2) "s", service_account(3) "a" } }.
  const a = AddWorkload.fromPartial({
    uid: 'u',
    workloadInfo: { name: 'n', namespace: 's', serviceAccount: 'a' },
  });
  t.equal(
    hex(WorkloadRequest.encode({ payload: { $case: 'add', value: a } }).finish()),
    '0a0e' + '0a0175' + '1209' + '0a016e' + '120173' + '1a0161',
  );
  // An OK ack is an empty Ack that is still sent: 0a 00.
  t.equal(hex(WorkloadResponse.encode({ payload: { $case: 'ack', value: { error: '' } } }).finish()), '0a00');
  t.equal(WorkloadResponse.decode(fromHex('0a00')).payload?.$case, 'ack');
});

t.test('unknown fields are skipped on decode', async (t) => {
  t.same(WorkloadRequest.decode(withUnknownFields(WorkloadRequest.encode(add).finish())), add);
  // WorkloadInfo's reserved field 4 (was trust_domain) from an older agent is skipped.
  const info = AddWorkload.decode(fromHex('0a0175' + '1206' + '0a016e' + '220163'));
  t.same(info.workloadInfo, { name: 'n', namespace: '', serviceAccount: '' });
  // Field 4 of WorkloadRequest is unused: no payload.
  t.equal(WorkloadRequest.decode(fromHex('2200')).payload, undefined);
  t.same(ZdsHello.decode(withUnknownFields(fromHex('0801'))), { version: Version.V1 });
});

t.test('ZDS messages stay below the 1 KiB datagram limit', async (t) => {
  const typical = WorkloadRequest.encode(add).finish().length;
  t.ok(typical < ZTUNNEL_DATAGRAM_BUFFER, `typical AddWorkload is ${typical} bytes`);
  // Worst case by Kubernetes limits: pod name and service account are DNS subdomains (253),
  // namespace a DNS label (63), uid a 36-character UUID.
  const worst = WorkloadRequest.encode({
    payload: {
      $case: 'add',
      value: {
        uid: POD_UID,
        workloadInfo: { name: 'p'.repeat(253), namespace: 'n'.repeat(63), serviceAccount: 's'.repeat(253) },
      },
    },
  }).finish().length;
  t.ok(worst < ZTUNNEL_DATAGRAM_BUFFER, `largest possible AddWorkload is ${worst} bytes`);
  for (const r of [
    { payload: { $case: 'del', value: { uid: POD_UID } } },
    { payload: { $case: 'keep', value: { uid: POD_UID } } },
    { payload: { $case: 'snapshotSent', value: {} } },
  ] satisfies WorkloadRequest[]) {
    t.ok(WorkloadRequest.encode(r).finish().length < ZTUNNEL_DATAGRAM_BUFFER);
  }
  t.ok(ZdsHello.encode({ version: Version.V1 }).finish().length < ZTUNNEL_DATAGRAM_BUFFER);
});

// SPDX-License-Identifier: Apache-2.0
// istio.v1.auth (CA) generated code (ambient-protocols.md §4): request/response round trips with
// the impersonation metadata Struct, hand-computed bytes for csr (1), validity_duration (3) and
// metadata (4), unknown fields tolerated, and the grpc-js service definition's path and codecs.
import t from 'tap';
import {
  IstioCertificateRequest,
  IstioCertificateResponse,
  IstioCertificateServiceService,
} from '../../../../src/shared/gen/citadel.ts';
import { fieldSet, fromHex, hex, withUnknownFields } from './wire-helpers.ts';

const CSR = '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n';

t.test('request and response round-trip', async (t) => {
  const req: IstioCertificateRequest = {
    csr: CSR,
    validityDuration: 86400,
    metadata: {
      ImpersonatedIdentity: 'spiffe://cluster.local/ns/bookinfo/sa/reviews',
      CertSigner: 'signer-a',
    },
  };
  const bytes = IstioCertificateRequest.encode(req).finish();
  t.same(fieldSet(bytes), [1, 3, 4], 'field 2 is unused');
  t.same(IstioCertificateRequest.decode(bytes), req);
  const res: IstioCertificateResponse = {
    certChain: [
      '-----BEGIN CERTIFICATE-----\nleaf\n',
      '-----BEGIN CERTIFICATE-----\nintermediate\n',
      'root1\nroot2\n',
    ],
  };
  t.same(IstioCertificateResponse.decode(IstioCertificateResponse.encode(res).finish()), res);
});

t.test('bytes match hand-computed protobuf encodings', async (t) => {
  // csr (1) "c"; validity_duration (3) 86400 = varint 80 a3 05.
  t.equal(
    hex(IstioCertificateRequest.encode({ csr: 'c', validityDuration: 86400, metadata: undefined }).finish()),
    '0a0163' + '1880a305',
  );
  // metadata (4) Struct { fields(1) entry { key(1) "k", value(2) Value { string_value(3) "v" } } }.
  t.equal(
    hex(IstioCertificateRequest.encode({ csr: '', validityDuration: 0, metadata: { k: 'v' } }).finish()),
    '220a' + '0a08' + '0a016b' + '1203' + '1a0176',
  );
  // A negative TTL ("use the default") is a ten-byte two's-complement varint.
  t.equal(
    hex(IstioCertificateRequest.encode({ csr: '', validityDuration: -1 }).finish()),
    '18ffffffffffffffffff01',
  );
  t.equal(IstioCertificateRequest.decode(fromHex('18ffffffffffffffffff01')).validityDuration, -1);
  // cert_chain (1) repeated string.
  t.equal(hex(IstioCertificateResponse.encode({ certChain: ['a', 'b'] }).finish()), '0a0161' + '0a0162');
});

t.test('a validity_duration beyond 2^53 is rejected on decode, not silently rounded', async (t) => {
  // 2^60 = varint 80 80 80 80 80 80 80 80 10.
  t.throws(() => IstioCertificateRequest.decode(fromHex('18808080808080808010')));
});

t.test('unknown fields are skipped on decode', async (t) => {
  const req = IstioCertificateRequest.fromPartial({ csr: CSR, validityDuration: 3600 });
  t.same(
    IstioCertificateRequest.decode(withUnknownFields(IstioCertificateRequest.encode(req).finish())),
    req,
  );
  // Field 2 (unused upstream) is skipped too.
  t.same(
    IstioCertificateRequest.decode(fromHex('1201780a0163')),
    IstioCertificateRequest.fromPartial({ csr: 'c' }),
  );
});

t.test('grpc-js service definition uses the upstream method path and our codecs', async (t) => {
  const m = IstioCertificateServiceService.createCertificate;
  t.equal(m.path, '/istio.v1.auth.IstioCertificateService/CreateCertificate');
  t.equal(m.requestStream, false);
  t.equal(m.responseStream, false);
  const req = IstioCertificateRequest.fromPartial({ csr: 'c', validityDuration: 60 });
  const wire = m.requestSerialize(req);
  t.equal(wire.toString('hex'), '0a0163' + '183c');
  t.same(m.requestDeserialize(wire), req);
  const res = { certChain: ['x'] };
  t.same(m.responseDeserialize(m.responseSerialize(res)), res);
});

// SPDX-License-Identifier: Apache-2.0
// Tests of the raw HTTP/2 attack client (test/helpers/h2-raw.ts) itself: RFC 7541 Appendix B
// Huffman codes, the Appendix C decoding examples (C.3 plain, C.4 Huffman, with the dynamic table),
// and frame exchange against a plain node:http2 secure server with test-CA certificates.
import t from 'tap';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import {
  ErrorCode,
  HUFFMAN_CODES,
  HpackDecoder,
  RawH2Client,
  Setting,
  connectBlock,
  headersFrame,
  hpackEncode,
  huffmanDecode,
  huffmanEncode,
  probeTls,
  windowUpdateFrame,
} from '../../../../helpers/h2-raw.ts';
import { issueWorkloadCert, newTestCa, tlsOptions } from '../../../../helpers/pki.ts';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

t.test('Huffman codes match RFC 7541 Appendix B samples', async (t) => {
  t.equal(HUFFMAN_CODES[0], 0x1ff8);
  t.equal(HUFFMAN_CODES[48], 0x0); // '0'
  t.equal(HUFFMAN_CODES[97], 0x3); // 'a'
  t.equal(HUFFMAN_CODES[58], 0x5c); // ':'
  t.equal(HUFFMAN_CODES[92], 0x7fff0); // '\'
  t.equal(HUFFMAN_CODES[255], 0x3ffffee);
  t.equal(HUFFMAN_CODES[256], 0x3fffffff); // EOS
  t.same(huffmanEncode(Buffer.from('www.example.com')), hex('f1e3 c2e5 f23a 6ba0 ab90 f4ff'));
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  t.same(huffmanDecode(huffmanEncode(all)), all, 'all 256 octets round-trip');
  t.throws(() => huffmanDecode(Buffer.from([0x00])), 'padding of zeros is rejected');
  t.throws(() => huffmanDecode(Buffer.from([0xff, 0xff, 0xff, 0xff])), 'EOS is rejected');
});

t.test('HPACK decoder follows RFC 7541 Appendix C.3 and C.4', async (t) => {
  for (const [name, blocks] of [
    [
      'C.3 (no Huffman)',
      [
        '8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d',
        '8286 84be 5808 6e6f 2d63 6163 6865',
        '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65',
      ],
    ],
    [
      'C.4 (Huffman)',
      [
        '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff',
        '8286 84be 5886 a8eb 1064 9cbf',
        '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf',
      ],
    ],
  ] as const) {
    const d = new HpackDecoder();
    t.same(
      d.decode(hex(blocks[0])),
      [
        [':method', 'GET'],
        [':scheme', 'http'],
        [':path', '/'],
        [':authority', 'www.example.com'],
      ],
      `${name} first request`,
    );
    t.same(
      d.decode(hex(blocks[1])),
      [
        [':method', 'GET'],
        [':scheme', 'http'],
        [':path', '/'],
        [':authority', 'www.example.com'],
        ['cache-control', 'no-cache'],
      ],
      `${name} second request`,
    );
    t.same(
      d.decode(hex(blocks[2])),
      [
        [':method', 'GET'],
        [':scheme', 'https'],
        [':path', '/index.html'],
        [':authority', 'www.example.com'],
        ['custom-key', 'custom-value'],
      ],
      `${name} third request`,
    );
    t.equal(d.dynamicTableSize, 164, `${name} dynamic table size`);
  }
  const d = new HpackDecoder();
  t.same(
    d.decode(
      hpackEncode([
        { kind: 'literal', name: 'x-a', value: 'v', indexing: 'incremental', huffman: true },
        { kind: 'indexed', index: 62 },
        { kind: 'literal', name: 8, value: '401', indexing: 'never' },
      ]),
    ),
    [
      ['x-a', 'v'],
      ['x-a', 'v'],
      [':status', '401'],
    ],
    'encoder output decodes',
  );
});

t.test('frame exchange against a node:http2 secure server', async (t) => {
  const ca = await newTestCa();
  const serverCert = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/test/sa/server');
  const clientCert = await issueWorkloadCert(ca, 'spiffe://cluster.local/ns/test/sa/client');
  const server = http2.createSecureServer({
    ...tlsOptions(serverCert),
    requestCert: true,
    rejectUnauthorized: true,
    allowHTTP1: false,
  });
  const seen: string[] = [];
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    seen.push(String(headers[':method']));
    if (headers[':method'] === 'CONNECT') {
      stream.respond({ ':status': 200 });
      stream.end();
    } else {
      stream.respond(
        { ':status': 404, 'x-odd': 'Zq~`^|\\{}<>@#$%;"', 'set-cookie': 'a=b' },
        { endStream: true },
      );
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as AddressInfo;
  const cred = {
    port,
    key: clientCert.privateKeyPem,
    cert: clientCert.certChainPem,
    ca: clientCert.rootsPem,
  };

  const c = await RawH2Client.connect(cred);
  t.teardown(() => c.destroy());
  t.equal(c.alpn, 'h2');
  const settings = await c.waitFor(
    (f): f is Extract<typeof f, { type: 'SETTINGS' }> => f.type === 'SETTINGS',
    2000,
  );
  t.ok(settings, 'server SETTINGS decoded');
  c.send(headersFrame(1, connectBlock('127.0.0.1:8080')));
  t.match(await c.outcome(1, 2000), { kind: 'status', status: 200 });
  c.send(
    headersFrame(
      3,
      hpackEncode([
        { kind: 'indexed', index: 2 },
        { kind: 'indexed', index: 7 },
        { kind: 'indexed', index: 4 },
        [':authority', 'x'],
      ]),
      { endStream: true },
    ),
  );
  const got = await c.outcome(3, 2000);
  t.match(got, { kind: 'status', status: 404 });
  if (got.kind === 'status') t.ok(got.headers.some(([n, v]) => n === 'x-odd' && v === 'Zq~`^|\\{}<>@#$%;"'));
  c.send(
    headersFrame(
      5,
      hpackEncode([
        { kind: 'indexed', index: 3 },
        { kind: 'indexed', index: 7 },
        { kind: 'indexed', index: 4 },
        [':authority', 'x'],
      ]),
      { endStream: true },
    ),
  );
  t.match(
    await c.outcome(5, 2000),
    { kind: 'status', status: 404 },
    'second response uses the dynamic table',
  );
  t.same(seen, ['CONNECT', 'GET', 'POST']);

  // Stream 0 window overflow (RFC 9113 §6.9.1) → GOAWAY FLOW_CONTROL_ERROR, then close.
  c.send(windowUpdateFrame(0, 0x7fffffff));
  const ga = await c.waitFor((f): f is Extract<typeof f, { type: 'GOAWAY' }> => f.type === 'GOAWAY', 2000);
  t.equal(ga?.errorCode, ErrorCode.FLOW_CONTROL_ERROR);
  t.ok(await c.waitForClose(2000), 'closed after GOAWAY');

  const noCert = await probeTls({ port, ca: clientCert.rootsPem, observeMs: 300, sendPreface: true });
  t.notOk(noCert.stillOpen, `no client cert rejected (${noCert.errorCode ?? 'closed'})`);
  const ok = await probeTls({ ...cred, observeMs: 300, sendPreface: true });
  t.ok(ok.stillOpen && ok.alpn === 'h2' && ok.bytesReceived > 0, 'valid client is served');
  t.equal(Setting.MAX_HEADER_LIST_SIZE, 6);
});

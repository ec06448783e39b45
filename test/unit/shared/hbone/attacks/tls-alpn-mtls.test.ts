// SPDX-License-Identifier: Apache-2.0
// Protocol confusion and mTLS admission on the HBONE port (security-and-reliability.md §4 checklist
// A.18 ALPN http/1.1 / no ALPN / h2c preface in plaintext, B.20 plaintext bytes, B.21 no client
// certificate, B.22 a client certificate from a foreign CA, and B.23 our CA but another trust
// domain; ambient-protocols.md §1.2: ALPN exactly h2, client certificate required, same trust
// domain). Every case must end without a usable HTTP/1 or h2 session and without onConnect.
import t from 'tap';
import {
  CLIENT_PREFACE,
  RawH2Client,
  connectBlock,
  headersFrame,
  probeTcp,
  probeTls,
  settingsFrame,
} from '../../../../helpers/h2-raw.ts';
import type { TlsProbeResult } from '../../../../helpers/h2-raw.ts';
import { issueWorkloadCert, mintCert, newTestCa } from '../../../../helpers/pki.ts';
import { startRig } from './rig.ts';
import type { Cred, Rig } from './rig.ts';

const OBSERVE_MS = 1500;

function show(r: TlsProbeResult): string {
  const closed =
    r.closedAfterMs === undefined ? 'still open' : `closed after ${r.closedAfterMs.toFixed(0)} ms`;
  const line = r.received.toString('latin1').split('\r\n')[0] ?? '';
  const rx = line.startsWith('HTTP/') ? ` (${JSON.stringify(line)})` : '';
  return `secureConnect=${r.secureConnect} alpn=${String(r.alpn)} ${closed} error=${r.errorCode ?? '-'} rx=${r.bytesReceived} B${rx}`;
}

/**
 * True if `buf` starts like a successful HTTP/1 response, or the SETTINGS frame of an h2 server
 * that accepted the session. (Node answers a no-ALPN client with "HTTP/1.0 403 Forbidden": a refusal.)
 */
function looksServed(buf: Buffer): boolean {
  if (/^HTTP\/1\.[01] 2\d\d/.test(buf.subarray(0, 16).toString('latin1'))) return true;
  // An h2 server's first frame is SETTINGS: 24-bit length (multiple of 6), type 0x4, stream 0.
  return buf.length >= 9 && buf[3] === 0x04 && buf.readUInt32BE(5) === 0;
}

/** A CONNECT over a client that managed to finish its side of the handshake must not be served. */
async function tryConnect(rig: Rig, cred: Cred): Promise<string> {
  let c: RawH2Client | undefined;
  try {
    c = await RawH2Client.connect({ ...cred, timeoutMs: 3000 });
    c.send(headersFrame(1, connectBlock(`127.0.0.1:${rig.echoPort}`)));
    const o = await c.outcome(1, OBSERVE_MS);
    return o.kind === 'status' ? `status ${o.status}` : o.kind;
  } catch (err) {
    return `handshake failed: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    c?.destroy();
  }
}

t.test('A.18 ALPN other than h2 is rejected (no HTTP/1 fallback)', async (t) => {
  const rig = await startRig(t);
  const http1Connect = Buffer.from(
    `CONNECT 127.0.0.1:${rig.echoPort} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`,
    'latin1',
  );
  for (const [name, alpn] of [
    ['ALPN http/1.1', ['http/1.1']],
    ['no ALPN', null],
    ['ALPN h2c', ['h2c']],
  ] as const) {
    const r = await probeTls({
      ...rig.cred,
      alpn: alpn === null ? null : [...alpn],
      send: http1Connect,
      observeMs: OBSERVE_MS,
    });
    t.comment(`${name}: ${show(r)}`);
    t.notOk(r.alpn === 'h2', `${name}: h2 not negotiated`);
    t.notOk(looksServed(r.received), `${name}: no HTTP/1 2xx response and no h2 SETTINGS`);
    t.notOk(r.stillOpen, `${name}: the server closed the connection within ${OBSERVE_MS} ms`);
  }
  t.equal(rig.stats.onConnect, 0, 'onConnect never called');
  t.equal(rig.stats.upstreamAccepted, 0, 'upstream never dialled');
});

t.test('A.18 / B.20 plaintext bytes and an h2c preface to the TLS port are rejected', async (t) => {
  const rig = await startRig(t);
  const cases: [string, Buffer][] = [
    ['h2c preface + SETTINGS', Buffer.concat([CLIENT_PREFACE, settingsFrame()])],
    [
      'h2c preface + SETTINGS + CONNECT',
      Buffer.concat([
        CLIENT_PREFACE,
        settingsFrame(),
        headersFrame(1, connectBlock(`127.0.0.1:${rig.echoPort}`)),
      ]),
    ],
    ['HTTP/1.1 GET', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n', 'latin1')],
    [
      'HTTP/1.1 CONNECT',
      Buffer.from(`CONNECT 127.0.0.1:${rig.echoPort} HTTP/1.1\r\nHost: x\r\n\r\n`, 'latin1'),
    ],
    [
      'HTTP/1.1 Upgrade: h2c',
      Buffer.from(
        'GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n',
        'latin1',
      ),
    ],
    ['4 KiB of 0x00', Buffer.alloc(4096)],
    [
      'TLS record header with a 16 MiB length',
      Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff]),
    ],
  ];
  for (const [name, bytes] of cases) {
    const r = await probeTcp({ port: rig.port, send: bytes, observeMs: 3000 });
    const first = r.received.length > 0 ? `0x${r.received.subarray(0, 7).toString('hex')}` : 'nothing';
    t.comment(
      `${name}: closed=${r.closed} after ${r.closedAfterMs?.toFixed(0) ?? '-'} ms, received ${first}`,
    );
    t.ok(r.closed, `${name}: connection closed by the server`);
    t.notOk(looksServed(r.received), `${name}: nothing but (at most) a TLS alert came back`);
    t.ok(
      r.received.length === 0 || r.received[0] === 0x15,
      `${name}: response is empty or a TLS alert record`,
    );
  }
  t.equal(rig.stats.onConnect, 0, 'onConnect never called');
  t.equal(rig.stats.upstreamAccepted, 0, 'upstream never dialled');
  t.ok((await rig.legit()).ok, 'a legitimate tunnel works');
});

t.test('B.21 TLS without a client certificate is rejected', async (t) => {
  const rig = await startRig(t);
  const noCert: Cred = { port: rig.port, ca: rig.rootsPem };
  const r = await probeTls({ ...noCert, sendPreface: true, observeMs: OBSERVE_MS });
  t.comment(`no client certificate: ${show(r)}`);
  t.notOk(r.stillOpen, 'connection rejected');
  t.notOk(looksServed(r.received), 'no h2 SETTINGS received');
  const attempt = await tryConnect(rig, noCert);
  t.notOk(attempt.startsWith('status 200'), `CONNECT without a client certificate → ${attempt}`);
  t.equal(rig.stats.onConnect, 0, 'onConnect never called');
  t.equal(rig.stats.upstreamAccepted, 0, 'upstream never dialled');
});

t.test('B.22/B.23 client certificates from a foreign CA or another trust domain are rejected', async (t) => {
  const rig = await startRig(t);
  const foreignCa = await newTestCa();
  const foreignSameTd = await issueWorkloadCert(foreignCa, 'spiffe://cluster.local/ns/a/sa/client');
  const evilCa = await newTestCa({ trustDomain: 'evil.local' });
  const foreignEvil = await issueWorkloadCert(evilCa, 'spiffe://evil.local/ns/a/sa/client');
  // Signed by *our* CA (chain verifies), but the SPIFFE ID is in another trust domain.
  const ourCaEvilTd = await mintCert({ issuer: rig.ca, uris: ['spiffe://evil.local/ns/a/sa/b'] });
  const intermediates = rig.clientCert.certChainPem.slice(1);
  const cases: [string, Cred][] = [
    [
      'foreign CA, our trust domain',
      {
        port: rig.port,
        ca: rig.rootsPem,
        key: foreignSameTd.privateKeyPem,
        cert: foreignSameTd.certChainPem,
      },
    ],
    [
      'foreign CA, foreign trust domain',
      { port: rig.port, ca: rig.rootsPem, key: foreignEvil.privateKeyPem, cert: foreignEvil.certChainPem },
    ],
    [
      'our CA, trust domain evil.local',
      {
        port: rig.port,
        ca: rig.rootsPem,
        key: ourCaEvilTd.privateKeyPem,
        cert: [ourCaEvilTd.certPem, ...intermediates],
      },
    ],
  ];
  for (const [name, cred] of cases) {
    const r = await probeTls({ ...cred, sendPreface: true, observeMs: OBSERVE_MS });
    t.comment(`${name}: ${show(r)}`);
    t.notOk(r.stillOpen, `${name}: connection rejected`);
    t.notOk(looksServed(r.received), `${name}: no h2 SETTINGS received`);
    const attempt = await tryConnect(rig, cred);
    t.notOk(attempt.startsWith('status 200'), `${name}: CONNECT → ${attempt}`);
  }
  t.equal(rig.stats.onConnect, 0, 'onConnect never called');
  t.equal(rig.stats.upstreamAccepted, 0, 'upstream never dialled');
  // Control: the rig's own client certificate is accepted.
  const ok = await probeTls({ ...rig.cred, sendPreface: true, observeMs: 300 });
  t.ok(
    ok.stillOpen && ok.alpn === 'h2' && looksServed(ok.received),
    `valid client certificate accepted: ${show(ok)}`,
  );
});

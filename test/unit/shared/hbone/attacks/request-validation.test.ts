// SPDX-License-Identifier: Apache-2.0
// HBONE CONNECT request validation under attack (security-and-reliability.md §4 checklist A.1 non-CONNECT
// methods, A.2 CONNECT with :path/:scheme or without :authority, A.3 malformed authorities incl. the
// CVE-2024-32475 long-host class, A.8 duplicate pseudo-headers / uppercase names / connection-specific
// headers per RFC 9113 §8.2.1–§8.3, §8.5, A.15 control and non-ASCII bytes in header values). Every case runs on its own connection and must end in a
// 400 or a PROTOCOL_ERROR (RST_STREAM or GOAWAY) without onConnect ever being called.
import t from 'tap';
import {
  ErrorCode,
  errorCodeName,
  headerBlockFrames,
  headersFrame,
  hpackEncode,
} from '../../../../helpers/h2-raw.ts';
import type { HpackField, StreamOutcome } from '../../../../helpers/h2-raw.ts';
import { startRig } from './rig.ts';
import type { Rig } from './rig.ts';

const TARGET = '10.0.0.5:8080';

function describe(o: StreamOutcome): string {
  switch (o.kind) {
    case 'status':
      return `status ${o.status}`;
    case 'rst':
      return `RST_STREAM ${errorCodeName(o.errorCode)}`;
    case 'goaway':
      return `GOAWAY ${errorCodeName(o.errorCode)}`;
    case 'closed':
      return 'connection closed';
    case 'timeout':
      return 'no answer';
  }
}

/** Send one request block on stream 1 of a fresh connection and report how it ended. */
async function attempt(rig: Rig, fields: readonly HpackField[], endStream = false): Promise<StreamOutcome> {
  const c = await rig.connect();
  try {
    c.send(...headerBlockFrames(1, hpackEncode(fields), { endStream }));
    return await c.outcome(1, 3000);
  } finally {
    c.destroy();
  }
}

const isProtocolError = (o: StreamOutcome): boolean =>
  (o.kind === 'rst' || o.kind === 'goaway') && o.errorCode === ErrorCode.PROTOCOL_ERROR;

t.test('A.1 non-CONNECT methods get 400 and never reach onConnect', async (t) => {
  const rig = await startRig(t);
  const cases: [string, HpackField[], boolean][] = [
    [
      'GET',
      [
        [':method', 'GET'],
        [':scheme', 'https'],
        [':path', '/'],
        [':authority', TARGET],
      ],
      true,
    ],
    [
      'POST',
      [
        [':method', 'POST'],
        [':scheme', 'https'],
        [':path', '/upload'],
        [':authority', TARGET],
        ['content-length', '0'],
      ],
      true,
    ],
    [
      'PRI',
      [
        [':method', 'PRI'],
        [':scheme', 'https'],
        [':path', '*'],
        [':authority', TARGET],
      ],
      true,
    ],
    [
      'PUT without END_STREAM',
      [
        [':method', 'PUT'],
        [':scheme', 'https'],
        [':path', '/'],
        [':authority', TARGET],
      ],
      false,
    ],
  ];
  for (const [name, fields, endStream] of cases) {
    const o = await attempt(rig, fields, endStream);
    // nghttp2 itself refuses `PRI *` (the preface's request line) with a stream PROTOCOL_ERROR.
    const want =
      name === 'PRI'
        ? isProtocolError(o) || (o.kind === 'status' && o.status === 400)
        : o.kind === 'status' && o.status === 400;
    t.ok(want, `${name} → ${describe(o)} (want 400${name === 'PRI' ? ' or PROTOCOL_ERROR' : ''})`);
  }
  t.equal(rig.stats.onConnect, 0, 'onConnect never called');
  t.equal(rig.stats.dials, 0, 'no upstream dial');
  t.ok((await rig.legit()).ok, 'a legitimate tunnel still works');
});

t.test('A.2 CONNECT with :path or :scheme, or without :authority, is a stream error or 400', async (t) => {
  const rig = await startRig(t);
  const cases: [string, HpackField[]][] = [
    [
      'CONNECT + :path',
      [
        [':method', 'CONNECT'],
        [':authority', TARGET],
        [':path', '/'],
      ],
    ],
    [
      'CONNECT + :scheme',
      [
        [':method', 'CONNECT'],
        [':authority', TARGET],
        [':scheme', 'https'],
      ],
    ],
    [
      'CONNECT + :scheme + :path',
      [
        [':method', 'CONNECT'],
        [':scheme', 'https'],
        [':path', '/'],
        [':authority', TARGET],
      ],
    ],
    ['CONNECT without :authority', [[':method', 'CONNECT']]],
    [
      'CONNECT with host instead of :authority',
      [
        [':method', 'CONNECT'],
        ['host', TARGET],
      ],
    ],
    [
      'CONNECT + :protocol (extended CONNECT, not HBONE)',
      [
        [':method', 'CONNECT'],
        [':protocol', 'websocket'],
        [':scheme', 'https'],
        [':path', '/'],
        [':authority', TARGET],
      ],
    ],
  ];
  for (const [name, fields] of cases) {
    const o = await attempt(rig, fields);
    t.ok(isProtocolError(o) || (o.kind === 'status' && o.status === 400), `${name} → ${describe(o)}`);
  }
  t.equal(rig.stats.onConnect, 0, 'onConnect never called');
  t.ok((await rig.legit()).ok, 'a legitimate tunnel still works');
});

t.test(
  'A.3 malformed authorities get a deterministic 400 (or PROTOCOL_ERROR) and no onConnect',
  async (t) => {
    const rig = await startRig(t);
    const host255 = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}`; // 255 chars
    const cases: [string, string][] = [
      ['no port', '10.0.0.5'],
      ['port 0', '10.0.0.5:0'],
      ['port 65536', '10.0.0.5:65536'],
      ['port 99999999999', '10.0.0.5:99999999999'],
      ['non-numeric port', '10.0.0.5:http'],
      ['negative port', '10.0.0.5:-1'],
      ['signed port', '10.0.0.5:+80'],
      ['empty host', ':80'],
      ['empty authority', ''],
      ['unclosed IPv6 bracket', '[::1:80'],
      ['unclosed IPv6 bracket, no port', '[::1'],
      ['IPv6 without brackets', '::1:80'],
      ['userinfo', 'u@10.0.0.5:80'],
      ['userinfo with password', 'u:p@10.0.0.5:80'],
      ['IPv6 zone id', 'fe80::1%eth0:80'],
      ['bracketed IPv6 zone id', '[fe80::1%eth0]:80'],
      ['bracketed IPv6 encoded zone id', '[fe80::1%25eth0]:80'],
      ['trailing dot', 'reviews.default.svc.cluster.local.:9080'],
      ['path after port', '10.0.0.5:80/x'],
      ['whitespace', ' 10.0.0.5:80'],
      ['two ports', '10.0.0.5:80:81'],
      ['255-byte host', `${host255}:80`],
      ['256-byte host', `${host255}e:80`],
      ['4096-byte host', `${'a'.repeat(4096)}:80`],
    ];
    const outcomes: string[] = [];
    for (const [name, authority] of cases) {
      const o = await attempt(rig, [
        [':method', 'CONNECT'],
        [':authority', authority],
      ]);
      outcomes.push(`${name}: ${describe(o)}`);
      // nghttp2 already refuses characters outside the RFC 3986 authority grammar (@, /, space,
      // empty) with a stream PROTOCOL_ERROR before the application sees the request: as deterministic.
      t.ok(
        (o.kind === 'status' && o.status === 400) ||
          (o.kind === 'rst' && o.errorCode === ErrorCode.PROTOCOL_ERROR),
        `${name} → ${describe(o)} (want 400 or RST_STREAM PROTOCOL_ERROR)`,
      );
      t.equal(rig.stats.onConnect, 0, `${name}: onConnect not called`);
    }
    // 64 KiB host: at the header-list limit, so a header-size rejection is also acceptable.
    const huge = await attempt(rig, [
      [':method', 'CONNECT'],
      [':authority', `${'a'.repeat(65536)}:80`],
    ]);
    t.ok(
      (huge.kind === 'status' && (huge.status === 400 || huge.status === 431)) ||
        huge.kind === 'rst' ||
        huge.kind === 'goaway' ||
        huge.kind === 'closed',
      `65536-byte host → ${describe(huge)}`,
    );
    t.equal(rig.stats.onConnect, 0, 'onConnect never called');
    t.equal(rig.stats.dials, 0, 'no upstream dial');
    t.ok((await rig.legit()).ok, 'a legitimate tunnel still works');
    t.comment(outcomes.join('\n'));
  },
);

t.test(
  'A.8 duplicate pseudo-headers, uppercase names, connection-specific headers → PROTOCOL_ERROR or 400',
  async (t) => {
    const rig = await startRig(t);
    const base: HpackField[] = [
      [':method', 'CONNECT'],
      [':authority', TARGET],
    ];
    const cases: [string, HpackField[]][] = [
      ['duplicate :method', [...base, [':method', 'CONNECT']]],
      ['duplicate :authority', [...base, [':authority', '10.0.0.6:8080']]],
      ['duplicate :authority (same value)', [...base, [':authority', TARGET]]],
      ['unknown pseudo-header', [...base, [':foo', 'bar']]],
      [
        'pseudo-header after a regular header',
        [
          [':method', 'CONNECT'],
          ['x-a', 'b'],
          [':authority', TARGET],
        ],
      ],
      ['response pseudo-header in a request', [...base, [':status', '200']]],
      ['uppercase header name', [...base, ['X-Forwarded-For', '10.9.9.9']]],
      [
        'uppercase pseudo-header name',
        [
          [':method', 'CONNECT'],
          [':Authority', TARGET],
        ],
      ],
      ['connection', [...base, ['connection', 'keep-alive']]],
      ['keep-alive', [...base, ['keep-alive', 'timeout=5']]],
      ['proxy-connection', [...base, ['proxy-connection', 'keep-alive']]],
      ['transfer-encoding', [...base, ['transfer-encoding', 'chunked']]],
      ['upgrade', [...base, ['upgrade', 'h2c']]],
      ['te: gzip', [...base, ['te', 'gzip']]],
    ];
    const outcomes: string[] = [];
    for (const [name, fields] of cases) {
      const o = await attempt(rig, fields);
      outcomes.push(`${name}: ${describe(o)}`);
      t.ok(isProtocolError(o) || (o.kind === 'status' && o.status === 400), `${name} → ${describe(o)}`);
    }
    t.equal(rig.stats.onConnect, 0, 'onConnect never called');
    t.equal(rig.stats.dials, 0, 'no upstream dial');
    // Control: `te: trailers` is the one allowed TE value (RFC 9113 §8.2.2) and must not be refused.
    const c = await rig.connect();
    c.send(
      headersFrame(
        1,
        hpackEncode([...base.slice(0, 1), [':authority', `127.0.0.1:${rig.echoPort}`], ['te', 'trailers']]),
      ),
    );
    const ok = await c.outcome(1, 3000);
    t.ok(ok.kind === 'status' && ok.status === 200, `te: trailers accepted → ${describe(ok)}`);
    c.destroy();
    t.comment(outcomes.join('\n'));
  },
);

t.test('A.8 invalid field names are refused or never reach onConnect', async (t) => {
  // nghttp2 drops fields whose names break RFC 9113 §8.2.1 without resetting the stream (except for
  // uppercase); either way the application must never see them.
  const rig = await startRig(t);
  const target = `127.0.0.1:${rig.echoPort}`;
  const cases: [string, string][] = [
    ['empty header name', ''],
    ['header name with space', 'x a'],
    ['header name with colon inside', 'x:a'],
    ['header name with NUL', 'x\u0000a'],
    ['header name with DEL', 'x\u007fa'],
    ['header name with non-ASCII', 'x\u00e9a'],
  ];
  for (const [name, field] of cases) {
    const before = rig.stats.requests.length;
    const o = await attempt(rig, [
      [':method', 'CONNECT'],
      [':authority', target],
      [field, 'v'],
    ]);
    const seen = rig.stats.requests.slice(before);
    const leaked = seen.some((r) => r.headerNames.includes(field));
    t.comment(
      `${name}: ${describe(o)}; reached onConnect: ${seen.length > 0 ? 'yes (field dropped)' : 'no'}`,
    );
    t.notOk(leaked, `${name}: the invalid field never reaches onConnect`);
    t.ok(isProtocolError(o) || o.kind === 'status', `${name}: a deterministic answer (${describe(o)})`);
  }
});

t.test('A.15 control characters and non-ASCII bytes in a header value never reach onConnect', async (t) => {
  // nghttp2 drops a field whose value holds NUL, CR, LF, another control or DEL (RFC 9113 §8.2.1),
  // and the request goes on without it. Bytes above 0x7e are legal HTTP field content that Node
  // hands over as Latin-1; no HBONE header carries them, so the server refuses those requests with
  // a 400 before onConnect. Either way no such value can reach a log line or a policy.
  const rig = await startRig(t);
  const target = `127.0.0.1:${rig.echoPort}`;
  const bytes = (...parts: (string | number[])[]): Uint8Array =>
    Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));
  const cases: [string, Uint8Array, 'dropped' | 'refused'][] = [
    ['NUL', bytes('a', [0x00], 'b'), 'dropped'],
    ['CR', bytes('a', [0x0d], 'b'), 'dropped'],
    ['LF', bytes('a', [0x0a], 'b'), 'dropped'],
    ['CRLF with an injected header', bytes('k8s.namespace.name=a', [0x0d, 0x0a], 'x-injected: 1'), 'dropped'],
    ['an injected JSON log line', bytes('a"}', [0x0a], '{"src.identity":"spiffe://x/ns/y/sa/z"}'), 'dropped'],
    ['SOH', bytes('a', [0x01], 'b'), 'dropped'],
    ['ESC (terminal escape)', bytes([0x1b], '[31mred'), 'dropped'],
    ['DEL', bytes('a', [0x7f], 'b'), 'dropped'],
    ['0xff (not UTF-8)', bytes('a', [0xff], 'b'), 'refused'],
    ['a lone UTF-8 lead byte', bytes('a', [0xc3], 'b'), 'refused'],
    ['valid UTF-8 (é)', bytes('caf', [0xc3, 0xa9]), 'refused'],
  ];
  const outcomes: string[] = [];
  for (const header of ['baggage', 'forwarded', 'x-custom']) {
    for (const [name, value, expected] of cases) {
      const before = rig.stats.requests.length;
      const o = await attempt(rig, [
        [':method', 'CONNECT'],
        [':authority', target],
        { kind: 'literal', name: header, value },
      ]);
      const seen = rig.stats.requests.slice(before);
      outcomes.push(`${header}: ${name}: ${describe(o)}${seen.length > 0 ? ' (field dropped)' : ''}`);
      t.notOk(
        seen.some((r) => header in r.headers),
        `${header} ${name}: no value of the field reaches onConnect`,
      );
      if (expected === 'refused') {
        t.ok(o.kind === 'status' && o.status === 400, `${header} ${name} → ${describe(o)}`);
        t.equal(seen.length, 0, `${header} ${name}: onConnect not called`);
      } else {
        t.ok(
          isProtocolError(o) || (o.kind === 'status' && (o.status === 400 || o.status === 200)),
          `${header} ${name}: a deterministic answer (${describe(o)})`,
        );
      }
    }
  }
  // Control: the same headers with printable ASCII (and a tab) get through unchanged.
  const o = await attempt(rig, [
    [':method', 'CONNECT'],
    [':authority', target],
    ['baggage', 'k8s.namespace.name=a,k8s.pod.name=b'],
    ['forwarded', 'for="10.0.0.1:1234"'],
    ['x-custom', 'tab\tand ~!@#$%^&*()'],
  ]);
  t.ok(o.kind === 'status' && o.status === 200, `printable ASCII accepted → ${describe(o)}`);
  t.same(rig.stats.requests.at(-1)?.headers['x-custom'], 'tab\tand ~!@#$%^&*()');
  t.comment(outcomes.join('\n'));
});

// SPDX-License-Identifier: Apache-2.0
// CONNECT authority parsing (src/shared/hbone/authority.ts; checklist A.3).
import t from 'tap';
import fc from 'fast-check';
import {
  authorityToString,
  formatAuthority,
  parseAuthority,
} from '../../../../src/shared/hbone/authority.ts';
import { HboneError } from '../../../../src/shared/hbone/errors.ts';

t.test('accepted forms', async (t) => {
  t.same(parseAuthority('10.0.0.5:8080'), { kind: 'ip', ip: '10.0.0.5', family: 4, port: 8080 });
  t.same(parseAuthority('0.0.0.0:1'), { kind: 'ip', ip: '0.0.0.0', family: 4, port: 1 });
  t.same(parseAuthority('255.255.255.255:65535'), {
    kind: 'ip',
    ip: '255.255.255.255',
    family: 4,
    port: 65535,
  });
  t.same(parseAuthority('[::1]:80'), { kind: 'ip', ip: '::1', family: 6, port: 80 });
  // IPv6 comes back canonical (RFC 5952), so policy and logs see one spelling.
  t.same(parseAuthority('[2001:DB8:0:0:0:0:0:1]:443'), {
    kind: 'ip',
    ip: '2001:db8::1',
    family: 6,
    port: 443,
  });
  t.same(parseAuthority('[::ffff:10.0.0.1]:80'), { kind: 'ip', ip: '::ffff:10.0.0.1', family: 6, port: 80 });
  t.same(parseAuthority('reviews.default.svc.cluster.local:9080'), {
    kind: 'hostname',
    hostname: 'reviews.default.svc.cluster.local',
    port: 9080,
  });
  t.same(parseAuthority('Reviews.Default:80'), { kind: 'hostname', hostname: 'reviews.default', port: 80 });
  t.same(parseAuthority('a-b.c1:80'), { kind: 'hostname', hostname: 'a-b.c1', port: 80 });
  const host253 = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
  t.equal(host253.length, 253);
  t.equal(parseAuthority(`${host253}:1`).kind, 'hostname');
});

t.test('rejected forms: deterministic 400', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /empty/],
    ['10.0.0.5', /no port/],
    ['10.0.0.5:', /no port/],
    ['10.0.0.5:0', /port/],
    ['10.0.0.5:65536', /port/],
    ['10.0.0.5:99999', /port/],
    ['10.0.0.5:080', /port/],
    ['10.0.0.5:+80', /port/],
    ['10.0.0.5:8a', /port/],
    ['10.0.0.5: 80', /port/],
    ['10.0.0.5:80 ', /port/],
    ['10.0.0.5:80/x', /port/],
    [':80', /empty host/],
    ['[]:80', /empty host/],
    ['[::1', /unterminated/],
    ['[::1]', /no port/],
    ['[::1]80', /after/],
    ['[::1]:80x', /port/],
    ['[::1]]:80', /after/],
    ['::1:80', /brackets/],
    ['[fe80::1%eth0]:80', /zone/],
    ['[fe80::1%25eth0]:80', /zone/],
    ['[10.0.0.1]:80', /not an IPv6/],
    ['u@10.0.0.5:80', /userinfo/],
    ['user:pass@10.0.0.5:80', /brackets|userinfo/],
    ['example.com.:80', /trailing dot/],
    ['.example.com:80', /neither/],
    ['a..b:80', /neither/],
    ['-a.b:80', /neither/],
    ['a_b.c:80', /neither/],
    ['exa mple:80', /neither/],
    ['a\u0000b:80', /neither/],
    ['a\r\nb:80', /neither/],
    ['01.2.3.4:80', /dotted-quad/],
    ['1.2.3:80', /dotted-quad/],
    ['1.2.3.256:80', /dotted-quad/],
    ['0x7f.0.0.1:80', /neither|dotted/],
    [`${'a'.repeat(64)}.b:80`, /neither/],
    [`${'a.'.repeat(127)}a:80`, /longer than 253/],
    [`${'a'.repeat(256)}:80`, /longer/],
    [`${'a'.repeat(4096)}:80`, /longer/],
    [`${'a'.repeat(65536)}:80`, /longer/],
  ];
  for (const [input, why] of cases) {
    let caught: unknown;
    try {
      parseAuthority(input);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof HboneError, `${JSON.stringify(input.slice(0, 40))} rejected`);
    const e = caught as HboneError;
    t.equal(e.code, 'HBONE_ERR_BAD_REQUEST', `${JSON.stringify(input.slice(0, 40))} code`);
    t.equal(e.status, 400);
    t.match(e.message, why, `${JSON.stringify(input.slice(0, 40))} reason: ${e.message}`);
    // Network input is echoed bounded and escaped (no raw CR/LF/NUL in log lines).
    t.ok(e.message.length < 400, 'message bounded');
    t.notMatch(e.message, /[\r\n\u0000]/, 'message escaped');
  }
});

t.test('formatAuthority', async (t) => {
  t.equal(formatAuthority('10.1.2.3', 15008), '10.1.2.3:15008');
  t.equal(formatAuthority('2001:DB8::1', 80), '[2001:db8::1]:80');
  t.throws(() => formatAuthority('10.1.2.3', 0), { code: 'HBONE_ERR_BAD_REQUEST' });
  t.throws(() => formatAuthority('not-an-ip', 80), { code: 'HBONE_ERR_BAD_REQUEST' });
  t.throws(() => formatAuthority('10.1.2.3', 1.5), { code: 'HBONE_ERR_BAD_REQUEST' });
});

t.test('property: formatted IP authorities round-trip', async (t) => {
  fc.assert(
    fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), fc.integer({ min: 1, max: 65535 }), (ip, port) => {
      const text = formatAuthority(ip, port);
      const parsed = parseAuthority(text);
      return parsed.kind === 'ip' && parsed.port === port && authorityToString(parsed) === text;
    }),
    { numRuns: 2000 },
  );
  t.pass('round-trips');
});

t.test('property: arbitrary input either parses canonically or throws HBONE_ERR_BAD_REQUEST', async (t) => {
  const alphabet = fc.constantFrom(...'0123456789abcdefABCDEF.:[]%@-_/ \u0000'.split(''));
  fc.assert(
    fc.property(fc.oneof(fc.string(), fc.string({ unit: alphabet, maxLength: 60 })), (s) => {
      let parsed;
      try {
        parsed = parseAuthority(s);
      } catch (err) {
        return err instanceof HboneError && err.code === 'HBONE_ERR_BAD_REQUEST';
      }
      // Accepted: re-parsing the canonical text gives the same thing.
      return JSON.stringify(parseAuthority(authorityToString(parsed))) === JSON.stringify(parsed);
    }),
    { numRuns: 20000 },
  );
  t.pass('no other outcome');
});

// SPDX-License-Identifier: Apache-2.0
// IP parsing, canonical form (RFC 5952, IPv4-mapped unmapped) and address classes.
import t from 'tap';
import fc from 'fast-check';
import { isIP } from 'node:net';
import {
  canonicalIp,
  formatHostPort,
  formatIp,
  isLinkLocal,
  isLoopback,
  isMulticastOrBroadcast,
  isUnspecified,
  parseIp,
} from '../../../../src/shared/net/ip.ts';

t.test('canonicalIp: valid inputs', async (t) => {
  const rows: [string, string][] = [
    ['198.18.1.10', '198.18.1.10'],
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    ['::', '::'],
    ['::1', '::1'],
    ['FD00:0018:0001:0000:0000:0000:0000:0010', 'fd00:18:1::10'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // leftmost of equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // single zero group not compressed
    ['1::', '1::'],
    ['::ffff:198.18.1.10', '198.18.1.10'], // IPv4-mapped → IPv4
    ['::FFFF:c612:010a', '198.18.1.10'],
    ['::198.18.1.10', '::c612:10a'], // IPv4-compatible is not mapped
    ['fe80::1', 'fe80::1'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
  ];
  for (const [input, want] of rows) t.equal(canonicalIp(input), want, input);
});

t.test('canonicalIp: invalid inputs', async (t) => {
  const bad = [
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.1.1.1',
    '01.2.3.4', // leading zero: octal in some parsers
    '1.2.3.4 ',
    ' 1.2.3.4',
    '1.2.3.-1',
    '1.2.3.4/32',
    'fe80::1%eth0', // zone id
    '[::1]',
    ':::',
    '1::2::3',
    ':1::',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7::8', // "::" must stand for at least one group
    '12345::',
    '::g',
    '1.2.3.4::',
    '::1.2.3',
    'localhost',
  ];
  for (const b of bad) t.equal(canonicalIp(b), undefined, JSON.stringify(b));
});

t.test('property: agrees with node:net on validity and round-trips', async (t) => {
  const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join('.'));
  const v6 = fc.ipV6();
  fc.assert(
    fc.property(fc.oneof(v4, v6), (s) => {
      const a = parseIp(s);
      if (a === undefined) return false;
      const text = formatIp(a);
      // Our text parses back to the same bytes, and node agrees it is an IP of that family.
      const back = parseIp(text);
      return back !== undefined && Buffer.compare(back.bytes, a.bytes) === 0 && isIP(text) === a.family;
    }),
    { numRuns: 3000 },
  );
  t.pass('round-trip');
});

t.test('address classes', async (t) => {
  const rows: [string, 'loopback' | 'unspecified' | 'link-local' | 'multicast' | 'none'][] = [
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['::1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['::', 'unspecified'],
    ['169.254.169.254', 'link-local'],
    ['169.254.7.127', 'link-local'],
    ['fe80::1', 'link-local'],
    ['febf::1', 'link-local'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.255', 'multicast'],
    ['255.255.255.255', 'multicast'],
    ['ff02::1', 'multicast'],
    ['198.18.1.10', 'none'],
    ['169.253.0.1', 'none'],
    ['fec0::1', 'none'],
    ['223.255.255.255', 'none'],
    ['::2', 'none'],
  ];
  for (const [ip, want] of rows) {
    const a = parseIp(ip);
    if (a === undefined) {
      t.fail(`${ip} should parse`);
      continue;
    }
    const got = isLoopback(a)
      ? 'loopback'
      : isUnspecified(a)
        ? 'unspecified'
        : isLinkLocal(a)
          ? 'link-local'
          : isMulticastOrBroadcast(a)
            ? 'multicast'
            : 'none';
    t.equal(got, want, ip);
  }
});

t.test('formatHostPort brackets IPv6', async (t) => {
  t.equal(formatHostPort('198.18.1.10', 80), '198.18.1.10:80');
  t.equal(formatHostPort('fd00::1', 8080), '[fd00::1]:8080');
});

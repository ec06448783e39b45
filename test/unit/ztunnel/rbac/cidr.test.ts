// SPDX-License-Identifier: Apache-2.0
// CIDR matching for RBAC: edges (/0, /32, /128, non-octet prefixes, families, IPv4-mapped) and a
// property test against a BigInt reference.
import t from 'tap';
import fc from 'fast-check';
import { cidrContains, parseCidrText } from '../../../../ztunnel/src/rbac/cidr.ts';
import { parseIp } from '../../../../src/shared/net/ip.ts';

function contains(cidr: string, ip: string): boolean {
  const c = parseCidrText(cidr);
  const a = parseIp(ip);
  if (c === undefined || a === undefined) throw new Error(`bad test input ${cidr} ${ip}`);
  return cidrContains(c, a);
}

t.test('edges', async (t) => {
  const rows: [string, string, boolean][] = [
    ['0.0.0.0/0', '198.18.1.10', true],
    ['0.0.0.0/0', '255.255.255.255', true],
    ['0.0.0.0/0', '::1', false], // families never mix
    ['::/0', '198.18.1.10', false],
    ['::/0', 'fd00::1', true],
    ['198.18.1.10/32', '198.18.1.10', true],
    ['198.18.1.10/32', '198.18.1.11', false],
    ['198.18.1.10', '198.18.1.10', true], // bare address = /32
    ['198.18.1.10', '198.18.1.11', false],
    ['198.18.0.0/15', '198.19.255.255', true],
    ['198.18.0.0/15', '198.20.0.0', false],
    ['198.18.0.0/15', '198.17.255.255', false],
    ['10.1.2.3/8', '10.200.0.1', true], // host bits ignored
    ['198.18.1.128/25', '198.18.1.127', false],
    ['198.18.1.128/25', '198.18.1.128', true],
    ['198.18.1.0/31', '198.18.1.1', true],
    ['198.18.1.0/31', '198.18.1.2', false],
    ['fd00::1/128', 'fd00::1', true],
    ['fd00::1/128', 'fd00::2', false],
    ['fd00::1', 'fd00::1', true], // bare = /128
    ['fd00:18:1::/64', 'fd00:18:1:0:ffff:ffff:ffff:ffff', true],
    ['fd00:18:1::/64', 'fd00:18:1:1::', false],
    ['fd00::/7', 'fdff::1', true],
    ['fd00::/7', 'fe00::1', false],
    ['fc00::/7', 'fdff::1', true],
    // IPv4-mapped: a connection IP in mapped form matches as IPv4...
    ['198.18.1.0/24', '::ffff:198.18.1.10', true],
    ['198.18.2.0/24', '::ffff:198.18.1.10', false],
    // ...a mapped CIDR of length ≥ 96 is the IPv4 CIDR it denotes...
    ['::ffff:198.18.0.0/112', '198.18.7.7', true],
    ['::ffff:198.18.0.0/112', '198.19.7.7', false],
    ['::ffff:0.0.0.0/96', '1.2.3.4', true],
    // ...and a shorter one stays IPv6 and matches no IPv4 address.
    ['::/80', '1.2.3.4', false],
    ['::ffff:198.18.1.10/128', '::ffff:198.18.1.10', true],
  ];
  for (const [cidr, ip, want] of rows) t.equal(contains(cidr, ip), want, `${cidr} ∋ ${ip}`);
});

t.test('parseCidrText rejects bad input', async (t) => {
  for (const bad of [
    '198.18.0.0/33',
    'fd00::/129',
    '198.18.0.0/',
    '198.18.0.0/-1',
    '198.18.0.0/08',
    'x/8',
    '198.18.0.0/1/2',
    '',
  ]) {
    t.equal(parseCidrText(bad), undefined, bad);
  }
  t.same(parseCidrText('FD00::0/8'), { address: 'fd00::', length: 8 }, 'canonical address');
});

t.test('an out-of-range length in a hand-built CIDR never matches', async (t) => {
  const a = parseIp('1.2.3.4');
  if (a === undefined) throw new Error('unreachable');
  t.equal(cidrContains({ address: '1.2.3.4', length: 33 }, a), false);
  t.equal(cidrContains({ address: '1.2.3.4', length: -1 }, a), false);
  t.equal(cidrContains({ address: 'not-an-ip', length: 0 }, a), false);
});

function toBig(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

t.test('property: equals a BigInt reference for IPv4 and IPv6', async (t) => {
  const v4 = fc.tuple(
    fc.uint8Array({ minLength: 4, maxLength: 4 }),
    fc.uint8Array({ minLength: 4, maxLength: 4 }),
    fc.nat(32),
  );
  const v6 = fc.tuple(
    fc.uint8Array({ minLength: 16, maxLength: 16 }),
    fc.uint8Array({ minLength: 16, maxLength: 16 }),
    fc.nat(128),
  );
  fc.assert(
    fc.property(fc.oneof(v4, v6), fc.boolean(), ([net, ip, len], sharePrefix) => {
      const bits = net.length * 8;
      // Half the time make the IP share the network's prefix, so both outcomes are frequent.
      const ipBytes = sharePrefix
        ? Uint8Array.from(net.map((b, i) => (i * 8 + 8 <= len ? b : (ip[i] ?? 0))))
        : ip;
      const family = net.length === 4 ? 4 : 6;
      const addrText = (b: Uint8Array): string =>
        family === 4
          ? Array.from(b).join('.')
          : Array.from({ length: 8 }, (_, i) =>
              (((b[i * 2] ?? 0) << 8) | (b[i * 2 + 1] ?? 0)).toString(16),
            ).join(':');
      const netParsed = parseIp(addrText(net));
      const ipParsed = parseIp(addrText(ipBytes));
      if (netParsed === undefined || ipParsed === undefined) return false;
      // Skip mapped addresses here: they are covered by the table (they change family on purpose).
      if (family === 6 && (toBig(net) >> 32n === 0xffffn || toBig(ipBytes) >> 32n === 0xffffn)) return true;
      const shift = BigInt(bits - len);
      const want = toBig(net) >> shift === toBig(ipBytes) >> shift;
      return cidrContains({ address: addrText(net), length: len }, ipParsed) === want;
    }),
    { numRuns: 5000 },
  );
  t.pass('reference agrees');
});

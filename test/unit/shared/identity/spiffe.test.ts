// SPDX-License-Identifier: Apache-2.0
// SPIFFE ID parser/formatter: round-trip and rejection properties (fast-check) and the explicit
// malformed-ID table of security-and-reliability.md checklist B.27.
import t from 'tap';
import fc from 'fast-check';
import { IdentityError } from '../../../../src/shared/identity/errors.ts';
import {
  formatSpiffeId,
  istioIdentityUri,
  parseIstioIdentity,
  parseSpiffeId,
  parseTrustDomain,
} from '../../../../src/shared/identity/spiffe.ts';

const TD_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789._-'.split('');
const SEG_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-'.split('');

const trustDomainArb = fc.string({ unit: fc.constantFrom(...TD_CHARS), minLength: 1, maxLength: 40 });
const segmentArb = fc
  .string({ unit: fc.constantFrom(...SEG_CHARS), minLength: 1, maxLength: 20 })
  .filter((s) => s !== '.' && s !== '..');
const pathArb = fc.array(segmentArb, { minLength: 1, maxLength: 6 }).map((segs) => `/${segs.join('/')}`);

/** The IdentityError parseSpiffeId throws for `uri`, or undefined if it accepts it. */
function rejection(uri: string): IdentityError | undefined {
  try {
    parseSpiffeId(uri);
    return undefined;
  } catch (err) {
    if (err instanceof IdentityError) return err;
    throw err;
  }
}

t.test('valid SPIFFE IDs round-trip through format and parse', async (t) => {
  fc.assert(
    fc.property(trustDomainArb, pathArb, (td, path) => {
      const uri = formatSpiffeId(td, path);
      const id = parseSpiffeId(uri);
      return uri === `spiffe://${td}${path}` && id.trustDomain === td && id.path === path && id.uri === uri;
    }),
    { numRuns: 500 },
  );
  t.equal(
    formatSpiffeId('cluster.local', 'ns/a/sa/b'),
    'spiffe://cluster.local/ns/a/sa/b',
    'leading / added',
  );
  t.same(parseSpiffeId('spiffe://cluster.local/ns/default/sa/default'), {
    trustDomain: 'cluster.local',
    path: '/ns/default/sa/default',
    uri: 'spiffe://cluster.local/ns/default/sa/default',
  });
});

t.test('inserting a forbidden character anywhere after the scheme is always rejected', async (t) => {
  // Characters outside both allowed sets (trust domain chars are a subset of path chars).
  const forbidden = fc.oneof(
    fc.constantFrom(
      '\0',
      '\n',
      '\r',
      '\t',
      ' ',
      '%',
      '?',
      '#',
      '@',
      ':',
      '\\',
      '"',
      '<',
      '>',
      '~',
      '!',
      '$',
      '&',
      "'",
      '(',
      ')',
      '*',
      '+',
      ',',
      ';',
      '=',
      '[',
      ']',
      '\u00e9',
      '\u2028',
      '\u0130',
      '\ufeff',
      '\x7f',
    ),
    fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c)),
    fc.integer({ min: 0x80, max: 0xffff }).map((c) => String.fromCharCode(c)),
  );
  fc.assert(
    fc.property(trustDomainArb, pathArb, forbidden, fc.nat(), (td, path, ch, pos) => {
      const body = `${td}${path}`;
      const i = pos % (body.length + 1);
      const mutated = `spiffe://${body.slice(0, i)}${ch}${body.slice(i)}`;
      try {
        parseSpiffeId(mutated);
        return false;
      } catch (err) {
        return err instanceof IdentityError && err.code === 'ID_ERR_SPIFFE_INVALID';
      }
    }),
    { numRuns: 1000 },
  );
  t.pass('1000 mutations rejected');
});

t.test('uppercase anywhere in the trust domain is always rejected', async (t) => {
  fc.assert(
    fc.property(
      trustDomainArb,
      pathArb,
      fc.nat(),
      fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZ'.split('')),
      (td, path, pos, up) => {
        const i = pos % (td.length + 1);
        const badTd = `${td.slice(0, i)}${up}${td.slice(i)}`;
        try {
          parseSpiffeId(`spiffe://${badTd}${path}`);
          return false;
        } catch (err) {
          return err instanceof IdentityError && /lowercase/.test(err.message);
        }
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});

t.test('forbidden segments (empty, ".", "..") anywhere in the path are always rejected', async (t) => {
  fc.assert(
    fc.property(
      trustDomainArb,
      fc.array(segmentArb, { minLength: 1, maxLength: 5 }),
      fc.constantFrom('', '.', '..'),
      fc.nat(),
      (td, segs, bad, pos) => {
        const i = pos % (segs.length + 1);
        const path = `/${[...segs.slice(0, i), bad, ...segs.slice(i)].join('/')}`;
        try {
          parseSpiffeId(`spiffe://${td}${path}`);
          return false;
        } catch (err) {
          return err instanceof IdentityError && err.code === 'ID_ERR_SPIFFE_INVALID';
        }
      },
    ),
    { numRuns: 500 },
  );
  t.pass();
});

t.test('checklist B.27: every malformed case is rejected with the rule named', async (t) => {
  const longPath = `/${'a'.repeat(2048 - 'spiffe://td/'.length + 1)}`;
  const exactlyMax = `spiffe://td/${'a'.repeat(2048 - 'spiffe://td/'.length)}`;
  t.equal(Buffer.byteLength(exactlyMax), 2048);
  t.equal(parseSpiffeId(exactlyMax).uri, exactlyMax, '2048 bytes exactly is accepted');
  t.equal(parseTrustDomain('a'.repeat(255)), 'a'.repeat(255), '255-byte trust domain is accepted');

  const cases: [string, RegExp, string][] = [
    ['spiffe://cluster.local/ns/a\0/sa/b', /control character U\+0000/, 'NUL in path'],
    ['spiffe://cluster.local\0/ns/a/sa/b', /control character U\+0000/, 'NUL in trust domain'],
    ['spiffe://cluster.local/ns/a/sa/b\0', /control character U\+0000/, 'trailing NUL'],
    ['spiffe://Cluster.local/ns/a/sa/b', /lowercase/, 'uppercase in trust domain'],
    [
      'spiffe://cluster_local!/ns/a/sa/b',
      /"!" is not allowed in the trust domain/,
      'char outside [a-z0-9._-] in trust domain',
    ],
    ['spiffe://cluster.local/ns/a b/sa/b', /" " is not allowed in the path/, 'space in path'],
    ['spiffe://cluster.local/ns/a+b/sa/b', /"\+" is not allowed in the path/, '+ in path'],
    ['spiffe://cluster.local/ns/\u00e9/sa/b', /not allowed in the path/, 'non-ASCII in path'],
    ['spiffe://cluster.local/ns%2Fx/sa/b', /percent-encoding/, '%2F'],
    ['spiffe://cluster%2elocal/ns/a/sa/b', /percent-encoding/, 'percent in trust domain'],
    ['spiffe://cluster.local/ns//sa/b', /empty segment/, '//'],
    ['spiffe://cluster.local/ns/./sa/b', /'\.' segment/, '/./'],
    ['spiffe://cluster.local/ns/../sa/b', /'\.\.' segment/, '/../'],
    ['spiffe://cluster.local/ns/a/sa/b/', /empty segment/, 'trailing /'],
    ['spiffe://cluster.local/', /only '\/'/, 'root path only'],
    ['spiffe://user@cluster.local/ns/a/sa/b', /userinfo/, 'userinfo'],
    ['spiffe://user:pw@cluster.local/ns/a/sa/b', /userinfo/, 'userinfo with password'],
    ['spiffe://cluster.local:8080/ns/a/sa/b', /port/, 'port'],
    ['spiffe://cluster.local/ns/a/sa/b?x=1', /query/, 'query'],
    ['spiffe://cluster.local?x/ns/a', /query/, 'query in authority'],
    ['spiffe://cluster.local/ns/a/sa/b#frag', /fragment/, 'fragment'],
    [`spiffe://td${longPath}`, /longer than 2048 bytes/, '> 2048 bytes'],
    [`spiffe://${'a'.repeat(256)}/x`, /longer than 255 bytes/, 'trust domain > 255'],
    ['spiffe://cluster.local', /path is empty/, 'empty path'],
    ['spiffe://', /trust domain is empty/, 'empty everything'],
    ['spiffe:///ns/a/sa/b', /trust domain is empty/, 'empty trust domain'],
    ['https://cluster.local/ns/a/sa/b', /scheme/, 'scheme https'],
    ['SPIFFE://cluster.local/ns/a/sa/b', /scheme/, 'uppercase scheme'],
    ['spiffe:/cluster.local/ns/a/sa/b', /scheme/, 'missing slash'],
    [' spiffe://cluster.local/ns/a/sa/b', /scheme/, 'leading space'],
    ['', /scheme/, 'empty string'],
  ];
  for (const [uri, rule, name] of cases) {
    const err = rejection(uri);
    t.equal(err?.code, 'ID_ERR_SPIFFE_INVALID', `${name}: rejected`);
    t.match(err?.message ?? '', rule, `${name}: message names the rule`);
  }

  // /ns/a/sa/b/extra is a valid SPIFFE ID, but not an Istio identity (checklist B.27).
  t.equal(parseSpiffeId('spiffe://td/ns/a/sa/b/extra').path, '/ns/a/sa/b/extra');
  t.throws(() => parseIstioIdentity('spiffe://td/ns/a/sa/b/extra'), { code: 'ID_ERR_ISTIO_IDENTITY' });
  // Non-string input from untyped sources.
  t.throws(() => parseSpiffeId(42 as unknown as string), { code: 'ID_ERR_SPIFFE_INVALID' });
  // The message escapes control characters rather than echoing them raw into logs.
  try {
    parseSpiffeId('spiffe://td/a\nb');
    t.fail('should throw');
  } catch (err) {
    t.notMatch((err as Error).message, /\n/, 'no raw newline in the message');
  }
});

t.test('Istio identities: exact shape, format and parse', async (t) => {
  const id = parseIstioIdentity('spiffe://cluster.local/ns/default/sa/sleep');
  t.same(id, { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'sleep' });
  t.equal(istioIdentityUri(id), 'spiffe://cluster.local/ns/default/sa/sleep');
  for (const bad of [
    'spiffe://td/ns/a/sa',
    'spiffe://td/ns/a',
    'spiffe://td/NS/a/sa/b',
    'spiffe://td/ns/a/SA/b',
    'spiffe://td/sa/a/ns/b',
    'spiffe://td/x/ns/a/sa/b',
    'spiffe://td/ns/a/sa/b/c',
  ]) {
    t.throws(() => parseIstioIdentity(bad), { code: 'ID_ERR_ISTIO_IDENTITY' }, bad);
  }
  t.throws(() => parseIstioIdentity('spiffe://td/ns//sa/b'), { code: 'ID_ERR_SPIFFE_INVALID' });
  t.throws(
    () => istioIdentityUri({ trustDomain: 'td', namespace: 'a/sa/b', serviceAccount: 'c' }),
    IdentityError,
    'a namespace with / cannot smuggle extra segments',
  );
  t.throws(() => istioIdentityUri({ trustDomain: 'td', namespace: '', serviceAccount: 'c' }), IdentityError);
  t.throws(() => istioIdentityUri({ trustDomain: 'TD', namespace: 'a', serviceAccount: 'c' }), IdentityError);
  fc.assert(
    fc.property(trustDomainArb, segmentArb, segmentArb, (td, ns, sa) => {
      const back = parseIstioIdentity(
        istioIdentityUri({ trustDomain: td, namespace: ns, serviceAccount: sa }),
      );
      return back.trustDomain === td && back.namespace === ns && back.serviceAccount === sa;
    }),
    { numRuns: 300 },
  );
});

// SPDX-License-Identifier: Apache-2.0
// bearerToken: the one accepted shape of the authorization metadata (exactly one
// "Bearer <b64token>", scheme case-insensitive) and a refusal, with its reason, for every other.
import t from 'tap';
import { Metadata } from '@grpc/grpc-js';
import { bearerToken, MAX_TOKEN_BYTES } from '../../../../src/controller/auth/bearer.ts';
import { AuthenticationError } from '../../../../src/controller/auth/errors.ts';

function md(...values: string[]): Metadata {
  const m = new Metadata();
  for (const v of values) m.add('authorization', v);
  return m;
}

function reason(m: Metadata): string {
  try {
    return `accepted ${bearerToken(m)}`;
  } catch (err) {
    return err instanceof AuthenticationError ? err.reason : `other: ${String(err)}`;
  }
}

t.test('accepted shapes', async (t) => {
  t.equal(bearerToken(md('Bearer abc.DEF-_~+/=')), 'abc.DEF-_~+/=');
  t.equal(bearerToken(md('bearer tok')), 'tok', 'the scheme is case-insensitive');
  t.equal(bearerToken(md('BEARER   tok')), 'tok', 'several spaces after the scheme');
  const jwtLike = `${'a'.repeat(400)}.${'b'.repeat(600)}.${'c'.repeat(300)}`;
  t.equal(bearerToken(md(`Bearer ${jwtLike}`)), jwtLike);
  t.equal(
    bearerToken(md(`Bearer ${'x'.repeat(MAX_TOKEN_BYTES)}`)).length,
    MAX_TOKEN_BYTES,
    'the limit itself',
  );
});

t.test('refusals', async (t) => {
  t.equal(reason(new Metadata()), 'no-token');
  t.equal(reason(md('Bearer a', 'Bearer b')), 'malformed-header', 'two entries');
  t.equal(reason(md('Bearer a, Bearer b')), 'malformed-header', 'two entries joined by HTTP/2');
  t.equal(reason(md('Basic dXNlcjpwYXNz')), 'malformed-header', 'another scheme');
  t.equal(reason(md('Bearer')), 'malformed-header', 'scheme only');
  t.equal(reason(md('Bearer ')), 'malformed-header', 'empty token');
  t.equal(reason(md('Bearertok')), 'malformed-header', 'no space');
  t.equal(reason(md('Bearer a b')), 'malformed-header', 'space inside the token');
  t.equal(reason(md('Bearer tok=x')), 'malformed-header', 'padding only at the end');
  t.equal(reason(md('Bearer tok\\x')), 'malformed-header', 'a character outside the token grammar');
  t.equal(reason(md(`Bearer ${'x'.repeat(MAX_TOKEN_BYTES + 1)}`)), 'malformed-header', 'oversized');
});

t.test('the public message names what to send, not what was received', async (t) => {
  try {
    bearerToken(md('Basic c2VjcmV0LXBhc3N3b3Jk'));
    t.fail('accepted');
  } catch (err) {
    const e = err as AuthenticationError;
    t.match(e.publicMessage, /Bearer <token>/);
    t.notMatch(e.publicMessage, /c2VjcmV0/);
  }
});

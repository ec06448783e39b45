// SPDX-License-Identifier: Apache-2.0
// The bearer token of a gRPC call: exactly one `authorization: Bearer <token>` metadata entry
// (ambient-protocols.md §3.1, §4; RFC 6750 §2.1). Anything else — no entry, several entries
// (HTTP/2 joins repeated headers with ", ", which the token grammar rejects), another scheme, an
// empty or oversized token, characters outside the b64token grammar — is refused before any
// token is looked at, so a malformed header never reaches the TokenReview API.
import type { Metadata } from '@grpc/grpc-js';
import { AuthenticationError } from './errors.ts';

/**
 * Longest token accepted. A projected ServiceAccount token is ~1 KiB; 16 KiB leaves room for
 * large claims while keeping a hostile header from becoming a large TokenReview body.
 */
export const MAX_TOKEN_BYTES = 16 * 1024;

/** RFC 6750 §2.1 b64token. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
/** The auth-scheme is case-insensitive (RFC 9110 §11.1); one or more spaces follow it. */
const BEARER = /^bearer +(.*)$/i;

/** The token of the call's `authorization: Bearer <token>` metadata; throws AuthenticationError. */
export function bearerToken(metadata: Metadata): string {
  const values = metadata.get('authorization');
  if (values.length === 0) {
    throw new AuthenticationError('no-token', 'the call carries no authorization metadata');
  }
  if (values.length > 1) {
    throw new AuthenticationError(
      'malformed-header',
      `the call carries ${values.length} authorization metadata entries; exactly one is allowed`,
    );
  }
  const value = values[0];
  if (typeof value !== 'string') {
    throw new AuthenticationError('malformed-header', 'the authorization metadata is binary');
  }
  const m = BEARER.exec(value);
  if (!m) {
    const scheme = value.split(' ', 1)[0] ?? '';
    throw new AuthenticationError(
      'malformed-header',
      `the authorization metadata uses the scheme ${JSON.stringify(scheme.slice(0, 32))}, not Bearer`,
    );
  }
  const token = m[1] ?? '';
  if (token === '') {
    throw new AuthenticationError('malformed-header', 'the authorization metadata has an empty Bearer token');
  }
  if (token.length > MAX_TOKEN_BYTES) {
    throw new AuthenticationError(
      'malformed-header',
      `the Bearer token is ${token.length} bytes long; at most ${MAX_TOKEN_BYTES} are accepted`,
    );
  }
  if (!B64TOKEN.test(token)) {
    throw new AuthenticationError(
      'malformed-header',
      'the Bearer token holds characters outside the RFC 6750 token grammar (or several authorization entries were sent)',
    );
  }
  return token;
}

// SPDX-License-Identifier: Apache-2.0
// TokenReviewAuthenticator against a loopback stand-in of the TokenReview API: node agents
// (node from the bound token, or from the pod looked up with its UID), workloads, every refusal
// (not authenticated, wrong audience, not a ServiceAccount, unbound token, unknown or recreated
// pod, wrong cluster, API failing, unreachable, slow or overloaded — all fail closed), and the
// cache (hits, TTL, token expiry, bound, failures never cached, concurrent reviews coalesced).
import t, { type Test } from 'tap';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Metadata } from '@grpc/grpc-js';
import { AuthenticationError } from '../../../../src/controller/auth/errors.ts';
import {
  EXTRA,
  TokenReviewAuthenticator,
  type TokenReviewAuthenticatorOptions,
} from '../../../../src/controller/auth/token-review.ts';
import type { Caller } from '../../../../src/controller/auth/types.ts';
import {
  kubeConfigFor,
  serviceAccountUser,
  startFakeTokenReviewApi,
  type FakeTokenReviewApi,
  type ReviewAnswer,
} from './fake-token-review-api.ts';

const ZTUNNEL = 'system:serviceaccount:istio-system:ztunnel';

function md(entries: Record<string, string | string[]>): Metadata {
  const m = new Metadata();
  for (const [k, v] of Object.entries(entries)) for (const x of [v].flat()) m.add(k, x);
  return m;
}
const bearer = (token: string): Metadata => md({ authorization: `Bearer ${token}` });

async function refusal(p: Promise<Caller>): Promise<string> {
  try {
    const c = await p;
    return `accepted: ${JSON.stringify(c)}`;
  } catch (err) {
    return err instanceof AuthenticationError ? err.reason : `other error: ${String(err)}`;
  }
}

/** Answers by token from a table; unknown tokens are not authenticated. */
function table(answers: Record<string, ReviewAnswer>) {
  return (token: string): ReviewAnswer =>
    Object.hasOwn(answers, token) ? answers[token]! : { authenticated: false, error: 'invalid bearer token' };
}

async function setup(
  t: Test,
  answers: Record<string, ReviewAnswer>,
  opts: Partial<TokenReviewAuthenticatorOptions> = {},
): Promise<{ api: FakeTokenReviewApi; auth: TokenReviewAuthenticator; lookups: string[] }> {
  const api = await startFakeTokenReviewApi(table(answers));
  t.teardown(() => api.close());
  const lookups: string[] = [];
  const auth = new TokenReviewAuthenticator({
    kubeConfig: api.kubeConfig,
    podNode: (ns, name, uid) => {
      lookups.push(`${ns}/${name}/${uid}`);
      return ns === 'istio-system' && name === 'ztunnel-b' && uid === 'uid-b' ? 'node-b' : undefined;
    },
    ...opts,
  });
  return { api, auth, lookups };
}

t.test('a ztunnel token bound to a node is a NodeCaller for that node', async (t) => {
  const { api, auth } = await setup(t, {
    tz: {
      authenticated: true,
      user: serviceAccountUser('istio-system', 'ztunnel', {
        [EXTRA.nodeName]: ['node-a'],
        [EXTRA.podName]: ['ztunnel-a'],
        [EXTRA.podUid]: ['uid-a'],
      }),
    },
  });
  t.same(await auth.authenticate(bearer('tz')), {
    kind: 'node',
    node: 'node-a',
    subject: `${ZTUNNEL} (pod ztunnel-a)`,
  });
  t.same(api.reviews, [{ token: 'tz', audiences: ['istio-ca'] }], 'one review, audience istio-ca');
});

t.test('without node-name, the node is the one of the bound pod, looked up with its UID', async (t) => {
  const { auth, lookups } = await setup(t, {
    tb: {
      authenticated: true,
      user: serviceAccountUser('istio-system', 'ztunnel', {
        [EXTRA.podName]: ['ztunnel-b'],
        [EXTRA.podUid]: ['uid-b'],
      }),
    },
    stale: {
      authenticated: true,
      user: serviceAccountUser('istio-system', 'ztunnel', {
        [EXTRA.podName]: ['ztunnel-b'],
        [EXTRA.podUid]: ['uid-of-a-deleted-pod'],
      }),
    },
  });
  const c = await auth.authenticate(bearer('tb'));
  t.equal(c.kind, 'node');
  t.equal(c.kind === 'node' ? c.node : '', 'node-b');
  t.same(lookups, ['istio-system/ztunnel-b/uid-b']);
  t.equal(
    await refusal(auth.authenticate(bearer('stale'))),
    'unknown-pod',
    'a recreated pod has another UID',
  );
});

t.test('a ztunnel token bound to no pod, or with several values, is refused', async (t) => {
  const { auth } = await setup(t, {
    legacy: { authenticated: true, user: serviceAccountUser('istio-system', 'ztunnel') },
    half: {
      authenticated: true,
      user: serviceAccountUser('istio-system', 'ztunnel', { [EXTRA.podName]: ['ztunnel-b'] }),
    },
    multi: {
      authenticated: true,
      user: serviceAccountUser('istio-system', 'ztunnel', { [EXTRA.nodeName]: ['node-a', 'node-b'] }),
    },
  });
  t.equal(await refusal(auth.authenticate(bearer('legacy'))), 'unbound-token');
  t.equal(await refusal(auth.authenticate(bearer('half'))), 'unbound-token');
  t.equal(await refusal(auth.authenticate(bearer('multi'))), 'unbound-token');
});

t.test('any other ServiceAccount is a WorkloadCaller; a non-ServiceAccount user is refused', async (t) => {
  const { auth } = await setup(t, {
    wp: {
      authenticated: true,
      user: serviceAccountUser('apps', 'waypoint', { [EXTRA.nodeName]: ['node-a'] }),
    },
    admin: {
      authenticated: true,
      user: { username: 'kubernetes-admin', groups: ['system:masters', 'system:authenticated'] },
    },
    nogroup: {
      authenticated: true,
      user: { username: 'system:serviceaccount:apps:fake', groups: ['system:authenticated'] },
    },
  });
  t.same(await auth.authenticate(bearer('wp')), {
    kind: 'workload',
    namespace: 'apps',
    serviceAccount: 'waypoint',
    subject: 'system:serviceaccount:apps:waypoint',
  });
  t.equal(await refusal(auth.authenticate(bearer('admin'))), 'not-service-account');
  t.equal(
    await refusal(auth.authenticate(bearer('nogroup'))),
    'not-service-account',
    'a ServiceAccount-looking name outside the system:serviceaccounts group is not trusted',
  );
});

t.test('the trusted node accounts are configurable', async (t) => {
  const { auth } = await setup(
    t,
    {
      agent: {
        authenticated: true,
        user: serviceAccountUser('kube-system', 'mesh-agent', { [EXTRA.nodeName]: ['node-a'] }),
      },
      zt: {
        authenticated: true,
        user: serviceAccountUser('istio-system', 'ztunnel', { [EXTRA.nodeName]: ['node-a'] }),
      },
    },
    { nodeServiceAccounts: ['system:serviceaccount:kube-system:mesh-agent'] },
  );
  t.equal((await auth.authenticate(bearer('agent'))).kind, 'node');
  t.equal((await auth.authenticate(bearer('zt'))).kind, 'workload', 'ztunnel is no longer trusted');
  const api = await startFakeTokenReviewApi(() => ({ httpStatus: 500 }));
  t.teardown(() => api.close());
  t.throws(
    () =>
      new TokenReviewAuthenticator({
        kubeConfig: api.kubeConfig,
        podNode: () => undefined,
        nodeServiceAccounts: ['istio-system/ztunnel'],
      }),
    /not of the form system:serviceaccount:<namespace>:<name>/,
  );
});

t.test('a token the review does not authenticate is refused; the review error stays private', async (t) => {
  const { auth } = await setup(t, {
    revoked: { authenticated: false, error: 'token has been invalidated (secret detail)' },
    silent: { authenticated: false },
  });
  try {
    await auth.authenticate(bearer('revoked'));
    t.fail('accepted');
  } catch (err) {
    t.ok(err instanceof AuthenticationError);
    const e = err as AuthenticationError;
    t.equal(e.reason, 'bad-token');
    t.match(e.message, /secret detail/, 'the log message has the review error');
    t.notMatch(e.publicMessage, /secret detail/, 'the caller does not see it');
  }
  t.equal(await refusal(auth.authenticate(bearer('silent'))), 'bad-token');
  t.equal(await refusal(auth.authenticate(bearer('never-issued'))), 'bad-token');
});

t.test('the review must grant the istio-ca audience', async (t) => {
  const user = serviceAccountUser('apps', 'web');
  const { auth } = await setup(t, {
    apiAudience: { authenticated: true, user, audiences: [] },
    other: { authenticated: true, user, audiences: ['vault'] },
    ok: { authenticated: true, user, audiences: ['istio-ca'] },
  });
  t.equal(await refusal(auth.authenticate(bearer('apiAudience'))), 'wrong-audience');
  t.equal(await refusal(auth.authenticate(bearer('other'))), 'wrong-audience');
  t.equal((await auth.authenticate(bearer('ok'))).kind, 'workload');
});

t.test('missing or malformed authorization is refused before any review', async (t) => {
  const { api, auth } = await setup(t, {});
  t.equal(await refusal(auth.authenticate(new Metadata())), 'no-token');
  t.equal(await refusal(auth.authenticate(md({ authorization: 'Basic dXNlcjpwdw==' }))), 'malformed-header');
  t.equal(await refusal(auth.authenticate(md({ authorization: 'Bearer ' }))), 'malformed-header');
  t.equal(
    await refusal(auth.authenticate(md({ authorization: ['Bearer a', 'Bearer b'] }))),
    'malformed-header',
  );
  t.same(api.reviews, [], 'the API saw nothing');
});

t.test('clusterid: absent or this cluster is accepted, another cluster is refused', async (t) => {
  const { api, auth } = await setup(t, {
    wp: { authenticated: true, user: serviceAccountUser('apps', 'wp') },
  });
  t.equal(
    (await auth.authenticate(md({ authorization: 'Bearer wp', clusterid: 'Kubernetes' }))).kind,
    'workload',
  );
  t.equal(
    await refusal(auth.authenticate(md({ authorization: 'Bearer wp2', clusterid: 'east' }))),
    'wrong-cluster',
  );
  t.equal(api.reviews.length, 1, 'the wrong cluster is refused without a review');
});

t.test(
  'fails closed when the TokenReview API fails, refuses our credentials, or is unreachable',
  async (t) => {
    const failing = await startFakeTokenReviewApi(() => ({ httpStatus: 500 }));
    t.teardown(() => failing.close());
    const a1 = new TokenReviewAuthenticator({ kubeConfig: failing.kubeConfig, podNode: () => undefined });
    t.equal(await refusal(a1.authenticate(bearer('x'))), 'review-unavailable', 'HTTP 500');

    const ok = await startFakeTokenReviewApi(() => ({
      authenticated: true,
      user: serviceAccountUser('a', 'b'),
    }));
    t.teardown(() => ok.close());
    const a2 = new TokenReviewAuthenticator({
      kubeConfig: kubeConfigFor(ok.url, 'not-the-controller-token'),
      podNode: () => undefined,
    });
    t.equal(await refusal(a2.authenticate(bearer('x'))), 'review-unavailable', 'HTTP 401 for the controller');
    t.same(ok.reviews, []);

    // A port that was just bound and released: nothing listens there.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const a3 = new TokenReviewAuthenticator({
      kubeConfig: kubeConfigFor(`http://127.0.0.1:${port}`, 'controller-token'),
      podNode: () => undefined,
    });
    t.equal(await refusal(a3.authenticate(bearer('x'))), 'review-unavailable', 'connection refused');
  },
);

t.test('a review slower than the timeout fails closed', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const api = await startFakeTokenReviewApi(async () => {
    await gate;
    return { authenticated: true, user: serviceAccountUser('a', 'b') };
  });
  t.teardown(() => api.close());
  t.teardown(() => release());
  const auth = new TokenReviewAuthenticator({
    kubeConfig: api.kubeConfig,
    podNode: () => undefined,
    reviewTimeoutMs: 300,
  });
  t.equal(await refusal(auth.authenticate(bearer('slow'))), 'review-unavailable');
});

t.test('reviews in flight are bounded; concurrent calls with one token share one review', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const api = await startFakeTokenReviewApi(async () => {
    await gate;
    return { authenticated: true, user: serviceAccountUser('apps', 'web') };
  });
  t.teardown(() => api.close());
  const auth = new TokenReviewAuthenticator({
    kubeConfig: api.kubeConfig,
    podNode: () => undefined,
    maxConcurrentReviews: 1,
  });
  const first = auth.authenticate(bearer('one'));
  const same = auth.authenticate(bearer('one'));
  t.equal(await refusal(auth.authenticate(bearer('two'))), 'review-unavailable', 'over the bound');
  release();
  t.equal((await first).kind, 'workload');
  t.equal((await same).kind, 'workload');
  t.equal(api.reviews.filter((r) => r.token === 'one').length, 1, 'one review for both calls');
  t.equal((await auth.authenticate(bearer('two'))).kind, 'workload', 'room again once it finished');
});

/** A JWT-shaped token (unsigned: only the exp claim matters to the cache). */
function jwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'RS256' })}.${b64(claims)}.c2ln`;
}

t.test('cache: positive results for the TTL, never past the token expiry, bounded', async (t) => {
  let now = 1_000_000;
  const user = serviceAccountUser('apps', 'web');
  const shortLived = jwt({ exp: now / 1000 + 10 });
  const { api, auth } = await setup(
    t,
    {
      a: { authenticated: true, user },
      b: { authenticated: true, user },
      c: { authenticated: true, user },
      [shortLived]: { authenticated: true, user },
    },
    { now: () => now, cacheTtlMs: 60_000, maxCacheEntries: 2 },
  );
  const count = (tok: string): number => api.reviews.filter((r) => r.token === tok).length;
  await auth.authenticate(bearer(shortLived));
  now += 9_000;
  await auth.authenticate(bearer(shortLived));
  t.equal(count(shortLived), 1, 'cached while the token is valid');
  now += 2_000;
  await auth.authenticate(bearer(shortLived));
  t.equal(count(shortLived), 2, 'not cached past the token exp claim');

  await auth.authenticate(bearer('a'));
  await auth.authenticate(bearer('a'));
  t.equal(count('a'), 1, 'second call served from the cache');
  now += 60_001;
  await auth.authenticate(bearer('a'));
  t.equal(count('a'), 2, 'reviewed again after the TTL');

  // Bound of 2 entries: b and c push out the older entries.
  await auth.authenticate(bearer('b'));
  await auth.authenticate(bearer('c'));
  await auth.authenticate(bearer('c'));
  t.equal(count('c'), 1);
  await auth.authenticate(bearer('a'));
  t.equal(count('a'), 3, 'the oldest entry was evicted');
});

t.test('cache: failures are never cached', async (t) => {
  let up = false;
  const api = await startFakeTokenReviewApi(() =>
    up ? { authenticated: true, user: serviceAccountUser('apps', 'web') } : { httpStatus: 503 },
  );
  t.teardown(() => api.close());
  const auth = new TokenReviewAuthenticator({ kubeConfig: api.kubeConfig, podNode: () => undefined });
  t.equal(await refusal(auth.authenticate(bearer('tok'))), 'review-unavailable');
  up = true;
  t.equal((await auth.authenticate(bearer('tok'))).kind, 'workload', 'the API is asked again');
  await auth.authenticate(bearer('tok'));
  t.equal(api.reviews.length, 2, 'and the success is cached');
});

t.test('options are validated', async (t) => {
  const kc = kubeConfigFor('http://127.0.0.1:9', 'x');
  t.throws(
    () => new TokenReviewAuthenticator({ kubeConfig: kc, podNode: () => undefined, cacheTtlMs: 0 }),
    /cacheTtlMs/,
  );
  t.throws(
    () => new TokenReviewAuthenticator({ kubeConfig: kc, podNode: () => undefined, maxCacheEntries: -1 }),
    /maxCacheEntries/,
  );
});

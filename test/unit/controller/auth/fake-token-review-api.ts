// SPDX-License-Identifier: Apache-2.0
// Test-only stand-in for the one Kubernetes API call the CA's authenticator makes:
// POST /apis/authentication.k8s.io/v1/tokenreviews, answered the way the API server does (201
// with the TokenReview echoed back and its status filled in; 401 when the controller's own
// credentials are wrong; any status the test asks for). It listens on 127.0.0.1 over plain HTTP
// and hands out a real KubeConfig pointing at itself (client-node requires skipTLSVerify for an
// http:// server), so the authenticator runs its real client code end to end.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

export interface ReviewedUser {
  readonly username: string;
  readonly uid?: string;
  readonly groups?: readonly string[];
  readonly extra?: Readonly<Record<string, readonly string[]>>;
}

export type ReviewAnswer =
  | { readonly authenticated: true; readonly user: ReviewedUser; readonly audiences?: readonly string[] }
  | { readonly authenticated: false; readonly error?: string }
  /** The API server fails the request itself (e.g. 500, 403). */
  | { readonly httpStatus: number };

export interface ReceivedReview {
  readonly token: string;
  readonly audiences: readonly string[];
}

export interface FakeTokenReviewApi {
  readonly url: string;
  /** A KubeConfig for this server, with the controller's token as its user. */
  readonly kubeConfig: KubeConfig;
  /** Every TokenReview received, in order. */
  readonly reviews: ReceivedReview[];
  close(): Promise<void>;
}

/** The user a ServiceAccount token authenticates as (username and groups as the API server sets them). */
export function serviceAccountUser(
  namespace: string,
  name: string,
  extra: Readonly<Record<string, readonly string[]>> = {},
): ReviewedUser {
  return {
    username: `system:serviceaccount:${namespace}:${name}`,
    uid: `uid-sa-${namespace}-${name}`,
    groups: ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'],
    extra,
  };
}

/** A KubeConfig for `server` (plain HTTP) authenticating with `token`. */
export function kubeConfigFor(server: string, token: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'test', server, skipTLSVerify: true }],
    users: [{ name: 'controller', token }],
    contexts: [{ name: 'test', cluster: 'test', user: 'controller' }],
    currentContext: 'test',
  });
  return kc;
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function apiStatus(code: number, reason: string, message: string): unknown {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startFakeTokenReviewApi(
  answer: (token: string, audiences: readonly string[]) => ReviewAnswer | Promise<ReviewAnswer>,
  opts: { controllerToken?: string } = {},
): Promise<FakeTokenReviewApi> {
  const controllerToken = opts.controllerToken ?? 'controller-token';
  const reviews: ReceivedReview[] = [];
  const server = createServer((req, res) => {
    void (async () => {
      if (req.method !== 'POST' || req.url?.split('?')[0] !== '/apis/authentication.k8s.io/v1/tokenreviews') {
        sendJson(res, 404, apiStatus(404, 'NotFound', 'the server could not find the requested resource'));
        return;
      }
      if (req.headers.authorization !== `Bearer ${controllerToken}`) {
        sendJson(res, 401, apiStatus(401, 'Unauthorized', 'Unauthorized'));
        return;
      }
      const body = JSON.parse(await readBody(req)) as {
        spec?: { token?: string; audiences?: string[] };
      };
      const token = body.spec?.token ?? '';
      const audiences = body.spec?.audiences ?? [];
      reviews.push({ token, audiences });
      const a = await answer(token, audiences);
      if ('httpStatus' in a) {
        sendJson(res, a.httpStatus, apiStatus(a.httpStatus, 'InternalError', 'the API server failed (test)'));
        return;
      }
      const status = a.authenticated
        ? { authenticated: true, user: a.user, audiences: a.audiences ?? audiences }
        : { user: {}, ...(a.error !== undefined && { error: a.error }) };
      sendJson(res, 201, {
        kind: 'TokenReview',
        apiVersion: 'authentication.k8s.io/v1',
        metadata: { creationTimestamp: null },
        spec: body.spec,
        status,
      });
    })().catch((err: unknown) => {
      sendJson(res, 500, apiStatus(500, 'InternalError', String(err)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    kubeConfig: kubeConfigFor(url, controllerToken),
    reviews,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

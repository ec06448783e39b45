// SPDX-License-Identifier: Apache-2.0
// Local-mode node credentials: the generated file (mode 0600, one distinct 256-bit token per
// node, readable back as YAML; JSON accepted too), authentication of each node by its own token,
// refusals (no, malformed or unknown token), and strict validation of the file.
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Metadata } from '@grpc/grpc-js';
import { AuthenticationError } from '../../../../src/controller/auth/errors.ts';
import {
  NodeTokenAuthenticator,
  generateNodeToken,
  parseNodeTokens,
  writeNodeTokenFile,
} from '../../../../src/controller/auth/node-token.ts';
import { MeshError } from '../../../../src/shared/errors.ts';

function bearer(token: string): Metadata {
  const m = new Metadata();
  m.set('authorization', `Bearer ${token}`);
  return m;
}

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'node-token-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function reason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'accepted';
  } catch (err) {
    return err instanceof AuthenticationError ? err.reason : `other: ${String(err)}`;
  }
}

t.test('generated file: 0600, one distinct token per node, each node authenticates as itself', async (t) => {
  const path = join(tempDir(t), 'node-tokens.yaml');
  const tokens = writeNodeTokenFile(path, ['node-1', 'node-2', 'worker.example.com']);
  t.equal(statSync(path).mode & 0o777, 0o600);
  t.same(Object.keys(tokens), ['node-1', 'node-2', 'worker.example.com']);
  const values = Object.values(tokens);
  t.equal(new Set(values).size, 3, 'distinct tokens');
  for (const v of values) t.equal(Buffer.from(v, 'base64url').length, 32, '32 random bytes, base64url');
  t.same(Object.fromEntries(parseNodeTokens(readFileSync(path, 'utf8'), path)), tokens, 'reads back');

  const auth = NodeTokenAuthenticator.fromFile(path);
  for (const [node, token] of Object.entries(tokens)) {
    t.same(await auth.authenticate(bearer(token)), {
      kind: 'node',
      node,
      subject: `local node token (${node})`,
    });
  }
});

t.test('rewriting the file replaces it atomically with new tokens and mode 0600', async (t) => {
  const path = join(tempDir(t), 'tokens.yaml');
  writeFileSync(path, 'old: content\n', { mode: 0o644 });
  const tokens = writeNodeTokenFile(path, ['n1']);
  t.equal(statSync(path).mode & 0o777, 0o600);
  t.same(Object.fromEntries(parseNodeTokens(readFileSync(path, 'utf8'), path)), tokens);
});

t.test('refusals: no token, malformed header, a token of no node', async (t) => {
  const auth = new NodeTokenAuthenticator(new Map([['node-1', generateNodeToken()]]));
  t.equal(await reason(auth.authenticate(new Metadata())), 'no-token');
  const basic = new Metadata();
  basic.set('authorization', 'Basic abc');
  t.equal(await reason(auth.authenticate(basic)), 'malformed-header');
  t.equal(await reason(auth.authenticate(bearer(generateNodeToken()))), 'bad-token');
  t.equal(await reason(auth.authenticate(bearer('short'))), 'bad-token', 'length does not matter');
});

t.test('JSON files are accepted', async (t) => {
  const a = generateNodeToken();
  const b = generateNodeToken();
  const map = parseNodeTokens(JSON.stringify({ 'node-a': a, 'node-b': b }), 'tokens.json');
  const auth = new NodeTokenAuthenticator(map);
  const c = await auth.authenticate(bearer(b));
  t.equal(c.node, 'node-b');
});

t.test('invalid files are refused with a message saying what to fix', async (t) => {
  const tok = generateNodeToken();
  const cases: [string, string, RegExp][] = [
    ['not yaml', 'a: [', /not valid YAML or JSON/],
    ['a list', `- ${tok}\n`, /expected a mapping/],
    ['a scalar', 'hello\n', /expected a mapping/],
    ['empty mapping', '{}\n', /lists no node/],
    ['uppercase node name', `Node-1: ${tok}\n`, /not a Kubernetes node name/],
    ['short token', 'node-1: abc\n', /at least 32 random bytes/],
    ['token of another alphabet', `node-1: ${'+'.repeat(44)}\n`, /at least 32 random bytes/],
    ['numeric token', 'node-1: 12345\n', /at least 32 random bytes/],
    ['shared token', `n1: ${tok}\nn2: ${tok}\n`, /nodes n1 and n2 share a token/],
    ['duplicate key', `n1: ${tok}\nn1: ${generateNodeToken()}\n`, /not valid YAML or JSON/],
  ];
  for (const [name, text, re] of cases) {
    t.throws(() => parseNodeTokens(text, 'f.yaml'), { code: 'CTL_ERR_NODE_TOKENS', message: re }, name);
  }
  t.throws(() => writeNodeTokenFile(join(tempDir(t), 'x.yaml'), ['Bad_Name']), /not a Kubernetes node name/);
  try {
    NodeTokenAuthenticator.fromFile('/nonexistent/node-tokens.yaml');
    t.fail('loaded');
  } catch (err) {
    t.ok(err instanceof MeshError);
    t.match((err as MeshError).message, /node-tokens\.yaml: cannot be read/);
  }
});

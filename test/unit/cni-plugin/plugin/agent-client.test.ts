// SPDX-License-Identifier: Apache-2.0
// The plugin's hand-written HTTP/1.1 client (cni-plugin/src/plugin/agent-client.ts) against Unix
// socket servers that answer in every way the wire allows: Node's HTTP server, a body split into
// single bytes, chunked, close-delimited, and the broken ones (not HTTP, cut short, oversized,
// silent). And the reason it exists: the plugin never loads node:http (bench/README.md,
// enrolment group: node:http cost each ADD several milliseconds).
import { spawn } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { postToAgent } from '../../../../cni-plugin/src/plugin/agent-client.ts';
import { CNI_CODES, CniPluginError } from '../../../../cni-plugin/src/plugin/cni.ts';

const ROOT = join(import.meta.dirname, '../../../..');

function socketDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'agent-client-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A raw server: `answer` gets each connection and the request text once it is complete. */
async function rawServer(t: Test, answer: (s: Socket, request: string) => void): Promise<string> {
  const path = join(socketDir(t), 'agent.sock');
  const server = createServer((s) => {
    let req = '';
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      req += d.toString('latin1');
      const head = req.indexOf('\r\n\r\n');
      const len = /content-length: (\d+)/i.exec(req);
      if (head !== -1 && len?.[1] !== undefined && req.length >= head + 4 + Number(len[1])) answer(s, req);
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return path;
}

const BODY = '{"enrolled":true,"reason":"namespace label"}';

t.test("Node's HTTP server: the request as it expects it, its answer read whole", async (t) => {
  const path = join(socketDir(t), 'agent.sock');
  let seen: { method?: string; url?: string; type?: string; body: string } = { body: '' };
  const server = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      seen = { method: req.method, url: req.url, type: req.headers['content-type'], body };
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(BODY) });
      res.end(BODY);
    });
    // The plugin must not half-close: Node's server would take that for giving up.
    req.on('aborted', () => (seen.body = 'ABORTED'));
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const answer = await postToAgent(path, '/cmdadd', { podName: 'a', ünï: 'cödé' }, 5000);
  t.same(answer, { status: 200, body: BODY });
  t.same(seen, {
    method: 'POST',
    url: '/cmdadd',
    type: 'application/json',
    body: JSON.stringify({ podName: 'a', ünï: 'cödé' }),
  });
});

t.test('answers split into single bytes, chunked, or delimited by the close', async (t) => {
  const dribble = await rawServer(t, (s) => {
    const text = `HTTP/1.1 500 Internal Server Error\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`;
    let i = 0;
    const next = (): void => {
      if (i < text.length) s.write(text[i++] ?? '', next);
    };
    next();
  });
  t.same(await postToAgent(dribble, '/cmdadd', {}, 5000), { status: 500, body: BODY });

  const chunked = await rawServer(t, (s) => {
    s.end(
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"enr\r\n${(BODY.length - 5).toString(16)};ext=1\r\n${BODY.slice(5)}\r\n0\r\n\r\n`,
    );
  });
  t.same(await postToAgent(chunked, '/cmdadd', {}, 5000), { status: 200, body: BODY });

  const interim = await rawServer(t, (s) =>
    s.end(`HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`),
  );
  t.same(
    await postToAgent(interim, '/cmdadd', {}, 5000),
    { status: 200, body: BODY },
    'an interim 1xx is skipped',
  );

  const closeDelimited = await rawServer(t, (s) => s.end(`HTTP/1.0 503 Service Unavailable\r\n\r\n${BODY}`));
  t.same(await postToAgent(closeDelimited, '/cmdadd', {}, 5000), { status: 503, body: BODY });
});

t.test('broken answers are CNI errors naming the socket', async (t) => {
  const cases: [string, (s: Socket) => void, number, RegExp][] = [
    ['not HTTP', (s) => s.end('SSH-2.0-OpenSSH\r\n\r\n'), CNI_CODES.agentBadReply, /not HTTP\/1\.1/],
    [
      'cut short',
      (s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"enrolled"'),
      CNI_CODES.tryAgainLater,
      /closed before the answer/,
    ],
    ['no headers at all', (s) => s.end(), CNI_CODES.tryAgainLater, /closed before the answer/],
    [
      'oversized',
      (s) => s.end(`HTTP/1.1 200 OK\r\nContent-Length: ${200 * 1024}\r\n\r\n${'x'.repeat(200 * 1024)}`),
      CNI_CODES.agentBadReply,
      /more than 65536 bytes|larger than 65536 bytes/,
    ],
    [
      'chunk data not followed by CRLF',
      (s) => s.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n'),
      CNI_CODES.agentBadReply,
      /chunked answer is malformed/,
    ],
    [
      'an encoding it does not read',
      (s) => s.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx'),
      CNI_CODES.agentBadReply,
      /Transfer-Encoding gzip/,
    ],
  ];
  for (const [what, answer, code, message] of cases) {
    const path = await rawServer(t, answer);
    const err = await postToAgent(path, '/cmdadd', {}, 5000).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(err instanceof CniPluginError, `${what}: a CniPluginError`);
    t.match(err, { cniCode: code, message }, what);
    t.match((err as Error).message, path, `${what}: names the socket`);
  }
});

t.test('no agent, or a silent one: try again later', async (t) => {
  const dir = socketDir(t);
  await t.rejects(postToAgent(join(dir, 'nothing.sock'), '/cmdadd', {}, 5000), {
    cniCode: CNI_CODES.tryAgainLater,
    message: /does not exist \(ENOENT\)/,
  });
  const silent = await rawServer(t, () => undefined);
  const started = performance.now();
  await t.rejects(postToAgent(silent, '/cmdadd', {}, 200), {
    cniCode: CNI_CODES.tryAgainLater,
    message: /no answer to POST \/cmdadd within 200 ms/,
  });
  t.ok(performance.now() - started < 2000);
});

t.test('an ADD never loads node:http', async (t) => {
  const dir = socketDir(t);
  const preload = join(dir, 'modules.cjs');
  // Prints the built-in modules the process loaded, when it exits.
  writeFileSync(
    preload,
    "process.on('exit', () => process.stderr.write('\\nMODULES ' + JSON.stringify(process.moduleLoadList) + '\\n'));\n",
  );
  const path = await rawServer(t, (s) =>
    s.end('HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{"enrolled":true}'),
  );
  const conf = JSON.stringify({
    cniVersion: '1.0.0',
    name: 'k8s',
    type: 'ambient-cni',
    cni_agent_run_dir: dir,
    prevResult: { cniVersion: '1.0.0', interfaces: [], ips: [] },
  });
  renameSync(path, join(dir, 'pluginevent.sock'));
  // Not spawnSync: the agent stand-in answers from this very event loop.
  const child = spawn(process.execPath, ['--require', preload, join(ROOT, 'cni-plugin/src/plugin/main.ts')], {
    env: {
      PATH: process.env.PATH,
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'c0ffee',
      CNI_NETNS: '/proc/self/ns/net',
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/opt/cni/bin',
      CNI_ARGS: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart',
    },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(conf);
  const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const r = { status, stdout, stderr };
  t.equal(r.status, 0, `the ADD succeeded: ${r.stdout} ${r.stderr.slice(0, 500)}`);
  const list = /MODULES (.*)/.exec(r.stderr)?.[1];
  t.ok(list !== undefined, 'the module list was printed');
  const modules = JSON.parse(list ?? '[]') as string[];
  t.ok(modules.includes('NativeModule net'), 'node:net is what it uses');
  t.notOk(
    modules.some((m) => /^NativeModule (http|_http_)/.test(m)),
    `no node:http module: ${modules.filter((m) => /http/.test(m)).join(', ')}`,
  );
});

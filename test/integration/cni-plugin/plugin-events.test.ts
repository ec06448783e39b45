// SPDX-License-Identifier: Apache-2.0
// The agent's plugin-event endpoint (cni-plugin/src/agent/plugin-events.ts) on a real Unix
// socket: permissions (directory 0700, socket 0600, never published wider), a stale socket
// replaced and a live one refused, strict validation (400 naming every problem), body limit
// (413), method/type/path errors, handler failures as 500 (503 when not ready), the abort signal
// when the plugin hangs up, and removal of the socket on close.
import t from 'tap';
import type { Test } from 'tap';
import { chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Logger } from '../../../src/shared/telemetry/logger.ts';
import {
  AgentNotReadyError,
  parseAddEvent,
  parseDelEvent,
  PluginEventError,
  startPluginEventServer,
} from '../../../cni-plugin/src/agent/plugin-events.ts';
import type {
  PluginAddEvent,
  PluginDelEvent,
  PluginEventHandlers,
  PluginEventServer,
} from '../../../cni-plugin/src/agent/plugin-events.ts';

const EVENT: PluginAddEvent = {
  netns: '/var/run/netns/cni-1',
  podName: 'cart-7d9',
  podNamespace: 'shop',
  podUid: '8f2c1f7e-0b4f-4c7e-9a55-2f3ad1b1b0a1',
  containerId: 'c0ffee',
  ifName: 'eth0',
  ips: [{ address: '198.18.0.5/24', gateway: '198.18.0.1', interface: 0 }, { address: 'fd00::5/64' }],
};

function quietLogger(): { logger: Logger; text: () => string } {
  const out = new PassThrough();
  let text = '';
  out.on('data', (b: Buffer) => (text += b.toString()));
  return { logger: new Logger({ destination: out, level: 'debug' }), text: () => text };
}

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'plugin-events-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Answer {
  status: number;
  body: string;
}

function post(
  socketPath: string,
  path: string,
  body: string,
  headers: Record<string, string> = { 'content-type': 'application/json' },
  method = 'POST',
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({
      socketPath,
      path,
      method,
      headers: { ...headers, connection: 'close' },
      agent: false,
    });
    req.on('error', reject);
    req.on('response', (res) => {
      let data = '';
      res.on('data', (b: Buffer) => (data += b.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.end(body);
  });
}

async function start(
  t: Test,
  handlers: PluginEventHandlers,
  runDir?: string,
): Promise<{ server: PluginEventServer; runDir: string; log: () => string }> {
  const dir = runDir ?? join(tempDir(t), 'run');
  const { logger, text } = quietLogger();
  const server = await startPluginEventServer({ runDir: dir, handlers, logger, maxBodyBytes: 4096 });
  t.teardown(() => server.close());
  return { server, runDir: dir, log: text };
}

t.test('a valid /cmdadd reaches the handler and its answer goes back as JSON', async (t) => {
  const seen: PluginAddEvent[] = [];
  const { server, runDir } = await start(t, {
    add: async (e) => {
      seen.push(e);
      return { enrolled: true, reason: 'namespace shop is ambient' };
    },
  });
  t.equal(server.socketPath, join(runDir, 'pluginevent.sock'));
  t.equal(statSync(runDir).mode & 0o777, 0o700, 'run directory 0700');
  t.equal(statSync(server.socketPath).mode & 0o777, 0o600, 'socket 0600');
  const a = await post(server.socketPath, '/cmdadd', JSON.stringify(EVENT));
  t.same(a, { status: 200, body: '{"enrolled":true,"reason":"namespace shop is ambient"}' });
  t.same(seen, [EVENT]);
});

t.test('invalid bodies: 400 listing every problem, handler not called', async (t) => {
  let calls = 0;
  const { server } = await start(t, {
    add: async () => {
      calls++;
      return { enrolled: false };
    },
  });
  const cases: [string, RegExp][] = [
    ['{', /body is not JSON/],
    ['[]', /expected a JSON object/],
    [JSON.stringify({ ...EVENT, extra: 1 }), /extra: unknown field/],
    [
      JSON.stringify({ ...EVENT, podName: 'Bad_Name', podNamespace: undefined, netns: 'relative' }),
      /podName: expected a pod name .* got "Bad_Name"; podNamespace: expected a namespace name .* got nothing; netns: expected an absolute path/,
    ],
    [JSON.stringify({ ...EVENT, ifName: 'x'.repeat(16) }), /ifName: expected an interface name/],
    [JSON.stringify({ ...EVENT, containerId: '' }), /containerId: expected a CNI container id/],
    [JSON.stringify({ ...EVENT, podUid: 'a b' }), /podUid: expected a pod UID/],
    [JSON.stringify({ ...EVENT, ips: 'x' }), /ips: expected a list/],
    [
      JSON.stringify({ ...EVENT, ips: [{ address: '198.18.0.5' }] }),
      /ips\[0\].address: expected an address with prefix length/,
    ],
    [
      JSON.stringify({ ...EVENT, ips: [{ address: '198.18.0.5/24', mask: 'x' }] }),
      /ips\[0\].mask: unknown field/,
    ],
    [
      JSON.stringify({ ...EVENT, ips: [{ address: '198.18.0.5/24', gateway: 'x' }] }),
      /ips\[0\].gateway: expected an IP/,
    ],
    [
      JSON.stringify({ ...EVENT, ips: [{ address: '198.18.0.5/24', interface: -2 }] }),
      /interface: expected a non-negative/,
    ],
    [
      JSON.stringify({ ...EVENT, ips: Array(65).fill({ address: '198.18.0.5/24' }) }),
      /at most 64 addresses, got 65/,
    ],
  ];
  for (const [body, msg] of cases) {
    const a = await post(server.socketPath, '/cmdadd', body);
    t.equal(a.status, 400, body.slice(0, 60));
    t.match((JSON.parse(a.body) as { error: string }).error, msg);
  }
  t.equal(calls, 0);
});

t.test('protocol errors: 404, 405, 415, 413', async (t) => {
  const { server } = await start(t, { add: async () => ({ enrolled: false }) });
  const nf = await post(server.socketPath, '/cmdcheck', '{}');
  t.equal(nf.status, 404, 'no check handler: 404');
  t.match(nf.body, /no handler for \/cmdcheck \(this agent serves \/cmdadd\)/);
  t.equal((await post(server.socketPath, '/other', '{}')).status, 404);
  const m = await post(server.socketPath, '/cmdadd', '', {}, 'GET');
  t.equal(m.status, 405);
  t.match(m.body, /takes POST, not GET/);
  const ct = await post(server.socketPath, '/cmdadd', JSON.stringify(EVENT), {
    'content-type': 'text/plain',
  });
  t.equal(ct.status, 415);
  t.equal(
    (await post(server.socketPath, '/cmdadd', 'x'.repeat(5000))).status,
    413,
    'declared length over limit',
  );
  // Chunked, so the limit is found while reading.
  const chunked = await post(server.socketPath, '/cmdadd', 'x'.repeat(5000), {
    'content-type': 'application/json',
    'transfer-encoding': 'chunked',
  });
  t.equal(chunked.status, 413);
  t.equal((await post(server.socketPath, '/cmdadd', JSON.stringify(EVENT))).status, 200, 'still serving');
});

t.test('handler errors: 500 with the message; AgentNotReadyError: 503', async (t) => {
  let mode: 'fail' | 'wait' = 'fail';
  const { server, log } = await start(t, {
    add: async () => {
      if (mode === 'fail') throw new Error('iptables-restore: Resource temporarily unavailable');
      throw new AgentNotReadyError('pod cache not synced yet');
    },
  });
  const a = await post(server.socketPath, '/cmdadd', JSON.stringify(EVENT));
  t.same(a, { status: 500, body: '{"error":"iptables-restore: Resource temporarily unavailable"}' });
  t.match(log(), /"level":"error".*"status":500/);
  mode = 'wait';
  const b = await post(server.socketPath, '/cmdadd', JSON.stringify(EVENT));
  t.same(b, { status: 503, body: '{"error":"pod cache not synced yet"}' });
});

t.test('check and del handlers', async (t) => {
  const dels: PluginDelEvent[] = [];
  const { server } = await start(t, {
    add: async () => ({ enrolled: true }),
    check: async (e) => ({ ok: e.podName === 'cart-7d9', reason: 'checked' }),
    del: async (e) => {
      dels.push(e);
    },
  });
  t.same(await post(server.socketPath, '/cmdcheck', JSON.stringify(EVENT)), {
    status: 200,
    body: '{"ok":true,"reason":"checked"}',
  });
  const del = { podName: 'cart', podNamespace: 'shop', containerId: 'c0ffee', ifName: 'eth0' };
  t.same(await post(server.socketPath, '/cmddel', JSON.stringify(del)), { status: 200, body: '{}' });
  t.same(dels, [del], 'netns optional on DEL');
  t.equal((await post(server.socketPath, '/cmddel', JSON.stringify({ ...del, ips: [] }))).status, 400);
});

t.test('the handler learns when the plugin hangs up', async (t) => {
  let aborted: (v: unknown) => void = () => undefined;
  const abortedP = new Promise((r) => (aborted = r));
  let entered: () => void = () => undefined;
  const enteredP = new Promise<void>((r) => (entered = r));
  const { server } = await start(t, {
    add: (_e, { signal }) =>
      new Promise((resolve) => {
        entered();
        signal.addEventListener('abort', () => {
          aborted(signal.reason);
          resolve({ enrolled: false });
        });
      }),
  });
  const req = request({
    socketPath: server.socketPath,
    path: '/cmdadd',
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    agent: false,
  });
  req.on('error', () => undefined);
  req.end(JSON.stringify(EVENT));
  await enteredP;
  req.destroy();
  t.match(await abortedP, { message: /disconnected before the answer/ });
});

t.test('a stale socket is replaced; a live one, a non-socket, a loose directory are refused', async (t) => {
  const base = tempDir(t);
  const runDir = join(base, 'run');
  mkdirSync(runDir, { mode: 0o700 });
  // A socket file nobody listens on, as a killed agent leaves it: listen elsewhere, move the
  // file into place, stop listening.
  const deadPath = join(runDir, 'pluginevent.sock');
  const dead = createServer();
  await new Promise<void>((r) => dead.listen(join(base, 'dead.sock'), r));
  renameSync(join(base, 'dead.sock'), deadPath);
  await new Promise<void>((r) => dead.close(() => r()));
  t.ok(statSync(deadPath).isSocket(), 'a socket file nobody listens on');
  const { server } = await start(t, { add: async () => ({ enrolled: true }) }, runDir);
  t.equal(
    (await post(server.socketPath, '/cmdadd', JSON.stringify(EVENT))).status,
    200,
    'stale socket replaced',
  );

  await t.rejects(
    startPluginEventServer({
      runDir,
      handlers: { add: async () => ({ enrolled: true }) },
      logger: quietLogger().logger,
    }),
    { code: 'CNI_ERR_PLUGIN_SOCKET', message: /another process is serving .*pluginevent.sock/ },
    'live socket: a second agent is refused',
  );
  t.equal(
    (await post(server.socketPath, '/cmdadd', JSON.stringify(EVENT))).status,
    200,
    'first agent unharmed',
  );

  const other = join(base, 'other');
  mkdirSync(other, { mode: 0o700 });
  writeFileSync(join(other, 'pluginevent.sock'), 'not a socket');
  await t.rejects(
    startPluginEventServer({
      runDir: other,
      handlers: { add: async () => ({ enrolled: true }) },
      logger: quietLogger().logger,
    }),
    { code: 'CNI_ERR_PLUGIN_SOCKET', message: /exists and is not a socket; refusing to replace it/ },
  );
  const loose = join(base, 'loose');
  mkdirSync(loose);
  chmodSync(loose, 0o777);
  await t.rejects(
    startPluginEventServer({
      runDir: loose,
      handlers: { add: async () => ({ enrolled: true }) },
      logger: quietLogger().logger,
    }),
    { code: 'CNI_ERR_PLUGIN_SOCKET', message: /writable by group or others \(mode 777\)/ },
  );
  await t.rejects(
    startPluginEventServer({
      runDir: 'relative',
      handlers: { add: async () => ({ enrolled: true }) },
      logger: quietLogger().logger,
    }),
    { code: 'CNI_ERR_PLUGIN_SOCKET', message: /must be an absolute path/ },
  );
});

t.test('close stops serving and removes the socket', async (t) => {
  const dir = join(tempDir(t), 'run');
  const server = await startPluginEventServer({
    runDir: dir,
    handlers: { add: async () => ({ enrolled: true }) },
    logger: quietLogger().logger,
  });
  await server.close();
  await server.close();
  t.throws(() => statSync(server.socketPath), { code: 'ENOENT' });
  await t.rejects(post(server.socketPath, '/cmdadd', JSON.stringify(EVENT)), { code: 'ENOENT' });
});

t.test('parseAddEvent and parseDelEvent: the validators the server uses', async (t) => {
  t.same(parseAddEvent(EVENT), EVENT);
  const { podUid: _, ...noUid } = EVENT;
  t.same(parseAddEvent(noUid), noUid, 'uid optional');
  t.notOk('podUid' in parseAddEvent(noUid));
  t.throws(() => parseAddEvent(null), PluginEventError);
  t.same(parseDelEvent({ podName: 'a', podNamespace: 'b', containerId: 'c', ifName: 'eth0', netns: '/x' }), {
    podName: 'a',
    podNamespace: 'b',
    containerId: 'c',
    ifName: 'eth0',
    netns: '/x',
  });
  t.throws(() => parseDelEvent({ podName: 'a' }), { message: /podNamespace: expected .* got nothing/ });
});

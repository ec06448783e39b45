// SPDX-License-Identifier: Apache-2.0
// ztunnel's JSON-lines logger: line shape and key order, escaping, levels (including children
// following their parent), error and odd-value serialisation, and the drop-on-backpressure cap.
import t from 'tap';
import { Writable } from 'node:stream';
import { Logger } from '../../../../src/shared/telemetry/logger.ts';

function sink(): { stream: Writable; lines: string[]; raw: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString('utf8'));
      cb();
    },
  });
  return {
    stream,
    get lines() {
      return chunks.join('').split('\n').filter(Boolean);
    },
    raw: () => chunks.join(''),
  };
}

t.test('one JSON object per line: level, time, bindings, fields, message', async (t) => {
  const s = sink();
  const log = new Logger({ destination: s.stream });
  log.child({ scope: 'access', node: 'n1' }).info({ a: 1, b: 'x', skip: undefined }, 'done');
  log.info('only a message');
  log.warn({ scope: 'app' });
  const lines = s.lines;
  t.equal(lines.length, 3);
  t.match(
    lines[0]!,
    /^\{"level":"info","time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","scope":"access","node":"n1","a":1,"b":"x","message":"done"\}$/,
  );
  t.match(lines[1]!, /^\{"level":"info","time":"[^"]+","message":"only a message"\}$/);
  t.match(lines[2]!, /^\{"level":"warn","time":"[^"]+","scope":"app"\}$/, 'no message key without a message');
  t.ok(s.raw().endsWith('}\n'));
});

t.test('values cannot add lines or fields; core keys cannot be overridden', async (t) => {
  const s = sink();
  const log = new Logger({ destination: s.stream });
  log.info({ v: 'a\n{"injected":true}\r\u2028"', level: 'fatal', time: 'then' }, 'm\n2');
  t.equal(s.lines.length, 1);
  const o = JSON.parse(s.lines[0]!) as Record<string, unknown>;
  t.equal(o.v, 'a\n{"injected":true}\r\u2028"');
  t.equal(o.message, 'm\n2');
  t.equal(o.level, 'info');
  t.not(o.time, 'then');
  t.notOk('injected' in o);
  t.same(Object.keys(o), ['level', 'time', 'v', 'message']);
});

t.test('levels: threshold, settable, silent, unknown refused', async (t) => {
  const s = sink();
  const log = new Logger({ destination: s.stream, level: 'warn' });
  log.trace('no');
  log.debug('no');
  log.info('no');
  log.warn('w');
  log.error('e');
  log.fatal('f');
  t.same(
    s.lines.map((l) => (JSON.parse(l) as { level: string }).level),
    ['warn', 'error', 'fatal'],
  );
  t.equal(log.level, 'warn');
  t.notOk(log.isLevelEnabled('info'));
  log.level = 'trace';
  t.ok(log.isLevelEnabled('trace'));
  log.trace('t');
  t.equal(s.lines.length, 4);
  log.level = 'silent';
  log.fatal('nothing');
  t.equal(s.lines.length, 4);
  t.throws(() => (log.level = 'verbose'), /unknown log level "verbose"/);
  t.equal(log.level, 'silent', 'a refused level changes nothing');
  t.throws(() => new Logger({ level: 'loud' }), /unknown log level/);
});

t.test('children follow the parent level until given their own; bindings accumulate', async (t) => {
  const s = sink();
  const root = new Logger({ destination: s.stream });
  const a = root.child({ scope: 'a' });
  const ab = a.child({ sub: 'b', scope: 'ab' });
  a.debug('hidden');
  root.level = 'debug';
  a.debug('shown via parent');
  t.equal(ab.level, 'debug');
  ab.level = 'error';
  ab.warn('hidden');
  root.level = 'trace';
  t.equal(ab.level, 'error', 'own level is kept');
  t.equal(a.level, 'trace');
  ab.error('e');
  const objs = s.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(
    objs.map((o) => o.message),
    ['shown via parent', 'e'],
  );
  t.same(Object.keys(objs[1]!), ['level', 'time', 'scope', 'sub', 'message']);
  t.equal(objs[1]!.scope, 'ab', 'a child binding overrides the parent one');
});

t.test('errors, bigints and cycles serialise without throwing', async (t) => {
  const s = sink();
  const log = new Logger({ destination: s.stream });
  const err = Object.assign(new Error('boom'), { code: 'E_X' });
  const cyclic: Record<string, unknown> = { name: 'c' };
  cyclic.self = cyclic;
  log.error({ err, n: 10n }, 'failed');
  log.info({ cyclic }, 'cycle');
  const [first, second] = s.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.match(first, { err: { type: 'Error', message: 'boom', code: 'E_X', stack: /boom/ }, n: '10' });
  t.match(second, { message: 'cycle', cyclic: { name: 'c', self: '[Circular]' } });
});

t.test('a destination that stops draining drops lines past the cap and says so later', async (t) => {
  const held: ((err?: Error | null) => void)[] = [];
  const written: string[] = [];
  const slow = new Writable({
    highWaterMark: 16,
    write(chunk: Buffer, _enc, cb) {
      written.push(chunk.toString('utf8'));
      held.push(cb);
    },
  });
  const log = new Logger({ destination: slow, maxBufferedBytes: 200 });
  for (let i = 0; i < 20; i++) log.info({ i }, 'line');
  t.ok(slow.writableLength <= 200 + 100, 'buffered bytes stay near the cap');
  while (held.length > 0) {
    held.shift()!();
    await new Promise((r) => setImmediate(r));
  }
  const before = written.length;
  t.ok(before < 20, 'some lines were dropped');
  log.info('after');
  while (held.length > 0) {
    held.shift()!();
    await new Promise((r) => setImmediate(r));
  }
  const tail = written.slice(before).map((l) => JSON.parse(l) as Record<string, unknown>);
  t.match(tail[0], { level: 'warn', scope: 'log', dropped: 20 - before });
  t.match(tail[1], { message: 'after' });
});

t.test('a failing destination stops logging instead of throwing', async (t) => {
  let writes = 0;
  const failing = new Writable({
    write(_chunk: Buffer, _enc, cb) {
      writes++;
      cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    },
  });
  const log = new Logger({ destination: failing });
  log.info('first');
  await new Promise((r) => setImmediate(r));
  t.doesNotThrow(() => log.info('second'));
  await new Promise((r) => setImmediate(r));
  t.equal(writes, 1, 'no writes after the destination failed');
});

// SPDX-License-Identifier: Apache-2.0
// The in-house Prometheus registry: exposition format 0.0.4 (HELP/TYPE, escaping, value
// formatting), stable ordering, counter monotonicity, gauge operations, label sets per metric
// and the process_* collector.
import { readFileSync } from 'node:fs';
import t from 'tap';
import {
  CONTENT_TYPE,
  Registry,
  escapeHelp,
  escapeLabelValue,
  formatValue,
  registerProcessMetrics,
} from '../../../../ztunnel/src/telemetry/prometheus.ts';

t.test('content type is the 0.0.4 text format', async (t) => {
  t.equal(CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8');
  t.equal(new Registry().contentType, CONTENT_TYPE);
});

t.test(
  'label values escape backslash, double quote and newline; HELP escapes backslash and newline',
  async (t) => {
    t.equal(escapeLabelValue('plain'), 'plain');
    t.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
    t.equal(escapeHelp('x\\y\nz "q"'), 'x\\\\y\\nz "q"');
    const r = new Registry();
    const c = r.counter({ name: 'c_total', help: 'line1\nline2', labelNames: ['v'] });
    c.inc({ v: 'evil"}\n# HELP fake\\' });
    const body = r.metrics();
    t.equal(
      body,
      '# HELP c_total line1\\nline2\n# TYPE c_total counter\nc_total{v="evil\\"}\\n# HELP fake\\\\"} 1\n',
    );
    t.equal(body.split('\n').filter((l) => l.startsWith('# HELP')).length, 1, 'no injected line');
  },
);

t.test('values: integers, fractions, special floats', async (t) => {
  t.equal(formatValue(0), '0');
  t.equal(formatValue(12345678901), '12345678901');
  t.equal(formatValue(0.25), '0.25');
  t.equal(formatValue(NaN), 'NaN');
  t.equal(formatValue(Infinity), '+Inf');
  t.equal(formatValue(-Infinity), '-Inf');
});

t.test('output order is stable: registration order, first-seen series, declared label order', async (t) => {
  const r = new Registry();
  const b = r.gauge({ name: 'b_gauge', help: 'B', labelNames: ['z', 'a'] });
  const a = r.counter({ name: 'a_total', help: 'A' });
  b.set({ a: '1', z: '2' }, 5); // object key order differs from declared order
  b.set({ z: '0', a: '9' }, 6);
  a.inc();
  const expected =
    '# HELP b_gauge B\n# TYPE b_gauge gauge\nb_gauge{z="2",a="1"} 5\nb_gauge{z="0",a="9"} 6\n' +
    '\n# HELP a_total A\n# TYPE a_total counter\na_total 1\n';
  t.equal(r.metrics(), expected);
  b.set({ a: '1', z: '2' }, 7); // an update keeps its place
  t.equal(r.metrics(), expected.replace('} 5', '} 7'));
});

t.test('counters only go up; a negative or non-finite increment is refused', async (t) => {
  const r = new Registry();
  const c = r.counter({ name: 'bytes_total', help: 'h', labelNames: ['dir'] });
  c.inc({ dir: 'in' });
  c.inc({ dir: 'in' }, 10);
  c.inc({ dir: 'in' }, 0);
  t.equal(c.get({ dir: 'in' }), 11);
  t.throws(() => c.inc({ dir: 'in' }, -1), /cannot decrease/);
  t.throws(() => c.inc({ dir: 'in' }, NaN), /finite/);
  t.throws(() => c.inc({ dir: 'in' }, Infinity), /finite/);
  t.equal(c.get({ dir: 'in' }), 11, 'refused increments change nothing');
  const plain = r.counter({ name: 'plain_total', help: 'h' });
  t.match(r.metrics(), /\nplain_total 0\n/, 'a label-less metric is exported at 0 from the start');
  plain.inc(3);
  plain.inc();
  t.equal(plain.get(), 4);
  t.throws(() => plain.inc(-2), /cannot decrease/);
});

t.test('gauges set, inc and dec, with and without labels', async (t) => {
  const r = new Registry();
  const g = r.gauge({ name: 'open', help: 'h', labelNames: ['side'] });
  g.inc({ side: 'a' });
  g.inc({ side: 'a' }, 4);
  g.dec({ side: 'a' });
  g.dec({ side: 'b' }, 2);
  t.equal(g.get({ side: 'a' }), 4);
  t.equal(g.get({ side: 'b' }), -2);
  g.set({ side: 'a' }, 0.5);
  t.equal(g.get({ side: 'a' }), 0.5);
  t.throws(() => g.set({ side: 'a' }, NaN));
  const u = r.gauge({ name: 'count', help: 'h' });
  u.set(7);
  u.dec();
  u.inc(2);
  t.equal(u.get(), 8);
  t.match(r.metrics(), /\nopen\{side="a"\} 0.5\nopen\{side="b"\} -2\n/);
  t.match(r.metrics(), /\ncount 8\n/);
  t.throws(() => r.gauge({ name: 'count', help: 'again' }), /already registered/);
});

t.test('label sets: one series per distinct value combination; wrong label names refused', async (t) => {
  const r = new Registry();
  const c = r.counter({ name: 'conn_total', help: 'h', labelNames: ['src', 'dst'] });
  t.equal(c.seriesCount, 0, 'a labelled metric starts with no series');
  t.notMatch(r.metrics(), /conn_total\{/);
  for (let i = 0; i < 3; i++) c.inc({ src: 'a', dst: 'b' });
  c.inc({ src: 'a', dst: 'c' });
  c.inc({ src: 'b', dst: 'b' });
  t.equal(c.seriesCount, 3);
  t.equal(c.get({ src: 'a', dst: 'b' }), 3);
  t.equal(c.get({ src: 'x', dst: 'y' }), 0);
  const unchecked = c as unknown as { inc(labels: Record<string, string>): void };
  t.throws(() => unchecked.inc({ src: 'a' }), /exactly the labels src, dst/);
  t.throws(() => unchecked.inc({ src: 'a', dst: 'b', extra: 'x' }), /exactly the labels/);
  t.throws(() => unchecked.inc({ src: 'a', other: 'b' }), /label dst must be a string/);
  t.equal(c.seriesCount, 3, 'refused label sets add no series');
  const plain = r.counter({ name: 'plain_total', help: 'h' }) as unknown as {
    inc(labels: Record<string, string>): void;
  };
  t.throws(() => plain.inc({ x: '1' }), /has no labels/);
  t.throws(() => r.counter({ name: 'bad-name', help: 'h' }), /invalid metric name/);
  t.throws(() => r.counter({ name: 'x_total', help: 'h', labelNames: ['a', 'a'] }), /duplicate label/);
  t.throws(() => r.counter({ name: 'y_total', help: 'h', labelNames: ['__reserved'] }), /label name/);
});

t.test('process metrics are computed on scrape', async (t) => {
  const r = new Registry();
  registerProcessMetrics(r);
  const body = r.metrics();
  for (const name of [
    'process_resident_memory_bytes',
    'process_cpu_seconds_total',
    'process_start_time_seconds',
    'process_open_fds',
    'process_max_fds',
  ]) {
    t.match(body, new RegExp(`# TYPE ${name} (gauge|counter)\\n${name} [0-9.e+]+\\n`), name);
  }
  const limit = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
  t.equal(/\nprocess_max_fds (\d+)\n/.exec(body)?.[1], limit, 'process_max_fds is the soft limit');
  const rss = Number(/\nprocess_resident_memory_bytes (\d+)\n/.exec(body)?.[1]);
  t.ok(rss > 1e6, 'rss is in bytes');
  const start = Number(/\nprocess_start_time_seconds (\d+)\n/.exec(body)?.[1]);
  t.ok(Math.abs(start - (Date.now() / 1000 - process.uptime())) < 2, 'start time is the epoch second');
  const cpu = (b: string): number => Number(/\nprocess_cpu_seconds_total ([0-9.e+-]+)\n/.exec(b)?.[1]);
  const before = cpu(body);
  const until = Date.now() + 20;
  while (Date.now() < until); // burn a little CPU
  t.ok(cpu(r.metrics()) > before, 'cpu time advances between scrapes');

  const broken = new Registry();
  broken.registerCollector(() => {
    throw new Error('boom');
  });
  broken.counter({ name: 'ok_total', help: 'h' });
  t.equal(
    broken.metrics(),
    '# HELP ok_total h\n# TYPE ok_total counter\nok_total 0\n',
    'a failing collector is skipped',
  );
});

t.test('a series rendered once counts on every family with the same label names', async (t) => {
  const r = new Registry();
  const names = ['a', 'b'] as const;
  const opened = r.counter({ name: 'opened_total', help: 'h', labelNames: names });
  const bytes = r.counter({ name: 'bytes_total', help: 'h', labelNames: names });
  const other = r.counter({ name: 'other_total', help: 'h', labelNames: ['a', 'b'] as const });
  const g = r.gauge({ name: 'open', help: 'h', labelNames: names });
  const s = opened.series({ a: 'x"y', b: 'z' });
  opened.incSeries(s);
  bytes.incSeries(s, 1024);
  bytes.incSeries(s, 1);
  g.addToSeries(s, 2);
  g.addToSeries(s, -1);
  t.equal(opened.get({ a: 'x"y', b: 'z' }), 1, 'same series as the labels give');
  t.equal(bytes.get({ a: 'x"y', b: 'z' }), 1025);
  t.equal(g.get({ a: 'x"y', b: 'z' }), 1);
  t.match(r.metrics(), 'bytes_total{a="x\\"y",b="z"} 1025\n', 'escaped once, rendered as usual');
  t.throws(
    () => other.incSeries(s),
    /series rendered for other label names/,
    'another labelNames array is refused',
  );
  t.throws(() => bytes.incSeries(s, -1), /cannot decrease/);
  t.throws(() => opened.series({ a: 'x' } as never), /takes exactly the labels/, 'validated when rendered');
});

// SPDX-License-Identifier: Apache-2.0
// A small Prometheus registry: counters and gauges with fixed label names, rendered in the text
// exposition format 0.0.4. It replaces prom-client in ztunnel, whose import alone costs ~20 MB of
// resident memory (histograms, summaries, cluster aggregation and OpenTelemetry exemplars we do
// not use). Output is stable: families in registration order (then collectors'), samples of a
// family in the order their label sets were first seen, labels in declared order.
import { readdirSync, readFileSync } from 'node:fs';

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export type MetricType = 'counter' | 'gauge';
export type Labels<L extends string> = Readonly<Record<L, string>>;

export interface MetricOptions<L extends string> {
  readonly name: string;
  readonly help: string;
  /** The label names, in the order they are rendered; every sample must give all of them. */
  readonly labelNames?: readonly L[];
}

/** One value computed at scrape time (see Registry.registerCollector). */
export interface CollectedSample {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  readonly value: number;
}

/** `\` → `\\`, `"` → `\"`, newline → `\n` (exposition format, label values). */
export function escapeLabelValue(v: string): string {
  return /[\\"\n]/.test(v) ? v.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`)) : v;
}

/** `\` → `\\`, newline → `\n` (exposition format, HELP text). */
export function escapeHelp(v: string): string {
  return /[\\\n]/.test(v) ? v.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\')) : v;
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function header(name: string, help: string, type: MetricType): string {
  return `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
}

/**
 * A label set rendered once (Metric.series), for callers that count the same labels on several
 * families sharing one labelNames array: a connection's opened/closed/bytes counters render its
 * ~20 labels once instead of once per increment.
 */
export interface Series {
  readonly key: string;
  readonly labelNames: readonly string[];
}

abstract class Metric<L extends string> {
  readonly name: string;
  readonly help: string;
  abstract readonly type: MetricType;
  readonly labelNames: readonly L[];
  /** Rendered label set (`{a="x",b="y"}`, or '' without labels) → value. */
  readonly #series = new Map<string, number>();

  constructor(opts: MetricOptions<L>) {
    if (!METRIC_NAME.test(opts.name)) throw new Error(`invalid metric name ${JSON.stringify(opts.name)}`);
    const labelNames = opts.labelNames ?? [];
    const seen = new Set<string>();
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith('__') || seen.has(l)) {
        throw new Error(`invalid or duplicate label name ${JSON.stringify(l)} for metric ${opts.name}`);
      }
      seen.add(l);
    }
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = labelNames;
    // A metric without labels has exactly one series, present (at 0) from the start.
    if (labelNames.length === 0) this.#series.set('', 0);
  }

  /** How many label sets (series) this metric holds. */
  get seriesCount(): number {
    return this.#series.size;
  }

  /** The current value for a label set (0 if never touched). */
  get(labels?: Labels<L>): number {
    return this.#series.get(this.#key(labels)) ?? 0;
  }

  /** `labels` validated and rendered, for incSeries on this family or one with the same labelNames array. */
  series(labels: Labels<L>): Series {
    return { key: this.#key(labels), labelNames: this.labelNames };
  }

  protected addSeries(s: Series, delta: number): void {
    if (s.labelNames !== this.labelNames) {
      throw new Error(
        `metric ${this.name}: series rendered for other label names (${s.labelNames.join(', ')})`,
      );
    }
    this.#series.set(s.key, (this.#series.get(s.key) ?? 0) + delta);
  }

  protected add(labels: Labels<L> | undefined, delta: number): void {
    const key = this.#key(labels);
    this.#series.set(key, (this.#series.get(key) ?? 0) + delta);
  }

  protected put(labels: Labels<L> | undefined, value: number): void {
    this.#series.set(this.#key(labels), value);
  }

  render(): string {
    let out = header(this.name, this.help, this.type);
    for (const [labels, value] of this.#series) out += `${this.name}${labels} ${formatValue(value)}\n`;
    return out;
  }

  #key(labels: Labels<L> | undefined): string {
    const names = this.labelNames;
    if (names.length === 0) {
      if (labels !== undefined && Object.keys(labels).length > 0) {
        throw new Error(`metric ${this.name} has no labels; got ${Object.keys(labels).join(', ')}`);
      }
      return '';
    }
    if (labels === undefined) throw new Error(`metric ${this.name} needs labels ${names.join(', ')}`);
    const values = labels as Readonly<Record<string, unknown>>;
    if (Object.keys(values).length !== names.length) {
      throw new Error(
        `metric ${this.name} takes exactly the labels ${names.join(', ')}; got ${Object.keys(values).join(', ')}`,
      );
    }
    let out = '{';
    for (let i = 0; i < names.length; i++) {
      const n = names[i] as L;
      const v = values[n];
      if (typeof v !== 'string') throw new Error(`metric ${this.name}: label ${n} must be a string`);
      out += `${i === 0 ? '' : ','}${n}="${escapeLabelValue(v)}"`;
    }
    return `${out}}`;
  }
}

function checkDelta(metric: string, v: number): number {
  if (!Number.isFinite(v)) throw new Error(`metric ${metric}: value must be a finite number, got ${v}`);
  return v;
}

/** A monotonically increasing value; a negative increment is refused. */
export class Counter<L extends string = never> extends Metric<L> {
  readonly type = 'counter';

  inc(value?: number): void;
  inc(labels: Labels<L>, value?: number): void;
  inc(a?: Labels<L> | number, b?: number): void {
    const [labels, value] = typeof a === 'object' ? [a, b ?? 1] : [undefined, a ?? 1];
    if (checkDelta(this.name, value) < 0) {
      throw new Error(`metric ${this.name}: a counter cannot decrease (inc by ${value})`);
    }
    this.add(labels, value);
  }

  /** inc() for a label set rendered by series(). */
  incSeries(s: Series, value = 1): void {
    if (checkDelta(this.name, value) < 0) {
      throw new Error(`metric ${this.name}: a counter cannot decrease (inc by ${value})`);
    }
    this.addSeries(s, value);
  }
}

/** A value that goes up and down. */
export class Gauge<L extends string = never> extends Metric<L> {
  readonly type = 'gauge';

  set(value: number): void;
  set(labels: Labels<L>, value: number): void;
  set(a: Labels<L> | number, b?: number): void {
    if (typeof a === 'object') this.put(a, checkValue(this.name, b));
    else this.put(undefined, checkValue(this.name, a));
  }

  inc(value?: number): void;
  inc(labels: Labels<L>, value?: number): void;
  inc(a?: Labels<L> | number, b?: number): void {
    if (typeof a === 'object') this.add(a, checkDelta(this.name, b ?? 1));
    else this.add(undefined, checkDelta(this.name, a ?? 1));
  }

  /** inc()/dec() for a label set rendered by series(). */
  addToSeries(s: Series, delta: number): void {
    this.addSeries(s, checkDelta(this.name, delta));
  }

  dec(value?: number): void;
  dec(labels: Labels<L>, value?: number): void;
  dec(a?: Labels<L> | number, b?: number): void {
    if (typeof a === 'object') this.add(a, -checkDelta(this.name, b ?? 1));
    else this.add(undefined, -checkDelta(this.name, a ?? 1));
  }
}

function checkValue(metric: string, v: number | undefined): number {
  if (typeof v !== 'number' || Number.isNaN(v)) throw new Error(`metric ${metric}: value must be a number`);
  return v;
}

export class Registry {
  readonly contentType = CONTENT_TYPE;
  readonly #metrics = new Map<string, { render(): string }>();
  readonly #collectors: (() => readonly CollectedSample[])[] = [];

  counter<L extends string = never>(opts: MetricOptions<L>): Counter<L> {
    return this.#register(new Counter<L>(opts));
  }

  gauge<L extends string = never>(opts: MetricOptions<L>): Gauge<L> {
    return this.#register(new Gauge<L>(opts));
  }

  /**
   * Adds label-less values computed on each scrape (process metrics). A collector that throws is
   * skipped for that scrape; it must not break the metrics endpoint.
   */
  registerCollector(collect: () => readonly CollectedSample[]): void {
    this.#collectors.push(collect);
  }

  /** The exposition text: one block per family (HELP, TYPE, samples), blank line between. */
  metrics(): string {
    const blocks: string[] = [];
    for (const m of this.#metrics.values()) blocks.push(m.render());
    for (const collect of this.#collectors) {
      let samples: readonly CollectedSample[];
      try {
        samples = collect();
      } catch {
        continue;
      }
      for (const s of samples) {
        if (this.#metrics.has(s.name) || !METRIC_NAME.test(s.name)) continue;
        blocks.push(`${header(s.name, s.help, s.type)}${s.name} ${formatValue(s.value)}\n`);
      }
    }
    return blocks.join('\n');
  }

  #register<M extends { readonly name: string; render(): string }>(m: M): M {
    if (this.#metrics.has(m.name)) throw new Error(`metric ${m.name} is already registered`);
    this.#metrics.set(m.name, m);
    return m;
  }
}

/**
 * The standard process_* metrics (names as in the Prometheus client libraries), computed on each
 * scrape from process.memoryUsage(), process.cpuUsage() and /proc/self/fd: no timers, no state.
 */
export function registerProcessMetrics(registry: Registry): void {
  const startTime = Math.round(Date.now() / 1000 - process.uptime());
  registry.registerCollector(() => {
    const cpu = process.cpuUsage();
    const mem = process.memoryUsage();
    const user = cpu.user / 1e6;
    const system = cpu.system / 1e6;
    const samples: CollectedSample[] = [
      {
        name: 'process_cpu_user_seconds_total',
        help: 'Total user CPU time spent in seconds.',
        type: 'counter',
        value: user,
      },
      {
        name: 'process_cpu_system_seconds_total',
        help: 'Total system CPU time spent in seconds.',
        type: 'counter',
        value: system,
      },
      {
        name: 'process_cpu_seconds_total',
        help: 'Total user and system CPU time spent in seconds.',
        type: 'counter',
        value: user + system,
      },
      {
        name: 'process_start_time_seconds',
        help: 'Start time of the process since unix epoch in seconds.',
        type: 'gauge',
        value: startTime,
      },
      {
        name: 'process_resident_memory_bytes',
        help: 'Resident memory size in bytes.',
        type: 'gauge',
        value: mem.rss,
      },
      {
        name: 'nodejs_heap_size_total_bytes',
        help: 'Process heap size from Node.js in bytes.',
        type: 'gauge',
        value: mem.heapTotal,
      },
      {
        name: 'nodejs_heap_size_used_bytes',
        help: 'Process heap size used from Node.js in bytes.',
        type: 'gauge',
        value: mem.heapUsed,
      },
      {
        name: 'nodejs_external_memory_bytes',
        help: 'Node.js external memory size in bytes.',
        type: 'gauge',
        value: mem.external,
      },
    ];
    const fds = openFds();
    if (fds !== undefined) {
      samples.push({
        name: 'process_open_fds',
        help: 'Number of open file descriptors.',
        type: 'gauge',
        value: fds,
      });
    }
    const max = maxFds();
    if (max !== undefined) {
      samples.push({
        name: 'process_max_fds',
        help: 'Maximum number of open file descriptors.',
        type: 'gauge',
        value: max,
      });
    }
    return samples;
  });
}

/**
 * The soft open-file limit. Connections beyond it are accepted and closed at once by libuv
 * without an error reaching ztunnel, so process_open_fds / process_max_fds is what shows the
 * exhaustion (checklist F.79). Node raises the soft limit to the hard one at start.
 */
function maxFds(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m === null || m[1] === 'unlimited') return undefined;
    return Number(m[1]);
  } catch {
    return undefined; // not Linux
  }
}

function openFds(): number | undefined {
  try {
    // The directory listing itself holds one descriptor while it is read.
    return readdirSync('/proc/self/fd').length - 1;
  } catch {
    return undefined; // not Linux
  }
}

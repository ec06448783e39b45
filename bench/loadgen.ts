// SPDX-License-Identifier: Apache-2.0
// The benchmark load generator, always its own child process (never inside a tunnel process):
// runs one task given as a JSON argument (bench/loadgen-protocol.ts), prints measure_start /
// measure_end when the measurement window opens and closes (the harness samples tunnel CPU
// then), and a result line. Method after PERFORMANCE.md B.1: iperf3-like single stream, wrk-like
// closed loop at 32 connections, sockperf-like open-loop ping-pong at 1000 msg/s, and
// connect/request/close churn with 8 workers.
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { errorMessage } from '../src/shared/errors.ts';
import { attachToParent, emit, fail } from './child.ts';
import {
  loadgenTaskSchema,
  RELEASE_COMMAND,
  type LoadgenResult,
  type LoadgenTask,
} from './loadgen-protocol.ts';
import { percentileSorted, summarize } from './stats.ts';
import type { Endpoint } from './types.ts';

type Task<K extends LoadgenTask['kind']> = Extract<LoadgenTask, { kind: K }>;

/** Per-connection bound so a stuck path ends the run instead of hanging it. */
const CONNECT_TIMEOUT_MS = 10_000;
/** How long to wait for outstanding latency replies after the last send. */
const LATENCY_DRAIN_MS = 2_000;
/** Latency timer: tell the main thread this early, and spin this long in the timer thread. */
const LATENCY_LEAD_NS = 150_000;
const LATENCY_SPIN_NS = 100_000;

const nowNs = (): number => Number(process.hrtime.bigint());
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let releaseRequested: (() => void) | undefined;
attachToParent((line) => {
  if (line === RELEASE_COMMAND) releaseRequested?.();
});

function open(target: Endpoint): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: target.host, port: target.port, noDelay: true });
    sock.setTimeout(CONNECT_TIMEOUT_MS, () => {
      sock.destroy(new Error(`connect to ${target.host}:${target.port} timed out`));
    });
    sock.once('error', reject);
    sock.once('connect', () => {
      sock.setTimeout(0);
      sock.off('error', reject);
      resolve(sock);
    });
  });
}

/** Sends `req` and resolves when `req.length` bytes have come back. */
function echoOnce(sock: Socket, req: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (b: Buffer): void => {
      got += b.length;
      if (got >= req.length) {
        cleanup();
        resolve();
      }
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error(`connection closed after ${got} of ${req.length} echoed bytes`));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const cleanup = (): void => {
      sock.setTimeout(0);
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', onError);
    };
    sock.setTimeout(CONNECT_TIMEOUT_MS, () => sock.destroy(new Error('echo timed out')));
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', onError);
    sock.write(req);
  });
}

/** Runs `load` for warmup + duration and reports the window's start/end (ns) to the parent. */
async function window(warmupMs: number, durationMs: number, atStart: () => void, atEnd: () => void) {
  await sleep(warmupMs);
  const t0 = nowNs();
  atStart();
  emit({ event: 'measure_start' });
  await sleep(durationMs);
  const t1 = nowNs();
  atEnd();
  emit({ event: 'measure_end' });
  return (t1 - t0) / 1e9;
}

async function throughput(task: Task<'throughput'>): Promise<LoadgenResult> {
  const sock = await open(task.target);
  let bytes = 0;
  let failure: Error | undefined;
  sock.on('data', (b: Buffer) => (bytes += b.length));
  sock.on('error', (err) => (failure = err));
  sock.on('end', () => (failure ??= new Error('source closed the stream')));
  let b0 = 0;
  let b1 = 0;
  const seconds = await window(
    task.warmupMs,
    task.durationMs,
    () => (b0 = bytes),
    () => (b1 = bytes),
  );
  sock.destroy();
  if (failure) throw failure;
  const n = b1 - b0;
  return { kind: 'throughput', bytes: n, seconds, gbitPerS: (n * 8) / seconds / 1e9 };
}

async function rps(task: Task<'rps'>): Promise<LoadgenResult> {
  const req = Buffer.alloc(task.size, 0x62);
  const socks = await Promise.all(Array.from({ length: task.connections }, () => open(task.target)));
  let completed = 0;
  let running = true;
  let failure: Error | undefined;
  for (const sock of socks) {
    let got = 0;
    sock.on('data', (b: Buffer) => {
      got += b.length;
      if (got >= task.size) {
        got -= task.size;
        completed++;
        if (running) sock.write(req);
      }
    });
    sock.on('error', (err) => (failure ??= err));
    sock.on('end', () => (failure ??= running ? new Error('server closed a connection') : undefined));
    sock.write(req);
  }
  let c0 = 0;
  let c1 = 0;
  const seconds = await window(
    task.warmupMs,
    task.durationMs,
    () => (c0 = completed),
    () => (c1 = completed),
  );
  running = false;
  for (const s of socks) s.destroy();
  if (failure) throw failure;
  return { kind: 'rps', requests: c1 - c0, seconds, perS: (c1 - c0) / seconds };
}

async function latency(task: Task<'latency'>): Promise<LoadgenResult> {
  const req = Buffer.alloc(task.size, 0x63);
  const sock = await open(task.target);
  const intervalNs = 1e9 / task.rate;
  const warmupCount = Math.ceil((task.warmupMs / 1000) * task.rate);
  const total = warmupCount + Math.ceil((task.durationMs / 1000) * task.rate);
  // Scheduled send times of outstanding requests, in send order (echo is FIFO per connection).
  const scheduled = new Float64Array(total);
  const samples = new Float64Array(total - warmupCount);
  const sendLag = new Float64Array(total);
  let sent = 0;
  let answered = 0;
  let measured = 0;
  let got = 0;
  let failure: Error | undefined;

  sock.on('data', (b: Buffer) => {
    const t = nowNs();
    got += b.length;
    while (got >= task.size && answered < sent) {
      got -= task.size;
      const i = answered++;
      if (i >= warmupCount) samples[measured++] = (t - scheduled[i]!) / 1e3;
    }
  });
  sock.on('error', (err) => (failure ??= err));
  sock.on('end', () => (failure ??= new Error('server closed the connection')));

  const startNs = nowNs() + 20e6; // leave the worker time to start
  const stop = new Int32Array(new SharedArrayBuffer(4));
  const timer = new Worker(new URL('./latency-timer.ts', import.meta.url), {
    workerData: {
      startNs,
      intervalNs,
      count: total,
      leadNs: LATENCY_LEAD_NS,
      spinNs: LATENCY_SPIN_NS,
      stop,
    },
  });
  let started = false;
  const end = new Promise<void>((resolve, reject) => {
    timer.on('error', reject);
    timer.on('message', (i: number) => {
      if (i < 0) {
        resolve();
        return;
      }
      const target = startNs + i * intervalNs;
      let t = nowNs();
      // Spin at most the lead; if the message came late, send at once (the lateness is part of
      // the measured round trip, as the schedule is the reference).
      while (t < target) t = nowNs();
      if (failure) return;
      scheduled[i] = target;
      sendLag[i] = (t - target) / 1e3;
      sock.write(req);
      sent = i + 1;
      if (i === warmupCount && !started) {
        started = true;
        emit({ event: 'measure_start' });
      }
    });
  });
  try {
    await end;
  } finally {
    Atomics.store(stop, 0, 1);
    Atomics.notify(stop, 0);
    await timer.terminate();
  }
  emit({ event: 'measure_end' });
  const deadline = nowNs() + LATENCY_DRAIN_MS * 1e6;
  while (answered < sent && nowNs() < deadline && !failure) await sleep(5);
  if (failure) throw failure;
  // Replies that never came count as lost, with the drain deadline as their (lower-bound) latency.
  const lostFrom = measured;
  for (let i = Math.max(answered, warmupCount); i < sent; i++)
    samples[measured++] = (deadline - scheduled[i]!) / 1e3;
  sock.destroy();
  const s = summarize(samples.subarray(0, measured));
  const lag = sendLag.subarray(warmupCount, sent).sort();
  return {
    kind: 'latency',
    count: s.count,
    lost: measured - lostFrom,
    p50Us: s.p50,
    p90Us: s.p90,
    p99Us: s.p99,
    p999Us: s.p999,
    maxUs: s.max,
    sendLagP50Us: percentileSorted(lag, 50),
    sendLagP99Us: percentileSorted(lag, 99),
  };
}

async function conns(task: Task<'conns'>): Promise<LoadgenResult> {
  const req = Buffer.alloc(task.size, 0x64);
  let running = true;
  let measuring = false;
  let completed = 0;
  let errors = 0;
  let lastError: unknown;
  const worker = async (): Promise<void> => {
    while (running) {
      let sock: Socket | undefined;
      try {
        sock = await open(task.target);
        await echoOnce(sock, req);
        if (measuring) completed++;
      } catch (err) {
        if (measuring) errors++;
        lastError = err;
        await sleep(10); // back off: a refusing path must not turn this into a busy loop
      } finally {
        sock?.destroy();
      }
    }
  };
  const workers = Array.from({ length: task.workers }, worker);
  const seconds = await window(
    task.warmupMs,
    task.durationMs,
    () => (measuring = true),
    () => (measuring = false),
  );
  running = false;
  await Promise.all(workers);
  if (completed === 0 && lastError !== undefined) {
    throw lastError instanceof Error ? lastError : new Error(errorMessage(lastError));
  }
  return { kind: 'conns', connections: completed, errors, seconds, perS: completed / seconds };
}

async function hold(task: Task<'hold'>): Promise<LoadgenResult> {
  const req = Buffer.alloc(task.size, 0x65);
  const socks: Socket[] = [];
  let next = 0;
  const opener = async (): Promise<void> => {
    while (next < task.connections) {
      next++;
      const sock = await open(task.target);
      socks.push(sock);
      await echoOnce(sock, req);
      sock.on('error', () => undefined);
    }
  };
  await Promise.all(Array.from({ length: Math.min(task.concurrency, task.connections) }, opener));
  const released = new Promise<void>((r) => (releaseRequested = r));
  emit({ event: 'holding', open: socks.length });
  await released;
  for (const s of socks) s.destroy();
  return { kind: 'hold', open: socks.length };
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (arg === undefined) throw new Error('usage: loadgen.ts <task JSON>');
  const task = loadgenTaskSchema.parse(JSON.parse(arg));
  let result: LoadgenResult;
  switch (task.kind) {
    case 'throughput':
      result = await throughput(task);
      break;
    case 'rps':
      result = await rps(task);
      break;
    case 'latency':
      result = await latency(task);
      break;
    case 'conns':
      result = await conns(task);
      break;
    case 'hold':
      result = await hold(task);
      break;
  }
  emit({ event: 'result', result });
  process.exit(0);
}

main().catch(fail);

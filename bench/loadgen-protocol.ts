// SPDX-License-Identifier: Apache-2.0
// The contract between the harness and the load-generator child (bench/loadgen.ts): the task,
// given as one JSON argument, and the JSON lines the child prints on stdout. Parsed with zod on
// both sides, so a mismatch fails loudly instead of producing a wrong number.
import { z } from 'zod';

const endpoint = z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) });
const ms = z.number().int().min(0);
const count = z.number().int().min(1);

export const loadgenTaskSchema = z.discriminatedUnion('kind', [
  /** One connection to the bulk source; bytes counted at the receiver (this process). */
  z.object({ kind: z.literal('throughput'), target: endpoint, warmupMs: ms, durationMs: count }),
  /** Closed loop: `connections` connections, each sends `size` bytes and waits for the echo. */
  z.object({
    kind: z.literal('rps'),
    target: endpoint,
    connections: count,
    size: count,
    warmupMs: ms,
    durationMs: count,
  }),
  /** Open loop on one connection: a `size`-byte message every 1/rate s on a fixed timeline. */
  z.object({
    kind: z.literal('latency'),
    target: endpoint,
    rate: count,
    size: count,
    warmupMs: ms,
    durationMs: count,
  }),
  /** `workers` loops of connect, send `size` bytes, read the echo, close. */
  z.object({
    kind: z.literal('conns'),
    target: endpoint,
    workers: count,
    size: count,
    warmupMs: ms,
    durationMs: count,
  }),
  /** Opens `connections` connections (at most `concurrency` connecting at once), one echo of
   * `size` bytes on each, then holds them idle until the parent writes `release`. */
  z.object({
    kind: z.literal('hold'),
    target: endpoint,
    connections: count,
    size: count,
    concurrency: count,
  }),
]);
export type LoadgenTask = z.infer<typeof loadgenTaskSchema>;

export const loadgenResultSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('throughput'), bytes: z.number(), seconds: z.number(), gbitPerS: z.number() }),
  z.object({ kind: z.literal('rps'), requests: z.number(), seconds: z.number(), perS: z.number() }),
  z.object({
    kind: z.literal('latency'),
    /** Round trips measured from the *scheduled* send time (no coordinated omission), µs. */
    count: z.number(),
    lost: z.number(),
    p50Us: z.number(),
    p90Us: z.number(),
    p99Us: z.number(),
    p999Us: z.number(),
    maxUs: z.number(),
    /** How late sends left relative to the schedule (diagnostic for the timer), µs. */
    sendLagP50Us: z.number(),
    sendLagP99Us: z.number(),
  }),
  z.object({
    kind: z.literal('conns'),
    connections: z.number(),
    errors: z.number(),
    seconds: z.number(),
    perS: z.number(),
  }),
  z.object({ kind: z.literal('hold'), open: z.number() }),
]);
export type LoadgenResult = z.infer<typeof loadgenResultSchema>;

export const loadgenEventSchema = z.discriminatedUnion('event', [
  z.object({ event: z.literal('measure_start') }),
  z.object({ event: z.literal('measure_end') }),
  z.object({ event: z.literal('holding'), open: z.number() }),
  z.object({ event: z.literal('result'), result: loadgenResultSchema }),
  z.object({ event: z.literal('error'), message: z.string() }),
]);
export type LoadgenEvent = z.infer<typeof loadgenEventSchema>;

/** Command the parent writes to a `hold` task's stdin to make it close its connections. */
export const RELEASE_COMMAND = 'release';

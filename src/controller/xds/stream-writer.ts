// SPDX-License-Identifier: Apache-2.0
// One stream's writes: in the order the stream decided them, one at a time. A small response
// is handed to grpc-js at once; a large one waits for its turn at the server's WriteGate and is
// then written by `writeLarge` (in paced slices, paced-write.ts). With one write in progress
// per stream, grpc-js's writes and the paced ones never interleave on the HTTP/2 stream, and a
// small response that follows a large one waits behind it.
//
// Ending: `finish` drops what has not started and ends the stream once the write in progress is
// complete, so a message is never cut short by the trailers, unless that write goes past the
// gate's hold time (a client that does not read would not get the rest anyway). `close` is for
// a stream that is already gone: it drops everything and gives the gate place back at once.
import type { GatePlace, WriteGate } from './write-gate.ts';

export interface StreamWriterOptions<T> {
  readonly gate: WriteGate;
  /** Wire length of a response. */
  length(response: T): number;
  /** Hands a small response to grpc-js; `written` once grpc-js has sent it. Must not throw. */
  write(response: T, written: () => void): void;
  /**
   * Writes a large response; `written` once it is out or the stream failed. Returns a function
   * that stops the write. Must not throw.
   */
  writeLarge(response: T, written: () => void): () => void;
  /** A large write of this stream went past the gate's hold time. */
  onOverdue(): void;
}

export class StreamWriter<T> {
  readonly #o: StreamWriterOptions<T>;
  readonly #queue: T[] = [];
  /** A write is in progress, or a large one is waiting at the gate. */
  #busy = false;
  /** The gate place of the large response waiting or being written. */
  #place: GatePlace | undefined;
  /** Stops the large write in progress (undefined while it waits at the gate). */
  #stopLarge: (() => void) | undefined;
  /** What `finish` runs once the write in progress is over. */
  #then: (() => void) | undefined;
  #closed = false;

  constructor(opts: StreamWriterOptions<T>) {
    this.#o = opts;
  }

  send(response: T): void {
    if (this.#closed || this.#then !== undefined) return;
    this.#queue.push(response);
    if (!this.#busy) this.#next();
  }

  #next(): void {
    const r = this.#queue.shift();
    if (r === undefined) {
      this.#busy = false;
      return;
    }
    this.#busy = true;
    const bytes = this.#o.length(r);
    if (bytes < this.#o.gate.largeResponseBytes) {
      this.#o.write(r, () => this.#written());
      return;
    }
    const place = this.#o.gate.acquire(
      bytes,
      () => {
        const stop = this.#o.writeLarge(r, () => {
          place.release();
          if (this.#place === place) this.#written();
        });
        // Unless it is over already (`written` may run before writeLarge returns).
        if (this.#place === place) this.#stopLarge = stop;
      },
      () => {
        this.#o.onOverdue();
        if (this.#place === place && this.#then !== undefined) this.#end();
      },
    );
    this.#place = place;
  }

  #written(): void {
    this.#place = undefined;
    this.#stopLarge = undefined;
    if (this.#closed) return;
    if (this.#then !== undefined) this.#end();
    else this.#next();
  }

  /**
   * Ends the stream's output: drops what has not started, then runs `then` (which ends the
   * call) once the write in progress is over, or at once.
   */
  finish(then: () => void): void {
    if (this.#closed || this.#then !== undefined) return;
    this.#queue.length = 0;
    // A large response still waiting at the gate has not put a byte on the wire; a small one
    // being written is grpc-js's, and grpc-js sends the status only after it.
    if (this.#stopLarge === undefined) {
      this.close();
      then();
      return;
    }
    this.#then = then;
  }

  #end(): void {
    const then = this.#then;
    this.close();
    then?.();
  }

  /** The stream is gone: drops everything, stops the large write, gives the gate place back. */
  close(): void {
    this.#closed = true;
    this.#then = undefined;
    this.#queue.length = 0;
    this.#stopLarge?.();
    this.#stopLarge = undefined;
    this.#place?.release();
    this.#place = undefined;
  }
}

// SPDX-License-Identifier: Apache-2.0
// Paced writes (src/controller/xds/paced-write.ts) against a recording stand-in for a Node
// HTTP/2 stream: the gRPC frame prefix, then slices of at most SLICE_BYTES that are views of the
// parts, one write outstanding at a time; `done` once, on completion, on a failed write, on a
// stream found ended, or on abort. And finding the HTTP/2 stream under a grpc-js server call.
import type { ServerHttp2Stream } from 'node:http2';
import t from 'tap';
import { SLICE_BYTES, http2StreamOf, writePaced } from '../../../../src/controller/xds/paced-write.ts';

class FakeStream {
  readonly writes: Uint8Array[] = [];
  outstanding = 0;
  maxOutstanding = 0;
  destroyed = false;
  writableEnded = false;
  failNext: Error | undefined;
  readonly session = {};
  respond(): void {}
  write(chunk: Uint8Array, cb: (err?: Error | null) => void): boolean {
    this.writes.push(chunk);
    this.outstanding++;
    this.maxOutstanding = Math.max(this.maxOutstanding, this.outstanding);
    const err = this.failNext;
    this.failNext = undefined;
    setImmediate(() => {
      this.outstanding--;
      cb(err);
    });
    return true;
  }
  get asStream(): ServerHttp2Stream {
    return this as unknown as ServerHttp2Stream;
  }
}

function run(stream: FakeStream, parts: Uint8Array[]): Promise<(Error | undefined)[]> {
  return new Promise((resolve) => {
    const results: (Error | undefined)[] = [];
    writePaced(stream.asStream, parts, (err) => {
      results.push(err);
      // Give a stray second call the chance to show up.
      setTimeout(() => resolve(results), 20);
    });
  });
}

t.test('frames the message and writes it in slices, one at a time, without copying', async (t) => {
  const body = Buffer.alloc(2 * SLICE_BYTES + 10, 7);
  const nonce = Buffer.from([0x2a, 1, 0x31]);
  const s = new FakeStream();
  t.same(await run(s, [body, nonce]), [undefined], 'done once, without error');
  const [prefix, ...slices] = s.writes;
  t.same([...(prefix ?? [])], [0, 0, 2, 0, 13], 'uncompressed, 4-byte big-endian length');
  t.same(
    slices.map((x) => x.byteLength),
    [SLICE_BYTES, SLICE_BYTES, 10, 3],
  );
  t.equal(slices[0]?.buffer, body.buffer, 'slices are views of the body');
  t.ok(Buffer.concat(slices).equals(Buffer.concat([body, nonce])));
  t.equal(s.maxOutstanding, 1, 'each slice after the previous one is flushed');
});

t.test('a failed write ends it with the error; nothing more is written', async (t) => {
  const s = new FakeStream();
  s.failNext = new Error('stream reset');
  const results = await run(s, [Buffer.alloc(3 * SLICE_BYTES)]);
  t.same(
    results.map((e) => e?.message),
    ['stream reset'],
  );
  t.equal(s.writes.length, 1);
});

t.test('a stream found ended is not written to', async (t) => {
  const s = new FakeStream();
  s.writableEnded = true;
  const results = await run(s, [Buffer.alloc(10)]);
  t.match(results[0]?.message, /ended before the response was written/);
  t.equal(s.writes.length, 0);
});

t.test('abort stops after the slice in flight and reports once', async (t) => {
  const s = new FakeStream();
  const results: (Error | undefined)[] = [];
  const abort = writePaced(s.asStream, [Buffer.alloc(3 * SLICE_BYTES)], (err) => results.push(err));
  abort();
  abort();
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.same(
    results.map((e) => e?.message),
    ['aborted'],
  );
  t.equal(s.writes.length, 1, 'only the prefix, written before the abort');
});

t.test('finds the HTTP/2 stream where grpc-js keeps it, and nothing else', async (t) => {
  const h2 = new FakeStream();
  t.equal(http2StreamOf({ call: { stream: h2 } }), h2);
  t.equal(http2StreamOf({ call: { nextCall: {} } }), undefined, 'an intercepted call');
  t.equal(http2StreamOf({ call: { stream: { write() {} } } }), undefined, 'not an HTTP/2 stream');
  t.equal(http2StreamOf({}), undefined);
});

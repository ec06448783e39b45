// SPDX-License-Identifier: Apache-2.0
// The benchmark backend, run as its own child process: a TCP echo server (request/response,
// connection-rate and memory metrics) and a bulk source that writes as fast as the peer reads
// until the peer goes away (single-stream throughput, measured at the receiving load generator).
//
// Usage: node bench/backend.ts [host]   → prints {"event":"ready","echo":port,"source":port}
import { createServer, type Server, type Socket } from 'node:net';
import { attachToParent, emit, fail } from './child.ts';

/** Bulk write size: ztunnel grows its copy buffers to 256 KiB for bulk flows (PERFORMANCE.md A.2). */
const SOURCE_CHUNK = Buffer.alloc(256 * 1024, 0x61);
/** Deep listen backlog: the connection-rate and memory metrics open connections in bursts. */
const BACKLOG = 4096;

function echo(socket: Socket): void {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk) => socket.write(chunk));
  socket.on('end', () => socket.end());
}

function source(socket: Socket): void {
  socket.setNoDelay(true);
  let open = true;
  const stop = (): void => {
    open = false;
    socket.destroy();
  };
  socket.on('error', stop);
  socket.on('close', stop);
  socket.on('end', stop);
  socket.resume(); // discard anything the peer sends
  const pump = (): void => {
    while (open) {
      if (!socket.write(SOURCE_CHUNK)) {
        socket.once('drain', pump);
        return;
      }
    }
  };
  pump();
}

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0, backlog: BACKLOG }, () => {
      const addr = server.address();
      if (addr === null || typeof addr === 'string') reject(new Error('no TCP address'));
      else resolve(addr.port);
    });
  });
}

async function main(): Promise<void> {
  const host = process.argv[2] ?? '127.0.0.1';
  attachToParent();
  const echoPort = await listen(createServer({ noDelay: true }, echo), host);
  const sourcePort = await listen(createServer({ noDelay: true }, source), host);
  emit({ event: 'ready', echo: echoPort, source: sourcePort });
}

main().catch(fail);

// SPDX-License-Identifier: Apache-2.0
// `mesh-app`: the small program local-mode pods run (a Pod's `command` in the manifests), and the
// client the demo and users run inside pods with `./mesh exec`. Plain TCP, nothing mesh-aware:
// whatever it observes (the peer address, refusals) is what an application would observe.
//
//   mesh-app serve <port>...        answer each connection with one line
//                                   `<pod> port=<p> peer=<client ip>`, then echo what it sends
//   mesh-app call <host> <port> [message] [--timeout ms]
//                                   connect, send the message, half-close, print the reply;
//                                   exit 1 and print `ERR <code>` when the connection fails
//   mesh-app sleep                  idle until killed (a client-only pod)
import net from 'node:net';

const podName = process.env.POD_NAME ?? 'unknown-pod';

function serve(ports: number[]): void {
  for (const port of ports) {
    const srv = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => undefined);
      const peer = s.remoteAddress?.replace(/^::ffff:/, '') ?? '?';
      s.write(`${podName} port=${port} peer=${peer}\n`);
      s.pipe(s);
    });
    srv.on('error', (e) => {
      console.error(`mesh-app: listening on ${port}: ${e.message}`);
      process.exit(2);
    });
    srv.listen(port, '0.0.0.0', () => console.log(`mesh-app: ${podName} serving on :${port}`));
  }
}

function call(host: string, port: number, message: string, timeoutMs: number): void {
  const s = net.connect({ host, port });
  let out = '';
  const timer = setTimeout(() => {
    process.stdout.write(`ERR TIMEOUT ${out}\n`);
    process.exit(1);
  }, timeoutMs);
  s.on('connect', () => s.end(message));
  s.on('data', (d: Buffer) => (out += d.toString('utf8')));
  s.on('end', () => {
    clearTimeout(timer);
    // A refused connection through the mesh shows up as a close without a greeting.
    if (out === '') {
      process.stdout.write('ERR CLOSED\n');
      process.exit(1);
    }
    process.stdout.write(out.endsWith('\n') ? out : `${out}\n`);
    process.exit(0);
  });
  s.on('error', (e: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    process.stdout.write(`ERR ${e.code ?? e.message}\n`);
    process.exit(1);
  });
}

function usage(): never {
  console.error('usage: mesh-app serve <port>... | call <host> <port> [message] [--timeout ms] | sleep');
  process.exit(2);
}

function port(s: string | undefined): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    console.error(`mesh-app: ${String(s)} is not a TCP port (1–65535)`);
    process.exit(2);
  }
  return n;
}

const [mode, ...rest] = process.argv.slice(2);
switch (mode ?? '') {
  case 'serve':
    if (rest.length === 0) usage();
    serve(rest.map(port));
    break;
  case 'call': {
    const t = rest.indexOf('--timeout');
    const timeoutMs = t === -1 ? 5000 : Number(rest[t + 1]);
    const args = t === -1 ? rest : rest.slice(0, t);
    const [host, p, message] = args;
    if (host === undefined) usage();
    call(host, port(p), message ?? 'hello\n', timeoutMs);
    break;
  }
  case 'sleep':
    setInterval(() => undefined, 1 << 30);
    break;
  default:
    usage();
}

// SPDX-License-Identifier: Apache-2.0
// The plugin's side of the plugin → agent protocol (./protocol.ts): one HTTP/1.1 POST over the
// agent's Unix socket with a JSON body, bounded by a deadline that covers connecting, sending and
// reading the whole answer. Not reaching the agent, or not hearing back in time, is a CNI
// "try again later" (code 11) naming the socket; interpreting the answer is the caller's job.
//
// The request is written and the answer read by hand over node:net, not with node:http: the
// plugin runs once per pod sandbox, and node:http costs it several milliseconds of start-up
// (its modules, and the IPv6 regular expression its agent compiles to check the Host header),
// out of ~60 ms. The agent (Node's HTTP server) answers with Content-Length and closes; this
// client reads exactly that much. The request is not half-closed: Node's HTTP server treats a
// client's FIN as the client giving up (../agent/plugin-events.ts aborts the handler).
import { CNI_CODES, CniPluginError } from './cni.ts';
import { MAX_EVENT_BYTES } from './protocol.ts';

const { connect } = process.getBuiltinModule('node:net');

export interface AgentAnswer {
  status: number;
  /** The answer's body as text (at most MAX_EVENT_BYTES). */
  body: string;
}

/** Sends `body` as JSON to `path` on the agent's socket and returns its answer. */
export type AgentPoster = (
  socketPath: string,
  path: string,
  body: unknown,
  timeoutMs: number,
) => Promise<AgentAnswer>;

function unreachable(socketPath: string, why: string): CniPluginError {
  return new CniPluginError(
    CNI_CODES.tryAgainLater,
    `cannot reach the ambient node agent at ${socketPath}: ${why}`,
    'the pod sandbox is not created, so the pod does not run outside the mesh; check that the node agent ' +
      'DaemonSet pod on this node is running and that cni_agent_run_dir in the CNI config is its run ' +
      'directory; the runtime retries',
  );
}

const CONNECT_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: 'the socket does not exist (ENOENT)',
  ECONNREFUSED: 'nothing is listening on the socket (ECONNREFUSED)',
  EACCES: 'permission denied (EACCES)',
};

function describeConnectError(e: NodeJS.ErrnoException): string {
  return (e.code !== undefined ? CONNECT_ERRORS[e.code] : undefined) ?? e.message;
}

/** Largest header block accepted in an answer. */
const MAX_HEADER_BYTES = 16 * 1024;

type Parsed = { done: false } | { done: true; answer: AgentAnswer } | { done: true; error: string };

/**
 * The body of a chunked answer if it is complete (RFC 9112 §7.1; no trailers expected, any
 * ignored), or an error; undefined while more is to come.
 */
function dechunk(buf: Buffer): Buffer | string | undefined {
  const parts: Buffer[] = [];
  let size = 0;
  let at = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', at);
    if (eol === -1) return undefined;
    const m = /^([0-9a-fA-F]{1,8})(?:;.*)?$/.exec(buf.subarray(at, eol).toString('latin1'));
    if (m?.[1] === undefined) return 'its chunked answer is malformed';
    const n = Number.parseInt(m[1], 16);
    // The last chunk: done at the empty line that ends the (normally absent) trailers.
    if (n === 0) return buf.indexOf('\r\n\r\n', eol) === -1 ? undefined : Buffer.concat(parts, size);
    size += n;
    if (size > MAX_EVENT_BYTES) return `its answer is larger than ${MAX_EVENT_BYTES} bytes`;
    if (buf.length < eol + 2 + n + 2) return undefined;
    if (buf[eol + 2 + n] !== 0x0d || buf[eol + 2 + n + 1] !== 0x0a) return 'its chunked answer is malformed';
    parts.push(buf.subarray(eol + 2, eol + 2 + n));
    at = eol + 2 + n + 2;
  }
}

/**
 * The answer in `buf` if it is complete (status line, headers, then a Content-Length or chunked
 * body); `ended`: the agent closed the connection, so a body of neither kind ends here.
 */
function parseAnswer(buf: Buffer, ended: boolean): Parsed {
  const incomplete: Parsed = ended
    ? { done: true, error: 'the connection closed before the answer was complete' }
    : { done: false };
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd === -1) {
    return buf.length > MAX_HEADER_BYTES
      ? { done: true, error: 'its answer has oversized headers' }
      : incomplete;
  }
  const lines = buf.subarray(0, headEnd).toString('latin1').split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0] ?? '');
  if (status?.[1] === undefined) {
    return { done: true, error: `its answer is not HTTP/1.1: ${JSON.stringify(lines[0]?.slice(0, 60))}` };
  }
  if (status[1].startsWith('1')) {
    // An interim answer (100 Continue and the like): the final one follows it.
    return parseAnswer(buf.subarray(headEnd + 4), ended);
  }
  let length: number | undefined;
  let chunked = false;
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'content-length') {
      if (!/^\d{1,9}$/.test(value)) {
        return { done: true, error: `its answer has Content-Length ${JSON.stringify(value)}` };
      }
      length = Number(value);
    } else if (name === 'transfer-encoding') {
      if (value.toLowerCase() !== 'chunked') {
        return {
          done: true,
          error: `its answer uses Transfer-Encoding ${value}, which the plugin does not read`,
        };
      }
      chunked = true;
    }
  }
  const rest = buf.subarray(headEnd + 4);
  let body: Buffer;
  if (chunked) {
    const r = dechunk(rest);
    if (r === undefined) return incomplete;
    if (typeof r === 'string') return { done: true, error: r };
    body = r;
  } else {
    if (length === undefined) {
      if (!ended) return { done: false };
      length = rest.length;
    }
    if (length > MAX_EVENT_BYTES)
      return { done: true, error: `its answer is larger than ${MAX_EVENT_BYTES} bytes` };
    if (rest.length < length) return incomplete;
    body = rest.subarray(0, length);
  }
  return { done: true, answer: { status: Number(status[1]), body: body.toString('utf8') } };
}

export const postToAgent: AgentPoster = (socketPath, path, body, timeoutMs) =>
  new Promise<AgentAnswer>((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body));
    const head = Buffer.from(
      `POST ${path} HTTP/1.1\r\nhost: unix\r\ncontent-type: application/json\r\n` +
        `content-length: ${payload.length}\r\nconnection: close\r\n\r\n`,
      'latin1',
    );
    let settled = false;
    const finish = (err: CniPluginError | undefined, answer?: AgentAnswer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err !== undefined) reject(err);
      else if (answer !== undefined) resolve(answer);
    };
    const timer = setTimeout(() => {
      finish(unreachable(socketPath, `no answer to POST ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    const chunks: Buffer[] = [];
    let size = 0;
    const check = (ended: boolean): void => {
      const r = parseAnswer(Buffer.concat(chunks, size), ended);
      if (!r.done) return;
      if ('answer' in r) finish(undefined, r.answer);
      else if (r.error.startsWith('the connection closed')) {
        finish(unreachable(socketPath, `${r.error} (POST ${path})`));
      } else {
        finish(
          new CniPluginError(
            CNI_CODES.agentBadReply,
            `the node agent at ${socketPath} answered POST ${path}: ${r.error}`,
          ),
        );
      }
    };
    const socket = connect({ path: socketPath });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      finish(unreachable(socketPath, describeConnectError(e)));
    });
    socket.on('connect', () => {
      socket.write(Buffer.concat([head, payload]));
    });
    socket.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_EVENT_BYTES + MAX_HEADER_BYTES) {
        finish(
          new CniPluginError(
            CNI_CODES.agentBadReply,
            `the node agent at ${socketPath} answered POST ${path} with more than ${MAX_EVENT_BYTES} bytes`,
          ),
        );
        return;
      }
      chunks.push(chunk);
      check(false);
    });
    socket.on('end', () => check(true));
    socket.on('close', () => {
      finish(unreachable(socketPath, `the connection closed before the answer to POST ${path} was complete`));
    });
  });

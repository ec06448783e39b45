// SPDX-License-Identifier: Apache-2.0
// The plugin's side of the plugin → agent protocol (./protocol.ts): one HTTP/1.1 POST over the
// agent's Unix socket with a JSON body, bounded by a deadline that covers connecting, sending and
// reading the whole answer. Not reaching the agent, or not hearing back in time, is a CNI
// "try again later" (code 11) naming the socket; interpreting the answer is the caller's job.
//
// node:http is loaded with process.getBuiltinModule: the plugin bundle has no module loader but
// Node's own (scripts/build-cni-plugin.ts).
import { CNI_CODES, CniPluginError } from './cni.ts';
import { MAX_EVENT_BYTES } from './protocol.ts';

const { request } = process.getBuiltinModule('node:http');

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

export const postToAgent: AgentPoster = (socketPath, path, body, timeoutMs) =>
  new Promise<AgentAnswer>((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body));
    let settled = false;
    const finish = (err: CniPluginError | undefined, answer?: AgentAnswer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err !== undefined) {
        req.destroy();
        reject(err);
      } else if (answer !== undefined) resolve(answer);
    };
    const req = request({
      socketPath,
      path,
      method: 'POST',
      // agent: false: one connection, closed after the answer; nothing keeps the plugin alive.
      agent: false,
      headers: {
        host: 'unix',
        'content-type': 'application/json',
        'content-length': payload.length,
        connection: 'close',
      },
    });
    const timer = setTimeout(() => {
      finish(unreachable(socketPath, `no answer to POST ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) => {
      finish(unreachable(socketPath, describeConnectError(e)));
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_EVENT_BYTES) {
          finish(
            new CniPluginError(
              CNI_CODES.agentBadReply,
              `the node agent at ${socketPath} answered POST ${path} with more than ${MAX_EVENT_BYTES} bytes`,
            ),
          );
          return;
        }
        chunks.push(chunk);
      });
      res.on('error', (e) => {
        finish(unreachable(socketPath, `answer to POST ${path} broke off: ${e.message}`));
      });
      res.on('end', () => {
        finish(undefined, { status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
      });
      // After 'end' this is a no-op; before it, the agent hung up in the middle of its answer.
      res.on('close', () => {
        finish(
          unreachable(socketPath, `the connection closed before the answer to POST ${path} was complete`),
        );
      });
    });
    req.end(payload);
  });

// SPDX-License-Identifier: Apache-2.0
// "Redirection live" as an application sees it: connections from inside a new pod's network
// namespace to a server pod, one after another, until one is answered. The socket is made inside
// the pod's netns by the native addon (src/local/netns-net.ts) from this process, so polling
// costs no process start per attempt. The server is `mesh-app serve` (src/local/app.ts): it
// greets each connection with `<pod> port=<port> peer=<client ip>`; an attempt counts only when
// that line names the expected server and this pod's own address as the peer.
//
// What makes an answer a proof of capture is the server's side, set up by the scenario: the
// enrolled pods' server is itself enrolled with a STRICT PeerAuthentication, so a plaintext
// connection (one the new pod's ztunnel did not carry) is captured on the server pod's inbound
// path and reset; only a connection that arrived over HBONE is answered. Until the new pod is
// live, attempts fail fast (no route, reset, closed without a greeting) or are held by ztunnel
// (while the pod's certificate is fetched, or, for a destination WDS does not know, while it
// waits for the pod's own workload: ARCHITECTURE.md decision 6); a held attempt is answered the
// moment the pod is live, which is what polling tightly wants.
import { connectInNetns } from '../../src/local/netns-net.ts';
import { MeshError, errorMessage } from '../../src/shared/errors.ts';

/** Longer than ztunnel's 5 s wait for a pod's own workload, so a held attempt ends by itself. */
const ATTEMPT_TIMEOUT_MS = 6_000;
/** Pause after a failed attempt. */
const RETRY_MS = 2;

export class ProbeError extends MeshError {
  constructor(message: string) {
    super('BENCH_ERR_PROBE', message);
  }
}

export interface ProbeTarget {
  /** The server pod's name, as its greeting starts. */
  readonly server: string;
  readonly host: string;
  readonly port: number;
}

export interface ProbeResult {
  /** performance.now() when the greeting arrived. */
  readonly answeredMs: number;
  /** Attempts that failed before the answered one, by outcome (`ECONNRESET`, `closed`, ...). */
  readonly failures: ReadonlyMap<string, number>;
}

type Attempt = { readonly ok: true; readonly atMs: number } | { readonly ok: false; readonly why: string };

function attempt(netnsPath: string, target: ProbeTarget, podIp: string): Promise<Attempt> {
  const expected = `${target.server} port=${target.port} peer=${podIp}`;
  return new Promise((resolve) => {
    let socket: ReturnType<typeof connectInNetns>;
    try {
      socket = connectInNetns(netnsPath, target.host, target.port);
    } catch (err) {
      resolve({ ok: false, why: `socket: ${errorMessage(err)}` });
      return;
    }
    let received = '';
    const done = (a: Attempt): void => {
      socket.destroy();
      resolve(a);
    };
    socket.setTimeout(ATTEMPT_TIMEOUT_MS, () => done({ ok: false, why: 'timeout' }));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      received += chunk;
      const nl = received.indexOf('\n');
      if (nl === -1) return;
      const line = received.slice(0, nl);
      done(
        line === expected
          ? { ok: true, atMs: performance.now() }
          : { ok: false, why: `unexpected greeting ${JSON.stringify(line)}` },
      );
    });
    socket.on('error', (err: NodeJS.ErrnoException) => done({ ok: false, why: err.code ?? err.message }));
    socket.on('close', () => done({ ok: false, why: 'closed without a greeting' }));
  });
}

/**
 * Connects from `netnsPath` to `target` until the server answers this pod (`podIp`), or throws
 * after `deadlineMs` with the outcomes seen. An answer with a wrong greeting (another server, a
 * rewritten source address) is an error at once: retrying would not make it right.
 */
export async function firstAnswer(
  netnsPath: string,
  podIp: string,
  target: ProbeTarget,
  deadlineMs: number,
): Promise<ProbeResult> {
  const failures = new Map<string, number>();
  const give = performance.now() + deadlineMs;
  for (;;) {
    const a = await attempt(netnsPath, target, podIp);
    if (a.ok) return { answeredMs: a.atMs, failures };
    if (a.why.startsWith('unexpected greeting')) {
      throw new ProbeError(`${target.host}:${target.port} answered pod ${podIp} with an ${a.why}`);
    }
    failures.set(a.why, (failures.get(a.why) ?? 0) + 1);
    if (performance.now() > give) {
      const seen = [...failures].map(([why, n]) => `${why} ×${n}`).join(', ');
      throw new ProbeError(
        `no answer from ${target.server} (${target.host}:${target.port}) to pod ${podIp} within ${deadlineMs} ms; attempts: ${seen}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

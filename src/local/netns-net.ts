// SPDX-License-Identifier: Apache-2.0
// Reaching into a network namespace from the test process without entering it: a TCP socket
// created inside the netns by the native addon (create–configure–restore in one call), wrapped
// in a net.Socket. Used to query ztunnel's admin/metrics/readiness ports inside a node netns and
// to play a raw client from inside a pod netns.
import http from 'node:http';
import net from 'node:net';
import { closeFd, openNetns, socketForConnect } from '../shared/native/index.ts';

/** A TCP connection made from inside the netns at `netnsPath`; `mark` bypasses in-pod capture. */
export function connectInNetns(
  netnsPath: string,
  host: string,
  port: number,
  opts: { mark?: number } = {},
): net.Socket {
  const nsFd = openNetns(netnsPath);
  let fd: number;
  try {
    fd = socketForConnect({
      netnsFd: nsFd,
      family: net.isIPv6(host) ? 6 : 4,
      ...(opts.mark !== undefined && { mark: opts.mark }),
    });
  } finally {
    closeFd(nsFd);
  }
  const s = new net.Socket({ fd, allowHalfOpen: true });
  s.connect({ host, port });
  return s;
}

/** One HTTP GET inside a netns; resolves with status and body (rejects on connection errors). */
export function httpGetInNetns(
  netnsPath: string,
  port: number,
  path: string,
  opts: { host?: string; timeoutMs?: number } = {},
): Promise<{ status: number; body: string }> {
  const host = opts.host ?? '127.0.0.1';
  return new Promise((resolve, reject) => {
    const req = http.request(
      { method: 'GET', path, host, port, createConnection: () => connectInNetns(netnsPath, host, port) },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.setTimeout(opts.timeoutMs ?? 3000, () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

// SPDX-License-Identifier: Apache-2.0
// The node agent's endpoint for the CNI plugin (spec ambient-protocols.md §2.1 step 2; wire format
// in ../plugin/protocol.ts): HTTP/1.1 on the Unix socket `<runDir>/pluginevent.sock`.
//
//   POST /cmdadd    PluginAddEvent   → handlers.add   → 200 {"enrolled", "reason"?}
//   POST /cmdcheck  PluginCheckEvent → handlers.check → 200 {"ok", "reason"?}
//   POST /cmddel    PluginDelEvent   → handlers.del   → 200 {}
//
// Bodies are JSON of at most MAX_EVENT_BYTES and validated strictly (unknown fields, bad names,
// addresses or paths): a bad one is answered 400 with every problem listed. A handler that throws
// is answered 500 with its message, which the plugin puts in the CNI error that fails ADD; one
// that throws AgentNotReadyError is answered 503, which the plugin reports as "try again later".
// A path without a handler is 404. Each handler gets an AbortSignal that fires if the plugin hangs
// up first (it gave up after its 5 s timeout, and the runtime will retry with a new call).
//
// Only root may talk to the agent: the socket is created under a temporary name, made 0600 and
// then renamed into place, so it is never reachable with wider permissions; a run directory we
// create is 0700, and one that is group/other-writable or owned by someone else is refused. A
// stale socket from a previous agent is replaced; a live one (another agent answering) is not.
import type http from 'node:http';
import { MeshError } from '../../../src/shared/errors.ts';
import type { Logger } from '../../../src/shared/telemetry/logger.ts';
import {
  isAbsolutePath,
  isCidr,
  isContainerId,
  isIfName,
  isIpAddress,
  isNamespaceName,
  isPodName,
  isPodUid,
} from '../plugin/fields.ts';
import { MAX_EVENT_BYTES, PLUGIN_EVENT_PATHS, PLUGIN_EVENT_SOCKET_NAME } from '../plugin/protocol.ts';
import type {
  AddReply,
  CheckReply,
  PluginAddEvent,
  PluginCheckEvent,
  PluginDelEvent,
  PodIp,
} from '../plugin/protocol.ts';

export type {
  AddReply,
  CheckReply,
  PluginAddEvent,
  PluginCheckEvent,
  PluginDelEvent,
  PodIp,
} from '../plugin/protocol.ts';
export { DEFAULT_CNI_AGENT_RUN_DIR, PLUGIN_EVENT_SOCKET_NAME } from '../plugin/protocol.ts';

// Loaded through getBuiltinModule for the same reason as ztunnel's servers: an ES import of
// node:http also initialises undici, which the agent does not use for this.
const { createServer } = process.getBuiltinModule('node:http');
const { connect } = process.getBuiltinModule('node:net');
const fs = process.getBuiltinModule('node:fs');
const path = process.getBuiltinModule('node:path');

/** Most addresses one pod sandbox can have in an event. */
const MAX_IPS = 64;

export type PluginEventErrorCode = 'CNI_ERR_PLUGIN_EVENT_INVALID' | 'CNI_ERR_PLUGIN_SOCKET';

/** A malformed event body (→ 400), or the socket cannot be set up. */
export class PluginEventError extends MeshError {
  declare readonly code: PluginEventErrorCode;

  // Not useless: it narrows `code` to this catalogue.
  // eslint-disable-next-line @typescript-eslint/no-useless-constructor
  constructor(code: PluginEventErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Thrown by a handler that cannot decide yet (its pod cache is not synced): answered 503. */
export class AgentNotReadyError extends MeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CNI_ERR_AGENT_NOT_READY', message, options);
  }
}

export interface HandlerContext {
  /** Aborted when the plugin disconnects before the answer (it timed out). */
  signal: AbortSignal;
}

export interface PluginEventHandlers {
  /** Decide eligibility and enrol. `enrolled: false` lets a pod outside the mesh start. */
  add(event: PluginAddEvent, ctx: HandlerContext): Promise<AddReply>;
  /** Is the pod's redirection as expected? Without it, CHECK fails (404). */
  check?(event: PluginCheckEvent, ctx: HandlerContext): Promise<CheckReply>;
  /** A sandbox went away (best effort: the pod watch is the source of truth). */
  del?(event: PluginDelEvent, ctx: HandlerContext): Promise<void>;
}

export interface PluginEventServerOptions {
  /** The directory of the socket: the plugin config's `cni_agent_run_dir`. */
  runDir: string;
  handlers: PluginEventHandlers;
  logger: Logger;
  /** Request body limit in bytes (default MAX_EVENT_BYTES). */
  maxBodyBytes?: number;
}

export interface PluginEventServer {
  readonly socketPath: string;
  /** Stops accepting, waits for calls in progress, removes the socket. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Validation

type Problems = string[];

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = JSON.stringify(v) as string | undefined;
  if (s === undefined) return String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function unknownKeys(
  obj: Record<string, unknown>,
  known: readonly string[],
  where: string,
  out: Problems,
): void {
  for (const k of Object.keys(obj)) if (!known.includes(k)) out.push(`${where}${k}: unknown field`);
}

function str(
  obj: Record<string, unknown>,
  key: string,
  valid: (v: string) => boolean,
  expected: string,
  out: Problems,
  where = '',
): string {
  const v = obj[key];
  if (typeof v !== 'string' || !valid(v)) {
    out.push(`${where}${key}: expected ${expected}, got ${v === undefined ? 'nothing' : show(v)}`);
    return '';
  }
  return v;
}

function optStr(
  obj: Record<string, unknown>,
  key: string,
  valid: (v: string) => boolean,
  expected: string,
  out: Problems,
  where = '',
): string | undefined {
  return obj[key] === undefined ? undefined : str(obj, key, valid, expected, out, where);
}

const POD_REF_KEYS = ['podName', 'podNamespace', 'podUid', 'containerId', 'ifName'] as const;

function podRef(body: Record<string, unknown>, out: Problems) {
  const podUid = optStr(body, 'podUid', isPodUid, 'a pod UID', out);
  return {
    podName: str(body, 'podName', isPodName, 'a pod name (RFC 1123 subdomain)', out),
    podNamespace: str(body, 'podNamespace', isNamespaceName, 'a namespace name (RFC 1123 label)', out),
    ...(podUid !== undefined && { podUid }),
    containerId: str(body, 'containerId', isContainerId, 'a CNI container id', out),
    ifName: str(body, 'ifName', isIfName, 'an interface name', out),
  };
}

function podIps(v: unknown, out: Problems): PodIp[] {
  if (!Array.isArray(v)) {
    out.push(`ips: expected a list, got ${v === undefined ? 'nothing' : show(v)}`);
    return [];
  }
  if (v.length > MAX_IPS) out.push(`ips: at most ${MAX_IPS} addresses, got ${v.length}`);
  return v.slice(0, MAX_IPS).map((entry: unknown, i): PodIp => {
    const where = `ips[${i}].`;
    if (!isRecord(entry)) {
      out.push(`ips[${i}]: expected an object, got ${show(entry)}`);
      return { address: '' };
    }
    unknownKeys(entry, ['address', 'gateway', 'interface'], where, out);
    const ip: PodIp = { address: str(entry, 'address', isCidr, 'an address with prefix length', out, where) };
    const gateway = optStr(entry, 'gateway', isIpAddress, 'an IP address', out, where);
    if (gateway !== undefined) ip.gateway = gateway;
    const iface = entry.interface;
    if (iface !== undefined) {
      if (typeof iface !== 'number' || !Number.isSafeInteger(iface) || iface < 0) {
        out.push(`${where}interface: expected a non-negative integer, got ${show(iface)}`);
      } else ip.interface = iface;
    }
    return ip;
  });
}

function invalid(path: string, problems: Problems): PluginEventError {
  return new PluginEventError('CNI_ERR_PLUGIN_EVENT_INVALID', `invalid ${path} body: ${problems.join('; ')}`);
}

function requireObject(body: unknown, path: string): Record<string, unknown> {
  if (!isRecord(body)) throw invalid(path, [`expected a JSON object, got ${show(body)}`]);
  return body;
}

/** The body of /cmdadd (and /cmdcheck), or PluginEventError listing every problem. */
export function parseAddEvent(body: unknown, path: string = PLUGIN_EVENT_PATHS.add): PluginAddEvent {
  const obj = requireObject(body, path);
  const out: Problems = [];
  unknownKeys(obj, [...POD_REF_KEYS, 'netns', 'ips'], '', out);
  const event: PluginAddEvent = {
    ...podRef(obj, out),
    netns: str(obj, 'netns', isAbsolutePath, 'an absolute path to the pod network namespace', out),
    ips: podIps(obj.ips, out),
  };
  if (out.length > 0) throw invalid(path, out);
  return event;
}

/** The body of /cmddel, or PluginEventError listing every problem. */
export function parseDelEvent(body: unknown): PluginDelEvent {
  const obj = requireObject(body, PLUGIN_EVENT_PATHS.del);
  const out: Problems = [];
  unknownKeys(obj, [...POD_REF_KEYS, 'netns'], '', out);
  const netns = optStr(obj, 'netns', isAbsolutePath, 'an absolute path', out);
  const event: PluginDelEvent = { ...podRef(obj, out), ...(netns !== undefined && { netns }) };
  if (out.length > 0) throw invalid(PLUGIN_EVENT_PATHS.del, out);
  return event;
}

// ---------------------------------------------------------------------------------------------
// HTTP

class HttpFailure extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > limit) {
      reject(new HttpFailure(413, `body of ${declared} bytes exceeds the limit of ${limit} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        // Stop keeping it, let the rest drain so the 413 can still be sent.
        req.off('data', onData);
        req.resume();
        reject(new HttpFailure(413, `body exceeds the limit of ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => {
      resolve(Buffer.concat(chunks));
    });
    req.on('error', reject);
  });
}

type Route = (body: unknown, ctx: HandlerContext) => Promise<unknown>;

function routes(handlers: PluginEventHandlers): Map<string, Route> {
  const r = new Map<string, Route>();
  r.set(PLUGIN_EVENT_PATHS.add, (body, ctx) => handlers.add(parseAddEvent(body), ctx));
  const check = handlers.check?.bind(handlers);
  const del = handlers.del?.bind(handlers);
  if (check !== undefined) {
    r.set(PLUGIN_EVENT_PATHS.check, (body, ctx) => check(parseAddEvent(body, PLUGIN_EVENT_PATHS.check), ctx));
  }
  if (del !== undefined) {
    r.set(PLUGIN_EVENT_PATHS.del, async (body, ctx) => {
      await del(parseDelEvent(body), ctx);
      return {};
    });
  }
  return r;
}

function send(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  extra: Record<string, string> = {},
): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...extra,
  });
  res.end(text);
}

async function serve(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  table: Map<string, Route>,
  maxBody: number,
  log: Logger,
): Promise<void> {
  const path = (req.url ?? '').split('?')[0] ?? '';
  const route = table.get(path);
  if (route === undefined) {
    send(res, 404, { error: `no handler for ${path} (this agent serves ${[...table.keys()].join(', ')})` });
    return;
  }
  if (req.method !== 'POST') {
    send(res, 405, { error: `${path} takes POST, not ${req.method ?? '?'}` }, { allow: 'POST' });
    return;
  }
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    send(res, 415, { error: `${path} takes application/json, not ${show(type)}` });
    return;
  }
  const ac = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) ac.abort(new Error('the CNI plugin disconnected before the answer'));
  });
  try {
    const raw = await readBody(req, maxBody);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (e) {
      throw new HttpFailure(400, `${path} body is not JSON: ${(e as Error).message}`);
    }
    const reply = await route(body, { signal: ac.signal });
    send(res, 200, reply);
  } catch (err) {
    const [status, message] =
      err instanceof HttpFailure
        ? [err.status, err.message]
        : err instanceof PluginEventError
          ? [400, err.message]
          : err instanceof AgentNotReadyError
            ? [503, err.message]
            : [500, err instanceof Error ? err.message : String(err)];
    (status >= 500 ? log.error : log.warn)({ path, status, err }, `plugin event refused: ${message}`);
    send(res, status, { error: message });
  }
}

// ---------------------------------------------------------------------------------------------
// Socket

/** Creates the run directory (0700) or checks that an existing one is safe to put the socket in. */
function prepareRunDir(runDir: string): void {
  if (!isAbsolutePath(runDir)) {
    throw new PluginEventError(
      'CNI_ERR_PLUGIN_SOCKET',
      `run directory ${show(runDir)} must be an absolute path`,
    );
  }
  fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(runDir);
  if (!st.isDirectory()) {
    throw new PluginEventError(
      'CNI_ERR_PLUGIN_SOCKET',
      `run directory ${runDir} is not a directory (or is a symlink)`,
    );
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new PluginEventError(
      'CNI_ERR_PLUGIN_SOCKET',
      `run directory ${runDir} belongs to uid ${st.uid}, not to the agent (uid ${uid}): whoever owns it could ` +
        'replace the plugin event socket',
    );
  }
  if ((st.mode & 0o022) !== 0) {
    throw new PluginEventError(
      'CNI_ERR_PLUGIN_SOCKET',
      `run directory ${runDir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}): others ` +
        `could replace the plugin event socket; use a dedicated directory (chmod 0700 ${runDir})`,
    );
  }
}

/** Does something answer on this socket? */
function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const timer = setTimeout(() => {
      s.destroy();
      resolve(true); // accepted but silent is still somebody's socket
    }, 1_000);
    s.on('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(true);
    });
    s.on('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

/** Removes a socket left by an agent that is gone; refuses anything else at the path. */
async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) {
    throw new PluginEventError(
      'CNI_ERR_PLUGIN_SOCKET',
      `${path} exists and is not a socket; refusing to replace it (remove it if it is left over)`,
    );
  }
  if (await isLive(path)) {
    throw new PluginEventError(
      'CNI_ERR_PLUGIN_SOCKET',
      `another process is serving ${path} (a second node agent on this node?); stop it first`,
    );
  }
  fs.unlinkSync(path);
}

function listen(server: http.Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => {
      reject(
        new PluginEventError('CNI_ERR_PLUGIN_SOCKET', `cannot listen on ${path}: ${e.message}`, { cause: e }),
      );
    };
    server.once('error', onError);
    server.listen(path, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Starts serving plugin events on `<runDir>/pluginevent.sock`. */
export async function startPluginEventServer(opts: PluginEventServerOptions): Promise<PluginEventServer> {
  const log = opts.logger.child({ scope: 'plugin-events' });
  prepareRunDir(opts.runDir);
  const socketPath = path.join(opts.runDir, PLUGIN_EVENT_SOCKET_NAME);
  await clearStaleSocket(socketPath);
  const table = routes(opts.handlers);
  const maxBody = opts.maxBodyBytes ?? MAX_EVENT_BYTES;
  const server = createServer(
    { maxHeaderSize: 8192, headersTimeout: 5_000, requestTimeout: 10_000, keepAliveTimeout: 1_000 },
    (req, res) => {
      serve(req, res, table, maxBody, log).catch((err: unknown) => {
        log.error({ err }, 'plugin event handling failed');
        res.destroy();
      });
    },
  );
  // Bind under a temporary name, restrict, then rename: the socket is never reachable at the
  // well-known path with the process umask's permissions.
  const tmpPath = path.join(opts.runDir, `.${PLUGIN_EVENT_SOCKET_NAME}.${process.pid}`);
  fs.rmSync(tmpPath, { force: true });
  await listen(server, tmpPath);
  let ino: number;
  try {
    fs.chmodSync(tmpPath, 0o600);
    fs.renameSync(tmpPath, socketPath);
    ino = fs.lstatSync(socketPath).ino;
  } catch (e) {
    server.close();
    fs.rmSync(tmpPath, { force: true });
    throw new PluginEventError(
      'CNI_ERR_PLUGIN_SOCKET',
      `cannot publish ${socketPath}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  log.info({ socket: socketPath }, 'serving CNI plugin events');

  let closing: Promise<void> | undefined;
  return {
    socketPath,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => {
          // Only our own socket: a successor may already have replaced it.
          try {
            if (fs.lstatSync(socketPath).ino === ino) fs.unlinkSync(socketPath);
          } catch {
            // already gone
          }
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}

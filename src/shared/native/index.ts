// SPDX-License-Identifier: Apache-2.0
// Typed wrapper around the mesh_native Node-API addon (mesh_native.c, built by
// scripts/build-native.sh into build/native/mesh_native.node): network namespaces, SO_MARK,
// IP_TRANSPARENT/IP_FREEBIND before bind/connect, SO_ORIGINAL_DST (DESIGN.md decision 4), and the
// ZDS transport (spec 2.6): Unix SOCK_SEQPACKET sockets with SCM_RIGHTS, SO_PEERCRED, the
// NS_GET_NSTYPE check, and event-loop readiness of those fds (pollStart).
//
// The addon is loaded lazily on first use, so importing this module never throws on a machine
// without it; the first call throws MeshError NATIVE_ERR_UNSUPPORTED (not Linux) or
// NATIVE_ERR_NOT_BUILT (the .node file is missing). System-call failures are thrown as
// NativeError (a MeshError) whose `code` is the errno name ('EPERM', 'ENOENT', ...), with the
// failing `syscall` and a hint for the operator; bad arguments are TypeErrors.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type net from 'node:net';

import { MeshError } from '../errors.ts';

export interface ListenTcpOptions {
  /** Create the socket inside this network namespace (fd from openNetns). Default: current. */
  netnsFd?: number;
  /** Numeric IP literal; '0.0.0.0' or '::' for the wildcard. */
  host: string;
  /** 0 lets the kernel choose. */
  port: number;
  /** Default: inferred from `host`. */
  family?: 4 | 6;
  /** IP_TRANSPARENT / IPV6_TRANSPARENT (needs CAP_NET_ADMIN). */
  transparent?: boolean;
  /** IP_FREEBIND / IPV6_FREEBIND: bind an address not (yet) configured. */
  freebind?: boolean;
  /** SO_MARK, unsigned 32-bit (needs CAP_NET_ADMIN or CAP_NET_RAW). */
  mark?: number;
  /** SO_REUSEPORT: several listeners on one port (ztunnel handoff, spec 2.6). Default false. */
  reusePort?: boolean;
  /** SO_REUSEADDR. Default true, as libuv does for every TCP bind. */
  reuseAddr?: boolean;
  /** listen(2) backlog. Default 511, Node's own default. */
  backlog?: number;
  /** IPV6_V6ONLY for IPv6 sockets. Default false (dual-stack on '::'). */
  v6only?: boolean;
}

export interface SocketForConnectOptions {
  netnsFd?: number;
  family: 4 | 6;
  mark?: number;
  transparent?: boolean;
  freebind?: boolean;
  /** Source address to bind before connect; with `transparent` it may be a foreign address. */
  bindHost?: string;
  bindPort?: number;
}

export interface OriginalDst {
  address: string;
  port: number;
  family: 4 | 6;
}

/** The credentials of a Unix socket's peer (SO_PEERCRED), as of its connect() or listen(). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** A connection taken from a listening SOCK_SEQPACKET socket, with its peer's credentials. */
export interface AcceptedSeqpacket extends PeerCredentials {
  fd: number;
}

/** One received datagram and the descriptors it carried (now owned by the caller). */
export interface ReceivedDatagram {
  data: Buffer;
  fds: number[];
  /** The peer closed the connection (a read of 0 bytes with no descriptors). */
  eof: boolean;
}

/** The namespace kinds ioctl(NS_GET_NSTYPE) reports. */
export type NamespaceKind = 'net' | 'mnt' | 'pid' | 'user' | 'uts' | 'ipc' | 'cgroup' | 'unknown';

/** Opaque handle of a libuv poll watcher (pollStart). */
export interface PollWatcher {
  readonly __brand: 'PollWatcher';
}

/** Poll event bits: the fd is readable (or at EOF / in error). */
export const POLL_READABLE = 1;
/** Poll event bits: the fd is writable. */
export const POLL_WRITABLE = 2;

/** Called on the event loop when a watched fd is ready; `err` when polling itself failed. */
export type PollCallback = (err: Error | null, events: number) => void;

/** The addon's exports, as implemented in mesh_native.c. */
export interface NativeAddon {
  openNetns(path: string): number;
  currentNetns(): number;
  closeFd(fd: number): void;
  dupFd(fd: number): number;
  netnsInode(fd: number): number;
  socketNetnsInode(fd: number): number;
  listenTcp(opts: ListenTcpOptions): number;
  socketForConnect(opts: SocketForConnectOptions): number;
  originalDst(fd: number): OriginalDst;
  setMark(fd: number, mark: number): void;
  getMark(fd: number): number;
  setTransparent(fd: number, on: boolean): void;
  namespaceType(fd: number): NamespaceKind | null;
  writeNetSysctl(netnsFd: number, key: string, value: string): void;
  seqpacketListen(path: string, mode: number, backlog: number): number;
  seqpacketConnect(path: string): number;
  seqpacketAccept(fd: number): AcceptedSeqpacket | null;
  seqpacketSend(fd: number, data: Uint8Array, passFd: number): boolean;
  seqpacketRecv(fd: number, maxBytes: number, maxFds: number): ReceivedDatagram | null;
  peerCredentials(fd: number): PeerCredentials;
  pollStart(fd: number, events: number, callback: PollCallback): PollWatcher;
  pollUpdate(watcher: PollWatcher, events: number): void;
  pollClose(watcher: PollWatcher): void;
}

/** A failed system call inside the addon. `code` is the errno name, as in Node's own errors. */
export class NativeError extends MeshError {
  readonly syscall: string;
  readonly errno: number;

  constructor(code: string, syscall: string, errno: number, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.syscall = syscall;
    this.errno = errno;
  }
}

/** Finds the repository root (nearest ancestor with package.json) from this file's directory,
 * so the path holds both for src/shared/native and for a compiled dist/src/shared/native. */
function repoRoot(): string {
  let dir = import.meta.dirname;
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return join(import.meta.dirname, '..', '..', '..');
    dir = parent;
  }
}

/** Where the addon is expected: build/native/mesh_native.node under the repository root. */
export function nativeAddonPath(): string {
  return join(repoRoot(), 'build', 'native', 'mesh_native.node');
}

/**
 * Loads the addon from `file`. Exported for tests of the error paths; everything else goes
 * through the lazily loaded default.
 */
export function loadNativeAddon(
  file: string = nativeAddonPath(),
  platform: string = process.platform,
): NativeAddon {
  if (platform !== 'linux') {
    throw new MeshError(
      'NATIVE_ERR_UNSUPPORTED',
      `native socket operations (setns, SO_MARK, IP_TRANSPARENT, SO_ORIGINAL_DST) need Linux; this is ${platform}. ` +
        'Use DefaultSocketFactory (plain sockets) on this platform.',
    );
  }
  if (!existsSync(file)) {
    throw new MeshError(
      'NATIVE_ERR_NOT_BUILT',
      `native addon not built: run npm run build:native (expected ${file})`,
    );
  }
  try {
    return createRequire(import.meta.url)(file) as NativeAddon;
  } catch (err) {
    throw new MeshError(
      'NATIVE_ERR_LOAD',
      `cannot load the native addon ${file}: ${err instanceof Error ? err.message : String(err)}; ` +
        'rebuild it with npm run build:native -- --force for this Node version and architecture',
      { cause: err },
    );
  }
}

let addon: NativeAddon | undefined;

function native(): NativeAddon {
  addon ??= loadNativeAddon();
  return addon;
}

/** True when the addon can be loaded here (Linux and built). */
export function nativeAvailable(): boolean {
  try {
    native();
    return true;
  } catch {
    return false;
  }
}

/** Operator hints for the errors we expect, keyed by errno name and the syscall prefix. */
function hintFor(code: string, syscall: string): string {
  if (
    syscall.startsWith('getsockopt(SO_ORIGINAL_DST)') ||
    syscall.startsWith('getsockopt(IP6T_SO_ORIGINAL_DST)')
  ) {
    if (code === 'ENOENT') {
      return 'no conntrack entry for this connection: it was not redirected by an iptables nat REDIRECT/DNAT rule in the socket’s network namespace; check the in-pod ISTIO_PRERT/ISTIO_OUTPUT nat rules (spec 2.2)';
    }
    if (code === 'ENOPROTOOPT') {
      return 'connection tracking is not active in this network namespace (no nat rule installed, or nf_conntrack not loaded), so no connection was redirected here';
    }
  }
  if (syscall === 'connect(AF_UNIX)') {
    if (code === 'ECONNREFUSED') {
      return 'nothing listens on this socket: the node agent is not running or is restarting (ztunnel retries with backoff)';
    }
    if (code === 'ENOENT')
      return 'the socket file does not exist yet: the node agent has not started listening';
    if (code === 'EAGAIN') return 'the listener’s backlog is full; retry';
  }
  if (syscall === 'uv_poll_init' && code === 'EPERM') {
    return 'this fd cannot be polled (a regular file or a device): only sockets, pipes and the like can';
  }
  if (syscall === 'bind(AF_UNIX)' && code === 'EADDRINUSE') {
    return 'the socket file already exists; remove it only when no process is listening on it';
  }
  if (syscall === 'recvmsg' && code === 'EMSGSIZE') {
    return 'the peer sent a datagram larger than allowed or with too many file descriptors (ZDS: below 1 KiB, at most one fd)';
  }
  switch (code) {
    case 'EPERM':
    case 'EACCES':
      return syscall === 'setns'
        ? 'entering a network namespace needs CAP_SYS_ADMIN; ztunnel runs with NET_ADMIN, SYS_ADMIN and NET_RAW (spec 2.3)'
        : 'this needs CAP_NET_ADMIN (SO_MARK, IP_TRANSPARENT) or CAP_NET_RAW; ztunnel runs with NET_ADMIN, SYS_ADMIN and NET_RAW (spec 2.3)';
    case 'EADDRINUSE':
      return 'another socket holds this address and port; two ztunnels can share in-pod ports only when both set SO_REUSEPORT (spec 2.6)';
    case 'EADDRNOTAVAIL':
      return 'the address is not assigned in the socket’s network namespace; a foreign (spoofed) source needs transparent + freebind';
    case 'EBADF':
      return 'the file descriptor is not open (closed already, or never handed to this process)';
    case 'ENOTSOCK':
      return 'the file descriptor is not a socket';
    case 'EINVAL':
      return syscall === 'setns' || syscall.startsWith('ioctl(NS_GET_NSTYPE)')
        ? 'the file is not a network namespace (expected /run/netns/NAME or /proc/PID/ns/net)'
        : 'the kernel rejected the arguments';
    default:
      return '';
  }
}

interface ErrnoLike {
  code: string;
  syscall: string;
  errno: number;
  message: string;
}

function isErrnoLike(err: unknown): err is Error & ErrnoLike {
  if (!(err instanceof Error) || err instanceof TypeError) return false;
  const e = err as Partial<ErrnoLike>;
  return typeof e.code === 'string' && typeof e.syscall === 'string' && typeof e.errno === 'number';
}

/** An errno error from the addon as a NativeError with an operator hint; others unchanged. */
function asNativeError(err: unknown): unknown {
  if (!isErrnoLike(err)) return err;
  const hint = hintFor(err.code, err.syscall);
  return new NativeError(err.code, err.syscall, err.errno, hint ? `${err.message}; ${hint}` : err.message, {
    cause: err,
  });
}

/** Runs one addon call, turning its errno errors into NativeError with a hint. */
function call<T>(fn: (n: NativeAddon) => T): T {
  const n = native();
  try {
    return fn(n);
  } catch (err) {
    throw asNativeError(err);
  }
}

/** O_RDONLY|O_CLOEXEC fd of a netns file (/run/netns/NAME, /proc/PID/ns/net). Close with closeFd. */
export function openNetns(path: string): number {
  return call((n) => n.openNetns(path));
}

/** fd of the calling thread's own network namespace. Close with closeFd. */
export function currentNetns(): number {
  return call((n) => n.currentNetns());
}

export function closeFd(fd: number): void {
  call((n) => n.closeFd(fd));
}

/** A close-on-exec duplicate of `fd` (same open file, new number). Close it with closeFd. */
export function dupFd(fd: number): number {
  return call((n) => n.dupFd(fd));
}

/** Inode of a netns fd; equal inodes mean the same namespace (spec 2.6: Add with the same netns). */
export function netnsInode(fd: number): number {
  return call((n) => n.netnsInode(fd));
}

/** Inode of the network namespace a socket fd belongs to (ioctl SIOCGSKNS). */
export function socketNetnsInode(fd: number): number {
  return call((n) => n.socketNetnsInode(fd));
}

/**
 * A listening, non-blocking, close-on-exec TCP socket created (in `netnsFd` when given) with
 * its options set before bind. Hand it to `net.createServer().listen({ fd })`, which then owns it.
 */
export function listenTcp(opts: ListenTcpOptions): number {
  return call((n) => n.listenTcp(opts));
}

/**
 * An unconnected (optionally bound) TCP socket with mark/transparent/freebind set before bind.
 * Wrap it as `new net.Socket({ fd })` and call `.connect()` in the same tick: libuv accepts an
 * unconnected fd (verified on Node 24), but a net.Socket built from an fd starts reading at once,
 * and a read on a still-unconnected socket fails with ENOTCONN on the next loop turn.
 */
export function socketForConnect(opts: SocketForConnectOptions): number {
  return call((n) => n.socketForConnect(opts));
}

/** The pre-NAT destination of an accepted connection (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST). */
export function originalDst(fd: number): OriginalDst {
  return call((n) => n.originalDst(fd));
}

export function setMark(fd: number, mark: number): void {
  call((n) => n.setMark(fd, mark));
}

export function getMark(fd: number): number {
  return call((n) => n.getMark(fd));
}

export function setTransparent(fd: number, on: boolean): void {
  call((n) => n.setTransparent(fd, on));
}

/**
 * The kind of namespace an fd refers to (ioctl NS_GET_NSTYPE), or null when the fd is open but is
 * not a namespace file. Throws EBADF for a closed fd.
 */
export function namespaceType(fd: number): NamespaceKind | null {
  return call((n) => n.namespaceType(fd));
}

/** True when `fd` is a network namespace (spec 2.6: ztunnel checks every fd it receives). */
export function isNetnsFd(fd: number): boolean {
  return namespaceType(fd) === 'net';
}

/**
 * Writes /proc/sys/net/<key> inside the network namespace `netnsFd` (entering it only for the
 * open, as for sockets). Needs CAP_NET_ADMIN over that namespace.
 */
export function writeNetSysctl(netnsFd: number, key: string, value: string): void {
  call((n) => n.writeNetSysctl(netnsFd, key, value));
}

/**
 * A listening, non-blocking, close-on-exec Unix SOCK_SEQPACKET socket bound at `path`, whose file
 * gets `mode` before listen() (0o600 for a root-only privilege boundary). EADDRINUSE when the
 * file exists: deciding whether it is stale is the caller's job.
 */
export function seqpacketListen(path: string, mode: number, backlog = 16): number {
  return call((n) => n.seqpacketListen(path, mode, backlog));
}

/** A connected, non-blocking, close-on-exec SOCK_SEQPACKET socket (ECONNREFUSED, ENOENT, EAGAIN). */
export function seqpacketConnect(path: string): number {
  return call((n) => n.seqpacketConnect(path));
}

/** The next queued connection and its peer's credentials, or null when none is waiting. */
export function seqpacketAccept(listenFd: number): AcceptedSeqpacket | null {
  return call((n) => n.seqpacketAccept(listenFd));
}

/**
 * Sends one datagram, with `passFd` (a duplicate of it, for the peer) as SCM_RIGHTS when given.
 * Returns false, having sent nothing, when the socket buffer is full: wait for POLL_WRITABLE.
 */
export function seqpacketSend(fd: number, data: Uint8Array, passFd?: number): boolean {
  return call((n) => n.seqpacketSend(fd, data, passFd ?? -1));
}

/**
 * Receives one datagram into a `maxBytes` buffer with room for `maxFds` descriptors (received
 * close-on-exec). Null when nothing is queued. A longer datagram (MSG_TRUNC) or more descriptors
 * (MSG_CTRUNC) throws NativeError EMSGSIZE, with any descriptor that did arrive already closed.
 */
export function seqpacketRecv(fd: number, maxBytes: number, maxFds: number): ReceivedDatagram | null {
  return call((n) => n.seqpacketRecv(fd, maxBytes, maxFds));
}

/** SO_PEERCRED of a connected Unix socket. */
export function peerCredentials(fd: number): PeerCredentials {
  return call((n) => n.peerCredentials(fd));
}

/**
 * Watches `fd` on Node's event loop (a libuv poll handle): `callback` runs when it becomes
 * readable / writable per `events` (POLL_READABLE | POLL_WRITABLE; 0 waits for nothing yet).
 * An active watcher keeps the process alive. pollClose it before closing the fd.
 */
export function pollStart(fd: number, events: number, callback: PollCallback): PollWatcher {
  return call((n) =>
    n.pollStart(fd, events, (err, ready) => {
      callback(err === null ? null : (asNativeError(err) as Error), ready);
    }),
  );
}

/** Changes what `watcher` waits for (0: nothing, until the next update). */
export function pollUpdate(watcher: PollWatcher, events: number): void {
  call((n) => n.pollUpdate(watcher, events));
}

/** Stops `watcher` for good; idempotent. */
export function pollClose(watcher: PollWatcher): void {
  call((n) => n.pollClose(watcher));
}

/**
 * The OS file descriptor behind a net.Socket or net.Server. Node does not expose it publicly;
 * its libuv-backed TCP handle carries it as `_handle.fd` (Linux; -1 on Windows). This is the
 * only place that reaches into that private field.
 */
export function socketFd(s: net.Socket | net.Server): number {
  const handle = (s as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new MeshError(
      'NATIVE_ERR_NO_FD',
      'cannot get the file descriptor of this socket: it is closed, not yet connected/listening, ' +
        'or this Node version no longer exposes _handle.fd',
    );
  }
  return fd;
}

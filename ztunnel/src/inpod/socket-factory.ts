// SPDX-License-Identifier: Apache-2.0
// The SocketFactory seam (STYLE.md section 1; istio/ztunnel:src/inpod/config.rs): proxy code asks
// for listeners and upstream connections through this interface, so everything netns- or
// Linux-specific hides here. DefaultSocketFactory uses plain node:net (tests, local mode);
// InPodSocketFactory creates every socket inside a pod's network namespace with SO_MARK 1337
// (spec 2.3, 2.7) through the native addon in src/shared/native.
import net from 'node:net';

import { MeshError } from '../../../src/shared/errors.ts';
import {
  closeFd,
  listenTcp,
  netnsInode,
  openNetns,
  originalDst as nativeOriginalDst,
  socketFd,
  socketForConnect,
} from '../../../src/shared/native/index.ts';
import type { OriginalDst } from '../../../src/shared/native/index.ts';

export interface ListenOptions {
  host: string;
  port: number;
  /** IP_TRANSPARENT on the listener (spec 2.7: 15001/15006/15008). */
  transparent?: boolean;
  /** SO_REUSEPORT, so an old and a new ztunnel can both hold the port during a handoff (spec 2.6). */
  reusePort?: boolean;
  backlog?: number;
}

export interface ConnectOptions {
  host: string;
  port: number;
  /** Source address to bind. With `transparent` it may be foreign (the original client's IP). */
  localAddress?: string;
  /** Spoofed source: IP_TRANSPARENT + IP_FREEBIND before binding `localAddress`. */
  transparent?: boolean;
  /** Give up (and destroy the socket) when not connected within this time. Default: no timer. */
  timeoutMs?: number;
}

/**
 * Sockets from a factory allow half-close (`allowHalfOpen: true`, accepted and connected alike):
 * a proxy forwards each direction's FIN separately, so ending the write side is the caller's job.
 */
export interface SocketFactory {
  /** A server that is listening and ready to accept. */
  listen(opts: ListenOptions): Promise<net.Server>;
  /** A socket that is connected, with TCP_NODELAY set. */
  connect(opts: ConnectOptions): Promise<net.Socket>;
  /**
   * Starts a connection and returns the socket at once (still connecting), for callers that
   * need a socket synchronously, such as the HBONE client's dial hook. Errors surface as the
   * socket's 'error' event; TCP_NODELAY is set on connect.
   */
  dial(opts: Omit<ConnectOptions, 'timeoutMs'>): net.Socket;
  /** The destination the client originally asked for, before any REDIRECT. */
  originalDst(socket: net.Socket): OriginalDst;
}

/** Upstream's in-pod socket mark (istio/ztunnel:src/config.rs DEFAULT_INPOD_MARK = 1337 = 0x539). */
export const DEFAULT_INPOD_MARK = 1337;

/** Resolves once `server` is listening; rejects (and closes it) on its first error. */
function whenListening(
  server: net.Server,
  listen: (server: net.Server) => void,
  what: string,
): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      server.close();
      reject(new MeshError('ZT_ERR_LISTEN', `cannot listen on ${what}: ${err.message}`, { cause: err }));
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve(server);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    listen(server);
  });
}

/**
 * Waits for `socket` (whose connect has just been started) to connect, then sets TCP_NODELAY.
 * On error or timeout the socket is destroyed and the promise rejects with a MeshError.
 */
function whenConnected(socket: net.Socket, opts: ConnectOptions): Promise<net.Socket> {
  const target = net.isIPv6(opts.host) ? `[${opts.host}]:${opts.port}` : `${opts.host}:${opts.port}`;
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const cleanup = (): void => {
      if (timer) clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('error', onError);
    };
    const onConnect = (): void => {
      cleanup();
      socket.setNoDelay(true);
      resolve(socket);
    };
    const onError = (err: Error): void => {
      cleanup();
      socket.destroy();
      reject(
        new MeshError('ZT_ERR_CONNECT', `connection to ${target} failed: ${err.message}`, {
          cause: err,
        }),
      );
    };
    socket.once('connect', onConnect);
    socket.once('error', onError);
    if (opts.timeoutMs !== undefined) {
      const ms = opts.timeoutMs;
      timer = setTimeout(() => {
        cleanup();
        socket.destroy();
        reject(
          new MeshError(
            'ZT_ERR_CONNECT_TIMEOUT',
            `connection to ${target} timed out after ${ms} ms; check that the destination is up and that no NetworkPolicy drops the SYN`,
          ),
        );
      }, ms);
    }
  });
}

function ipFamily(host: string): 4 | 6 {
  return net.isIPv6(host) ? 6 : 4;
}

/** Plain node:net sockets: no netns, no marks. For tests and local mode. */
export class DefaultSocketFactory implements SocketFactory {
  /** `transparent` is ignored here: as upstream does when original-source is best effort. */
  listen(opts: ListenOptions): Promise<net.Server> {
    const server = net.createServer({ allowHalfOpen: true });
    return whenListening(
      server,
      (s) =>
        s.listen({
          host: opts.host,
          port: opts.port,
          ...(opts.backlog !== undefined && { backlog: opts.backlog }),
          ...(opts.reusePort !== undefined && { reusePort: opts.reusePort }),
        }),
      `${opts.host}:${opts.port}`,
    );
  }

  /**
   * Plain sockets cannot spoof a source: with `transparent` the connection leaves from an
   * ordinary local address and `localAddress` (a foreign client IP) is not bound.
   */
  connect(opts: ConnectOptions): Promise<net.Socket> {
    return whenConnected(this.dial(opts), opts);
  }

  dial(opts: Omit<ConnectOptions, 'timeoutMs'>): net.Socket {
    const socket = new net.Socket({ allowHalfOpen: true });
    socket.once('connect', () => socket.setNoDelay(true));
    socket.connect({
      host: opts.host,
      port: opts.port,
      ...(opts.localAddress !== undefined &&
        opts.transparent !== true && { localAddress: opts.localAddress }),
    });
    return socket;
  }

  /** Without iptables there is no redirect: the original destination is the local address. */
  originalDst(socket: net.Socket): OriginalDst {
    const address = socket.localAddress;
    const port = socket.localPort;
    if (address === undefined || port === undefined) {
      throw new MeshError(
        'ZT_ERR_ORIGINAL_DST',
        'cannot read the original destination: the socket is not connected',
      );
    }
    // An IPv4 client on a dual-stack listener appears as ::ffff:a.b.c.d; report it as IPv4, as
    // the kernel's SO_ORIGINAL_DST does.
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped?.[1] !== undefined) return { address: mapped[1], port, family: 4 };
    return { address, port, family: ipFamily(address) };
  }
}

export interface InPodSocketFactoryOptions {
  /** Netns file to open (and own): /run/netns/NAME or /proc/PID/ns/net. */
  netnsPath?: string;
  /** An already open netns fd (e.g. received over ZDS); borrowed, never closed here. */
  netnsFd?: number;
  /** SO_MARK for every socket. Default 1337 (istio/ztunnel:src/config.rs). */
  mark?: number;
}

/**
 * Every socket is created inside the pod's network namespace and marked, so ztunnel's own
 * traffic is not captured again by the in-pod rules (spec 2.3: the mark is the only thing that
 * prevents it). Without netnsPath/netnsFd, sockets are created in the current netns (still marked).
 */
export class InPodSocketFactory implements SocketFactory {
  readonly mark: number;
  readonly #netnsFd: number | undefined;
  readonly #ownsFd: boolean;
  #closed = false;

  constructor(opts: InPodSocketFactoryOptions = {}) {
    if (opts.netnsPath !== undefined && opts.netnsFd !== undefined) {
      throw new MeshError('ZT_ERR_SOCKET_FACTORY', 'InPodSocketFactory: give netnsPath or netnsFd, not both');
    }
    this.mark = opts.mark ?? DEFAULT_INPOD_MARK;
    if (opts.netnsPath !== undefined) {
      this.#netnsFd = openNetns(opts.netnsPath);
      this.#ownsFd = true;
    } else {
      this.#netnsFd = opts.netnsFd;
      this.#ownsFd = false;
    }
  }

  /** Inode of the pod netns (spec 2.6: an Add with the same netns is a no-op), or undefined. */
  netnsInode(): number | undefined {
    return this.#netnsFd === undefined ? undefined : netnsInode(this.#fd());
  }

  async listen(opts: ListenOptions): Promise<net.Server> {
    const fd = listenTcp({
      ...this.#ns(),
      host: opts.host,
      port: opts.port,
      family: ipFamily(opts.host),
      mark: this.mark,
      ...(opts.transparent !== undefined && { transparent: opts.transparent }),
      ...(opts.reusePort !== undefined && { reusePort: opts.reusePort }),
      ...(opts.backlog !== undefined && { backlog: opts.backlog }),
    });
    // From here the server owns the fd: server.close() closes it.
    return whenListening(
      net.createServer({ allowHalfOpen: true }),
      (s) => s.listen({ fd, ...(opts.backlog !== undefined && { backlog: opts.backlog }) }),
      `${opts.host}:${opts.port} in the pod network namespace`,
    );
  }

  async connect(opts: ConnectOptions): Promise<net.Socket> {
    // dial() throws synchronously for bad input; the async wrapper turns that into a rejection.
    return whenConnected(this.dial(opts), opts);
  }

  dial(opts: Omit<ConnectOptions, 'timeoutMs'>): net.Socket {
    if (net.isIP(opts.host) === 0) {
      // node:net would resolve a name from ztunnel's own netns (and resolver), not the pod's.
      throw new MeshError(
        'ZT_ERR_INVALID_ADDRESS',
        `in-pod connect needs a numeric IP address, got '${opts.host}'; resolve names before connecting`,
      );
    }
    const transparent = opts.transparent === true;
    const fd = socketForConnect({
      ...this.#ns(),
      family: ipFamily(opts.host),
      mark: this.mark,
      transparent,
      freebind: transparent,
      ...(opts.localAddress !== undefined && { bindHost: opts.localAddress }),
    });
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd, allowHalfOpen: true });
    } catch (err) {
      closeFd(fd);
      throw err;
    }
    // connect() must follow in the same tick (see socketForConnect in src/shared/native).
    socket.once('connect', () => socket.setNoDelay(true));
    socket.connect({ host: opts.host, port: opts.port });
    return socket;
  }

  originalDst(socket: net.Socket): OriginalDst {
    return nativeOriginalDst(socketFd(socket));
  }

  /** Closes the netns fd when this factory opened it. Sockets already created are unaffected. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsFd && this.#netnsFd !== undefined) closeFd(this.#netnsFd);
  }

  #fd(): number {
    if (this.#closed || this.#netnsFd === undefined) {
      throw new MeshError('ZT_ERR_SOCKET_FACTORY', 'InPodSocketFactory used after close()');
    }
    return this.#netnsFd;
  }

  #ns(): { netnsFd?: number } {
    if (this.#netnsFd === undefined) return {};
    return { netnsFd: this.#fd() };
  }
}

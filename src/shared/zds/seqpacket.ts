// SPDX-License-Identifier: Apache-2.0
// Event-driven Unix SOCK_SEQPACKET sockets for ZDS (spec 2.6), on top of the native addon: one
// datagram per message, file descriptors as SCM_RIGHTS, peer credentials from SO_PEERCRED.
// Node's net module cannot carry either (libuv's pipes are byte streams and keep their own fd
// framing), so the fds are non-blocking sockets made by the addon, and their readiness comes
// from libuv poll handles on Node's event loop: no thread, no polling timer, no blocking call.
//
// Ownership: a SeqpacketSocket owns its fd and every fd it received until they are handed out in
// a 'datagram' event; from then on the listener owns them. A socket with no 'datagram' listener
// closes what it receives. An fd passed to send() is borrowed: the kernel duplicates it into the
// message, so the caller keeps (and eventually closes) its own copy.
import { lstatSync, unlinkSync } from 'node:fs';
import { EventEmitter } from 'eventemitter3';

import { MeshError, errorMessage } from '../errors.ts';
import {
  POLL_READABLE,
  POLL_WRITABLE,
  closeFd,
  pollClose,
  pollStart,
  pollUpdate,
  seqpacketAccept,
  seqpacketConnect,
  seqpacketListen,
  seqpacketRecv,
  seqpacketSend,
} from '../native/index.ts';
import type { PeerCredentials, PollWatcher } from '../native/index.ts';

/** One received message and the descriptors that came with it. */
export interface Datagram {
  readonly data: Buffer;
  readonly fds: readonly number[];
}

export interface DatagramLimits {
  /** Receive buffer: a longer datagram is a MSG_TRUNC error that closes the socket. */
  readonly maxBytes: number;
  /** Descriptors one datagram may carry; more is a MSG_CTRUNC error that closes the socket. */
  readonly maxFds: number;
}

export interface SeqpacketSocketEvents {
  datagram: [datagram: Datagram];
  /** Once: `err` undefined for an orderly close (ours or the peer's EOF). */
  close: [err: Error | undefined];
}

interface PendingSend {
  readonly data: Uint8Array;
  readonly passFd: number | undefined;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** Datagrams read per readiness callback before yielding to the event loop. */
const READS_PER_WAKEUP = 16;

function closedError(what: string): MeshError {
  return new MeshError('ZDS_ERR_CLOSED', `${what}: the ZDS socket is closed`);
}

export class SeqpacketSocket extends EventEmitter<SeqpacketSocketEvents> {
  /** The peer at connect time (SO_PEERCRED); undefined when not asked for. */
  readonly peer: PeerCredentials | undefined;
  readonly #fd: number;
  readonly #limits: DatagramLimits;
  readonly #watcher: PollWatcher;
  readonly #sendQueue: PendingSend[] = [];
  #waitingWritable = false;
  #closed = false;

  /** Takes ownership of `fd`, a connected non-blocking SOCK_SEQPACKET socket. */
  constructor(fd: number, limits: DatagramLimits, peer?: PeerCredentials) {
    super();
    this.#fd = fd;
    this.#limits = limits;
    this.peer = peer;
    try {
      this.#watcher = pollStart(fd, POLL_READABLE, (err, events) => {
        this.#onReady(err, events);
      });
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  /** Connects to a listening SOCK_SEQPACKET socket at `path`; throws NativeError when nobody listens. */
  static connect(path: string, limits: DatagramLimits): SeqpacketSocket {
    return new SeqpacketSocket(seqpacketConnect(path), limits);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Sends one datagram (with a duplicate of `passFd` as SCM_RIGHTS). Datagrams leave in call
   * order; the promise resolves once this one is in the kernel, and rejects if the socket closes
   * first. Keep `passFd` open until then.
   */
  send(data: Uint8Array, passFd?: number): Promise<void> {
    if (this.#closed) return Promise.reject(closedError('send'));
    return new Promise((resolve, reject) => {
      this.#sendQueue.push({ data, passFd, resolve, reject });
      if (this.#sendQueue.length === 1) this.#flush();
    });
  }

  /** Closes the socket (idempotent). Pending sends reject; 'close' is emitted once with `err`. */
  close(err?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    pollClose(this.#watcher);
    closeFd(this.#fd);
    const pending = this.#sendQueue.splice(0);
    for (const p of pending) p.reject(err ?? closedError('send'));
    this.emit('close', err);
  }

  // Not called after close(): pollClose stops the callbacks.
  #onReady(err: Error | null, events: number): void {
    if (err !== null) {
      this.close(err);
      return;
    }
    if ((events & POLL_WRITABLE) !== 0) this.#flush();
    if ((events & POLL_READABLE) !== 0) this.#read();
  }

  #read(): void {
    for (let i = 0; i < READS_PER_WAKEUP && !this.#closed; i++) {
      let got;
      try {
        got = seqpacketRecv(this.#fd, this.#limits.maxBytes, this.#limits.maxFds);
      } catch (err) {
        this.close(err instanceof Error ? err : new Error(errorMessage(err)));
        return;
      }
      if (got === null) return;
      if (got.eof) {
        this.close();
        return;
      }
      if (this.listenerCount('datagram') === 0) {
        for (const fd of got.fds) closeFd(fd);
        continue;
      }
      this.emit('datagram', { data: got.data, fds: got.fds });
    }
  }

  #flush(): void {
    while (!this.#closed) {
      const next = this.#sendQueue[0];
      if (next === undefined) break;
      let sent: boolean;
      try {
        sent = seqpacketSend(this.#fd, next.data, next.passFd);
      } catch (err) {
        // EPIPE / ECONNRESET: the peer is gone; EMSGSIZE: this datagram can never go out.
        this.close(err instanceof Error ? err : new Error(errorMessage(err)));
        return;
      }
      if (!sent) break;
      this.#sendQueue.shift();
      next.resolve();
    }
    // Wait for writability only while something is queued (epoll_ctl only when that changes).
    const wantWritable = this.#sendQueue.length > 0;
    if (!this.#closed && wantWritable !== this.#waitingWritable) {
      this.#waitingWritable = wantWritable;
      pollUpdate(this.#watcher, POLL_READABLE | (wantWritable ? POLL_WRITABLE : 0));
    }
  }
}

export interface SeqpacketListenerOptions {
  /** File mode of the socket, set before listen(): 0o600 keeps it root-only. */
  readonly mode: number;
  readonly limits: DatagramLimits;
  readonly backlog?: number;
}

export interface SeqpacketListenerEvents {
  connection: [socket: SeqpacketSocket];
  /** accept(2) failed (EMFILE, ...); accepting resumes after a pause. */
  error: [err: Error];
}

/** How long accepting pauses after an accept(2) error such as EMFILE, instead of spinning. */
const ACCEPT_ERROR_PAUSE_MS = 1000;

export class SeqpacketListener extends EventEmitter<SeqpacketListenerEvents> {
  readonly path: string;
  readonly #fd: number;
  readonly #inode: number;
  readonly #limits: DatagramLimits;
  readonly #watcher: PollWatcher;
  #pause: NodeJS.Timeout | undefined;
  #closed = false;

  /**
   * Binds and listens at `path` (which must not exist: EADDRINUSE otherwise). Connections are
   * accepted as they arrive and emitted as 'connection', each with its peer's credentials.
   */
  constructor(path: string, opts: SeqpacketListenerOptions) {
    super();
    this.path = path;
    this.#limits = opts.limits;
    this.#fd = seqpacketListen(path, opts.mode, opts.backlog ?? 16);
    try {
      this.#inode = lstatSync(path).ino;
      this.#watcher = pollStart(this.#fd, POLL_READABLE, (err) => {
        this.#onReady(err);
      });
    } catch (err) {
      closeFd(this.#fd);
      unlinkSync(path);
      throw err;
    }
  }

  /** Stops accepting and removes the socket file, unless another listener has replaced it. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#pause);
    pollClose(this.#watcher);
    closeFd(this.#fd);
    try {
      if (lstatSync(this.path).ino === this.#inode) unlinkSync(this.path);
    } catch {
      // Already gone.
    }
  }

  // Not called after close(): pollClose stops the callbacks.
  #onReady(err: Error | null): void {
    if (err !== null) {
      this.#pauseAccepting(err);
      return;
    }
    while (!this.#closed) {
      let accepted;
      try {
        accepted = seqpacketAccept(this.#fd);
      } catch (e) {
        this.#pauseAccepting(e instanceof Error ? e : new Error(errorMessage(e)));
        return;
      }
      if (accepted === null) return;
      const { fd, ...peer } = accepted;
      let socket: SeqpacketSocket;
      try {
        socket = new SeqpacketSocket(fd, this.#limits, peer);
      } catch (e) {
        // The socket closed its fd; this connection is lost, the listener is not.
        this.emit('error', e instanceof Error ? e : new Error(errorMessage(e)));
        continue;
      }
      // A 'connection' listener may close this listener.
      this.emit('connection', socket);
    }
  }

  #pauseAccepting(err: Error): void {
    pollUpdate(this.#watcher, 0);
    this.emit('error', err);
    this.#pause = setTimeout(() => {
      this.#pause = undefined;
      if (!this.#closed) pollUpdate(this.#watcher, POLL_READABLE);
    }, ACCEPT_ERROR_PAUSE_MS);
  }
}

// SPDX-License-Identifier: Apache-2.0
// One ZDS connection (spec 2.6) with typed messages and per-message deadlines, used by both ends:
// the node agent (zds-server: readHello, request) and ztunnel (zds-client: sendHello,
// nextRequest, sendAck). The protocol is lock-step — each request waits for its Ack — so at most
// one message is ever waiting to be read; a peer that sends more without waiting is refused
// (inbox bound). A timeout closes the connection: a late reply would otherwise be taken as the
// answer to the next request.
import { EventEmitter } from 'eventemitter3';

import type { WorkloadRequest } from '../gen/zds.ts';
import type { PeerCredentials } from '../native/index.ts';
import { closeFd } from '../native/index.ts';
import {
  ZDS_LIMITS,
  ZdsError,
  decodeAck,
  decodeHello,
  decodeRequest,
  encodeAck,
  encodeHello,
  encodeRequest,
  type ZdsRequest,
} from './framing.ts';
import { SeqpacketSocket, type Datagram } from './seqpacket.ts';

/** Per-message read/write deadline (spec 2.6 step 7). */
export const ZDS_MESSAGE_DEADLINE_MS = 5000;

/** Datagrams that may wait unread; a lock-step peer never has more than one outstanding. */
const INBOX_LIMIT = 4;

export interface ZdsConnectionOptions {
  /** Read/write deadline per message; default 5 s. */
  readonly deadlineMs?: number;
}

export interface ZdsConnectionEvents {
  /** Once; `err` says why when the close was not orderly. */
  close: [err: Error | undefined];
}

interface Waiter {
  readonly resolve: (d: Datagram) => void;
  readonly reject: (err: Error) => void;
}

export class ZdsConnection extends EventEmitter<ZdsConnectionEvents> {
  readonly #socket: SeqpacketSocket;
  readonly #deadlineMs: number;
  readonly #inbox: Datagram[] = [];
  #waiter: Waiter | undefined;
  #closeError: Error | undefined;

  /** Wraps a connected socket (from a SeqpacketListener, or ZdsConnection.connect). */
  constructor(socket: SeqpacketSocket, opts: ZdsConnectionOptions = {}) {
    super();
    this.#socket = socket;
    this.#deadlineMs = opts.deadlineMs ?? ZDS_MESSAGE_DEADLINE_MS;
    socket.on('datagram', (d) => {
      this.#onDatagram(d);
    });
    socket.once('close', (err) => {
      this.#onClose(err);
    });
  }

  /** ztunnel's side: connects to the node agent's socket; throws NativeError when nobody listens. */
  static connect(path: string, opts: ZdsConnectionOptions = {}): ZdsConnection {
    return new ZdsConnection(SeqpacketSocket.connect(path, ZDS_LIMITS), opts);
  }

  /** The peer's credentials, when the socket was accepted by a listener. */
  get peer(): PeerCredentials | undefined {
    return this.#socket.peer;
  }

  get closed(): boolean {
    return this.#socket.closed;
  }

  /** Closes the connection (idempotent); with `err`, the close is reported as that failure. */
  close(err?: Error): void {
    this.#socket.close(err);
  }

  // ---- node agent side ----

  /** Waits (up to the deadline) for ztunnel's ZdsHello{V1}; anything else is a protocol error. */
  async readHello(): Promise<void> {
    this.#decode(await this.#receive('ZdsHello', this.#deadlineMs), decodeHello);
  }

  /**
   * Sends a request (with `passFd`, borrowed, on an AddWorkload) and waits for its Ack. Resolves
   * with the Ack's error text: '' for success, the reason for a NACK.
   */
  async request(req: WorkloadRequest, passFd?: number): Promise<string> {
    const what = req.payload?.$case ?? 'empty request';
    if (this.#inbox.length > 0) {
      // ztunnel speaks only to answer; a message already waiting would be taken as this Ack.
      const err = new ZdsError('ZDS_ERR_PROTOCOL', 'ztunnel sent a message that answers no request');
      this.close(err);
      throw err;
    }
    await this.#send(encodeRequest(req), passFd, what);
    return this.#decode(await this.#receive(`the Ack to ${what}`, this.#deadlineMs), decodeAck);
  }

  // ---- ztunnel side ----

  sendHello(): Promise<void> {
    return this.#send(encodeHello(), undefined, 'ZdsHello');
  }

  /**
   * The next request from the agent, however long it takes (the agent speaks only when it has
   * something to say). An AddWorkload's netnsFd is the caller's to close.
   */
  async nextRequest(): Promise<ZdsRequest> {
    return this.#decode(await this.#receive('the next request', undefined), decodeRequest);
  }

  /** Acks the current request: `error` '' for success, else the NACK reason. */
  sendAck(error: string): Promise<void> {
    return this.#send(encodeAck(error), undefined, 'Ack');
  }

  // ---- internals ----

  /** Runs a decoder (which owns the datagram's fds); a protocol error closes the connection. */
  #decode<T>(d: Datagram, decode: (d: Datagram) => T): T {
    try {
      return decode(d);
    } catch (err) {
      if (err instanceof ZdsError) this.close(err);
      throw err;
    }
  }

  async #send(bytes: Uint8Array, passFd: number | undefined, what: string): Promise<void> {
    if (this.closed) throw this.#closedError(what);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new ZdsError(
          'ZDS_ERR_TIMEOUT',
          `could not send ${what} within ${this.#deadlineMs} ms: the peer is not reading`,
        );
        this.close(err);
        reject(err);
      }, this.#deadlineMs);
    });
    try {
      await Promise.race([this.#socket.send(bytes, passFd), deadline]);
    } catch (err) {
      if (err instanceof ZdsError) throw err;
      throw this.#closedError(what, err);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The next datagram, within `deadlineMs` (undefined: no deadline). */
  #receive(what: string, deadlineMs: number | undefined): Promise<Datagram> {
    const queued = this.#inbox.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.closed) return Promise.reject(this.#closedError(`waiting for ${what}`));
    if (this.#waiter !== undefined) {
      return Promise.reject(new ZdsError('ZDS_ERR_PROTOCOL', `internal: two readers waiting for ${what}`));
    }
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      if (deadlineMs !== undefined) {
        timer = setTimeout(() => {
          this.#waiter = undefined;
          const err = new ZdsError(
            'ZDS_ERR_TIMEOUT',
            `nothing within ${deadlineMs} ms while waiting for ${what}`,
          );
          this.close(err);
          reject(err);
        }, deadlineMs);
      }
      this.#waiter = {
        resolve: (d) => {
          clearTimeout(timer);
          resolve(d);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
    });
  }

  #onDatagram(d: Datagram): void {
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      this.#waiter = undefined;
      waiter.resolve(d);
      return;
    }
    this.#inbox.push(d);
    if (this.#inbox.length > INBOX_LIMIT) {
      this.close(
        new ZdsError(
          'ZDS_ERR_PROTOCOL',
          `the peer sent ${this.#inbox.length} messages without waiting for replies; ZDS is one request, one Ack`,
        ),
      );
    }
  }

  #onClose(err: Error | undefined): void {
    this.#closeError = err;
    for (const d of this.#inbox.splice(0)) for (const fd of d.fds) closeFd(fd);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(this.#closedError('waiting for a message'));
    this.emit('close', err);
  }

  #closedError(what: string, cause?: unknown): ZdsError {
    const why = this.#closeError ? `: ${this.#closeError.message}` : '';
    return new ZdsError('ZDS_ERR_CLOSED', `${what}: the ZDS connection is closed${why}`, {
      cause: cause ?? this.#closeError,
    });
  }
}

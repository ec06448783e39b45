// SPDX-License-Identifier: Apache-2.0
// The node agent's end of ZDS (spec 2.6; istio/istio:cni/pkg/nodeagent/ztunnelserver.go): a
// Unix SOCK_SEQPACKET socket that ztunnel connects to, root-only (0600: whoever can connect can
// make ztunnel proxy any netns the agent hands it, so the socket is a privilege boundary).
//
// Per connection: ztunnel's ZdsHello{V1} within 5 s (anything else closes it), then the snapshot
// — one AddWorkload (with the pod's netns fd) or KeepWorkload (pod exists, fd no longer held) per
// pod, each acked before the next (a NACK is logged: ztunnel keeps that pod pending and retries
// it) — then SnapshotSent. After that, addWorkload goes to the NEWEST connection only (during a
// ztunnel rollout the new one takes the pods) and delWorkload to every connection. Each
// connection runs one request at a time with a 5 s deadline per message; a timeout closes it,
// since a late Ack would otherwise answer the next request.
//
// Dead peers: the socket is watched for readability all the time, so ztunnel exiting (or being
// killed) is seen at once as EOF, without the 5 s "short read" probe upstream's Go server needs.
//
// The netns fds given to addWorkload or returned by the snapshot provider stay the caller's: the
// server duplicates them at once (when addWorkload is called, when the snapshot is read) and
// closes its duplicates after sending, so a request queued behind others never sends an fd
// number that the caller has closed meanwhile (or, worse, that now names another pod's netns).
import { lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { EventEmitter } from 'eventemitter3';

import { MeshError, errorMessage } from '../../../src/shared/errors.ts';
import type { WorkloadRequest } from '../../../src/shared/gen/zds.ts';
import { NativeError, closeFd, dupFd, seqpacketConnect } from '../../../src/shared/native/index.ts';
import type { PeerCredentials } from '../../../src/shared/native/index.ts';
import type { Logger } from '../../../src/shared/telemetry/logger.ts';
import { ZdsConnection } from '../../../src/shared/zds/connection.ts';
import { ZDS_LIMITS, ZdsError } from '../../../src/shared/zds/framing.ts';
import { SeqpacketListener, type SeqpacketSocket } from '../../../src/shared/zds/seqpacket.ts';
import type { SnapshotEntry, WorkloadInfo, ZdsPort } from './agent.ts';

/** Upstream's path (ztunnel INPOD_UDS, istio-cni ztunnel-uds-address). */
export const DEFAULT_ZDS_PATH = '/var/run/ztunnel/ztunnel.sock';

export interface ZdsServerOptions {
  /** Default /var/run/ztunnel/ztunnel.sock. */
  readonly path?: string;
  /** Every pod to hand to a newly connected ztunnel; read once per connection, after its hello. */
  readonly snapshot: () => Iterable<SnapshotEntry>;
  readonly logger: Logger;
  /** Per-message read/write deadline. Default 5 s. */
  readonly deadlineMs?: number;
  /** Peer uids allowed to connect (SO_PEERCRED). Default: root and this process's uid. */
  readonly allowedUids?: readonly number[];
}

/** A connected ztunnel, as the events and connections() report it. */
export interface ZtunnelPeer extends PeerCredentials {
  /** Increasing per accepted connection: the highest connected id is the newest. */
  readonly id: number;
  /** The snapshot has been sent and acked. */
  readonly ready: boolean;
}

export interface ZdsServerEvents {
  /** ztunnel said hello. */
  connect: [peer: ZtunnelPeer];
  /** Its snapshot was acked, SnapshotSent included. */
  ready: [peer: ZtunnelPeer];
  /** A ztunnel that had said hello went away; `err` when it was not an orderly close. */
  disconnect: [peer: ZtunnelPeer, err: Error | undefined];
}

/** One ztunnel connection: its requests run strictly one after another. */
class Session {
  readonly id: number;
  readonly conn: ZdsConnection;
  readonly creds: PeerCredentials;
  ready = false;
  #tail: Promise<unknown> = Promise.resolve();

  constructor(id: number, conn: ZdsConnection, creds: PeerCredentials) {
    this.id = id;
    this.conn = conn;
    this.creds = creds;
  }

  get peer(): ZtunnelPeer {
    return { id: this.id, ready: this.ready, ...this.creds };
  }

  /** Runs `task` after every task queued before it, whatever their outcome. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => undefined);
    return result;
  }

  /** One request and its Ack; a NACK rejects with ZDS_ERR_NACK. */
  async send(req: WorkloadRequest, what: string, passFd?: number): Promise<void> {
    const error = await this.conn.request(req, passFd);
    if (error !== '')
      throw new ZdsError('ZDS_ERR_NACK', `ztunnel (pid ${this.creds.pid}) refused ${what}: ${error}`);
  }
}

/** Exactly the WorkloadInfo fields, whatever else the caller's object carries. */
function wireInfo(info: WorkloadInfo): WorkloadInfo {
  return { name: info.name, namespace: info.namespace, serviceAccount: info.serviceAccount };
}

/**
 * Makes `path` ready to bind: creates its directory (0700) if missing, removes a stale socket
 * file left by a previous agent, and refuses when a live agent still listens there (two agents
 * would hand the same pods to ztunnel, and the newer would silently orphan the older's
 * connections) or when the path is something other than a socket.
 */
function prepareSocketPath(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) {
    throw new MeshError(
      'CNI_ERR_ZDS_SOCKET',
      `${path} exists and is not a socket; refusing to remove it: move it away or choose another ZDS path`,
    );
  }
  let probe: number;
  try {
    probe = seqpacketConnect(path);
  } catch (err) {
    if (err instanceof NativeError && err.code === 'ECONNREFUSED') {
      unlinkSync(path);
      return;
    }
    if (err instanceof NativeError && err.code === 'EAGAIN') {
      throw new MeshError(
        'CNI_ERR_ZDS_IN_USE',
        `another process is listening on ${path} (its backlog is full); stop the other node agent first`,
        { cause: err },
      );
    }
    throw err;
  }
  closeFd(probe);
  throw new MeshError(
    'CNI_ERR_ZDS_IN_USE',
    `another node agent is listening on ${path}; stop it first (two agents would hand the same pods to ztunnel)`,
  );
}

export class ZdsServer extends EventEmitter<ZdsServerEvents> implements ZdsPort {
  readonly path: string;
  readonly #opts: ZdsServerOptions;
  readonly #log: Logger;
  readonly #listener: SeqpacketListener;
  readonly #allowedUids: ReadonlySet<number>;
  /** Connections that said hello, oldest first. */
  readonly #sessions: Session[] = [];
  /** Accepted connections still waiting for their hello. */
  readonly #greeting = new Set<ZdsConnection>();
  #nextId = 1;
  #closed = false;

  private constructor(path: string, opts: ZdsServerOptions) {
    super();
    this.path = path;
    this.#opts = opts;
    this.#log = opts.logger.child({ scope: 'zds', path });
    this.#allowedUids = new Set(opts.allowedUids ?? [0, process.getuid?.() ?? 0]);
    this.#listener = new SeqpacketListener(path, { mode: 0o600, limits: ZDS_LIMITS });
    this.#listener.on('connection', (socket) => {
      this.#onConnection(socket);
    });
    this.#listener.on('error', (err) => {
      this.#log.error({ err: err.message }, 'accepting a ztunnel connection failed; retrying in 1 s');
    });
  }

  /** Listens at opts.path (default /var/run/ztunnel/ztunnel.sock); see prepareSocketPath. */
  static listen(opts: ZdsServerOptions): ZdsServer {
    const path = opts.path ?? DEFAULT_ZDS_PATH;
    prepareSocketPath(path);
    const server = new ZdsServer(path, opts);
    server.#log.info('listening for ztunnel');
    return server;
  }

  /** Connected ztunnels (hello received), oldest first. */
  connections(): ZtunnelPeer[] {
    return this.#sessions.map((s) => s.peer);
  }

  /**
   * Hands a pod to the newest ztunnel (spec 2.6 step 7). Resolves on its Ack; rejects with
   * ZdsError ZDS_ERR_NO_ZTUNNEL (none connected), ZDS_ERR_NACK (ztunnel could not start the
   * proxy; it keeps retrying), ZDS_ERR_TIMEOUT or ZDS_ERR_CLOSED. `netnsFd` is duplicated at once: the caller keeps its own.
   */
  async addWorkload(uid: string, info: WorkloadInfo, netnsFd: number): Promise<void> {
    const newest = this.#sessions.at(-1);
    if (newest === undefined) {
      throw new ZdsError(
        'ZDS_ERR_NO_ZTUNNEL',
        `no ztunnel is connected to ${this.path}; the pod goes to ztunnel in the snapshot when one connects`,
      );
    }
    // Synchronously, before this request waits behind others: the caller may close its fd at once.
    const fd = dupFd(netnsFd);
    const req: WorkloadRequest = { payload: { $case: 'add', value: { uid, workloadInfo: wireInfo(info) } } };
    try {
      await newest.run(() => newest.send(req, `AddWorkload(${uid})`, fd));
    } finally {
      closeFd(fd);
    }
  }

  /**
   * Tells every connected ztunnel to drop the pod. Resolves when all acked (at once when none is
   * connected: a later one will not find the pod in its snapshot); rejects, after all answered,
   * if any failed.
   */
  async delWorkload(uid: string): Promise<void> {
    const req: WorkloadRequest = { payload: { $case: 'del', value: { uid } } };
    const results = await Promise.allSettled(
      this.#sessions.map((s) => s.run(() => s.send(req, `DelWorkload(${uid})`))),
    );
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    const [first] = failures;
    if (first !== undefined) {
      throw new ZdsError(
        first instanceof ZdsError ? first.code : 'ZDS_ERR_CLOSED',
        `DelWorkload(${uid}) failed on ${failures.length} of ${results.length} ztunnel connection(s): ${failures.map(errorMessage).join('; ')}`,
        { cause: first },
      );
    }
  }

  /** Stops listening, removes the socket file and closes every connection. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.#listener.close();
    for (const conn of this.#greeting) conn.close();
    for (const s of [...this.#sessions]) s.conn.close();
    this.#log.info('stopped');
    return Promise.resolve();
  }

  #onConnection(socket: SeqpacketSocket): void {
    const creds = socket.peer ?? { pid: 0, uid: -1, gid: -1 };
    if (!this.#allowedUids.has(creds.uid)) {
      this.#log.warn(
        { peer: creds },
        'refused a ZDS connection from a uid that may not hand pods to ztunnel',
      );
      socket.close();
      return;
    }
    const conn = new ZdsConnection(
      socket,
      this.#opts.deadlineMs === undefined ? {} : { deadlineMs: this.#opts.deadlineMs },
    );
    this.#greeting.add(conn);
    conn.once('close', () => this.#greeting.delete(conn));
    conn.readHello().then(
      () => {
        this.#greeting.delete(conn);
        if (!conn.closed) this.#onHello(conn, creds);
      },
      (err: unknown) => {
        this.#log.warn({ peer: creds, err: errorMessage(err) }, 'ZDS connection closed before a valid hello');
      },
    );
  }

  #onHello(conn: ZdsConnection, creds: PeerCredentials): void {
    const session = new Session(this.#nextId++, conn, creds);
    this.#sessions.push(session);
    conn.once('close', (err) => {
      const i = this.#sessions.indexOf(session);
      if (i >= 0) this.#sessions.splice(i, 1);
      this.#log.info({ ztunnel: session.peer, err: err?.message }, 'ztunnel disconnected');
      this.emit('disconnect', session.peer, err);
    });
    this.#log.info({ ztunnel: session.peer }, 'ztunnel connected; sending the snapshot');
    this.emit('connect', session.peer);
    session
      .run(() => this.#sendSnapshot(session))
      .then(
        () => {
          session.ready = true;
          this.#log.info({ ztunnel: session.peer }, 'snapshot acked');
          this.emit('ready', session.peer);
        },
        (err: unknown) => {
          this.#log.warn({ ztunnel: session.peer, err: errorMessage(err) }, 'sending the snapshot failed');
          conn.close(err instanceof Error ? err : undefined);
        },
      );
  }

  async #sendSnapshot(s: Session): Promise<void> {
    // Read the snapshot and take our own duplicate of every fd in it now, in one go.
    const pods = [...this.#opts.snapshot()].map((pod) => ({ ...pod, fd: this.#dupForSnapshot(pod) }));
    try {
      for (const pod of pods) {
        const what = `${pod.fd === undefined ? 'KeepWorkload' : 'AddWorkload'}(${pod.uid})`;
        const req: WorkloadRequest =
          pod.fd === undefined
            ? { payload: { $case: 'keep', value: { uid: pod.uid } } }
            : { payload: { $case: 'add', value: { uid: pod.uid, workloadInfo: wireInfo(pod.info) } } };
        try {
          await s.send(req, what, pod.fd);
        } catch (err) {
          // ztunnel keeps a NACKed pod pending and retries it; anything else ends the connection.
          if (!(err instanceof ZdsError && err.code === 'ZDS_ERR_NACK')) throw err;
          this.#log.warn({ ztunnel: s.peer, uid: pod.uid, err: err.message }, 'snapshot entry NACKed');
        } finally {
          if (pod.fd !== undefined) closeFd(pod.fd);
          pod.fd = undefined;
        }
      }
    } finally {
      for (const pod of pods) if (pod.fd !== undefined) closeFd(pod.fd);
    }
    await s.send({ payload: { $case: 'snapshotSent', value: {} } }, 'SnapshotSent');
    this.#log.debug({ ztunnel: s.peer, pods: pods.length }, 'snapshot sent');
  }

  /** Our duplicate of a snapshot entry's fd; an fd that cannot be duplicated makes it a Keep. */
  #dupForSnapshot(pod: SnapshotEntry): number | undefined {
    if (pod.netnsFd === undefined) return undefined;
    try {
      return dupFd(pod.netnsFd);
    } catch (err) {
      this.#log.error(
        { uid: pod.uid, err: errorMessage(err) },
        'the netns fd the agent holds for this pod is unusable; sending KeepWorkload instead of AddWorkload',
      );
      return undefined;
    }
  }
}

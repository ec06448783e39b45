// SPDX-License-Identifier: Apache-2.0
// ztunnel's end of ZDS (spec 2.6; istio/ztunnel:src/inpod/{protocol,statemanager}.rs): connects
// to the node agent's Unix socket (INPOD_UDS), checks who is listening there, says hello, and
// turns the agent's requests into WorkloadManager calls, acking each one.
//
// Who may hand us pods: whoever listens at INPOD_UDS gives ztunnel network namespaces to open
// listeners in, and so decides where the mesh's traffic goes. Before the hello, the socket's
// directory must belong to a trusted uid and not be writable by group or others (nobody else
// could have put a socket there), and the listener's SO_PEERCRED uid must be trusted (root or
// ztunnel's own uid by default, `trustedUids`). Otherwise the connection is closed with an error
// saying which check failed, and retried with the usual backoff.
//
//   AddWorkload    fd checked with NS_GET_NSTYPE, listener migration enabled in the netns (see
//                  below), then manager.add (which owns the fd from then on). Acked once the pod's
//                  listeners are bound; its certificate is fetched in the background, and
//                  connections wait for it (workload-proxy.ts), so a slow CA never holds an Ack
//                  past the agent's 5 s deadline. A failed start is NACKed with the reason, and the
//                  pod stays pending and is retried by the manager
//   KeepWorkload   snapshot only: the pod survives the reconcile
//   DelWorkload    before SnapshotSent: drops the uid from this snapshot; after: manager.del
//   SnapshotSent   reconcile: every pod neither added nor kept in this snapshot is removed
//
// A second SnapshotSent, a KeepWorkload after it, or a message that breaks the framing rules
// closes the connection; so does the agent going away. Running proxies are kept either way, and
// the client reconnects (backoff from 10 ms doubling to 15 s, back to 10 ms after a complete
// snapshot): the next snapshot reconciles. This client's readiness is "a snapshot has been
// received"; that no pod is pending is the manager's own readiness gate (app.ts).
//
// close() does not wait for a request being handled (an Add may be binding listeners): it closes
// the connection and returns; the manager refuses pods once shutdown has begun.
//
// Handoff between an old and a new ztunnel (spec 2.6 step 7): both hold the in-pod listeners with
// SO_REUSEPORT, and the old one closes its own when it shuts down. With plain SO_REUSEPORT the
// kernel resets every connection still queued in the old listener's accept backlog (measured in
// test/netns/zds/handoff.test.ts). net.ipv4.tcp_migrate_req = 1 (Linux 5.14) makes the kernel
// move those connections, and half-open ones, to a remaining listener of the group instead, so
// the client never notices. It is a per-netns sysctl, so it is set in each pod's netns as the pod
// arrives; it only changes what happens when a SO_REUSEPORT listener closes while another one
// remains, which is the handoff. Failure (older kernel, no CAP_NET_ADMIN) is logged, not fatal.
import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import { MeshError, errorMessage } from '../../../src/shared/errors.ts';
import {
  closeFd,
  namespaceType,
  peerCredentials,
  seqpacketConnect,
  writeNetSysctl,
  type NamespaceKind,
  type PeerCredentials,
} from '../../../src/shared/native/index.ts';
import type { Logger } from '../../../src/shared/telemetry/logger.ts';
import { ZdsConnection } from '../../../src/shared/zds/connection.ts';
import { ZDS_LIMITS, ZdsError, type ZdsRequest } from '../../../src/shared/zds/framing.ts';
import { SeqpacketSocket } from '../../../src/shared/zds/seqpacket.ts';
import type { PodInfo } from '../proxy/context.ts';
import type { WorkloadManager } from './workload-manager.ts';

export interface ZdsClientOptions {
  /** The node agent's socket (env INPOD_UDS; upstream default /var/run/ztunnel/ztunnel.sock). */
  readonly path: string;
  readonly manager: WorkloadManager;
  readonly logger: Logger;
  /** Called once, when the first complete snapshot has been received (this client's readiness). */
  readonly onReady?: () => void;
  /**
   * Uids that may listen at `path` and own its directory (INPOD_UDS_TRUSTED_UIDS). Default root and
   * this process's uid.
   */
  readonly trustedUids?: readonly number[];
  /** First reconnect delay; doubles per failed attempt. Default 10 ms. */
  readonly initialBackoffMs?: number;
  /** Reconnect delay cap. Default 15 s. */
  readonly maxBackoffMs?: number;
  /** Per-message write deadline. Default 5 s. */
  readonly deadlineMs?: number;
}

export interface ZdsClientStatus {
  /** Connected to the agent (hello sent). */
  readonly connected: boolean;
  /** A complete snapshot has been received on some connection since start. */
  readonly snapshotReceived: boolean;
  /** Pods whose proxy has not started yet (the manager's count; not part of `ready`). */
  readonly pending: number;
  /** A snapshot has been received. */
  readonly ready: boolean;
  /** Connections that got as far as sending the hello. */
  readonly connections: number;
  /** Why the last connection (attempt) ended, if it did not end by close(). */
  readonly lastError: string | undefined;
}

export interface ZdsClient {
  status(): ZdsClientStatus;
  /**
   * Disconnects and stops reconnecting, without waiting for a request being handled. Running
   * proxies are left to the manager's owner.
   */
  close(): Promise<void>;
}

/** State of one connection's conversation. */
interface Session {
  snapshotDone: boolean;
  /** Uids added or kept in this connection's snapshot. */
  readonly seen: Set<string>;
}

export function startZdsClient(opts: ZdsClientOptions): ZdsClient {
  const log = opts.logger.child({ scope: 'zds', path: opts.path });
  const manager = opts.manager;
  const initialBackoff = opts.initialBackoffMs ?? 10;
  const maxBackoff = opts.maxBackoffMs ?? 15_000;
  const connOpts = opts.deadlineMs === undefined ? {} : { deadlineMs: opts.deadlineMs };

  const trusted: ReadonlySet<number> = new Set(opts.trustedUids ?? defaultTrustedUids());
  let closed = false;
  let current: ZdsConnection | undefined;
  /** Hello sent on `current`. */
  let connected = false;
  let snapshotReceived = false;
  let connections = 0;
  let lastError: string | undefined;
  let wake: (() => void) | undefined;
  let backoff = initialBackoff;

  /** Waits `ms`, or less if close() is called; not at all once closed. */
  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      if (closed) {
        resolve();
        return;
      }
      const timer = setTimeout(() => {
        wake = undefined;
        resolve();
      }, ms);
      wake = () => {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      };
    });

  const enableListenerMigration = (netnsFd: number, uid: string): void => {
    try {
      writeNetSysctl(netnsFd, 'ipv4/tcp_migrate_req', '1');
    } catch (err) {
      log.warn(
        { uid, err: errorMessage(err) },
        'cannot set net.ipv4.tcp_migrate_req in the pod netns; during a ztunnel handoff, connections queued on the old ztunnel will be reset',
      );
    }
  };

  /** Answers one request; '' acks, other text NACKs. Throws ZdsError for protocol errors. */
  const handle = async (req: ZdsRequest, s: Session): Promise<string> => {
    switch (req.kind) {
      case 'add': {
        const pod = podOf(req);
        if (typeof pod === 'string') {
          closeFd(req.netnsFd);
          log.warn({ uid: req.uid, err: pod }, 'refused AddWorkload');
          return pod;
        }
        enableListenerMigration(req.netnsFd, req.uid);
        if (!s.snapshotDone) s.seen.add(req.uid);
        try {
          await manager.add(pod, { fd: req.netnsFd });
          return '';
        } catch (err) {
          // The manager keeps the pod pending and retries; the agent hears why (spec 2.6 step 5).
          return `starting the proxy for pod ${pod.namespace}/${pod.name} failed: ${errorMessage(err)}`;
        }
      }
      case 'keep':
        if (s.snapshotDone) {
          throw new ZdsError(
            'ZDS_ERR_PROTOCOL',
            `KeepWorkload(${req.uid}) after SnapshotSent; keep is for snapshots only`,
          );
        }
        s.seen.add(req.uid);
        if (!manager.has(req.uid))
          log.info({ uid: req.uid }, 'KeepWorkload for a pod this ztunnel is not proxying');
        return '';
      case 'del':
        if (!s.snapshotDone) {
          s.seen.delete(req.uid);
          return '';
        }
        await manager.del(req.uid);
        log.info({ uid: req.uid }, 'pod removed');
        return '';
      case 'snapshotSent': {
        if (s.snapshotDone) throw new ZdsError('ZDS_ERR_PROTOCOL', 'a second SnapshotSent on one connection');
        const removed = await manager.retain(s.seen);
        s.snapshotDone = true;
        log.info({ pods: s.seen.size, removed }, 'snapshot received and reconciled');
        if (!snapshotReceived) {
          snapshotReceived = true;
          opts.onReady?.();
        }
        return '';
      }
    }
  };

  /** Serves one connection until it closes; always ends by throwing why. */
  const serve = async (conn: ZdsConnection): Promise<never> => {
    const session: Session = { snapshotDone: false, seen: new Set() };
    await conn.sendHello();
    connected = true;
    connections++;
    log.info({ agent: conn.peer }, 'connected to the node agent');
    for (;;) {
      const req = await conn.nextRequest();
      let answer: string;
      try {
        answer = await handle(req, session);
      } catch (err) {
        if (err instanceof ZdsError) conn.close(err);
        throw err;
      }
      log.debug(
        { request: req.kind, ...('uid' in req && { uid: req.uid }), nack: answer || undefined },
        'answered',
      );
      await conn.sendAck(answer);
      if (req.kind === 'snapshotSent') backoff = initialBackoff;
    }
  };

  /** One connection attempt and, if it connects, its whole life. */
  const attempt = async (): Promise<void> => {
    let conn: ZdsConnection;
    try {
      conn = connectToAgent(opts.path, trusted, connOpts);
    } catch (err) {
      lastError = errorMessage(err);
      if (err instanceof MeshError && err.code === 'ZT_ERR_ZDS_UNTRUSTED') {
        log.error({ err: lastError, retryMs: backoff }, 'refused to take pods from the ZDS socket');
      } else log.debug({ err: lastError, retryMs: backoff }, 'cannot reach the node agent');
      return;
    }
    current = conn;
    try {
      await serve(conn);
    } catch (err) {
      if (!closed) {
        lastError = errorMessage(err);
        log.warn(
          { err: lastError, retryMs: backoff },
          'disconnected from the node agent; proxies keep running',
        );
      }
    } finally {
      conn.close();
      current = undefined;
      connected = false;
    }
  };

  const run = async (): Promise<void> => {
    for (;;) {
      if (closed) return;
      await attempt();
      await sleep(backoff);
      backoff = Math.min(backoff * 2, maxBackoff);
    }
  };
  void run();

  return {
    status: () => ({
      connected,
      snapshotReceived,
      pending: manager.pendingCount,
      ready: snapshotReceived,
      connections,
      lastError,
    }),
    close: () => {
      closed = true;
      wake?.();
      current?.close();
      // The connection loop is not awaited: it may be waiting on a request's handler (see the
      // file comment), and ends by itself once that handler returns.
      return Promise.resolve();
    },
  };
}

function defaultTrustedUids(): number[] {
  const own = process.getuid?.();
  return own === undefined || own === 0 ? [0] : [0, own];
}

function describeUids(uids: ReadonlySet<number>): string {
  return [...uids].join(', ');
}

/**
 * Refuses a ZDS socket whose directory someone untrusted could have put it in: the directory must
 * be owned by a trusted uid and writable by its owner only. Throws MeshError ZT_ERR_ZDS_UNTRUSTED.
 */
export function checkSocketDirectory(path: string, trusted: ReadonlySet<number>): void {
  const dir = dirname(path);
  let st;
  try {
    st = statSync(dir);
  } catch (err) {
    throw new MeshError(
      'ZT_ERR_ZDS_UNREACHABLE',
      `cannot inspect the directory ${dir} of ${path}: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
  if (!trusted.has(st.uid)) {
    throw new MeshError(
      'ZT_ERR_ZDS_UNTRUSTED',
      `the ZDS socket directory ${dir} is owned by uid ${st.uid}, not a trusted uid (${describeUids(trusted)}); anyone owning it could stand in for the node agent`,
    );
  }
  if ((st.mode & 0o022) !== 0) {
    throw new MeshError(
      'ZT_ERR_ZDS_UNTRUSTED',
      `the ZDS socket directory ${dir} is writable by ${(st.mode & 0o002) !== 0 ? 'others' : 'its group'} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}); make it writable by its owner only (e.g. 0700)`,
    );
  }
}

/** Refuses a listener whose SO_PEERCRED uid is not trusted. Throws MeshError ZT_ERR_ZDS_UNTRUSTED. */
export function checkAgentPeer(path: string, peer: PeerCredentials, trusted: ReadonlySet<number>): void {
  if (trusted.has(peer.uid)) return;
  throw new MeshError(
    'ZT_ERR_ZDS_UNTRUSTED',
    `the process listening on ${path} (pid ${peer.pid}) runs as uid ${peer.uid}, not a trusted uid (${describeUids(trusted)}); it may not hand pods to ztunnel`,
  );
}

/** Connects to the agent's socket after checking its directory, then checks who accepted. */
function connectToAgent(
  path: string,
  trusted: ReadonlySet<number>,
  opts: { deadlineMs?: number },
): ZdsConnection {
  checkSocketDirectory(path, trusted);
  const fd = seqpacketConnect(path);
  let peer: PeerCredentials;
  try {
    peer = peerCredentials(fd);
    checkAgentPeer(path, peer, trusted);
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  return new ZdsConnection(new SeqpacketSocket(fd, ZDS_LIMITS, peer), opts);
}

/** The pod an AddWorkload asks for, or why it cannot be acted on (the NACK text). */
function podOf(req: Extract<ZdsRequest, { kind: 'add' }>): PodInfo | string {
  if (req.uid === '') return 'AddWorkload without a uid';
  const info = req.info;
  if (info === undefined) return `AddWorkload(${req.uid}) without workload_info`;
  let kind: NamespaceKind | null;
  try {
    kind = namespaceType(req.netnsFd);
  } catch (err) {
    return `AddWorkload(${req.uid}): cannot inspect the fd: ${errorMessage(err)}`;
  }
  if (kind !== 'net') {
    const what = kind === null ? 'not a namespace' : `a ${kind} namespace`;
    return `AddWorkload(${req.uid}): the fd is ${what}, not a network namespace`;
  }
  return { uid: req.uid, name: info.name, namespace: info.namespace, serviceAccount: info.serviceAccount };
}

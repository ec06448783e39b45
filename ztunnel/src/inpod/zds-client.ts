// SPDX-License-Identifier: Apache-2.0
// ztunnel's end of ZDS (spec 2.6; istio/ztunnel:src/inpod/{protocol,statemanager}.rs): connects
// to the node agent's Unix socket (INPOD_UDS), says hello, and turns the agent's requests into
// WorkloadManager calls, acking each one.
//
//   AddWorkload    fd checked with NS_GET_NSTYPE, listener migration enabled in the netns (see
//                  below), then manager.add (which owns the fd from then on); a failed start is
//                  NACKed with the reason, and the pod stays pending and is retried by the manager
//   KeepWorkload   snapshot only: the pod survives the reconcile
//   DelWorkload    before SnapshotSent: drops the uid from this snapshot; after: manager.del
//   SnapshotSent   reconcile: every pod neither added nor kept in this snapshot is removed
//
// A second SnapshotSent, a KeepWorkload after it, or a message that breaks the framing rules
// closes the connection; so does the agent going away. Running proxies are kept either way, and
// the client reconnects (backoff from 10 ms doubling to 15 s, back to 10 ms after a complete
// snapshot): the next snapshot reconciles. ztunnel is ready once a snapshot has been received and
// no pod is pending.
//
// Handoff between an old and a new ztunnel (spec 2.6 step 7): both hold the in-pod listeners with
// SO_REUSEPORT, and the old one closes its own when it shuts down. With plain SO_REUSEPORT the
// kernel resets every connection still queued in the old listener's accept backlog (measured in
// test/netns/zds/handoff.test.ts). net.ipv4.tcp_migrate_req = 1 (Linux 5.14) makes the kernel
// move those connections, and half-open ones, to a remaining listener of the group instead, so
// the client never notices. It is a per-netns sysctl, so it is set in each pod's netns as the pod
// arrives; it only changes what happens when a SO_REUSEPORT listener closes while another one
// remains, which is the handoff. Failure (older kernel, no CAP_NET_ADMIN) is logged, not fatal.
import { errorMessage } from '../../../src/shared/errors.ts';
import {
  closeFd,
  namespaceType,
  writeNetSysctl,
  type NamespaceKind,
} from '../../../src/shared/native/index.ts';
import type { Logger } from '../../../src/shared/telemetry/logger.ts';
import { ZdsConnection } from '../../../src/shared/zds/connection.ts';
import { ZdsError, type ZdsRequest } from '../../../src/shared/zds/framing.ts';
import type { PodInfo } from '../proxy/context.ts';
import type { WorkloadManager } from './workload-manager.ts';

export interface ZdsClientOptions {
  /** The node agent's socket (env INPOD_UDS; upstream default /var/run/ztunnel/ztunnel.sock). */
  readonly path: string;
  readonly manager: WorkloadManager;
  readonly logger: Logger;
  /** Called when readiness changes (snapshot received and nothing pending), starting from false. */
  readonly onReady?: (ready: boolean) => void;
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
  /** Pods whose proxy has not started yet. */
  readonly pending: number;
  readonly ready: boolean;
  /** Connections that got as far as sending the hello. */
  readonly connections: number;
  /** Why the last connection (attempt) ended, if it did not end by close(). */
  readonly lastError: string | undefined;
}

export interface ZdsClient {
  status(): ZdsClientStatus;
  /** Disconnects and stops reconnecting. Running proxies are left to the manager's owner. */
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

  let closed = false;
  let current: ZdsConnection | undefined;
  /** Hello sent on `current`. */
  let connected = false;
  let snapshotReceived = false;
  let connections = 0;
  let lastError: string | undefined;
  let ready = false;
  let wake: (() => void) | undefined;
  let backoff = initialBackoff;

  const updateReady = (): void => {
    const now = snapshotReceived && manager.pendingCount === 0;
    if (now === ready) return;
    ready = now;
    opts.onReady?.(now);
  };
  manager.on('pending', updateReady);

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
        snapshotReceived = true;
        log.info({ pods: s.seen.size, removed }, 'snapshot received and reconciled');
        updateReady();
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
      conn = ZdsConnection.connect(opts.path, connOpts);
    } catch (err) {
      lastError = errorMessage(err);
      log.debug({ err: lastError, retryMs: backoff }, 'cannot reach the node agent');
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
  const running = run();

  return {
    status: () => ({
      connected,
      snapshotReceived,
      pending: manager.pendingCount,
      ready,
      connections,
      lastError,
    }),
    close: async () => {
      if (closed) return running;
      closed = true;
      manager.off('pending', updateReady);
      wake?.();
      current?.close();
      return running;
    },
  };
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

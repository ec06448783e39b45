// SPDX-License-Identifier: Apache-2.0
// Late rejection (security-and-reliability.md checklist C.49): authorization is decided when a
// connection opens, but a policy tightened later must also end the established connections it no
// longer allows, or a long-lived connection keeps access that was taken away. Upstream ztunnel
// does the same (its connection manager closes connections "due to policy change").
//
// Every inbound connection that passed RBAC registers here with what it was decided on. When
// policies or a workload holding connections change (or a static config reload replaces
// everything), each registered connection is decided again, once per event-loop turn however many
// changes arrived in it, and one that is now denied is closed with a reset; the caller's close()
// records why, for the access log.
//
// Only an explicit decision closes a connection. A policy the workload references but the store
// has not received yet denies *new* connections (C.45), but here it is ignored: during an update
// WDS may deliver the reference before the policy, and closing every established connection in
// that window would be collateral damage. Loosening a policy never touches a connection.
import type { StateStore, StateChange } from '../state/store.ts';
import { evaluate, type RbacConnection } from './rbac.ts';

export interface AuthorizedConnection {
  /** Uid of the local workload the connection was authorized for. */
  readonly workloadUid: string;
  readonly conn: RbacConnection;
  /** Ends the connection with a reset; `reason` is what the access log records. */
  close(reason: string): void;
}

export class AuthorizedConnections {
  readonly #store: StateStore;
  readonly #byWorkload = new Map<string, Set<AuthorizedConnection>>();
  #scheduled = false;
  #closed = 0;

  constructor(store: StateStore) {
    this.#store = store;
    store.on('changed', this.#onChange);
  }

  /** Registers an authorized connection; the returned function unregisters it (on close). */
  add(c: AuthorizedConnection): () => void {
    let set = this.#byWorkload.get(c.workloadUid);
    if (set === undefined) {
      set = new Set();
      this.#byWorkload.set(c.workloadUid, set);
    }
    set.add(c);
    return () => {
      const s = this.#byWorkload.get(c.workloadUid);
      if (s?.delete(c) === true && s.size === 0) this.#byWorkload.delete(c.workloadUid);
    };
  }

  /** Connections currently registered. */
  get size(): number {
    let n = 0;
    for (const s of this.#byWorkload.values()) n += s.size;
    return n;
  }

  /** Connections closed by a policy change since start. */
  get closedByPolicy(): number {
    return this.#closed;
  }

  /** Stops following the store (ztunnel shutdown). */
  stop(): void {
    this.#store.off('changed', this.#onChange);
  }

  readonly #onChange = (ev: StateChange): void => {
    if (this.#byWorkload.size === 0) return;
    // A workload's own change can attach or detach policies; other workloads' changes cannot.
    const relevant =
      ev.kind === 'policy' || ev.kind === 'all' || (ev.kind === 'workload' && this.#byWorkload.has(ev.key));
    if (!relevant || this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.recheck();
    });
  };

  /** Decides every registered connection again; closes the ones now explicitly denied. */
  recheck(): void {
    for (const [uid, conns] of [...this.#byWorkload]) {
      const local = this.#store.workload(uid);
      // A workload gone from the store is the proxy's to tear down (ZDS Del drains it), not ours.
      if (local === undefined) continue;
      const { policies } = this.#store.policiesFor(local);
      for (const c of [...conns]) {
        const d = evaluate({ policies, missing: [], conn: c.conn });
        if (d.allowed) continue;
        conns.delete(c);
        this.#closed++;
        c.close(`closed by a policy change: ${d.reason}`);
      }
      if (conns.size === 0) this.#byWorkload.delete(uid);
    }
  }
}

// SPDX-License-Identifier: Apache-2.0
// The Kubernetes source: informers (src/shared/kube/informers.ts) on every watched kind, their
// events turned into SourceEvent batches.
//
// start() waits until every kind has been listed, then emits everything seen so far as the first
// batch (the initial list, plus any change that arrived while other kinds were still listing)
// and resolves. After that, events are collected and emitted together on the next turn of the
// event loop, so a burst (a relist after `410 Gone`, a namespace deleted with its pods) reaches
// the model as one batch, in the order the informers reported it. Informer failures are retried
// by the informers and surface here as warnings.
import type { KubeConfig } from '@kubernetes/client-node';
import { EventEmitter } from 'eventemitter3';
import { KubeInformers, type InformerEvent, type KubeInformersOptions } from '../../shared/kube/informers.ts';
import {
  isWatchedKind,
  sourceEvent,
  WATCHED_KINDS,
  WATCHED_RESOURCES,
  type Source,
  type SourceEvent,
  type SourceEvents,
} from './types.ts';

export type KubeSourceOptions = KubeInformersOptions;

export class KubeSource extends EventEmitter<SourceEvents> implements Source {
  readonly #informers: KubeInformers;
  #pending: SourceEvent[] = [];
  #live = false;
  #stopped = false;
  #flush: NodeJS.Immediate | undefined;

  constructor(kc: KubeConfig, opts: KubeSourceOptions = {}) {
    super();
    this.#informers = new KubeInformers(
      kc,
      WATCHED_KINDS.map((k) => WATCHED_RESOURCES[k]),
      opts,
    );
    this.#informers.on('event', (e) => this.#onEvent(e));
    this.#informers.on('warning', (m) => this.emit('warning', m));
  }

  async start(): Promise<void> {
    await this.#informers.start();
    this.#live = true;
    this.#emitPending(true);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#live = false;
    if (this.#flush !== undefined) clearImmediate(this.#flush);
    this.#flush = undefined;
    this.#pending = [];
    await this.#informers.stop();
  }

  #onEvent(e: InformerEvent): void {
    if (this.#stopped) return;
    const kind = e.resource.kind;
    // The informers watch exactly WATCHED_RESOURCES.
    if (!isWatchedKind(kind)) throw new Error(`informer event for unexpected kind ${kind}`);
    this.#pending.push(sourceEvent(e.type === 'delete' ? 'delete' : 'upsert', kind, e.object));
    if (this.#live && this.#flush === undefined) {
      this.#flush = setImmediate(() => {
        this.#flush = undefined;
        this.#emitPending(false);
      });
    }
  }

  /** Emits what is pending; the initial batch is emitted even when empty. */
  #emitPending(initial: boolean): void {
    if (this.#pending.length === 0 && !initial) return;
    const batch = this.#pending;
    this.#pending = [];
    this.emit('change', batch);
  }
}

// SPDX-License-Identifier: Apache-2.0
// The file source of local mode: directories of Kubernetes YAML (the same objects a cluster
// would hold) read and watched by src/shared/kube/manifests.ts, turned into SourceEvent batches
// with the Kubernetes source's semantics.
//
// Only the watched kinds are accepted; any other document is an error naming its file and
// position. start() fails when the directories cannot be read or a file is invalid (starting
// without, say, a DENY policy would be a hole); later, a file that becomes unreadable or invalid
// keeps its last good objects and produces a warning. Each re-read that changes anything is one
// batch: deletes first, then upserts. Later directories override earlier ones by object, which
// lets local mode layer runtime Pod objects over the user's Pod specs.
import { EventEmitter } from 'eventemitter3';
import {
  ManifestWatcher,
  type ManifestChange,
  type ManifestObject,
  type ManifestWatcherOptions,
} from '../../shared/kube/manifests.ts';
import {
  isWatchedKind,
  sourceEvent,
  WATCHED_KINDS,
  WATCHED_RESOURCES,
  type Source,
  type SourceEvent,
  type SourceEvents,
} from './types.ts';

export type FileSourceOptions = ManifestWatcherOptions;

function toEvent(type: SourceEvent['type'], o: ManifestObject): SourceEvent {
  // The watcher accepts only WATCHED_RESOURCES.
  if (!isWatchedKind(o.kind)) throw new Error(`manifest object of unexpected kind ${o.kind}`);
  return sourceEvent(type, o.kind, o);
}

export class FileSource extends EventEmitter<SourceEvents> implements Source {
  readonly #watcher: ManifestWatcher;

  /** `dirs` in override order: a later directory's object replaces an earlier one's with the same key. */
  constructor(dirs: readonly string[], opts: FileSourceOptions = {}) {
    super();
    this.#watcher = new ManifestWatcher(
      dirs,
      WATCHED_KINDS.map((k) => WATCHED_RESOURCES[k]),
      opts,
    );
    this.#watcher.on('warning', (m) => this.emit('warning', m));
    this.#watcher.on('change', (c) => this.#onChange(c));
  }

  async start(): Promise<void> {
    const objects = await this.#watcher.start();
    this.emit(
      'change',
      [...objects.values()].map((o) => toEvent('upsert', o)),
    );
  }

  async stop(): Promise<void> {
    await this.#watcher.close();
  }

  #onChange(c: ManifestChange): void {
    this.emit('change', [
      ...c.deleted.map((o) => toEvent('delete', o)),
      ...c.upserted.map((o) => toEvent('upsert', o)),
    ]);
  }
}

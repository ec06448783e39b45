// SPDX-License-Identifier: Apache-2.0
// The agent's durable memory of pod sandboxes on this node: for every pod the CNI plugin told
// us about, its netns path and the netns inode (so a recycled path is never mistaken for the
// pod's namespace, checklist D.58), and whether we enrolled it. Persisted as one JSON file,
// replaced atomically on every change, so an agent restart can re-open the namespaces of
// running pods, hand them to ztunnel again and clean up after pods deleted while it was down.
import { readFileSync, renameSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { MeshError } from '../../../src/shared/errors.ts';

export interface PodRecord {
  /** Kubernetes pod UID. */
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly netnsPath: string;
  /** Inode of the netns when we first saw it (a string: inodes can exceed 2^53). */
  readonly netnsInode: string;
  /** True once redirection rules are installed in the netns. */
  readonly enrolled: boolean;
}

export class PodRegistryError extends MeshError {}

const VERSION = 1;

export class PodRegistry {
  readonly #path: string;
  readonly #records = new Map<string, PodRecord>();
  #writing: Promise<void> = Promise.resolve();

  private constructor(path: string) {
    this.#path = path;
  }

  /**
   * Loads `path` (absent = empty). A file that cannot be read as a registry is moved aside
   * (`<path>.corrupt-<time>`) and the agent starts empty, with `onCorrupt` told why: pods are
   * then found again from the cluster view and /proc. Refusing to start instead would leave the
   * plugin failing every CNI ADD on the node until someone intervened.
   */
  static load(path: string, onCorrupt: (message: string) => void = () => undefined): PodRegistry {
    try {
      return PodRegistry.#parse(path);
    } catch (e) {
      if (!(e instanceof PodRegistryError)) throw e;
      const aside = `${path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      renameSync(path, aside);
      onCorrupt(`${e.message}; moved it to ${aside} and started with an empty registry`);
      return new PodRegistry(path);
    }
  }

  static #parse(path: string): PodRegistry {
    const reg = new PodRegistry(path);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return reg;
      throw e;
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new PodRegistryError(
        'CNI_ERR_REGISTRY',
        `pod registry ${path} is not valid JSON (${(e as Error).message})`,
      );
    }
    if (
      typeof doc !== 'object' ||
      doc === null ||
      (doc as { version?: unknown }).version !== VERSION ||
      !Array.isArray((doc as { pods?: unknown }).pods)
    ) {
      throw new PodRegistryError(
        'CNI_ERR_REGISTRY',
        `pod registry ${path} is not a version ${VERSION} registry`,
      );
    }
    for (const p of (doc as { pods: unknown[] }).pods) {
      const r = p as Partial<Record<keyof PodRecord, unknown>>;
      if (
        typeof r.uid !== 'string' ||
        typeof r.namespace !== 'string' ||
        typeof r.name !== 'string' ||
        typeof r.netnsPath !== 'string' ||
        typeof r.netnsInode !== 'string' ||
        typeof r.enrolled !== 'boolean'
      ) {
        throw new PodRegistryError(
          'CNI_ERR_REGISTRY',
          `pod registry ${path} has a malformed entry: ${JSON.stringify(p)}`,
        );
      }
      reg.#records.set(r.uid, r as PodRecord);
    }
    return reg;
  }

  get(uid: string): PodRecord | undefined {
    return this.#records.get(uid);
  }

  all(): PodRecord[] {
    return [...this.#records.values()];
  }

  async set(record: PodRecord): Promise<void> {
    this.#records.set(record.uid, record);
    await this.#persist();
  }

  async delete(uid: string): Promise<void> {
    if (this.#records.delete(uid)) await this.#persist();
  }

  /** Writes are serialized; each writes the whole map through a temp file and a rename. */
  #persist(): Promise<void> {
    const body = JSON.stringify({ version: VERSION, pods: [...this.#records.values()] }, null, 1);
    // A failed write must not poison the chain: the next change writes the whole map again.
    this.#writing = this.#writing
      .catch(() => undefined)
      .then(async () => {
        // Durable before it replaces the old file: a power loss leaves the old or the new
        // registry, never a torn one.
        const tmp = `${this.#path}.tmp`;
        const fh = await open(tmp, 'w', 0o600);
        try {
          await fh.writeFile(body);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(tmp, this.#path);
        const dir = await open(dirname(this.#path), 'r');
        try {
          await dir.sync();
        } finally {
          await dir.close();
        }
      });
    return this.#writing;
  }
}

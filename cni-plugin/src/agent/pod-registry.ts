// SPDX-License-Identifier: Apache-2.0
// The agent's durable memory of pod sandboxes on this node: for every pod the CNI plugin told
// us about, its netns path and the netns inode (so a recycled path is never mistaken for the
// pod's namespace, checklist D.58), and whether we enrolled it. Persisted as one JSON file,
// replaced atomically on every change, so an agent restart can re-open the namespaces of
// running pods, hand them to ztunnel again and clean up after pods deleted while it was down.
import { readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
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

  /** Loads `path` (absent = empty). A corrupt file is an error: the agent must not forget pods silently. */
  static load(path: string): PodRegistry {
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
        `pod registry ${path} is not valid JSON (${(e as Error).message}); move it away to start from the running pods`,
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

  byName(namespace: string, name: string): PodRecord | undefined {
    for (const r of this.#records.values()) if (r.namespace === namespace && r.name === name) return r;
    return undefined;
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
        const tmp = `${this.#path}.tmp`;
        await writeFile(tmp, body, { mode: 0o600 });
        await rename(tmp, this.#path);
      });
    return this.#writing;
  }
}

// SPDX-License-Identifier: Apache-2.0
// One Kubernetes object per YAML file, written atomically and updated under a lock. In local
// mode the runtime directory of live objects (Pods with their uid, node and IPs) plays the API
// server's part for two writers: the local runtime (which creates the pods) and the node agents
// (which annotate them). Readers (the manifest watcher) only ever see whole files: every write
// goes to a hidden temporary file in the same directory and is renamed over the target; a
// read-modify-write holds `<file>.lock` (created with O_EXCL) so two writers never lose each
// other's change.
import { open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { parse, stringify } from 'yaml';
import type { KubernetesObject } from '@kubernetes/client-node';
import { MeshError } from '../errors.ts';

export class ObjectFileError extends MeshError {}

/** A lock older than this belongs to a writer that died; it is broken. */
const STALE_LOCK_MS = 10_000;
const LOCK_WAIT_MS = 5_000;

/** Writes `obj` to `path` as YAML, atomically (temporary file + rename). */
export async function writeObjectFile(path: string, obj: KubernetesObject): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  await writeFile(tmp, stringify(obj), { mode: 0o644 });
  await rename(tmp, path);
}

/** Reads one object; undefined when the file does not exist. */
export async function readObjectFile(path: string): Promise<KubernetesObject | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const doc: unknown = parse(text);
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new ObjectFileError('KUBE_ERR_OBJECT_FILE', `${path} does not hold one Kubernetes object`);
  }
  return doc;
}

/**
 * Read-modify-write under the file's lock. `mutate` returns the new object (or undefined to
 * leave the file as it is). Rejects when the file does not exist: the object is not live.
 */
export async function updateObjectFile<T extends KubernetesObject>(
  path: string,
  mutate: (current: T) => T | undefined,
): Promise<T> {
  const release = await lock(path);
  try {
    const cur = (await readObjectFile(path)) as T | undefined;
    if (cur === undefined) {
      throw new ObjectFileError('KUBE_ERR_OBJECT_GONE', `${path} does not exist: the object is not live`);
    }
    const next = mutate(cur);
    if (next === undefined) return cur;
    await writeObjectFile(path, next);
    return next;
  } finally {
    await release();
  }
}

async function lock(path: string): Promise<() => Promise<void>> {
  const lockPath = `${path}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const fh = await open(lockPath, 'wx', 0o600);
      await fh.close();
      return () => unlink(lockPath).catch(() => undefined);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    try {
      const st = await stat(lockPath);
      if (Date.now() - st.mtimeMs > STALE_LOCK_MS) {
        await unlink(lockPath).catch(() => undefined);
        continue;
      }
    } catch {
      continue; // released meanwhile
    }
    if (Date.now() > deadline) {
      throw new ObjectFileError(
        'KUBE_ERR_OBJECT_LOCKED',
        `${lockPath} is held by another writer for more than ${LOCK_WAIT_MS} ms; remove it if no writer is running`,
      );
    }
    await delay(5 + Math.floor(Math.random() * 10));
  }
}

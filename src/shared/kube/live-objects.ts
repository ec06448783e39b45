// SPDX-License-Identifier: Apache-2.0
// Local mode's live objects (ARCHITECTURE.md, decision 17): where the runtime keeps a running
// pod's object, and the one way its labels and annotations are changed (a merge under the
// file's lock, `null` removing a key). The local runtime, `./mesh label` and the node agent's
// manifest view all go through here, so they agree on the layout and the semantics.
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { updateObjectFile } from './object-file.ts';

/** `<liveDir>/pods/<namespace>.<name>.yaml`. */
export function livePodFile(liveDir: string, namespace: string, name: string): string {
  return join(liveDir, 'pods', `${namespace}.${name}.yaml`);
}

/** Applies key changes to a string map; undefined when nothing changes. */
function merged(
  current: Readonly<Record<string, string>> | undefined,
  changes: Readonly<Record<string, string | null>>,
): Record<string, string> | undefined {
  const next = new Map(Object.entries(current ?? {}));
  let changed = false;
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) changed = next.delete(k) || changed;
    else if (next.get(k) !== v) {
      next.set(k, v);
      changed = true;
    }
  }
  return changed ? Object.fromEntries(next) : undefined;
}

/** Merges label or annotation changes into a live pod's object (no write when nothing changes). */
export async function patchLivePod(
  liveDir: string,
  namespace: string,
  name: string,
  field: 'labels' | 'annotations',
  changes: Readonly<Record<string, string | null>>,
): Promise<void> {
  await updateObjectFile<V1Pod>(livePodFile(liveDir, namespace, name), (cur) => {
    const next = merged(cur.metadata?.[field], changes);
    return next === undefined ? undefined : { ...cur, metadata: { ...cur.metadata, [field]: next } };
  });
}

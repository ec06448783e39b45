// SPDX-License-Identifier: Apache-2.0
// The manifest watcher reports the deletion of a file that was written by rename-over, in a
// subdirectory created after the watch started (how local mode writes live Pods): a recursive
// fs.watch on Linux misses exactly this, so the agent and the controller would never see the pod go.
import t from 'tap';
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestWatcher, type ManifestChange } from '../../../../src/shared/kube/manifests.ts';
import { RESOURCE_TYPES } from '../../../../src/shared/kube/resources.ts';
import { waitFor } from '../../../helpers/wait.ts';

t.test('a rename-over file in a new subdirectory: upsert, then delete reported', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'manifests-'));
  const w = new ManifestWatcher([dir], [RESOURCE_TYPES.Pod], { debounceMs: 20 });
  const changes: ManifestChange[] = [];
  w.on('change', (c) => changes.push(c));
  t.teardown(async () => {
    await w.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await w.start();
  mkdirSync(join(dir, 'pods'));
  const file = join(dir, 'pods', 'a.yaml');
  for (const version of ['1', '2']) {
    writeFileSync(
      `${file}.tmp`,
      `apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: d, labels: {v: '${version}'}}\n`,
    );
    renameSync(`${file}.tmp`, file);
    await waitFor(
      () => changes.some((c) => c.upserted.some((o) => o.metadata.labels?.v === version)),
      `upsert of version ${version}`,
    );
  }
  rmSync(file);
  await waitFor(() => changes.some((c) => c.deleted.some((o) => o.metadata.name === 'a')), 'the delete');
  t.equal(w.objects.size, 0, 'nothing left');
});

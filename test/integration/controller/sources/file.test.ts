// SPDX-License-Identifier: Apache-2.0
// The controller's file source (local mode) on real directories: the initial batch, edits,
// deletions, broken and emptied files (a warning, nothing deleted, the last good objects kept),
// atomic rename-into-place writes, the runtime overlay directory overriding the user's Pods, and
// refusing to start on an invalid file.
import t from 'tap';
import type { Test } from 'tap';
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FileSource } from '../../../../src/controller/sources/file.ts';
import { objectKey, type SourceEvent } from '../../../../src/controller/sources/types.ts';
import { Recorder } from '../../../helpers/kube-api/index.ts';

interface Rig {
  source: FileSource;
  batches: Recorder<readonly SourceEvent[]>;
  warnings: Recorder<string>;
}

async function started(t: Test, dirs: string[]): Promise<Rig> {
  const source = new FileSource(dirs, { debounceMs: 50 });
  const batches = new Recorder<readonly SourceEvent[]>();
  const warnings = new Recorder<string>();
  source.on('change', batches.push);
  source.on('warning', warnings.push);
  t.teardown(() => source.stop());
  await source.start();
  return { source, batches, warnings };
}

const describe = (e: SourceEvent): string => `${e.type} ${e.kind} ${objectKey(e.object)}`;
const all = (batches: readonly (readonly SourceEvent[])[]): string[] => batches.flat().map(describe);

const NS =
  'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels: {istio.io/dataplane-mode: ambient}\n';
const pod = (name: string, extra = ''): string =>
  `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  namespace: demo\n${extra}spec:\n  serviceAccountName: ${name}\n  containers: [{name: app, image: example}]\n`;
const DENY =
  'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: demo}\nspec: {action: DENY, rules: [{}]}\n';

/** Replaces `path` atomically: write a dot-file beside it (skipped by the reader), then rename. */
async function atomicWrite(path: string, text: string): Promise<void> {
  const tmp = join(path, '..', `.tmp-${process.pid}-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(tmp, text);
  await rename(tmp, path);
}

t.test(
  'the first batch holds every object, before start() resolves, with server fields filled',
  async (t) => {
    const dir = t.testdir({
      'ns.yaml': NS,
      'workloads.yaml': `${pod('a')}---\n${pod('b')}`,
      policy: { 'deny.yml': DENY },
    });
    const r = await started(t, [dir]);
    t.equal(r.batches.items.length, 1);
    t.same(
      all(r.batches.items),
      [
        'upsert Namespace demo',
        'upsert AuthorizationPolicy demo/deny',
        'upsert Pod demo/a',
        'upsert Pod demo/b',
      ],
      'in file order: ns.yaml, policy/deny.yml, workloads.yaml',
    );
    for (const e of r.batches.items[0]!) {
      t.match(
        e.object.metadata,
        { uid: /^[0-9a-f-]{36}$/, resourceVersion: /^[0-9a-f]{16}$/, creationTimestamp: /Z$/ },
        describe(e),
      );
    }
    t.same(r.warnings.items, []);
  },
);

t.test('editing a file upserts what changed, and only that', async (t) => {
  const dir = t.testdir({ 'ns.yaml': NS, 'workloads.yaml': `${pod('a')}---\n${pod('b')}` });
  const r = await started(t, [dir]);
  const before = r.batches.items[0]!.find((e) => objectKey(e.object) === 'demo/a')!.object;
  await writeFile(join(dir, 'workloads.yaml'), `${pod('a', '  labels: {v: "2"}\n')}---\n${pod('b')}`);
  await r.batches.until((b) => b.length === 2, 'a change batch');
  t.same(all([r.batches.items[1]!]), ['upsert Pod demo/a']);
  const after = r.batches.items[1]![0]!.object;
  t.same(after.metadata?.labels, { v: '2' });
  t.equal(after.metadata?.uid, before.metadata?.uid, 'the uid is stable');
  t.equal(after.metadata?.creationTimestamp, before.metadata?.creationTimestamp, 'creationTimestamp is kept');
  t.not(after.metadata?.resourceVersion, before.metadata?.resourceVersion, 'the resourceVersion changed');
});

t.test('deleting a file deletes its objects', async (t) => {
  const dir = t.testdir({
    'ns.yaml': NS,
    'workloads.yaml': `${pod('a')}---\n${pod('b')}`,
    'deny.yaml': DENY,
  });
  const r = await started(t, [dir]);
  await rm(join(dir, 'workloads.yaml'));
  await r.batches.until((b) => b.length === 2, 'a change batch');
  t.same(all([r.batches.items[1]!]), ['delete Pod demo/a', 'delete Pod demo/b']);
  t.match(
    r.batches.items[1]![0]!.object,
    { spec: { serviceAccountName: 'a' } },
    'a delete carries the last state',
  );
});

t.test('a broken file: a warning, nothing deleted; fixing it applies the fix', async (t) => {
  const dir = t.testdir({ 'ns.yaml': NS, 'deny.yaml': DENY });
  const r = await started(t, [dir]);
  await writeFile(
    join(dir, 'deny.yaml'),
    'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: demo\n',
  );
  await r.warnings.until((w) => w.length >= 1, 'a warning');
  t.match(
    r.warnings.items[0],
    /deny\.yaml: document 1 \(line 1\): invalid YAML: .* at line 4, column 1; keeping the objects last read from this file$/,
  );
  t.equal(r.batches.items.length, 1, 'no change: the policy is kept');

  await writeFile(join(dir, 'deny.yaml'), DENY.replace('DENY', 'AUDIT'));
  await r.batches.until((b) => b.length === 2, 'the fix');
  t.same(all([r.batches.items[1]!]), ['upsert AuthorizationPolicy demo/deny']);
  t.match(r.batches.items[1]![0]!.object, { spec: { action: 'AUDIT' } });
});

t.test(
  'an emptied file keeps its objects (a partial write?) with a warning; an unaccepted kind is a warning',
  async (t) => {
    const dir = t.testdir({ 'ns.yaml': NS, 'deny.yaml': DENY });
    const r = await started(t, [dir]);
    await writeFile(join(dir, 'deny.yaml'), '');
    await r.warnings.until((w) => w.length >= 1, 'a warning');
    t.match(
      r.warnings.items[0],
      /deny\.yaml holds no objects any more \(a partial write\?\); delete the file to delete its objects/,
    );
    await writeFile(join(dir, 'extra.yaml'), 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n');
    await r.warnings.until((w) => w.some((m) => m.includes('extra.yaml')), 'a warning for the new file');
    t.match(
      r.warnings.items.join('\n'),
      /extra\.yaml: document 1 \(line 1\): kind Deployment is not accepted here .*; the file contributes no objects until it is fixed/,
    );
    t.equal(r.batches.items.length, 1, 'nothing was deleted or added');
  },
);

t.test('atomic rename-into-place writes: one upsert per write, new files picked up', async (t) => {
  const dir = t.testdir({ 'ns.yaml': NS, 'a.yaml': pod('a') });
  const r = await started(t, [dir]);
  await atomicWrite(join(dir, 'a.yaml'), pod('a', '  labels: {v: "2"}\n'));
  await r.batches.until((b) => b.length === 2, 'the replaced file');
  t.same(all([r.batches.items[1]!]), ['upsert Pod demo/a']);
  await atomicWrite(join(dir, 'b.yaml'), pod('b'));
  await r.batches.until((b) => b.length === 3, 'the new file');
  t.same(all([r.batches.items[2]!]), ['upsert Pod demo/b']);
  t.same(r.warnings.items, [], 'the temporary dot-file was never read');
});

t.test('the runtime overlay directory overrides the user’s objects by key', async (t) => {
  const root = t.testdir({
    user: { 'ns.yaml': NS, 'pods.yaml': pod('web', '  labels: {app: web}\n') },
    runtime: {},
  });
  const r = await started(t, [join(root, 'user'), join(root, 'runtime')]);
  const runtimePod = `apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: demo\n  uid: 0d3c4f1e-1111-4222-8333-444455556666\n  labels: {app: web}\nspec: {nodeName: node-1, serviceAccountName: web}\nstatus: {podIP: 198.18.1.7}\n`;
  await atomicWrite(join(root, 'runtime', 'web.yaml'), runtimePod);
  await r.batches.until((b) => b.length === 2, 'the overlay');
  t.same(all([r.batches.items[1]!]), ['upsert Pod demo/web']);
  t.match(r.batches.items[1]![0]!.object, {
    metadata: { uid: '0d3c4f1e-1111-4222-8333-444455556666' },
    spec: { nodeName: 'node-1' },
    status: { podIP: '198.18.1.7' },
  });
  await rm(join(root, 'runtime', 'web.yaml'));
  await r.batches.until((b) => b.length === 3, 'the overlay removed');
  t.same(
    all([r.batches.items[2]!]),
    ['upsert Pod demo/web'],
    'the user’s Pod comes back: an upsert, not a delete',
  );
  t.notMatch(r.batches.items[2]![0]!.object, { spec: { nodeName: String } }, 'no runtime field is left over');
});

t.test('start() refuses an invalid file or a missing directory', async (t) => {
  const dir = t.testdir({ 'ns.yaml': NS, 'bad.yaml': pod('Bad') });
  const source = new FileSource([dir]);
  t.teardown(() => source.stop());
  await t.rejects(source.start(), {
    code: 'KUBE_ERR_MANIFEST',
    message: /bad\.yaml: document 1 \(line 1\): metadata\.name "Bad"/,
  });
  const missing = new FileSource([join(dir, 'nope')]);
  t.teardown(() => missing.stop());
  await t.rejects(missing.start(), {
    code: 'KUBE_ERR_MANIFEST_DIR',
    message: /manifest directory .*nope/,
  });
});

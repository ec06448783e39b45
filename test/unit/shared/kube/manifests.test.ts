// SPDX-License-Identifier: Apache-2.0
// Manifest reading for local mode: multi-document parsing, validation errors that name the file,
// document and line, the caller's list of accepted kinds, the file walk (recursive, sorted,
// dot-entries skipped, ConfigMap-style symlinks followed), directory layering by object key, and
// the server-filled fields (stable uid, content-derived resourceVersion, creationTimestamp).
import t from 'tap';
import { KubeError } from '../../../../src/shared/kube/errors.ts';
import {
  listManifestFiles,
  manifestKey,
  parseManifestText,
  readManifests,
  stableUid,
} from '../../../../src/shared/kube/manifests.ts';
import { RESOURCE_TYPES } from '../../../../src/shared/kube/resources.ts';

const ALL = Object.values(RESOURCE_TYPES);
const NOW = new Date('2026-01-02T03:04:05.678Z');

t.test(
  'multi-document files: empty documents skipped, namespace defaulted, versions normalised',
  async (t) => {
    const docs = parseManifestText(
      [
        '# leading comment',
        '---',
        'apiVersion: v1',
        'kind: Namespace',
        'metadata: {name: demo}',
        '---',
        '# only a comment',
        '---',
        'apiVersion: security.istio.io/v1beta1',
        'kind: AuthorizationPolicy',
        'metadata:',
        '  name: deny',
        'spec: {action: DENY}',
        '---',
        '',
      ].join('\n'),
      'policies.yaml',
      ALL,
    );
    t.same(
      docs.map((d) => [d.index, d.line, d.key]),
      [
        [1, 3, 'Namespace/demo'],
        [3, 9, 'AuthorizationPolicy/default/deny'],
      ],
      'a comment before the first --- belongs to the first document; the comment-only one is skipped',
    );
    t.equal(docs[1]!.object.apiVersion, 'security.istio.io/v1', 'v1beta1 is read as v1');
    t.same(docs[1]!.object.metadata, { name: 'deny', namespace: 'default' });
    t.same(docs[1]!.object.spec, { action: 'DENY' });
    t.same(parseManifestText('', 'empty.yaml', ALL), []);
  },
);

t.test('invalid documents are refused with file, document, line and what to fix', async (t) => {
  const cases: [string, string, RegExp][] = [
    [
      'not a mapping',
      '- a\n- b\n',
      /^f\.yaml: document 1 \(line 1\): a document must be a mapping \(an object\), got a list$/,
    ],
    ['no kind', 'apiVersion: v1\nmetadata: {name: a}\n', /kind is missing/],
    [
      'unknown kind',
      'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n',
      /kind Deployment is not accepted here \(accepted: Namespace, Pod, /,
    ],
    [
      'wrong apiVersion',
      'apiVersion: security.istio.io/v2\nkind: PeerAuthentication\nmetadata: {name: a}\n',
      /apiVersion "security\.istio\.io\/v2" is not served for kind PeerAuthentication \(use security\.istio\.io\/v1 or security\.istio\.io\/v1beta1\)/,
    ],
    [
      'no apiVersion',
      'kind: Pod\nmetadata: {name: a}\n',
      /apiVersion \(missing\) is not served for kind Pod \(use v1\)/,
    ],
    ['no metadata', 'apiVersion: v1\nkind: Pod\n', /metadata is missing or not a mapping/],
    ['no name', 'apiVersion: v1\nkind: Pod\nmetadata: {namespace: a}\n', /metadata\.name is missing/],
    [
      'generateName',
      'apiVersion: v1\nkind: Pod\nmetadata: {generateName: web-}\n',
      /generateName is not supported in manifests; set metadata\.name/,
    ],
    [
      'bad name',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: Web_1}\n',
      /metadata\.name "Web_1" must be a DNS-1123 subdomain/,
    ],
    [
      'Service name is an RFC 1035 label',
      'apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\n',
      /must be an RFC 1035 label/,
    ],
    [
      'Namespace name is a DNS-1123 label',
      'apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n',
      /must be a DNS-1123 label/,
    ],
    [
      'namespace on a cluster-scoped kind',
      'apiVersion: v1\nkind: Namespace\nmetadata: {name: a, namespace: b}\n',
      /Namespace is cluster-scoped: remove metadata\.namespace/,
    ],
    [
      'bad namespace',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: B}\n',
      /metadata\.namespace "B" must be a DNS-1123 label/,
    ],
    [
      'label not a string',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {mesh: true}}\n',
      /metadata\.labels\.mesh must be a string, got boolean true \(quote the value in YAML\)/,
    ],
    [
      'annotations not a mapping',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: a, annotations: [x]}\n',
      /metadata\.annotations must be a mapping of strings, got a list/,
    ],
    [
      'YAML syntax',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: a\n',
      /^f\.yaml: document 1 \(line 1\): invalid YAML: /,
    ],
    [
      'duplicate key',
      'apiVersion: v1\nkind: Pod\nkind: Service\nmetadata: {name: a}\n',
      /invalid YAML: .*[Mm]ap keys must be unique/,
    ],
  ];
  for (const [what, text, message] of cases) {
    t.throws(
      () => parseManifestText(text, 'f.yaml', ALL),
      { name: 'KubeError', code: 'KUBE_ERR_MANIFEST', message },
      what,
    );
  }
  t.throws(
    () =>
      parseManifestText(
        'apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\nmetadata: {}\n',
        'two.yaml',
        ALL,
      ),
    { message: /^two\.yaml: document 2 \(line 5\): metadata\.name is missing$/ },
    'the position names the failing document',
  );
  // "Billion laughs": nine levels of nine aliases each would expand to 9^9 strings.
  const bomb = ['a0: &a0 [x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 9; i++)
    bomb.push(
      `a${i}: &a${i} [${Array<string>(9)
        .fill(`*a${i - 1}`)
        .join(', ')}]`,
    );
  t.throws(
    () => parseManifestText(`${bomb.join('\n')}\n`, 'bomb.yaml', ALL),
    { code: 'KUBE_ERR_MANIFEST', message: /^bomb\.yaml: document 1 \(line 1\): Excessive alias count/ },
    'an alias bomb is refused, not expanded',
  );
});

t.test('callers choose the kinds they accept', async (t) => {
  const pod = 'apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n';
  t.equal(parseManifestText(pod, 'p.yaml', [RESOURCE_TYPES.Pod]).length, 1);
  t.throws(() => parseManifestText(pod, 'p.yaml', [RESOURCE_TYPES.Namespace]), {
    message: /kind Pod is not accepted here \(accepted: Namespace\)/,
  });
});

t.test('stable uids: UUIDv5 of kind, namespace and name', async (t) => {
  const a = stableUid('Pod', 'demo', 'web');
  t.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  t.equal(stableUid('Pod', 'demo', 'web'), a, 'the same object, the same uid');
  t.not(stableUid('Service', 'demo', 'web'), a);
  t.not(stableUid('Pod', 'other', 'web'), a);
  t.not(stableUid('Pod', 'demo', 'web2'), a);
  t.equal(manifestKey('Pod', 'demo', 'web'), 'Pod/demo/web');
  t.equal(manifestKey('Namespace', undefined, 'demo'), 'Namespace/demo');
});

t.test(
  'the file walk: recursive, sorted, YAML only, dot-entries skipped, file symlinks followed',
  async (t) => {
    const dir = t.testdir({
      'b.yaml': '',
      'a.yml': '',
      'notes.txt': '',
      '.hidden.yaml': '',
      sub: { 'c.yaml': '', deeper: { 'a.yaml': '' } },
      '..2026_01_01': { 'cm.yaml': '' },
      'cm.yaml': t.fixture('symlink', '..2026_01_01/cm.yaml'),
      'dangling.yaml': t.fixture('symlink', 'nowhere.yaml'),
    });
    const files = (await listManifestFiles(dir)).map((f) => f.slice(dir.length + 1));
    t.same(files, ['a.yml', 'b.yaml', 'cm.yaml', 'sub/c.yaml', 'sub/deeper/a.yaml']);
  },
);

const ns = (name: string): string => `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${name}}\n`;
const podSpec = (name: string, extra = ''): string =>
  `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  namespace: demo\n${extra}spec:\n  containers: [{name: app, image: example}]\n`;

t.test('later directories override earlier ones by key, whole object', async (t) => {
  const root = t.testdir({
    user: {
      'ns.yaml': ns('demo'),
      'pods.yaml': `${podSpec('web', '  labels: {app: web}\n')}---\n${podSpec('db')}`,
    },
    runtime: {
      'web.yaml': `apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: demo\n  uid: 11111111-2222-3333-4444-555555555555\nspec: {nodeName: node-1}\nstatus: {podIP: 198.18.1.5}\n`,
    },
  });
  const set = await readManifests([`${root}/user`, `${root}/runtime`], ALL, { now: () => NOW });
  t.same(
    [...set.objects.keys()],
    ['Namespace/demo', 'Pod/demo/db', 'Pod/demo/web'],
    'merged order: the override moves to where it was defined',
  );
  const web = set.objects.get('Pod/demo/web')!;
  t.equal(web.metadata.uid, '11111111-2222-3333-4444-555555555555', 'a given uid is kept');
  t.same(
    web.metadata.labels,
    undefined,
    'the whole object is replaced: nothing of the earlier one is merged in',
  );
  t.same((web as unknown as { status: unknown }).status, { podIP: '198.18.1.5' });
  t.same(set.warnings, []);
});

t.test('server-filled fields: stable uid, content-derived resourceVersion, creationTimestamp', async (t) => {
  const dir = t.testdir({
    'a.yaml': `${ns('demo')}---\n${podSpec('web')}`,
    'b.yaml':
      'apiVersion: v1\nkind: Pod\nmetadata: {name: old, namespace: demo, creationTimestamp: "2020-01-01T00:00:00Z", resourceVersion: "999"}\n',
  });
  const first = await readManifests([dir], ALL, { now: () => NOW });
  const again = await readManifests([dir], ALL, { now: () => new Date(NOW.getTime() + 60_000) });
  const web = first.objects.get('Pod/demo/web')!;
  t.equal(web.metadata.uid, stableUid('Pod', 'demo', 'web'));
  t.equal(again.objects.get('Pod/demo/web')!.metadata.uid, web.metadata.uid, 'the uid survives a restart');
  t.equal(
    again.objects.get('Pod/demo/web')!.metadata.resourceVersion,
    web.metadata.resourceVersion,
    'same content, same version',
  );
  t.equal(
    web.metadata.creationTimestamp,
    '2026-01-02T03:04:05Z',
    'RFC 3339 to the second, like the API server',
  );
  const old = first.objects.get('Pod/demo/old')!;
  t.equal(old.metadata.creationTimestamp, '2020-01-01T00:00:00Z', 'a given creationTimestamp is kept');
  t.not(old.metadata.resourceVersion, '999', 'resourceVersion is always the server’s');
  t.equal(web.apiVersion, 'v1');
  t.equal(web.kind, 'Pod');

  const edited = t.testdir({ 'a.yaml': `${ns('demo')}---\n${podSpec('web', '  labels: {v: "2"}\n')}` });
  const changed = await readManifests([edited], ALL, { now: () => NOW });
  t.not(
    changed.objects.get('Pod/demo/web')!.metadata.resourceVersion,
    web.metadata.resourceVersion,
    'an edit changes the version',
  );
  t.equal(
    changed.objects.get('Namespace/demo')!.metadata.resourceVersion,
    first.objects.get('Namespace/demo')!.metadata.resourceVersion,
    'an untouched object keeps its version',
  );
});

t.test('one directory defining a key twice: reported, the later definition wins', async (t) => {
  const dir = t.testdir({
    'a.yaml': podSpec('web', '  labels: {from: a}\n'),
    'b.yaml': podSpec('web', '  labels: {from: b}\n'),
  });
  const set = await readManifests([dir], ALL);
  t.same(set.objects.get('Pod/demo/web')!.metadata.labels, { from: 'b' });
  t.equal(set.warnings.length, 1);
  t.match(
    set.warnings[0],
    /^Pod\/demo\/web is defined in both .*\/a\.yaml \(document 1\) and .*\/b\.yaml \(document 1\); the later one is used$/,
  );
});

t.test('a one-shot read fails on the first bad file or directory', async (t) => {
  const dir = t.testdir({
    'good.yaml': ns('demo'),
    sub: { 'bad.yaml': 'apiVersion: v1\nkind: Pod\nmetadata: {name: X}\n' },
  });
  await t.rejects(readManifests([dir], ALL), {
    code: 'KUBE_ERR_MANIFEST',
    message: /sub\/bad\.yaml: document 1 \(line 1\): metadata\.name "X"/,
  });
  await t.rejects(readManifests([`${dir}/missing`], ALL), {
    code: 'KUBE_ERR_MANIFEST_DIR',
    message: /cannot read manifest directory .*missing: ENOENT/,
  });
  await t.rejects(
    readManifests([dir, `${dir}/sub`], ALL),
    { code: 'KUBE_ERR_MANIFEST_DIR', message: /is inside/ },
    'nested directories are refused',
  );
  await t.rejects(readManifests([], ALL), { code: 'KUBE_ERR_MANIFEST_DIR' });
  const err = await readManifests([dir], ALL).catch((e: unknown) => e);
  t.ok(err instanceof KubeError);
});

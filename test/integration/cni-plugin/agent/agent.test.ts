// SPDX-License-Identifier: Apache-2.0
// The node agent's state machine (spec §2.1 steps 2–5, checklist D.57–D.63) with an in-memory
// cluster view, a recording ZDS port and a recording redirector. The pods' "netns" is this
// process's own (/proc/self/ns/net): real fds and inodes, no root needed. The real rules and the
// real ZDS are proved end to end in test/netns.
import t from 'tap';
import type { Test } from 'tap';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import {
  NodeAgent,
  type ProbeTargets,
  type Redirector,
  type WorkloadInfo,
  type ZdsPort,
} from '../../../../cni-plugin/src/agent/agent.ts';
import { PodRegistry } from '../../../../cni-plugin/src/agent/pod-registry.ts';
import { Logger } from '../../../../src/shared/telemetry/logger.ts';
import { MemoryClusterView } from '../../../helpers/memory-cluster-view.ts';
import { waitFor } from '../../../helpers/wait.ts';

const NETNS = '/proc/self/ns/net';
const NODE = 'node-0';

class RecordingZds implements ZdsPort {
  readonly adds: { uid: string; info: WorkloadInfo; fd: number }[] = [];
  readonly dels: string[] = [];
  failWith: Error | undefined;
  async addWorkload(uid: string, info: WorkloadInfo, netnsFd: number): Promise<void> {
    if (this.failWith) throw this.failWith;
    this.adds.push({ uid, info, fd: netnsFd });
  }
  async delWorkload(uid: string): Promise<void> {
    this.dels.push(uid);
  }
}

class RecordingRedirector implements Redirector {
  readonly applied: string[] = [];
  readonly released: string[] = [];
  readonly removed: string[] = [];
  failWith: Error | undefined;
  async apply(netnsPath: string): Promise<void> {
    if (this.failWith) throw this.failWith;
    this.applied.push(netnsPath);
  }
  async release(netnsPath: string): Promise<void> {
    this.released.push(netnsPath);
  }
  async remove(netnsPath: string): Promise<void> {
    this.removed.push(netnsPath);
  }
}

/** Records changes only: set() of what is already held is a no-op, as in HostProbes. */
class RecordingProbes implements ProbeTargets {
  readonly calls: string[] = [];
  readonly #held = new Map<string, string>();
  async start(): Promise<void> {
    this.calls.push('start');
  }
  async set(uid: string, ips: readonly string[]): Promise<void> {
    const v = ips.join(',');
    if (this.#held.get(uid) === v) return;
    this.#held.set(uid, v);
    this.calls.push(`set ${uid} ${v}`);
  }
  async delete(uid: string): Promise<void> {
    if (this.#held.delete(uid)) this.calls.push(`delete ${uid}`);
  }
}

function pod(
  name: string,
  opts: { ns?: string; labels?: Record<string, string>; node?: string } = {},
): V1Pod {
  return {
    metadata: { name, namespace: opts.ns ?? 'apps', uid: `uid-${name}`, labels: opts.labels ?? {} },
    spec: { containers: [], nodeName: opts.node ?? NODE, serviceAccountName: 'sa-' + name },
  };
}

interface Rig {
  agent: NodeAgent;
  view: MemoryClusterView;
  zds: RecordingZds;
  redirector: RecordingRedirector;
  probes: RecordingProbes;
  registryPath: string;
  newAgent(): Promise<NodeAgent>;
  /** What the agent asked its /proc scan. */
  findNetnsCalls: { uid: string; podIps: string[] }[];
}

async function rig(t: Test, prepare?: (view: MemoryClusterView) => void): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'agent-test-'));
  const registryPath = join(dir, 'pods.json');
  const findNetnsCalls: { uid: string; podIps: string[] }[] = [];
  const view = new MemoryClusterView();
  view.setNamespace({ metadata: { name: 'apps', labels: { 'istio.io/dataplane-mode': 'ambient' } } });
  view.setNamespace({ metadata: { name: 'legacy' } });
  prepare?.(view);
  const zds = new RecordingZds();
  const redirector = new RecordingRedirector();
  const probes = new RecordingProbes();
  const agents: NodeAgent[] = [];
  const newAgent = async (): Promise<NodeAgent> => {
    const a = new NodeAgent({
      nodeName: NODE,
      view,
      registry: PodRegistry.load(registryPath),
      zds,
      redirector,
      policy: { excludedNamespaces: new Set(['kube-system']) },
      logger: new Logger({ level: 'silent' }),
      pendingRetryMs: 50,
      podLookupMs: 200,
      releaseDrainMs: 150,
      probes,
      findNetns: (uid, podIps) => {
        findNetnsCalls.push({ uid, podIps: [...podIps] });
        return uid === 'uid-predates' ? NETNS : undefined;
      },
    });
    agents.push(a);
    await a.start();
    return a;
  };
  const agent = await newAgent();
  t.teardown(async () => {
    for (const a of agents) await a.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { agent, view, zds, redirector, probes, registryPath, newAgent, findNetnsCalls };
}

function annotationOf(view: MemoryClusterView, key: string): string | undefined {
  return view.podsByKey.get(key)?.metadata?.annotations?.['ambient.istio.io/redirection'];
}

t.test(
  'ADD of a mesh pod: rules through our own fd, ZDS add, annotation enabled, registry kept',
  async (t) => {
    const r = await rig(t);
    r.view.setPod(pod('a'));
    const res = await r.agent.handleAdd({
      podNamespace: 'apps',
      podName: 'a',
      podUid: 'uid-a',
      netns: NETNS,
    });
    t.equal(res.enrolled, true);
    t.match(res.reason, /namespace apps label istio.io\/dataplane-mode=ambient/);
    t.equal(r.redirector.applied.length, 1);
    t.match(
      r.redirector.applied[0],
      new RegExp(`^/proc/${process.pid}/fd/\\d+$`),
      'rules go in through the fd we hold',
    );
    t.same(
      r.zds.adds.map((a) => [a.uid, a.info]),
      [['uid-a', { name: 'a', namespace: 'apps', serviceAccount: 'sa-a' }]],
    );
    // Written after the answer (see the next test), in a task of its own.
    await waitFor(() => annotationOf(r.view, 'apps/a') === 'enabled', 'the annotation');
    const saved = JSON.parse(readFileSync(r.registryPath, 'utf8')) as {
      pods: { uid: string; enrolled: boolean }[];
    };
    t.same(
      saved.pods.map((p) => [p.uid, p.enrolled]),
      [['uid-a', true]],
    );
    t.same(
      r.agent.snapshot().map((s) => s.uid),
      ['uid-a'],
      'the ZDS snapshot offers it with its fd',
    );
  },
);

t.test('the ADD is answered before the annotation is written (it only informs the controller)', async (t) => {
  const r = await rig(t);
  r.view.setPod(pod('a'));
  // An API server that takes its time over the patch.
  let release: () => void = () => undefined;
  const slow = new Promise<void>((resolve) => (release = resolve));
  const annotate = r.view.annotatePod.bind(r.view);
  let patches = 0;
  r.view.annotatePod = async (p, a) => {
    patches++;
    await slow;
    await annotate(p, a);
  };
  const answered = await Promise.race([
    r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS }).then(() => true),
    new Promise<false>((resolve) => setTimeout(() => resolve(false), 2000)),
  ]);
  t.equal(answered, true, 'the ADD resolved while the patch was still in flight');
  t.equal(r.zds.adds.length, 1, 'ztunnel had the pod before the answer');
  t.equal(annotationOf(r.view, 'apps/a'), undefined, 'not annotated yet');
  await waitFor(() => patches === 1, 'the patch to start after the answer');
  release();
  await waitFor(() => annotationOf(r.view, 'apps/a') === 'enabled', 'the annotation');
});

t.test('an annotation written after the answer never outlives a quick un-enrolment', async (t) => {
  const r = await rig(t);
  r.view.setPod(pod('a'));
  await r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS });
  // Labelled out before the deferred write ran, from a pod object that has no annotation yet.
  const before = r.view.podsByKey.get('apps/a')!;
  t.equal(annotationOf(r.view, 'apps/a'), undefined, 'the write is still queued');
  r.view.setPod({
    ...before,
    metadata: { ...before.metadata, labels: { 'istio.io/dataplane-mode': 'none' } },
  });
  await waitFor(() => r.agent.snapshot().length === 0, 'un-enrolment');
  await waitFor(
    () => r.view.annotations.some((a) => a.annotations['ambient.istio.io/redirection'] === null),
    'the removal',
  );
  t.equal(annotationOf(r.view, 'apps/a'), undefined, 'no enabled annotation left on a pod out of the mesh');
});

t.test(
  'ADD of a pod outside the mesh answers fast and enrols nothing, but remembers the sandbox',
  async (t) => {
    const r = await rig(t);
    r.view.setPod(pod('old', { ns: 'legacy' }));
    const res = await r.agent.handleAdd({ podNamespace: 'legacy', podName: 'old', netns: NETNS });
    t.equal(res.enrolled, false);
    t.equal(r.redirector.applied.length, 0);
    t.equal(r.zds.adds.length, 0);
    t.equal(annotationOf(r.view, 'legacy/old'), undefined);
    t.equal(r.agent.snapshot().length, 0);
  },
);

t.test('D.59: a rule failure fails the ADD and leaves no state behind', async (t) => {
  const r = await rig(t);
  r.view.setPod(pod('a'));
  r.redirector.failWith = new Error('iptables-restore: line 3 failed');
  await t.rejects(
    r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS }),
    /installing redirection for pod apps\/a: iptables-restore: line 3 failed/,
  );
  t.equal(r.zds.adds.length, 0, 'ztunnel never hears of it');
  t.equal(annotationOf(r.view, 'apps/a'), undefined, 'not annotated');
  t.equal(r.agent.snapshot().length, 0, 'no fd held');
  t.same(PodRegistry.load(r.registryPath).all(), [], 'nothing recorded');
  r.redirector.failWith = undefined;
  const res = await r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS });
  t.equal(res.enrolled, true, 'the runtime retry succeeds');
});

t.test('D.58: a netns that vanished before ADD is a clear error and records nothing', async (t) => {
  const r = await rig(t);
  r.view.setPod(pod('a'));
  await t.rejects(
    r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: '/run/netns/does-not-exist-4711' }),
    { code: 'CNI_ERR_NETNS_GONE', message: /is gone/ },
  );
  t.same(PodRegistry.load(r.registryPath).all(), []);
  t.equal(r.redirector.applied.length, 0);
});

t.test('D.61: an unknown pod, a stale uid or a pod of another node fail the ADD', async (t) => {
  const r = await rig(t);
  await t.rejects(
    r.agent.handleAdd({ podNamespace: 'apps', podName: 'ghost', netns: NETNS }),
    /pod apps\/ghost is not known to the cluster/,
  );
  r.view.setPod(pod('a'));
  await t.rejects(
    r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', podUid: 'uid-old', netns: NETNS }),
    /names pod uid uid-old but apps\/a is uid-a/,
  );
  r.view.setPod(pod('far', { node: 'node-9' }));
  await t.rejects(
    r.agent.handleAdd({ podNamespace: 'apps', podName: 'far', netns: NETNS }),
    /scheduled on node-9, not on this node/,
  );
  r.view.setPod(pod('b', { ns: 'nowhere' }));
  await t.rejects(
    r.agent.handleAdd({ podNamespace: 'nowhere', podName: 'b', netns: NETNS }),
    /namespace nowhere is not known/,
    'an unknown namespace is never read as "not ambient"',
  );
  r.view.unreachable = new Error('connect ECONNREFUSED 10.0.0.1:443');
  r.view.podsByKey.clear();
  await t.rejects(r.agent.handleAdd({ podNamespace: 'apps', podName: 'x', netns: NETNS }), /ECONNREFUSED/);
  t.equal(r.redirector.applied.length, 0);
});

t.test('no ztunnel: the pod is pending (rules in place) and enabled once ztunnel takes it', async (t) => {
  const r = await rig(t);
  r.view.setPod(pod('a'));
  r.zds.failWith = new Error('no ztunnel connected');
  const res = await r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS });
  t.equal(res.enrolled, true, 'the sandbox may start: its traffic is held by the rules');
  t.equal(r.redirector.applied.length, 1);
  t.same([...r.agent.states()], [['uid-a', 'pending']]);
  await waitFor(() => annotationOf(r.view, 'apps/a') === 'pending', 'the pending annotation');
  r.zds.failWith = undefined;
  await waitFor(() => annotationOf(r.view, 'apps/a') === 'enabled', 'the retry to enable the pod');
  t.same([...r.agent.states()], [['uid-a', 'enabled']]);
});

t.test('D.63: labels toggled on a running pod enrol and un-enrol it in place', async (t) => {
  const r = await rig(t);
  r.view.setPod(pod('a'));
  await r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS });
  const running = r.view.podsByKey.get('apps/a')!;

  r.view.setPod({
    ...running,
    metadata: { ...running.metadata, labels: { 'istio.io/dataplane-mode': 'none' } },
  });
  await waitFor(() => r.agent.snapshot().length === 0, 'un-enrolment');
  t.same(r.zds.dels, ['uid-a'], 'ztunnel lets go first');
  t.equal(
    r.redirector.released.length,
    1,
    'capture stops at once (established connections keep their routing)',
  );
  t.equal(r.redirector.removed.length, 0, 'the rest stays while connections drain');
  await waitFor(() => r.redirector.removed.length === 1, 'the rules to go after the drain');
  await waitFor(() => annotationOf(r.view, 'apps/a') === undefined, 'annotation removal');

  const off = r.view.podsByKey.get('apps/a')!;
  r.view.setPod({ ...off, metadata: { ...off.metadata, labels: {} } });
  await waitFor(() => annotationOf(r.view, 'apps/a') === 'enabled', 're-enrolment');
  t.equal(r.redirector.applied.length, 2, 'rules back, from the netns the registry remembered');
  t.equal(r.zds.adds.length, 2);

  r.view.setNamespace({ metadata: { name: 'apps', labels: {} } });
  await waitFor(() => r.agent.snapshot().length === 0, 'namespace opt-out');
  await waitFor(() => r.redirector.removed.length === 2, 'the rules to go after the drain');
  t.pass('rules removed after the namespace opted out');
});

t.test('a pod back in the mesh before its drain ended keeps its rules', async (t) => {
  const r = await rig(t);
  r.view.setPod(pod('a'));
  await r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS });
  const running = r.view.podsByKey.get('apps/a')!;
  r.view.setPod({
    ...running,
    metadata: { ...running.metadata, labels: { 'istio.io/dataplane-mode': 'none' } },
  });
  await waitFor(() => r.redirector.released.length === 1, 'the release');
  const off = r.view.podsByKey.get('apps/a')!;
  r.view.setPod({ ...off, metadata: { ...off.metadata, labels: {} } });
  await waitFor(() => annotationOf(r.view, 'apps/a') === 'enabled', 're-enrolment');
  await new Promise((res) => setTimeout(res, 400));
  t.equal(r.redirector.removed.length, 0, 'the pending removal was cancelled');
  t.equal(r.redirector.applied.length, 2, 'full rules applied again');
});

t.test('a pod that was not in the mesh at ADD is enrolled when its namespace opts in', async (t) => {
  const r = await rig(t);
  r.view.setPod(pod('old', { ns: 'legacy' }));
  await r.agent.handleAdd({ podNamespace: 'legacy', podName: 'old', netns: NETNS });
  r.view.setNamespace({ metadata: { name: 'legacy', labels: { 'istio.io/dataplane-mode': 'ambient' } } });
  await waitFor(() => annotationOf(r.view, 'legacy/old') === 'enabled', 'enrolment');
  t.equal(r.redirector.applied.length, 1);
});

t.test(
  'D.60: a restarted agent re-holds its pods without touching ztunnel and forgets deleted ones',
  async (t) => {
    const r = await rig(t);
    r.view.setPod(pod('a'));
    r.view.setPod(pod('b'));
    await r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS });
    await r.agent.handleAdd({ podNamespace: 'apps', podName: 'b', netns: NETNS });
    await r.agent.stop();
    t.equal(annotationOf(r.view, 'apps/a'), 'enabled', 'stopping the agent changes nothing on the pods');
    r.view.podsByKey.delete('apps/b'); // deleted while the agent was down (no event reaches anyone)
    const addsBefore = r.zds.adds.length;
    const annotationsBefore = r.view.annotations.length;

    const again = await r.newAgent();
    t.same(
      again.snapshot().map((s) => s.uid),
      ['uid-a'],
      'the snapshot for ztunnel holds the running pod again',
    );
    t.same([...again.states()], [['uid-a', 'enabled']], 'still enabled: no flap to pending');
    t.equal(r.zds.adds.length, addsBefore, 'no ZDS add at start: the snapshot carries it');
    t.equal(r.view.annotations.length, annotationsBefore, 'no annotation churn');
    t.same(
      PodRegistry.load(r.registryPath)
        .all()
        .map((p) => p.uid),
      ['uid-a'],
      'the deleted pod is forgotten',
    );
    t.ok(r.redirector.removed.length >= 1, 'its rules were cleaned up');
  },
);

t.test('a deleted pod is dropped from ztunnel and from memory', async (t) => {
  const r = await rig(t);
  r.view.setPod(pod('a'));
  await r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS });
  r.view.removePod('apps', 'a');
  await waitFor(() => PodRegistry.load(r.registryPath).all().length === 0, 'the registry to forget the pod');
  t.same(r.zds.dels, ['uid-a']);
  t.equal(r.agent.snapshot().length, 0);
});

t.test('kubelet probe targets (spec §2.4): written after reconcile, kept with enrolment', async (t) => {
  const r = await rig(t, (view) =>
    view.setPod({
      ...pod('predates'),
      status: { phase: 'Running', podIP: '198.18.5.7', podIPs: [{ ip: '198.18.5.7' }] },
    }),
  );
  // The pod found at start-up is a target before the tables are first written (the 1.29.5
  // advisory: never write the set before every enrolled pod is known).
  t.same(r.probes.calls, ['set uid-predates 198.18.5.7', 'start']);
  r.probes.calls.length = 0;

  r.view.setPod(pod('a'));
  await r.agent.handleAdd({
    podNamespace: 'apps',
    podName: 'a',
    netns: NETNS,
    ips: ['198.18.5.9', 'fd00::9'],
  });
  t.same(
    r.probes.calls,
    ['set uid-a 198.18.5.9,fd00::9'],
    "the ADD's own addresses, before the API has them",
  );
  r.view.setPod(pod('plain', { ns: 'legacy' }));
  await r.agent.handleAdd({ podNamespace: 'legacy', podName: 'plain', netns: NETNS, ips: ['198.18.5.10'] });
  t.same(r.probes.calls, ['set uid-a 198.18.5.9,fd00::9'], 'a pod outside the mesh is no target');

  r.view.setPod(pod('a', { labels: { 'istio.io/dataplane-mode': 'none' } }));
  await waitFor(
    () => r.probes.calls.includes('delete uid-a'),
    'the pod leaving the mesh to stop being a target',
  );
  r.view.removePod('apps', 'predates');
  await waitFor(() => r.probes.calls.includes('delete uid-predates'), 'a deleted pod to stop being a target');
});

t.test('a running pod that predates the agent is found through /proc and enrolled', async (t) => {
  const r = await rig(t);
  r.view.setPod({
    ...pod('predates'),
    status: { phase: 'Running', podIP: '198.18.5.7', podIPs: [{ ip: '198.18.5.7' }, { ip: 'fd00::7' }] },
  });
  await waitFor(() => annotationOf(r.view, 'apps/predates') === 'enabled', 'enrolment');
  t.equal(r.redirector.applied.length, 1, 'rules applied without a CNI ADD');
  t.same(
    r.findNetnsCalls.find((c) => c.uid === 'uid-predates')?.podIps,
    ['198.18.5.7', 'fd00::7'],
    'the /proc scan is given the pod IPs to check the namespace against',
  );
  r.view.setPod({ ...pod('unknown'), status: { phase: 'Running' } });
  await new Promise((res) => setTimeout(res, 200));
  t.equal(annotationOf(r.view, 'apps/unknown'), undefined, 'a pod whose netns cannot be found waits');
});

t.test(
  'a failed enabled annotation is retried (the controller tunnels only to annotated pods)',
  async (t) => {
    const r = await rig(t);
    r.view.setPod(pod('a'));
    r.view.failAnnotations = 1;
    await r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS });
    t.equal(annotationOf(r.view, 'apps/a'), undefined, 'the first patch failed');
    await waitFor(() => annotationOf(r.view, 'apps/a') === 'enabled', 'the retry');
    t.pass('annotated on the next tick');
  },
);

t.test('a pod labelled out while no agent ran loses its leftover rules at the next start', async (t) => {
  const r = await rig(t);
  r.view.setPod(pod('a'));
  await r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS });
  await r.agent.stop();
  const running = r.view.podsByKey.get('apps/a')!;
  r.view.podsByKey.set('apps/a', {
    ...running,
    metadata: { ...running.metadata, labels: { 'istio.io/dataplane-mode': 'none' } },
  });
  await r.newAgent();
  await waitFor(() => annotationOf(r.view, 'apps/a') === undefined, 'the annotation to go');
  t.equal(r.redirector.removed.length, 1, 'the rules left in its netns were removed');
  t.equal(PodRegistry.load(r.registryPath).get('uid-a')?.enrolled, false, 'recorded as not enrolled');
});

t.test(
  'CNI CHECK: fine outside the mesh, fine when enrolled with this netns, an error otherwise',
  async (t) => {
    const r = await rig(t);
    r.view.setPod(pod('old', { ns: 'legacy' }));
    t.same(await r.agent.handleCheck({ podNamespace: 'legacy', podName: 'old', netns: NETNS }), {
      ok: true,
      reason: 'neither pod nor namespace legacy is labelled istio.io/dataplane-mode=ambient',
    });
    r.view.setPod(pod('a'));
    const before = await r.agent.handleCheck({ podNamespace: 'apps', podName: 'a', netns: NETNS });
    t.equal(before.ok, false, 'a mesh pod the agent does not hold fails CHECK');
    t.match(before.reason, /is not enrolled/);
    await r.agent.handleAdd({ podNamespace: 'apps', podName: 'a', netns: NETNS });
    t.same(await r.agent.handleCheck({ podNamespace: 'apps', podName: 'a', netns: NETNS }), { ok: true });
    const other = await r.agent.handleCheck({ podNamespace: 'apps', podName: 'a', netns: '/proc/1/ns/mnt' });
    t.equal(other.ok, false, 'another namespace file fails CHECK');
  },
);

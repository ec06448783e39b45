// SPDX-License-Identifier: Apache-2.0
// WdsPublisher (src/controller/app.ts): a model delta reaches the xDS store whole or not at all,
// and any failure (a resource the store would refuse, an apply it refuses anyway) leads to a
// full republish from the model, so no change is lost because the model has moved on. Failures
// are injected into a real XdsResourceStore.
import t, { type Test } from 'tap';
import { Writable } from 'node:stream';
import { WdsPublisher, type PublishedModel } from '../../../src/controller/app.ts';
import type { ModelDelta } from '../../../src/controller/model/ambient-model.ts';
import { XdsResourceStore } from '../../../src/controller/xds/resource-store.ts';
import {
  ADDRESS_TYPE_URL,
  AUTHORIZATION_TYPE_URL,
  WDS_TYPE_URLS,
  workloadResource,
} from '../../../src/controller/xds/wds-resources.ts';
import { Authorization } from '../../../src/shared/gen/authorization.ts';
import { Address, Workload } from '../../../src/shared/gen/workload.ts';
import { Logger } from '../../../src/shared/telemetry/logger.ts';

interface Line {
  level: string;
  message: string;
  resource?: string;
  retryInMs?: number;
  err?: string;
}

function workload(name: string): Address {
  return Address.fromPartial({
    type: {
      $case: 'workload',
      value: Workload.fromPartial({
        uid: `Kubernetes//Pod/apps/${name}`,
        name,
        namespace: 'apps',
        addresses: [Uint8Array.of(10, 0, 0, 1)],
      }),
    },
  });
}

function policy(name: string): Authorization {
  return Authorization.fromPartial({ name, namespace: 'apps' });
}

/** The model's current resources, as plain maps the test edits. */
class FakeModel implements PublishedModel {
  readonly addressMap = new Map<string, Address>();
  readonly authorizationMap = new Map<string, Authorization>();
  addresses(): ReadonlyMap<string, Address> {
    return this.addressMap;
  }
  authorizations(): ReadonlyMap<string, Authorization> {
    return this.authorizationMap;
  }
}

/** A real store whose next applies can be made to throw. */
class FaultyStore extends XdsResourceStore {
  /** Type URLs (or 'any') whose next apply throws, consumed one by one. */
  readonly failures: string[] = [];
  override apply(...args: Parameters<XdsResourceStore['apply']>): ReturnType<XdsResourceStore['apply']> {
    const i = this.failures.findIndex((f) => f === 'any' || f === args[0]);
    if (i >= 0) {
      this.failures.splice(i, 1);
      throw new Error(`injected store failure (${args[0]})`);
    }
    return super.apply(...args);
  }
}

function rig(t: Test): { model: FakeModel; store: FaultyStore; publisher: WdsPublisher; lines: Line[] } {
  const lines: Line[] = [];
  const logger = new Logger({
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Line);
        cb();
      },
    }),
  });
  const model = new FakeModel();
  const store = new FaultyStore(WDS_TYPE_URLS);
  const publisher = new WdsPublisher({ model, store, logger, initialRetryMs: 10, maxRetryMs: 40 });
  t.teardown(() => publisher.close());
  return { model, store, publisher, lines };
}

/** Puts resources into the model and returns the delta the model would report. */
function change(
  model: FakeModel,
  r: { addresses?: Record<string, Address>; authorizations?: Record<string, Authorization> },
): ModelDelta {
  for (const [k, v] of Object.entries(r.addresses ?? {})) model.addressMap.set(k, v);
  for (const [k, v] of Object.entries(r.authorizations ?? {})) model.authorizationMap.set(k, v);
  return {
    addresses: { upserted: new Map(Object.entries(r.addresses ?? {})), removed: [] },
    authorizations: { upserted: new Map(Object.entries(r.authorizations ?? {})), removed: [] },
  };
}

function names(store: XdsResourceStore, typeUrl: string): string[] {
  return [...store.all(typeUrl)].map((r) => r.name).sort();
}

async function settled(publisher: WdsPublisher): Promise<void> {
  const deadline = Date.now() + 5000;
  while (publisher.republishPending) {
    if (Date.now() > deadline) throw new Error('the republish did not settle');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const W1 = 'Kubernetes//Pod/apps/w1';
const TOO_LONG = `apps/${'p'.repeat(5000)}`;

t.test('a delta is published whole: a resource the store would refuse stops both types', async (t) => {
  const { model, store, publisher, lines } = rig(t);
  publisher.publish(
    change(model, {
      addresses: { [W1]: workload('w1') },
      authorizations: { 'apps/allow': policy('allow'), [TOO_LONG]: policy('p'.repeat(5000)) },
    }),
  );
  t.same(names(store, ADDRESS_TYPE_URL), [], 'the Addresses were not applied ahead of the Authorizations');
  t.same(names(store, AUTHORIZATION_TYPE_URL), []);
  t.ok(publisher.republishPending, 'a full republish is scheduled');
  t.match(lines[0], {
    level: 'error',
    message: 'a model change could not be encoded; none of it was published; republishing the whole model',
    err: /is not a usable resource name/,
  });

  await settled(publisher);
  t.same(names(store, ADDRESS_TYPE_URL), [W1], 'the republish publishes everything that can be');
  t.same(names(store, AUTHORIZATION_TYPE_URL), ['apps/allow']);
  t.match(
    lines.find((l) => l.resource === TOO_LONG),
    { level: 'error', message: /cannot be published; its last good version, if any, keeps serving/ },
  );
});

t.test('an apply the store refuses is not lost: the republish brings the model back', async (t) => {
  const { model, store, publisher, lines } = rig(t);
  store.failures.push(AUTHORIZATION_TYPE_URL);
  publisher.publish(
    change(model, { addresses: { [W1]: workload('w1') }, authorizations: { 'apps/deny': policy('deny') } }),
  );
  t.same(names(store, AUTHORIZATION_TYPE_URL), [], 'the injected failure hit the Authorization apply');
  t.match(lines[0], {
    level: 'error',
    message: 'the resource store refused a model change; republishing the whole model',
    err: /injected store failure/,
  });
  // The model has moved on: the next delta does not repeat the policy.
  publisher.publish(change(model, { addresses: { 'Kubernetes//Pod/apps/w2': workload('w2') } }));
  await settled(publisher);
  t.same(names(store, AUTHORIZATION_TYPE_URL), ['apps/deny'], 'the lost Authorization arrived');
  t.same(names(store, ADDRESS_TYPE_URL), [W1, 'Kubernetes//Pod/apps/w2']);
  t.match(lines.at(-1), { level: 'info', message: 'republished the whole model' });
});

t.test('a refused republish is retried with backoff and removes what the model no longer has', async (t) => {
  const { model, store, publisher, lines } = rig(t);
  store.apply(ADDRESS_TYPE_URL, new Map([workloadResource(workload('gone').type!.value as Workload)]));
  model.addressMap.set(W1, workload('w1'));
  store.failures.push('any', 'any', 'any');
  publisher.scheduleRepublish();
  await settled(publisher);
  const retries = lines.filter((l) => l.retryInMs !== undefined).map((l) => l.retryInMs);
  t.same(retries, [10, 20, 40], 'doubling, capped');
  t.same(names(store, ADDRESS_TYPE_URL), [W1], 'the stale workload is removed');
});

t.test('a resource that cannot be encoded keeps its last good version in a republish', async (t) => {
  const { model, store, publisher } = rig(t);
  publisher.publish(change(model, { addresses: { [W1]: workload('w1') } }));
  const good = store.get(ADDRESS_TYPE_URL, W1)?.version;
  // A model bug: an Address with neither a workload nor a service.
  publisher.publish(change(model, { addresses: { [W1]: Address.fromPartial({}) } }));
  t.ok(publisher.republishPending);
  await settled(publisher);
  t.equal(store.get(ADDRESS_TYPE_URL, W1)?.version, good, 'neither replaced nor removed');
});

t.test('flush runs a pending republish now, and throws when the store refuses it', async (t) => {
  const { model, store, publisher } = rig(t);
  publisher.flush();
  t.same(names(store, ADDRESS_TYPE_URL), [], 'nothing pending: nothing done');
  model.addressMap.set(W1, workload('w1'));
  store.failures.push(AUTHORIZATION_TYPE_URL);
  publisher.publish(change(model, { authorizations: { 'apps/x': policy('x') } }));
  publisher.flush();
  t.same(names(store, ADDRESS_TYPE_URL), [W1], 'done synchronously, before serving');
  t.notOk(publisher.republishPending);

  store.failures.push('any');
  publisher.scheduleRepublish();
  t.throws(() => publisher.flush(), /injected store failure/);
  t.ok(publisher.republishPending, 'still retried');
  await settled(publisher);
});

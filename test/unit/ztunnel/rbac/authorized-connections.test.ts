// SPDX-License-Identifier: Apache-2.0
// Late rejection's decisions (ztunnel/src/rbac/authorized-connections.ts; checklist C.49): which
// established connections a change closes, and which it must leave alone.
import { setImmediate as turn } from 'node:timers/promises';
import t from 'tap';
import { AuthorizedConnections } from '../../../../ztunnel/src/rbac/authorized-connections.ts';
import type { RbacConnection } from '../../../../ztunnel/src/rbac/rbac.ts';
import { StateStore } from '../../../../ztunnel/src/state/store.ts';
import {
  emptyMatch,
  newAuthorization,
  newWorkload,
  type Authorization,
} from '../../../../ztunnel/src/state/types.ts';

const SERVER = newWorkload({
  uid: 'uid-server',
  name: 'server',
  namespace: 'demo',
  addresses: ['198.18.0.9'],
});

const from = (sa: string): RbacConnection => ({
  srcIdentity: { trustDomain: 'cluster.local', namespace: 'demo', serviceAccount: sa },
  srcIp: '198.18.0.2',
  dstIp: '198.18.0.9',
  dstPort: 8080,
});

const denyPrincipal = (name: string, sa: string): Authorization =>
  newAuthorization({
    name,
    namespace: 'demo',
    scope: 'NAMESPACE',
    action: 'DENY',
    rules: [
      {
        clauses: [
          { matches: [{ ...emptyMatch(), principals: [{ exact: `cluster.local/ns/demo/sa/${sa}` }] }] },
        ],
      },
    ],
  });

function rig(t: Tap) {
  const store = new StateStore();
  store.upsertWorkload(SERVER);
  const authorized = new AuthorizedConnections(store);
  t.teardown(() => authorized.stop());
  const closed: string[] = [];
  const open = (sa: string): (() => void) =>
    authorized.add({ workloadUid: SERVER.uid, conn: from(sa), close: (why) => closed.push(`${sa}: ${why}`) });
  return { store, authorized, closed, open };
}
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

t.test('a DENY closes the connections it matches, once, after the turn of the change', async (t) => {
  const r = rig(t);
  r.open('a');
  r.open('b');
  r.store.upsertPolicy(denyPrincipal('deny-a', 'a'));
  r.store.upsertPolicy(denyPrincipal('deny-a2', 'a'));
  t.same(r.closed, [], 'not synchronously: changes of one turn are decided together');
  await turn();
  t.same(r.closed, ['a: closed by a policy change: explicitly denied by: demo/deny-a'], 'closed once');
  t.equal(r.authorized.size, 1, 'b stays registered');
  t.equal(r.authorized.closedByPolicy, 1);
});

t.test('an ALLOW that leaves a connection out closes it', async (t) => {
  const r = rig(t);
  r.open('a');
  r.open('b');
  r.store.upsertPolicy(
    newAuthorization({
      name: 'only-b',
      namespace: 'demo',
      scope: 'NAMESPACE',
      action: 'ALLOW',
      rules: [
        {
          clauses: [
            { matches: [{ ...emptyMatch(), principals: [{ exact: 'cluster.local/ns/demo/sa/b' }] }] },
          ],
        },
      ],
    }),
  );
  await turn();
  t.same(r.closed, ['a: closed by a policy change: allow policies exist, but none allowed']);
});

t.test('what must not close anything', async (t) => {
  const r = rig(t);
  r.open('a');
  // A policy the workload references but the store does not have yet: new connections are
  // refused (C.45), established ones are not torn down for an update still in flight.
  r.store.upsertWorkload({ ...SERVER, authorizationPolicies: ['demo/not-yet'] });
  await turn();
  t.same(r.closed, [], 'a referenced policy not yet received');
  // A dry-run DENY only reports.
  r.store.upsertPolicy({ ...denyPrincipal('dry', 'a'), dryRun: true });
  await turn();
  t.same(r.closed, [], 'a dry-run DENY');
  // A DENY in another namespace does not apply to this workload.
  r.store.upsertPolicy({ ...denyPrincipal('elsewhere', 'a'), namespace: 'other' });
  await turn();
  t.same(r.closed, [], 'a DENY for another namespace');
  // Loosening.
  r.store.removePolicy('demo/dry');
  await turn();
  t.same(r.closed, [], 'removing a policy');
  // Unregistered (the connection ended) before the change.
  const close = r.open('c');
  close();
  r.store.upsertPolicy(denyPrincipal('deny-c', 'c'));
  await turn();
  t.same(r.closed, [], 'a connection that already ended');
  // The workload gone: ZDS Del drains it, not this.
  r.store.removeWorkload(SERVER.uid);
  r.store.upsertPolicy(denyPrincipal('deny-a', 'a'));
  await turn();
  t.same(r.closed, [], 'a workload no longer in the store');
});

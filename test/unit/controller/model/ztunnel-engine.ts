// SPDX-License-Identifier: Apache-2.0
// Runs the model's output through ztunnel's own authorization engine (ztunnel/src/rbac/rbac.ts
// and StateStore.policiesFor), so the tests assert connection decisions — "plaintext to port
// 8080 is refused" — not only message shapes. The conversion from the WDS protos to ztunnel's
// internal types is the one a WDS client performs: enum numbers to names, raw address bytes to
// IP text, StringMatch oneofs to single-key objects.
import type { AmbientModel } from '../../../../src/controller/model/ambient-model.ts';
import type * as pb from '../../../../src/shared/gen/authorization.ts';
import type { RbacDecision } from '../../../../ztunnel/src/rbac/rbac.ts';
import { evaluate } from '../../../../ztunnel/src/rbac/rbac.ts';
import { formatIp } from '../../../../src/shared/net/ip.ts';
import { StateStore } from '../../../../ztunnel/src/state/store.ts';
import type { Authorization, CidrAddress, Match, StringMatch } from '../../../../ztunnel/src/state/types.ts';
import { newWorkload } from '../../../../ztunnel/src/state/types.ts';

function stringMatch(m: pb.StringMatch): StringMatch {
  const t = m.matchType;
  if (t === undefined) throw new Error('StringMatch without a match type');
  switch (t.$case) {
    case 'exact':
      return { exact: t.value };
    case 'prefix':
      return { prefix: t.value };
    case 'suffix':
      return { suffix: t.value };
    case 'presence':
      return { presence: true };
  }
}

function cidr(a: pb.Address): CidrAddress {
  if (a.address.length !== 4 && a.address.length !== 16)
    throw new Error(`bad address length ${a.address.length}`);
  return {
    address: formatIp({ family: a.address.length === 4 ? 4 : 6, bytes: a.address }),
    length: a.length,
  };
}

function match(m: pb.Match): Match {
  return {
    namespaces: m.namespaces.map(stringMatch),
    notNamespaces: m.notNamespaces.map(stringMatch),
    principals: m.principals.map(stringMatch),
    notPrincipals: m.notPrincipals.map(stringMatch),
    sourceIps: m.sourceIps.map(cidr),
    notSourceIps: m.notSourceIps.map(cidr),
    destinationIps: m.destinationIps.map(cidr),
    notDestinationIps: m.notDestinationIps.map(cidr),
    destinationPorts: [...m.destinationPorts],
    notDestinationPorts: [...m.notDestinationPorts],
    serviceAccounts: m.serviceAccounts.map((s) => ({ ...s })),
    notServiceAccounts: m.notServiceAccounts.map((s) => ({ ...s })),
  };
}

export function toZtunnelPolicy(p: pb.Authorization): Authorization {
  const scopes = ['GLOBAL', 'NAMESPACE', 'WORKLOAD_SELECTOR'] as const;
  return {
    name: p.name,
    namespace: p.namespace,
    scope: scopes[p.scope],
    action: p.action === 1 ? 'DENY' : 'ALLOW',
    dryRun: p.dryRun,
    rules: p.rules.map((r) => ({ clauses: r.clauses.map((c) => ({ matches: c.matches.map(match) })) })),
  };
}

export interface Conn {
  /** Source identity; omitted for plaintext (15006). */
  from?: { namespace: string; serviceAccount: string; trustDomain?: string };
  port: number;
  srcIp?: string;
  dstIp?: string;
}

/** ztunnel's decision for a connection to the workload `uid`, with the model's current state. */
export function decide(model: AmbientModel, uid: string, conn: Conn): RbacDecision {
  const address = model.addresses().get(uid);
  if (address?.type?.$case !== 'workload') throw new Error(`no workload ${uid}`);
  const w = address.type.value;
  const store = new StateStore();
  for (const p of model.authorizations().values()) store.upsertPolicy(toZtunnelPolicy(p));
  const applicable = store.policiesFor(
    newWorkload({
      uid,
      name: w.name,
      namespace: w.namespace,
      authorizationPolicies: w.authorizationPolicies,
    }),
  );
  return evaluate({
    ...applicable,
    conn: {
      srcIdentity:
        conn.from === undefined
          ? undefined
          : { trustDomain: conn.from.trustDomain ?? 'cluster.local', ...conn.from },
      srcIp: conn.srcIp ?? '10.1.0.1',
      dstIp: conn.dstIp ?? '10.0.0.1',
      dstPort: conn.port,
    },
  });
}

/** Whether a plaintext (no identity) connection to `port` of `uid` is accepted. */
export function plaintextAllowed(model: AmbientModel, uid: string, port: number): boolean {
  return decide(model, uid, { port }).allowed;
}

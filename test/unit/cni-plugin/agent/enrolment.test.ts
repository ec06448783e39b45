// SPDX-License-Identifier: Apache-2.0
// The enrolment rule of spec §2.1 step 1 / §5.1, as a table (checklist D.62 included).
import t from 'tap';
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import { decideEnrolment, needsNamespace } from '../../../../cni-plugin/src/agent/enrolment.ts';

const policy = { excludedNamespaces: new Set(['kube-system', 'infra']) };

function pod(
  ns: string,
  labels: Record<string, string> = {},
  extra: { hostNetwork?: boolean; sidecar?: boolean } = {},
): V1Pod {
  return {
    metadata: {
      name: 'p',
      namespace: ns,
      labels,
      ...(extra.sidecar === true && { annotations: { 'sidecar.istio.io/status': '{}' } }),
    },
    spec: { containers: [], ...(extra.hostNetwork === true && { hostNetwork: true }) },
  };
}
function namespace(name: string, labels: Record<string, string> = {}): V1Namespace {
  return { metadata: { name, labels } };
}
const AMBIENT = { 'istio.io/dataplane-mode': 'ambient' };
const NONE = { 'istio.io/dataplane-mode': 'none' };

const cases: [string, V1Pod, V1Namespace | undefined, boolean][] = [
  ['ambient namespace enrols an unlabelled pod', pod('a'), namespace('a', AMBIENT), true],
  ['pod label none opts out of an ambient namespace', pod('a', NONE), namespace('a', AMBIENT), false],
  ['pod label ambient enrols in a plain namespace', pod('a', AMBIENT), namespace('a'), true],
  ['pod label ambient enrols even when the namespace is unknown', pod('a', AMBIENT), undefined, true],
  ['plain pod in a plain namespace stays out', pod('a'), namespace('a'), false],
  [
    'another label value on the namespace does not enrol',
    pod('a'),
    namespace('a', { 'istio.io/dataplane-mode': 'Ambient' }),
    false,
  ],
  [
    'D.62: kube-system is never enrolled, even labelled',
    pod('kube-system', AMBIENT),
    namespace('kube-system', AMBIENT),
    false,
  ],
  [
    'D.62: a configured excluded namespace is never enrolled',
    pod('infra'),
    namespace('infra', AMBIENT),
    false,
  ],
  [
    'D.62: hostNetwork pods are never enrolled',
    pod('a', AMBIENT, { hostNetwork: true }),
    namespace('a', AMBIENT),
    false,
  ],
  [
    'pods with an Istio sidecar are never enrolled',
    pod('a', {}, { sidecar: true }),
    namespace('a', AMBIENT),
    false,
  ],
];

for (const [name, p, ns, want] of cases) {
  t.test(name, async (t) => {
    const d = decideEnrolment(p, ns, policy);
    t.equal(d.enrol, want);
    t.type(d.reason, 'string');
    t.ok(d.reason.length > 0, 'a reason is given');
  });
}

t.test('D.61: an unknown namespace is "cannot tell", never "not in the mesh"', async (t) => {
  t.equal(needsNamespace(pod('a'), undefined, policy), true, 'plain pod: the namespace decides');
  t.equal(needsNamespace(pod('a', AMBIENT), undefined, policy), false, 'pod label enrols by itself');
  t.equal(needsNamespace(pod('a', NONE), undefined, policy), false, 'pod label none decides by itself');
  t.equal(needsNamespace(pod('kube-system'), undefined, policy), false, 'excluded decides by itself');
  t.equal(needsNamespace(pod('a'), namespace('a'), policy), false, 'known namespace');
});

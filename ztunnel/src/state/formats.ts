// SPDX-License-Identifier: Apache-2.0
// The text formats of state fields, shared by both ways state arrives: the static config
// (../config/static-config.ts, hand-written YAML) and WDS (../xds/convert.ts, protobuf from the
// controller). One definition, so a value one source accepts the other accepts too.

export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
export const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
export const POLICY_NAME = /^[A-Za-z0-9._-]+$/;
export const HOSTNAME = /^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$/;
export const NO_SLASH_TEXT = /^[^/\s]*$/;
/** A service key `namespace/hostname` (../state/types.ts serviceKey). */
export const SERVICE_KEY = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$/;

/** Longest workload uid accepted. */
export const MAX_UID_LENGTH = 1024;

/** A string of a given shape: at most `max` characters, matching `re`; `expected` says so in errors. */
export interface TextFormat {
  readonly re: RegExp;
  readonly max: number;
  readonly expected: string;
}

function format(re: RegExp, max: number, expected: string): TextFormat {
  return Object.freeze({ re, max, expected });
}

export const NAMESPACE_NAME = format(
  DNS_LABEL,
  63,
  'a Kubernetes namespace name (lowercase DNS label, ≤ 63 chars)',
);
export const OBJECT_NAME = format(DNS_SUBDOMAIN, 253, 'a Kubernetes object name (lowercase DNS subdomain)');
export const SERVICE_ACCOUNT_NAME = format(
  DNS_SUBDOMAIN,
  253,
  'a Kubernetes service account name (lowercase DNS subdomain)',
);
export const TRUST_DOMAIN_NAME = format(
  TRUST_DOMAIN,
  255,
  'a trust domain of [a-z0-9._-], e.g. cluster.local',
);
export const POLICY_NAME_TEXT = format(POLICY_NAME, 253, 'a policy name of [A-Za-z0-9._-]');
export const HOSTNAME_TEXT = format(HOSTNAME, 253, 'a DNS hostname such as echo.default.svc.cluster.local');
export const PLAIN_TEXT = format(NO_SLASH_TEXT, 253, "text without '/' or whitespace");

/** Whether `v` has format `f`. */
export function hasFormat(v: string, f: TextFormat): boolean {
  return v.length <= f.max && f.re.test(v);
}

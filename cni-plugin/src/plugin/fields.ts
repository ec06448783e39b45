// SPDX-License-Identifier: Apache-2.0
// The shapes of the values a CNI call carries about a pod, checked the same way where they enter
// the plugin (CNI_* environment, prevResult) and where they enter the agent (the /cmdadd body):
// Kubernetes names (DNS-1123), UIDs, CNI container ids and interface names (CNI SPEC.md 1.0.0,
// "Parameters"), addresses with prefix length as CNI results write them.
import { nameProblem } from '../../../src/shared/kube/resources.ts';

const { isIP } = process.getBuiltinModule('node:net');

const POD_UID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
// SPEC.md: "Must start with an alphanumeric character, optionally followed by any combination of
// one or more alphanumeric characters, underscore (), dot (.) or hyphen (-)."
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,1023}$/;
const PREFIX_LEN = /^(0|[1-9][0-9]{0,2})$/;

/** PATH_MAX. */
export const MAX_PATH_BYTES = 4096;

/** A namespace name (RFC 1123 label, at most 63 characters). */
export function isNamespaceName(v: string): boolean {
  return nameProblem(v, 'dns1123-label') === undefined;
}

/** A pod name (RFC 1123 subdomain, at most 253 characters). */
export function isPodName(v: string): boolean {
  return nameProblem(v, 'dns1123-subdomain') === undefined;
}

export function isPodUid(v: string): boolean {
  return POD_UID.test(v);
}

export function isContainerId(v: string): boolean {
  return CONTAINER_ID.test(v);
}

/** A Linux interface name: 1–15 bytes, not "." or "..", no "/", ":" or whitespace. */
export function isIfName(v: string): boolean {
  return v.length > 0 && Buffer.byteLength(v) <= 15 && v !== '.' && v !== '..' && !/[/:\s]/.test(v);
}

/** An absolute filesystem path without NUL bytes, within PATH_MAX. */
export function isAbsolutePath(v: string): boolean {
  return v.startsWith('/') && !v.includes('\0') && Buffer.byteLength(v) <= MAX_PATH_BYTES;
}

export function isIpAddress(v: string): boolean {
  return isIP(v) !== 0;
}

/** An address with prefix length, as CNI results write `ips[].address` ("198.18.0.5/24", "fd00::5/64"). */
export function isCidr(v: string): boolean {
  const slash = v.indexOf('/');
  if (slash <= 0) return false;
  const family = isIP(v.slice(0, slash));
  const prefix = v.slice(slash + 1);
  if (family === 0 || !PREFIX_LEN.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

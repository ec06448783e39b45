// SPDX-License-Identifier: Apache-2.0
// Label and field selectors as the API server parses them for list and watch
// (k8s.io/apimachinery labels.Parse and fields.ParseSelector):
//
//   labelSelector: `app=web`, `app==web`, `tier!=db`, `env in (a,b)`, `env notin (c)`, `app`, `!app`,
//                  requirements joined by commas (AND)
//   fieldSelector: `metadata.name=x`, `spec.nodeName==n1`, `status.phase!=Running`, joined by commas;
//                  only the fields the resource supports (anything else is 400, as on a cluster)
import { badRequest } from './status.ts';
import type { ApiResource, JsonObject } from './resources.ts';

export type Selector = (o: JsonObject) => boolean;

const everything: Selector = () => true;

/** Splits on commas outside parentheses. */
function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((p) => p.trim());
}

const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

function labelsOf(o: JsonObject): Record<string, unknown> {
  const meta = o.metadata as JsonObject | undefined;
  const labels = meta?.labels;
  return typeof labels === 'object' && labels !== null ? (labels as Record<string, unknown>) : {};
}

function checkKey(key: string, raw: string): void {
  if (!LABEL_KEY.test(key))
    throw badRequest(`unable to parse requirement: invalid label key "${key}" in "${raw}"`);
}

function checkValue(value: string, raw: string): void {
  if (value.length > 63 || !LABEL_VALUE.test(value)) {
    throw badRequest(`unable to parse requirement: invalid label value "${value}" in "${raw}"`);
  }
}

function labelRequirement(raw: string): Selector {
  let m = /^!\s*(\S+)$/.exec(raw);
  if (m) {
    const key = m[1]!;
    checkKey(key, raw);
    return (o) => !Object.hasOwn(labelsOf(o), key);
  }
  m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(raw);
  if (m) {
    const key = m[1]!;
    checkKey(key, raw);
    const values = m[3]!.split(',').map((v) => v.trim());
    for (const v of values) checkValue(v, raw);
    const set = new Set(values);
    if (m[2] === 'in') return (o) => set.has(labelsOf(o)[key] as string);
    return (o) => !set.has(labelsOf(o)[key] as string);
  }
  m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(raw);
  if (m) {
    const [, key, op, value] = m as unknown as [string, string, string, string];
    checkKey(key, raw);
    checkValue(value, raw);
    if (op === '!=') return (o) => labelsOf(o)[key] !== value;
    return (o) => labelsOf(o)[key] === value;
  }
  if (/^\S+$/.test(raw)) {
    checkKey(raw, raw);
    return (o) => Object.hasOwn(labelsOf(o), raw);
  }
  throw badRequest(`unable to parse requirement: "${raw}"`);
}

/** Parses a labelSelector; throws a 400 ApiError on a malformed one. */
export function parseLabelSelector(s: string | null): Selector {
  if (s === null || s.trim() === '') return everything;
  const reqs = splitTopLevel(s).map(labelRequirement);
  return (o) => reqs.every((r) => r(o));
}

function fieldValue(r: ApiResource, field: string, o: JsonObject): string {
  const meta = (o.metadata ?? {}) as JsonObject;
  let v: unknown;
  if (field === 'metadata.name') v = meta.name;
  else if (field === 'metadata.namespace') v = meta.namespace;
  else v = r.fields[field]?.(o);
  // An absent field reads as '' (`spec.nodeName=` selects unscheduled pods).
  return typeof v === 'string' ? v : v === undefined || v === null ? '' : JSON.stringify(v);
}

/** Parses a fieldSelector for resource `r`; throws a 400 ApiError on a malformed one or an unsupported field. */
export function parseFieldSelector(r: ApiResource, s: string | null): Selector {
  if (s === null || s.trim() === '') return everything;
  const reqs = splitTopLevel(s).map((raw): Selector => {
    const m = /^([^=!\s]+)\s*(==|=|!=)\s*(.*)$/.exec(raw);
    if (!m) throw badRequest(`invalid field selector: "${raw}"`);
    const [, field, op, value] = m as unknown as [string, string, string, string];
    if (field !== 'metadata.name' && field !== 'metadata.namespace' && !Object.hasOwn(r.fields, field)) {
      throw badRequest(`field label not supported: ${field}`);
    }
    if (op === '!=') return (o) => fieldValue(r, field, o) !== value;
    return (o) => fieldValue(r, field, o) === value;
  });
  return (o) => reqs.every((q) => q(o));
}

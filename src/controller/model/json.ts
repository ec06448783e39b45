// SPDX-License-Identifier: Apache-2.0
// Reading custom-resource specs (`CustomObject.spec`, untyped JSON) into typed views. Every
// reader records what is wrong, with the field path, instead of throwing or skipping: the
// caller turns problems into a fail-closed translation and an operator-facing message that
// names the field to fix. Unknown fields are problems too, so a typo such as `principal:` for
// `principals:` is never silently read as "no constraint".

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Problems found while reading one object, each `<field path>: <what is wrong>`. */
export class Problems {
  readonly #list: string[] = [];

  add(path: string, what: string): void {
    this.#list.push(`${path}: ${what}`);
  }

  get list(): readonly string[] {
    return this.#list;
  }

  get size(): number {
    return this.#list.length;
  }
}

/** Records every key of `obj` not in `allowed`. */
export function checkKeys(
  obj: Record<string, unknown>,
  allowed: readonly string[],
  path: string,
  problems: Problems,
): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) problems.add(`${path}.${k}`, `unknown field (known: ${allowed.join(', ')})`);
  }
}

/** A list of strings; absent (undefined or null) is []. */
export function readStringList(v: unknown, path: string, problems: Problems): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    problems.add(path, 'must be a list of strings');
    return [];
  }
  const out: string[] = [];
  for (const [i, e] of v.entries()) {
    if (typeof e === 'string') out.push(e);
    else problems.add(`${path}[${i}]`, 'must be a string');
  }
  return out;
}

/** A string → string map (labels); absent (undefined or null) is {}. */
export function readStringMap(v: unknown, path: string, problems: Problems): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) {
    problems.add(path, 'must be a map of strings');
    return {};
  }
  const out: Record<string, string> = {};
  for (const [k, e] of Object.entries(v)) {
    if (typeof e === 'string') out[k] = e;
    else problems.add(`${path}.${k}`, 'must be a string');
  }
  return out;
}

/** A list of objects; absent is []. Non-object elements are recorded and skipped. */
export function readRecordList(
  v: unknown,
  path: string,
  problems: Problems,
): { index: number; value: Record<string, unknown> }[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    problems.add(path, 'must be a list');
    return [];
  }
  const out: { index: number; value: Record<string, unknown> }[] = [];
  for (const [index, e] of v.entries()) {
    if (isRecord(e)) out.push({ index, value: e });
    else problems.add(`${path}[${index}]`, 'must be an object');
  }
  return out;
}

/**
 * `metadata.creationTimestamp` as milliseconds: a Date from a typed client, an RFC 3339 string
 * from a raw watch or a file. Missing or unparseable sorts last (+Infinity), so an object with
 * no known age never outranks one that has one.
 */
export function creationTime(ts: unknown): number {
  if (ts instanceof Date) return Number.isNaN(ts.getTime()) ? Infinity : ts.getTime();
  if (typeof ts === 'string') {
    const t = Date.parse(ts);
    return Number.isNaN(t) ? Infinity : t;
  }
  return Infinity;
}

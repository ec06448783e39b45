// SPDX-License-Identifier: Apache-2.0
// The patch formats of PATCH requests:
//
// - application/merge-patch+json: JSON merge patch (RFC 7386).
// - application/strategic-merge-patch+json: treated as a JSON merge patch. The real server merges
//   some lists by key (containers by name, ...); the stand-in replaces lists whole and refuses
//   `$patch`/`$retainKeys`-style directives (400) rather than misapplying them.
// - application/json-patch+json: JSON patch (RFC 6902), all six operations. It is what
//   client-node sends when the caller does not choose a patch type.
import { ApiError, badRequest } from './status.ts';
import type { JsonObject } from './resources.ts';

export const PATCH_TYPES = [
  'application/json-patch+json',
  'application/merge-patch+json',
  'application/strategic-merge-patch+json',
] as const;
export type PatchType = (typeof PATCH_TYPES)[number];

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return structuredClone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) Reflect.deleteProperty(out, k);
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function hasDirective(v: unknown): boolean {
  if (Array.isArray(v)) return v.some(hasDirective);
  if (!isObject(v)) return false;
  return Object.entries(v).some(([k, x]) => k.startsWith('$') || hasDirective(x));
}

/** RFC 6901 pointer → path segments. */
function pointer(p: unknown): string[] {
  if (typeof p !== 'string' || (p !== '' && !p.startsWith('/')))
    throw badRequest(`invalid JSON pointer ${JSON.stringify(p)}`);
  return p === ''
    ? []
    : p
        .slice(1)
        .split('/')
        .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function container(doc: unknown, path: string[]): { parent: unknown; key: string } {
  if (path.length === 0) throw badRequest('a JSON patch operation cannot target the whole document here');
  let cur = doc;
  for (const seg of path.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[Number(seg)];
    else if (isObject(cur)) cur = cur[seg];
    else cur = undefined;
    if (cur === undefined)
      throw new ApiError(422, `JSON patch path /${path.join('/')}: parent does not exist`);
  }
  return { parent: cur, key: path.at(-1)! };
}

function read(doc: unknown, path: string[]): unknown {
  let cur = doc;
  for (const seg of path) {
    if (Array.isArray(cur)) cur = cur[Number(seg)];
    else if (isObject(cur)) cur = Object.hasOwn(cur, seg) ? cur[seg] : undefined;
    else cur = undefined;
    if (cur === undefined) throw new ApiError(422, `JSON patch path /${path.join('/')} does not exist`);
  }
  return cur;
}

function arrayIndex(arr: unknown[], key: string, forAdd: boolean): number {
  if (forAdd && key === '-') return arr.length;
  const i = Number(key);
  if (!/^(0|[1-9][0-9]*)$/.test(key) || i > arr.length || (!forAdd && i === arr.length)) {
    throw new ApiError(422, `JSON patch: array index ${key} out of range`);
  }
  return i;
}

function add(doc: unknown, path: string[], value: unknown): void {
  const { parent, key } = container(doc, path);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, true), 0, structuredClone(value));
  else if (isObject(parent)) parent[key] = structuredClone(value);
  else throw new ApiError(422, `JSON patch path /${path.join('/')}: parent is not a container`);
}

function remove(doc: unknown, path: string[]): unknown {
  const { parent, key } = container(doc, path);
  if (Array.isArray(parent)) return parent.splice(arrayIndex(parent, key, false), 1)[0];
  if (isObject(parent) && Object.hasOwn(parent, key)) {
    const old = parent[key];
    Reflect.deleteProperty(parent, key);
    return old;
  }
  throw new ApiError(422, `JSON patch: cannot remove /${path.join('/')}: it does not exist`);
}

function jsonPatch(target: JsonObject, ops: unknown): JsonObject {
  if (!Array.isArray(ops)) throw badRequest('a JSON patch must be an array of operations');
  const doc = structuredClone(target);
  for (const op of ops) {
    if (!isObject(op)) throw badRequest('a JSON patch operation must be an object');
    const path = pointer(op.path);
    switch (op.op) {
      case 'add':
        add(doc, path, op.value);
        break;
      case 'remove':
        remove(doc, path);
        break;
      case 'replace':
        remove(doc, path);
        add(doc, path, op.value);
        break;
      case 'move':
        add(doc, path, remove(doc, pointer(op.from)));
        break;
      case 'copy':
        add(doc, path, read(doc, pointer(op.from)));
        break;
      case 'test':
        if (JSON.stringify(read(doc, path)) !== JSON.stringify(op.value)) {
          throw new ApiError(422, `JSON patch test failed at /${path.join('/')}`);
        }
        break;
      default:
        throw badRequest(`unknown JSON patch operation ${JSON.stringify(op.op)}`);
    }
  }
  return doc;
}

/** Applies `patch` of `type` to `target` (not modified); the result must still be an object. */
export function applyPatch(target: JsonObject, type: PatchType, patch: unknown): JsonObject {
  let out: unknown;
  if (type === 'application/json-patch+json') out = jsonPatch(target, patch);
  else {
    if (!isObject(patch)) throw badRequest('a merge patch must be a JSON object');
    if (type === 'application/strategic-merge-patch+json' && hasDirective(patch)) {
      throw badRequest(
        'strategic merge patch directives ($patch, $retainKeys, ...) are not supported by the test API server',
      );
    }
    out = mergePatch(target, patch);
  }
  if (!isObject(out)) throw new ApiError(422, 'the patched object is not an object');
  return out;
}

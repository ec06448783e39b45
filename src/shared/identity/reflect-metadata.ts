// SPDX-License-Identifier: Apache-2.0
// A minimal Reflect metadata polyfill (the subset of the `reflect-metadata` API that tsyringe and
// tslib's `__metadata` use). @peculiar/x509 2.x depends on tsyringe, which throws at load time
// unless `Reflect.getMetadata` exists (see the "Reflect Polyfill Required" note in
// @peculiar/x509's README). The project does not ship `reflect-metadata`, so we define the few
// functions ourselves. Import this module before `@peculiar/x509` (./x509.ts does).

type MetadataKey = unknown;
type PropertyKeyOrUndefined = string | symbol | undefined;

// target -> property key (undefined = the target itself) -> metadata key -> value
const store = new WeakMap<object, Map<PropertyKeyOrUndefined, Map<MetadataKey, unknown>>>();

function ownMap(
  target: object,
  propertyKey: PropertyKeyOrUndefined,
  create: boolean,
): Map<MetadataKey, unknown> | undefined {
  let byProp = store.get(target);
  if (!byProp) {
    if (!create) return undefined;
    byProp = new Map();
    store.set(target, byProp);
  }
  let byKey = byProp.get(propertyKey);
  if (!byKey) {
    if (!create) return undefined;
    byKey = new Map();
    byProp.set(propertyKey, byKey);
  }
  return byKey;
}

function defineMetadata(
  key: MetadataKey,
  value: unknown,
  target: object,
  propertyKey?: string | symbol,
): void {
  ownMap(target, propertyKey, true)?.set(key, value);
}

function hasOwnMetadata(key: MetadataKey, target: object, propertyKey?: string | symbol): boolean {
  return ownMap(target, propertyKey, false)?.has(key) ?? false;
}

function getOwnMetadata(key: MetadataKey, target: object, propertyKey?: string | symbol): unknown {
  return ownMap(target, propertyKey, false)?.get(key);
}

function hasMetadata(key: MetadataKey, target: object, propertyKey?: string | symbol): boolean {
  for (let o: object | null = target; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    if (hasOwnMetadata(key, o, propertyKey)) return true;
  }
  return false;
}

function getMetadata(key: MetadataKey, target: object, propertyKey?: string | symbol): unknown {
  for (let o: object | null = target; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    const m = ownMap(o, propertyKey, false);
    if (m?.has(key)) return m.get(key);
  }
  return undefined;
}

function deleteMetadata(key: MetadataKey, target: object, propertyKey?: string | symbol): boolean {
  return ownMap(target, propertyKey, false)?.delete(key) ?? false;
}

function metadata(key: MetadataKey, value: unknown) {
  return (target: object, propertyKey?: string | symbol): void => {
    defineMetadata(key, value, target, propertyKey);
  };
}

const reflect = Reflect as unknown as Record<string, unknown>;
if (typeof reflect.getMetadata !== 'function') {
  Object.assign(reflect, {
    defineMetadata,
    hasOwnMetadata,
    getOwnMetadata,
    hasMetadata,
    getMetadata,
    deleteMetadata,
    metadata,
  });
}

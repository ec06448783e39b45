// SPDX-License-Identifier: Apache-2.0
// The static in-pod workload list (INPOD_WORKLOADS): which pods this ztunnel proxies and where
// their network namespaces are. It carries exactly what a ZDS AddWorkload carries (pod UID and
// WorkloadInfo, spec §2.6), with a netns path instead of an fd, so ztunnel can run without the
// node agent (tests, the benchmark, static mode). The node agent replaces it.
//
// Validation is strict (unknown keys are refused) and reports the first problem as
// `<file>: <path>: <reason>`.
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import { MeshError } from '../../../src/shared/errors.ts';
import type { PodInfo } from '../proxy/context.ts';

export interface StaticPod {
  readonly info: PodInfo;
  readonly netnsPath: string;
}

type Fields = Readonly<Record<string, unknown>>;

/** The first refused value: where, and why. */
class Invalid extends Error {
  readonly path: string;

  constructor(path: string, reason: string) {
    super(reason);
    this.path = path;
  }
}

/** A value's type as the messages name it ("received null", "received array"). */
function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function wrongType(path: string, v: unknown, expected: string): Invalid {
  return new Invalid(path, `Invalid input: expected ${expected}, received ${typeName(v)}`);
}

function expectObject(path: string, v: unknown): Fields {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw wrongType(path, v, 'object');
  return v as Fields;
}

function expectArray(path: string, v: unknown): readonly unknown[] {
  if (!Array.isArray(v)) throw wrongType(path, v, 'array');
  return v;
}

function expectNonEmptyString(path: string, v: unknown): string {
  if (typeof v !== 'string') throw wrongType(path, v, 'string');
  if (v.length < 1) throw new Invalid(path, 'Too small: expected string to have >=1 characters');
  return v;
}

function expectAbsolutePath(path: string, v: unknown): string {
  if (typeof v !== 'string') throw wrongType(path, v, 'string');
  if (!v.startsWith('/')) {
    throw new Invalid(path, 'must be an absolute path such as /run/netns/NAME or /proc/PID/ns/net');
  }
  return v;
}

/** Checked after an object's fields, so a bad field is reported first. */
function rejectUnknownKeys(path: string, o: Fields, allowed: readonly string[]): void {
  const unknown = Object.keys(o).filter((k) => !allowed.includes(k));
  if (unknown.length > 0) {
    const keys = unknown.map((k) => JSON.stringify(k)).join(', ');
    throw new Invalid(path, `Unrecognized key${unknown.length > 1 ? 's' : ''}: ${keys}`);
  }
}

const ENTRY_KEYS = ['uid', 'name', 'namespace', 'serviceAccount', 'netns'];

function readEntry(path: string, v: unknown): StaticPod {
  const o = expectObject(path, v);
  const uid = expectNonEmptyString(`${path}.uid`, o.uid);
  const name = expectNonEmptyString(`${path}.name`, o.name);
  const namespace = expectNonEmptyString(`${path}.namespace`, o.namespace);
  const serviceAccount =
    o.serviceAccount === undefined
      ? 'default'
      : expectNonEmptyString(`${path}.serviceAccount`, o.serviceAccount);
  const netnsPath = expectAbsolutePath(`${path}.netns`, o.netns);
  rejectUnknownKeys(path, o, ENTRY_KEYS);
  return { info: { uid, name, namespace, serviceAccount }, netnsPath };
}

/** `{ workloads: [entry, ...] }`. */
function readDocument(doc: unknown): StaticPod[] {
  const o = expectObject('(document)', doc);
  const pods = expectArray('workloads', o.workloads).map((e, i) => readEntry(`workloads[${i}]`, e));
  rejectUnknownKeys('(document)', o, ['workloads']);
  return pods;
}

export function parseStaticWorkloads(text: string, file: string): StaticPod[] {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new MeshError('ZT_ERR_INPOD_WORKLOADS', `${file}: not valid YAML: ${String(err)}`);
  }
  let pods: StaticPod[];
  try {
    pods = readDocument(doc);
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    throw new MeshError('ZT_ERR_INPOD_WORKLOADS', `${file}: ${err.path}: ${err.message}`);
  }
  const seen = new Set<string>();
  pods.forEach((p, i) => {
    if (seen.has(p.info.uid))
      throw new MeshError(
        'ZT_ERR_INPOD_WORKLOADS',
        `${file}: workloads[${i}].uid: duplicate uid ${p.info.uid}`,
      );
    seen.add(p.info.uid);
  });
  return pods;
}

export async function loadStaticWorkloads(file: string): Promise<StaticPod[]> {
  return parseStaticWorkloads(await readFile(file, 'utf8'), file);
}

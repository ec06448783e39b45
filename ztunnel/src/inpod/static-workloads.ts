// SPDX-License-Identifier: Apache-2.0
// The static in-pod workload list (INPOD_WORKLOADS): which pods this ztunnel proxies and where
// their network namespaces are. It carries exactly what a ZDS AddWorkload carries (pod UID and
// WorkloadInfo, spec §2.6), with a netns path instead of an fd, so ztunnel can run without the
// node agent (tests, the benchmark, static mode). The node agent replaces it.
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import { z } from 'zod';
import { MeshError } from '../../../src/shared/errors.ts';
import type { PodInfo } from '../proxy/context.ts';

const Entry = z
  .object({
    uid: z.string().min(1),
    name: z.string().min(1),
    namespace: z.string().min(1),
    serviceAccount: z.string().min(1).default('default'),
    netns: z.string().startsWith('/', 'must be an absolute path such as /run/netns/NAME or /proc/PID/ns/net'),
  })
  .strict();

const File = z.object({ workloads: z.array(Entry) }).strict();

export interface StaticPod {
  readonly info: PodInfo;
  readonly netnsPath: string;
}

export function parseStaticWorkloads(text: string, file: string): StaticPod[] {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new MeshError('ZT_ERR_INPOD_WORKLOADS', `${file}: not valid YAML: ${String(err)}`);
  }
  const r = File.safeParse(doc);
  if (!r.success) {
    const issue = r.error.issues[0];
    const path = issue?.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('') ?? '';
    throw new MeshError(
      'ZT_ERR_INPOD_WORKLOADS',
      `${file}: ${path.replace(/^\./, '') || '(document)'}: ${issue?.message ?? 'invalid'}`,
    );
  }
  const seen = new Set<string>();
  return r.data.workloads.map((w, i) => {
    if (seen.has(w.uid))
      throw new MeshError('ZT_ERR_INPOD_WORKLOADS', `${file}: workloads[${i}].uid: duplicate uid ${w.uid}`);
    seen.add(w.uid);
    return {
      info: { uid: w.uid, name: w.name, namespace: w.namespace, serviceAccount: w.serviceAccount },
      netnsPath: w.netns,
    };
  });
}

export async function loadStaticWorkloads(file: string): Promise<StaticPod[]> {
  return parseStaticWorkloads(await readFile(file, 'utf8'), file);
}

// SPDX-License-Identifier: Apache-2.0
// Points the real client at the API stand-in: a kubeconfig document (YAML, as kubectl writes it)
// loaded through KubeConfig.loadFromString, or written to a file for a child process. Over HTTP
// the cluster entry needs `insecure-skip-tls-verify: true` (client-node refuses plain http
// otherwise); over HTTPS it carries the stand-in's CA.
import { writeFile } from 'node:fs/promises';
import { KubeConfig } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import type { KubeApiServer } from './server.ts';

export interface KubeconfigOptions {
  /** Bearer token of the user (the stand-in's `token` option). */
  readonly token?: string;
  /** Default namespace of the context. */
  readonly namespace?: string;
}

export function kubeconfigYaml(api: KubeApiServer, opts: KubeconfigOptions = {}): string {
  const cluster: Record<string, unknown> = { server: api.url };
  if (api.caPem === undefined) cluster['insecure-skip-tls-verify'] = true;
  else cluster['certificate-authority-data'] = Buffer.from(api.caPem).toString('base64');
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'stand-in', cluster }],
    users: [{ name: 'test', user: opts.token === undefined ? {} : { token: opts.token } }],
    contexts: [
      {
        name: 'stand-in',
        context: {
          cluster: 'stand-in',
          user: 'test',
          ...(opts.namespace === undefined ? {} : { namespace: opts.namespace }),
        },
      },
    ],
    'current-context': 'stand-in',
  });
}

export function kubeConfigFor(api: KubeApiServer, opts: KubeconfigOptions = {}): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfigYaml(api, opts));
  return kc;
}

export async function writeKubeconfig(
  api: KubeApiServer,
  path: string,
  opts: KubeconfigOptions = {},
): Promise<void> {
  await writeFile(path, kubeconfigYaml(api, opts), { mode: 0o600 });
}

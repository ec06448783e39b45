// SPDX-License-Identifier: Apache-2.0
// `./mesh up|down|status|exec|label`: local mode from the command line (see cluster.ts).
//
//   up <manifest-dir> [--nodes N] [--name NAME] [--nftables]   bring a cluster up and leave it running
//   down [NAME]                                                 remove it (processes, namespaces, state)
//   status [NAME]                                               nodes, pods, processes, logs
//   exec <ns>/<pod> [--name NAME] -- <command...>               run a command inside a pod's netns
//   label <ns>/<pod> key=value|key- ... [--name NAME]           change a running pod's labels
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { errorMessage } from '../shared/errors.ts';
import { DEFAULT_STATE_ROOT, downLocalCluster, readClusterRecord, upLocalCluster } from './cluster.ts';
import { isAlive } from './exec.ts';
import { patchLivePod } from '../shared/kube/live-objects.ts';

const ROOT = join(import.meta.dirname, '../..');

function usage(): never {
  process.stderr.write(
    'usage: mesh up <manifest-dir> [--nodes N] [--name NAME] [--nftables] | down [NAME] | status [NAME] |\n' +
      '       exec <ns>/<pod> [--name NAME] -- <command...> | label <ns>/<pod> key=value|key- ... [--name NAME]\n',
  );
  process.exit(2);
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  const dashdash = rest.indexOf('--');
  const own = dashdash === -1 ? rest : rest.slice(0, dashdash);
  const tail = dashdash === -1 ? [] : rest.slice(dashdash + 1);
  const { values, positionals } = parseArgs({
    args: own,
    options: {
      nodes: { type: 'string' },
      name: { type: 'string' },
      nftables: { type: 'boolean' },
    },
    allowPositionals: true,
  });
  const name = values.name ?? (cmd === 'down' || cmd === 'status' ? positionals[0] : undefined) ?? 'local';
  switch (cmd ?? '') {
    case 'up': {
      const dir = positionals[0] ?? usage();
      const cluster = await upLocalCluster({
        manifests: dir,
        name,
        nodes: values.nodes === undefined ? 2 : Number(values.nodes),
        backend: values.nftables === true ? 'nftables' : 'iptables',
        log: (l) => console.log(`  ${l}`),
      });
      console.log(`\nlocal cluster "${name}" is up; state and logs in ${cluster.record.stateDir}`);
      console.log(`  ./mesh exec <ns>/<pod> -- mesh-app call <ip> <port>   talk from inside a pod`);
      console.log(
        `  ./mesh down${name === 'local' ? '' : ` ${name}`}                                      remove everything`,
      );
      return;
    }
    case 'down':
      await downLocalCluster(name);
      console.log(`local cluster "${name}" removed`);
      return;
    case 'status': {
      const r = readClusterRecord(name);
      console.log(`cluster ${r.name} (manifests ${r.manifests}), controller ${r.controllerAddress}`);
      for (const p of r.pods)
        console.log(`  pod ${p.namespace}/${p.name}  ${p.ip}  on ${p.node}  uid ${p.uid}`);
      for (const p of r.processes) {
        console.log(
          `  ${p.role.padEnd(10)} ${p.owner.padEnd(24)} pid ${p.pid} ${isAlive(p.pid) ? 'running' : 'EXITED'}  ${p.log}`,
        );
      }
      return;
    }
    case 'exec': {
      const ref = positionals[0] ?? usage();
      if (tail.length === 0) usage();
      const pod = readClusterRecord(name).pods.find((p) => `${p.namespace}/${p.name}` === ref);
      if (pod === undefined) throw new Error(`no pod ${ref} in local cluster "${name}" (see ./mesh status)`);
      const r = spawnSync(
        'ip',
        [
          'netns',
          'exec',
          pod.netnsName,
          'env',
          `PATH=${join(ROOT, 'src/local/bin')}:${process.env.PATH ?? ''}`,
          `POD_NAME=${pod.name}`,
          ...tail,
        ],
        {
          stdio: 'inherit',
        },
      );
      process.exit(r.status ?? 1);
      break;
    }
    case 'label': {
      const ref = positionals[0] ?? usage();
      const args = positionals.slice(1);
      if (args.length === 0) usage();
      const [ns = '', podName = ''] = ref.split('/');
      readClusterRecord(name);
      const changes: Record<string, string | null> = {};
      for (const c of args) {
        const m = /^([A-Za-z0-9./_-]+)(?:=(.*)|(-))$/.exec(c);
        if (!m?.[1]) throw new Error(`label change ${c}: expected key=value or key-`);
        changes[m[1]] = m[3] === '-' ? null : (m[2] ?? '');
      }
      await patchLivePod(join(DEFAULT_STATE_ROOT, name, 'live'), ns, podName, 'labels', changes);
      console.log(`pod ${ref} labels updated`);
      return;
    }
    default:
      usage();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`mesh: ${errorMessage(err)}\n`);
  process.exit(1);
});

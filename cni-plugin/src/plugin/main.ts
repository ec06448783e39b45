// SPDX-License-Identifier: Apache-2.0
// Entry point of the ambient CNI plugin binary, executed by the container runtime for every pod
// sandbox with CNI_* in its environment and the network configuration on stdin (CNI SPEC.md
// 1.0.0). It runs on the node's host, where Node.js may not be installed, as a single executable
// built by scripts/build-cni-plugin.ts; `node cni-plugin/src/plugin/main.ts` runs the same code.
//
// The command logic lives in ./commands.ts; this file only does the process's I/O: read stdin,
// write the one JSON document to stdout, set the exit status.
import { postToAgent } from './agent-client.ts';
import { CNI_CODES, CniPluginError, cniErrorObject, LATEST_CNI_VERSION } from './cni.ts';
import { runPlugin } from './commands.ts';
import { assertNetns } from './netns.ts';

const { readFileSync } = process.getBuiltinModule('node:fs');

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch (e) {
    // No stdin at all (closed descriptor): VERSION needs none, the others report the empty config.
    if ((e as NodeJS.ErrnoException).code === 'EBADF') return '';
    throw e;
  }
}

async function main(): Promise<void> {
  let stdin: string;
  try {
    stdin = readStdin();
  } catch (err) {
    const why = new CniPluginError(
      CNI_CODES.ioFailure,
      `cannot read the network configuration from stdin: ${err instanceof Error ? err.message : String(err)}`,
    );
    process.stdout.write(JSON.stringify(cniErrorObject(why, LATEST_CNI_VERSION)));
    process.exitCode = 1;
    return;
  }
  // runPlugin never rejects: every failure comes back as a CNI error object.
  const outcome = await runPlugin(process.env, stdin, {
    post: postToAgent,
    assertNetns,
    logDestination: process.stderr,
  });
  if (outcome.stdout !== '') process.stdout.write(outcome.stdout);
  process.exitCode = outcome.exitCode;
}

void main();

// SPDX-License-Identifier: Apache-2.0
// Readiness probe as a child process, so a path whose load generator runs inside a network
// namespace can check the path from there (the harness itself stays in the root netns, where
// pod addresses are not routed): pushes one echo (or reads the first bulk bytes) through the
// path, retrying until it works or the deadline passes.
//
// Usage: node bench/probe.ts <host:port> <echo|source|http|open> <timeoutMs>  → {"event":"ready"}
import { attachToParent, emit, fail, parseEndpoint } from './child.ts';
import { PROBE_MODES, waitForService } from './net.ts';

async function main(): Promise<void> {
  const [target, mode, timeout] = process.argv.slice(2);
  const probeMode = PROBE_MODES.find((m) => m === mode);
  if (target === undefined || probeMode === undefined || timeout === undefined) {
    throw new Error(`usage: probe.ts <host:port> <${PROBE_MODES.join('|')}> <timeoutMs>`);
  }
  attachToParent();
  await waitForService(parseEndpoint(target), probeMode, Number(timeout));
  emit({ event: 'ready' });
  process.exit(0);
}

main().catch(fail);

// SPDX-License-Identifier: Apache-2.0
// The test bed lives in src/local (local mode uses it too); tests import it from here, with the
// per-test set-up most netns tests share.
import type { Test } from 'tap';
import {
  cleanupStale,
  createTestbed,
  uniquePrefix,
  type Testbed,
  type TestbedOptions,
} from '../../src/local/testbed.ts';

export * from '../../src/local/testbed.ts';

/**
 * A test bed owned by one tap test: without root the test fails loudly (never skips) and gets
 * undefined; otherwise the bed and anything left under its prefix are removed at teardown, even
 * when the test fails half-way.
 */
export async function testbedFor(
  t: Test,
  opts: Omit<TestbedOptions, 'prefix'>,
): Promise<Testbed | undefined> {
  if (process.getuid?.() !== 0) {
    t.fail('this test needs root (network namespaces); run it as root — it is not skipped silently');
    return undefined;
  }
  const prefix = uniquePrefix();
  // createTestbed cleans up after itself if it fails; from here on teardown owns everything.
  t.teardown(() =>
    cleanupStale(prefix).then(
      () => undefined,
      () => undefined,
    ),
  );
  const tb = await createTestbed({ ...opts, prefix });
  t.teardown(() => tb.destroy().catch(() => undefined));
  return tb;
}

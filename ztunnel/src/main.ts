// SPDX-License-Identifier: Apache-2.0
// ztunnel's entry point: parse the environment, start, drain on SIGTERM/SIGINT within the
// deadline, and exit. A configuration error exits with status 2 and a message saying what to fix.
import { loadConfig } from './config/env.ts';
import { startZtunnel } from './app.ts';
import { errorMessage } from '../../src/shared/errors.ts';

async function main(): Promise<void> {
  let cfg;
  try {
    cfg = loadConfig();
  } catch (err) {
    process.stderr.write(`ztunnel: ${errorMessage(err)}\n`);
    process.exit(2);
  }
  const zt = await startZtunnel(cfg);
  zt.logger.info(
    { scope: 'app', node: cfg.nodeName, admin: zt.admin.admin.port, metrics: zt.admin.metrics.port },
    'ztunnel started',
  );
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      // A second signal while draining: the operator wants out now.
      zt.logger.warn({ scope: 'app', signal }, 'second signal during drain; exiting immediately');
      process.exit(1);
    }
    stopping = true;
    zt.logger.info({ scope: 'app', signal }, 'shutdown requested');
    // Forced exit if draining overruns its deadline (plus a margin for closing).
    setTimeout(() => process.exit(1), cfg.drainDeadlineMs + 2000).unref();
    zt.shutdown().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`ztunnel: fatal: ${errorMessage(err)}\n`);
  process.exit(1);
});

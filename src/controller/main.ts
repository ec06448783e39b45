// SPDX-License-Identifier: Apache-2.0
// The controller's entry point: parse flags/env, start, stop cleanly on SIGTERM/SIGINT.
// `controller ca-rotate <step>` takes one step of a CA root rotation instead (ca/rotate-cli.ts);
// `controller ca-revoke --serial <hex>` writes the CA's revocation lists (ca/revoke-cli.ts).
// A configuration error exits with status 2 and a message saying what to fix.
import { errorMessage } from '../shared/errors.ts';
import { Logger } from '../shared/telemetry/logger.ts';
import { startController } from './app.ts';
import { runCaRevoke } from './ca/revoke-cli.ts';
import { runCaRotate } from './ca/rotate-cli.ts';
import { loadControllerConfig, type ControllerConfig } from './config.ts';

async function main(): Promise<void> {
  const command = process.argv[2];
  if (command === 'ca-rotate' || command === 'ca-revoke') {
    const run = command === 'ca-rotate' ? runCaRotate : runCaRevoke;
    const status = await run(process.argv.slice(3), {
      out: (s) => process.stdout.write(s),
      err: (s) => process.stderr.write(s),
    });
    process.exit(status);
  }
  let cfg: ControllerConfig;
  try {
    cfg = loadControllerConfig(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`controller: ${errorMessage(err)}\n`);
    process.exit(2);
  }
  const log = new Logger({ level: cfg.logLevel });
  const ctl = await startController(cfg, log);
  const stop = (signal: string): void => {
    log.info({ scope: 'controller', signal }, 'stopping');
    setTimeout(() => process.exit(1), 5000).unref();
    ctl.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`controller: fatal: ${errorMessage(err)}\n`);
  process.exit(1);
});

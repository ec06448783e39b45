// SPDX-License-Identifier: Apache-2.0
// Keeps our entry in the node's primary CNI config while the agent runs. Primary CNI plugins
// (re)write their config when they start or reconfigure, dropping entries they did not write;
// without ours, new pods would start outside the mesh. Upstream istio-cni watches the directory
// for the same reason. We watch cniConfDir (inotify through fs.watch) and, shortly after any
// change, run insertPluginConfig again: it writes nothing when our entry is already there, so our
// own writes settle after one more look.
//
// A failed attempt (no config yet, a file caught half-written by a non-atomic writer, a config we
// refuse) is logged and retried after `retryMs`, as well as on the next change.
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { errorMessage } from '../../../src/shared/errors.ts';
import type { Logger } from '../../../src/shared/telemetry/logger.ts';
import { InstallError } from './errors.ts';
import { insertPluginConfig } from './install.ts';
import type { PluginConfigOptions } from './install.ts';

export interface WatchOptions extends PluginConfigOptions {
  logger: Logger;
  /** Quiet time after a change before looking (default 100 ms): a rewrite is often several events. */
  debounceMs?: number;
  /** Delay before retrying a failed attempt (default 2 s). */
  retryMs?: number;
}

export interface PluginConfigWatcher {
  /** Stops watching and waits for an attempt in progress. */
  close(): Promise<void>;
}

/** Watches cniConfDir and re-inserts our entry whenever it is missing or changed. Checks once at start. */
export function watchPluginConfig(opts: WatchOptions): PluginConfigWatcher {
  const log = opts.logger.child({ scope: 'cni-install' });
  const debounceMs = opts.debounceMs ?? 100;
  const retryMs = opts.retryMs ?? 2_000;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let closed = false;

  const schedule = (delay: number): void => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(attempt, delay);
  };

  function attempt(): void {
    timer = undefined;
    if (running !== undefined) {
      again = true;
      return;
    }
    running = insertPluginConfig(opts)
      .then(
        (r) => {
          if (r.changed)
            log.info({ config: r.configPath }, 'inserted the ambient CNI plugin into the CNI config');
        },
        (err: unknown) => {
          log.warn({ err }, `cannot insert the ambient CNI plugin (retrying): ${errorMessage(err)}`);
          schedule(retryMs);
        },
      )
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          schedule(debounceMs);
        }
      });
  }

  let watcher: FSWatcher;
  try {
    watcher = watch(opts.cniConfDir, () => {
      schedule(debounceMs);
    });
  } catch (e) {
    throw new InstallError(
      'CNI_ERR_INSTALL_WATCH',
      `cannot watch CNI config directory ${opts.cniConfDir}: ${errorMessage(e)}`,
      { cause: e },
    );
  }
  watcher.on('error', (err) => {
    log.error({ err }, `watching ${opts.cniConfDir} failed; the ambient CNI entry is no longer repaired`);
  });
  schedule(0);

  return {
    close: async () => {
      closed = true;
      clearTimeout(timer);
      watcher.close();
      await running;
    },
  };
}

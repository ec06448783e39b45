// SPDX-License-Identifier: Apache-2.0
// The certificate revocation lists ztunnel enforces (CRL_PATH; spec §4 "CRL", checklist B.31).
//
// Every HBONE handshake, in both directions, reads the current lists (`current`), so a new file
// version applies to the next handshake at once. `changed` tells each in-pod proxy to check its
// live sessions again and tear down those of peers that are now revoked. A bad or missing file
// on reload keeps the last good lists in force: revocations are never dropped by accident. At
// start, CRL_PATH must load, or ztunnel does not start (it was told to enforce these CRLs).
import { EventEmitter } from 'eventemitter3';
import { MeshError } from '../../../src/shared/errors.ts';
import { RevocationList } from '../../../src/shared/identity/crl.ts';
import type { Logger } from '../../../src/shared/telemetry/logger.ts';
import { watchFile, type WatchedFile, type WatchFileOptions } from '../../../src/shared/watch-file.ts';

export class Revocations extends EventEmitter<{ changed: () => void }> {
  #list: RevocationList | undefined;

  /** The lists in force; undefined when no CRL is configured. An arrow, to be handed out as is. */
  readonly current = (): RevocationList | undefined => this.#list;

  set(list: RevocationList): void {
    this.#list = list;
    this.emit('changed');
  }
}

/**
 * Loads `path` into `revocations` and follows its changes. Rejects when the first load fails,
 * with the reason and what to do.
 */
export async function watchCrlFile(
  path: string,
  revocations: Revocations,
  logger: Logger,
  options: WatchFileOptions = {},
): Promise<WatchedFile<RevocationList>> {
  let lastError: Error | undefined;
  const watcher = watchFile(
    path,
    {
      what: 'CRL file',
      parse: (text) => RevocationList.fromPem(text, `CRL file ${path}`),
      onValue: (list) => {
        lastError = undefined;
        revocations.set(list);
        logger.info(
          { scope: 'crl', path, crls: list.crls.length, revoked: list.revokedCount },
          'certificate revocation lists loaded',
        );
      },
      onError: (err) => {
        lastError = err;
        logger.error(
          { scope: 'crl', path, err: err.message },
          'CRL file rejected; the last good revocation lists stay in force',
        );
      },
      error: (message, cause) => new MeshError('ZT_ERR_CRL', message, { cause }),
    },
    options,
  );
  await watcher.ready;
  if (watcher.lastGood() === undefined) {
    watcher.close();
    throw new MeshError(
      'ZT_ERR_CRL',
      `CRL_PATH=${path}: ${lastError?.message ?? 'the file did not load'}; ztunnel does not start without the revocation lists it was told to enforce: fix the file, or unset CRL_PATH`,
      { cause: lastError },
    );
  }
  return watcher;
}

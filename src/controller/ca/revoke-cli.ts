// SPDX-License-Identifier: Apache-2.0
// `controller ca-revoke [--serial <hex>]… [--ca-dir <dir>] [--out <file>]`: writes the CA's
// certificate revocation lists (CertificateAuthority#issueCrl) for ztunnel's CRL_PATH.
//
// Each run re-signs the whole file: every serial revoked before stays revoked, the named ones are
// added, thisUpdate/nextUpdate move forward and the CRL numbers go up. Without --serial it only
// re-signs (a first, empty file to mount before anything is revoked; or a refresh before
// nextUpdate). The serial of a workload certificate is in its ztunnel's /config_dump
// (`certificates[].certChain[0].serialNumber`); naming the CA's intermediate revokes everything it
// issued. ztunnels that read the file (CRL_PATH, or a ConfigMap/Secret copy of it) refuse the
// revoked peers' new handshakes and close their live sessions as soon as they see the change.
//
// Not covered: certificates of a previous root during a rotation (after activate-next-root the
// CA no longer holds that key; the command says so) and leaves of an intermediate the CA renewed
// (at most one certificate lifetime old). They age out; drop-old-root ends the former at once.
import { parseArgs } from 'node:util';
import { chmodSync, existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CA_FILES, CertificateAuthority } from '../../shared/identity/ca.ts';
import { errorMessage } from '../../shared/errors.ts';
import { DEFAULT_CA_DIR } from '../config.ts';
import { IdentityError } from '../../shared/identity/errors.ts';
import { isAlive } from '../../shared/process.ts';

const USAGE =
  'usage: controller ca-revoke [--serial <hex>]... [--ca-dir <dir>] [--out <file>] [--trust-domain <td>]';

/**
 * Runs the command; returns the exit status (0 written, 1 failed, 2 usage or a bad serial).
 * Writes what it did, or what to fix, to `out` / `err`.
 */
export async function runCaRevoke(
  argv: readonly string[],
  io: { out: (s: string) => void; err: (s: string) => void; env?: NodeJS.ProcessEnv },
): Promise<number> {
  const env = io.env ?? process.env;
  let serials: string[];
  let caDir: string;
  let outFile: string;
  let trustDomain: string;
  try {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options: {
        serial: { type: 'string', multiple: true },
        'ca-dir': { type: 'string' },
        out: { type: 'string' },
        'trust-domain': { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    });
    if (positionals.length > 0) {
      io.err(
        `ca-revoke: unexpected argument ${JSON.stringify(positionals[0])}; name serials with --serial\n${USAGE}\n`,
      );
      return 2;
    }
    serials = values.serial ?? [];
    caDir = resolve(values['ca-dir'] ?? env.CA_DIR ?? DEFAULT_CA_DIR);
    outFile = resolve(values.out ?? join(caDir, CA_FILES.crl));
    trustDomain = values['trust-domain'] ?? env.TRUST_DOMAIN ?? 'cluster.local';
  } catch (err) {
    io.err(`ca-revoke: ${errorMessage(err)}\n${USAGE}\n`);
    return 2;
  }
  if (!existsSync(join(caDir, CA_FILES.rootCert))) {
    // Never create a CA here: its CRLs would be signed by a root nobody trusts.
    io.err(`ca-revoke: no CA in ${caDir} (${CA_FILES.rootCert} missing); check --ca-dir or CA_DIR\n`);
    return 1;
  }
  // One run at a time: each reads the previous file and renames its own into place, so two at
  // once would lose the first one's revocations.
  const lock = `${outFile}.lock`;
  const locked = takeLock(lock);
  if (locked !== undefined) {
    io.err(`ca-revoke: ${locked}\n`);
    return 1;
  }
  try {
    const ca = await CertificateAuthority.create({ trustDomain, dir: caDir });
    const previousPem = existsSync(outFile) ? readFileSync(outFile, 'utf8') : undefined;
    const { pem, crls, uncovered } = await ca.issueCrl({
      revoke: serials,
      ...(previousPem !== undefined && { previousPem }),
    });
    const tmp = `${outFile}.tmp-${process.pid}`;
    writeFileSync(tmp, pem, { mode: 0o644 });
    chmodSync(tmp, 0o644);
    // Renamed into place: a ztunnel watching the directory never reads half a file.
    renameSync(tmp, outFile);
    const lines = crls.map(
      (c) => `  ${c.issuer}: ${c.serials.length === 0 ? 'nothing revoked' : c.serials.join(', ')}`,
    );
    io.out(
      `wrote ${outFile}\n${lines.join('\n')}\n` +
        'ztunnels reading it (CRL_PATH) refuse these certificates at once and close their open sessions.\n',
    );
    if (uncovered !== undefined) io.err(`ca-revoke: note: ${uncovered}\n`);
    return 0;
  } catch (err) {
    io.err(`ca-revoke: ${errorMessage(err)}\n`);
    return err instanceof IdentityError && err.code === 'ID_ERR_CRL' ? 2 : 1;
  } finally {
    rmSync(lock, { force: true });
  }
}

/** Creates `lock` holding our pid; returns why not when another live run holds it. */
function takeLock(lock: string): string | undefined {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(lock, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        return `cannot create ${lock}: ${errorMessage(err)}`;
    }
    const pid = Number.parseInt(readFileSync(lock, 'utf8'), 10);
    if (Number.isSafeInteger(pid) && pid > 0 && isAlive(pid)) {
      return `another ca-revoke (pid ${pid}) is writing this CRL file; run again when it is done`;
    }
    rmSync(lock, { force: true }); // left by a run that died: take it over
  }
  return `cannot take ${lock}`;
}

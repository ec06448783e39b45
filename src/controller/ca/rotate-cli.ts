// SPDX-License-Identifier: Apache-2.0
// `controller ca-rotate <step> --ca-dir <dir>`: takes one step of a root rotation on the CA's
// directory (src/shared/identity/ca.ts explains the three steps). The controller reads the
// directory at start, so restart it after each step; wait at least one workload-certificate
// refresh period (half the lifetime: 12 h by default) between the steps, so that every ztunnel
// holds a certificate carrying the roots of the step before.
//
//   status               where the rotation stands, and the trusted roots
//   add-next-root        step 1: a new root is trusted; the current one still signs
//   activate-next-root   step 2: the new root signs; the old one stays trusted
//   drop-old-root        step 3: only the new root is trusted
import { parseArgs } from 'node:util';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CA_FILES, CertificateAuthority } from '../../shared/identity/ca.ts';
import { parseCertificate } from '../../shared/identity/certificate.ts';
import { bytesEqual } from '../../shared/identity/der.ts';
import { pemCertificatesToDer } from '../../shared/identity/pem.ts';
import { errorMessage } from '../../shared/errors.ts';
import { DEFAULT_CA_DIR } from '../config.ts';
import { IdentityError } from '../../shared/identity/errors.ts';

const STEPS = ['status', 'add-next-root', 'activate-next-root', 'drop-old-root'] as const;
type Step = (typeof STEPS)[number];

const USAGE = `usage: controller ca-rotate <${STEPS.join('|')}> [--ca-dir <dir>] [--trust-domain <td>]`;

/**
 * Runs the command; returns the exit status (0 done, 1 the step failed, 2 usage). Writes what it
 * did, or what to fix, to `out` / `err`.
 */
export async function runCaRotate(
  argv: readonly string[],
  io: { out: (s: string) => void; err: (s: string) => void; env?: NodeJS.ProcessEnv },
): Promise<number> {
  const env = io.env ?? process.env;
  let step: Step;
  let caDir: string;
  let trustDomain: string;
  try {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options: { 'ca-dir': { type: 'string' }, 'trust-domain': { type: 'string' } },
      allowPositionals: true,
      strict: true,
    });
    const [first, ...more] = positionals;
    if (first === undefined || more.length > 0 || !(STEPS as readonly string[]).includes(first)) {
      io.err(`ca-rotate: expected exactly one step\n${USAGE}\n`);
      return 2;
    }
    step = first as Step;
    caDir = resolve(values['ca-dir'] ?? env.CA_DIR ?? DEFAULT_CA_DIR);
    trustDomain = values['trust-domain'] ?? env.TRUST_DOMAIN ?? 'cluster.local';
  } catch (err) {
    io.err(`ca-rotate: ${errorMessage(err)}\n${USAGE}\n`);
    return 2;
  }
  if (!existsSync(join(caDir, CA_FILES.rootCert))) {
    // Never create a CA here: a wrong --ca-dir would silently start a new, untrusted root.
    io.err(`ca-rotate ${step}: no CA in ${caDir} (${CA_FILES.rootCert} missing); check --ca-dir or CA_DIR\n`);
    return 1;
  }
  try {
    const ca = await CertificateAuthority.create({ trustDomain, dir: caDir });
    if (step === 'add-next-root') await ca.addNextRoot();
    else if (step === 'activate-next-root') ca.activateNextRoot();
    else if (step === 'drop-old-root') ca.dropOldRoot();
    const current = pemCertificatesToDer(ca.exportKeyMaterial().rootCertPem, 'root')[0];
    const roots = ca.trustBundle.anchors.map((a) => {
      const signs = current !== undefined && bytesEqual(a.der, current);
      return `  ${parseCertificate(a.der).serial}${signs ? ' (signs)' : ''}`;
    });
    io.out(
      (step === 'status' ? '' : `${step}: done. Restart the controller to use it.\n`) +
        `rotation step: ${ca.rootRotationStep}\n` +
        `trusted roots (serial):\n${roots.join('\n')}\n` +
        `next: ${NEXT[ca.rootRotationStep]}\n`,
    );
    return 0;
  } catch (err) {
    io.err(`ca-rotate ${step}: ${errorMessage(err)}\n`);
    return err instanceof IdentityError && err.code === 'ID_ERR_ROTATION' ? 2 : 1;
  }
}

const NEXT: Record<CertificateAuthority['rootRotationStep'], string> = {
  none: 'nothing to do; `add-next-root` starts a rotation',
  'next-root-added':
    '`activate-next-root`, once every ztunnel has refreshed its certificates (12 h with the default 24 h lifetime)',
  'old-root-trusted': '`drop-old-root`, once every ztunnel has refreshed its certificates again',
};

// SPDX-License-Identifier: Apache-2.0
// PEM helpers (RFC 7468): split concatenated PEM certificates, convert PEM ⇄ DER. Certificates
// are re-encoded from their DER so that two spellings of the same certificate compare equal.
import { IdentityError } from './errors.ts';

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

export interface PemBlock {
  readonly label: string;
  readonly der: Uint8Array;
}

/**
 * Every PEM block in `text`, in order. Text between blocks (comments) is ignored, but a BEGIN line
 * without its END is an error: a file cut short must not load as the blocks before the cut.
 */
export function pemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  const begins = text.match(/-----BEGIN [A-Z0-9 ]+-----/g)?.length ?? 0;
  for (const m of text.matchAll(BLOCK)) {
    const label = m[1] ?? '';
    const body = (m[2] ?? '').replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 !== 0 || body.length === 0) {
      throw new IdentityError(
        'ID_ERR_CERT_PARSE',
        `PEM block "${label}" is not valid base64; check the file was not truncated or edited`,
      );
    }
    out.push({ label, der: new Uint8Array(Buffer.from(body, 'base64')) });
  }
  if (begins !== out.length) {
    throw new IdentityError(
      'ID_ERR_CERT_PARSE',
      `a PEM block has a BEGIN line without its matching END line (${begins} BEGIN, ${out.length} complete); the file is truncated or two blocks are interleaved`,
    );
  }
  return out;
}

/** DER of every CERTIFICATE block; throws if there is none or if another kind of block is present. */
export function pemCertificatesToDer(text: string, what = 'PEM input'): Uint8Array[] {
  const blocks = pemBlocks(text);
  if (blocks.length === 0) {
    throw new IdentityError(
      'ID_ERR_CERT_PARSE',
      `${what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
    );
  }
  for (const b of blocks) {
    if (b.label !== 'CERTIFICATE') {
      throw new IdentityError(
        'ID_ERR_CERT_PARSE',
        `${what} holds a "${b.label}" PEM block where only CERTIFICATE blocks are allowed; is a key mixed into a certificate file?`,
      );
    }
  }
  return blocks.map((b) => b.der);
}

/** Encodes DER as one PEM block with 64-column lines and a trailing newline. */
export function derToPem(der: Uint8Array, label = 'CERTIFICATE'): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Splits concatenated PEM certificates into one canonical PEM string per certificate. */
export function splitPemCertificates(text: string, what?: string): string[] {
  return pemCertificatesToDer(text, what).map((d) => derToPem(d));
}

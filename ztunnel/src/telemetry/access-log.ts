// SPDX-License-Identifier: Apache-2.0
// Access logs (spec §7.2): one JSON line per connection, "connection complete" (info, or error
// with an `error` field) and "connection failed" (warn) for early refusals, with upstream's dotted
// field names (src.addr, dst.hbone_addr, ...) so log pipelines built for ztunnel keep working.
import type { Writable } from 'node:stream';
import { Logger } from '../../../src/shared/telemetry/logger.ts';

export interface AccessLogEntry {
  readonly direction: 'inbound' | 'outbound';
  readonly srcAddr: string;
  readonly dstAddr: string;
  readonly dstHboneAddr?: string | undefined;
  readonly srcWorkload?: string | undefined;
  readonly srcNamespace?: string | undefined;
  readonly srcIdentity?: string | undefined;
  readonly dstWorkload?: string | undefined;
  readonly dstNamespace?: string | undefined;
  readonly dstIdentity?: string | undefined;
  readonly dstService?: string | undefined;
  readonly bytesSent: number;
  readonly bytesRecv: number;
  readonly durationMs: number;
  readonly error?: string | undefined;
}

/** Creates the process logger: JSON lines with ztunnel's field conventions (see src/shared/telemetry/logger.ts). */
export function createLogger(opts: { level?: string; destination?: Writable } = {}): Logger {
  return new Logger({
    level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
    ...(opts.destination !== undefined && { destination: opts.destination }),
  });
}

export class AccessLog {
  readonly #log: Logger;

  constructor(logger: Logger) {
    this.#log = logger.child({ scope: 'access' });
  }

  complete(e: AccessLogEntry): void {
    const fields: Record<string, string | number> = {
      'src.addr': e.srcAddr,
      'dst.addr': e.dstAddr,
      direction: e.direction,
      bytes_sent: e.bytesSent,
      bytes_recv: e.bytesRecv,
      duration: `${Math.round(e.durationMs)}ms`,
    };
    put(fields, 'dst.hbone_addr', e.dstHboneAddr);
    putParties(fields, e);
    if (e.error !== undefined) {
      fields.error = e.error;
      this.#log.error(fields, 'connection complete');
    } else {
      this.#log.info(fields, 'connection complete');
    }
  }

  /**
   * An early refusal. Whatever is known by then goes in too: a denial logged without the verified
   * peer identity or the workload it was for cannot be audited.
   */
  failed(e: Pick<AccessLogEntry, 'direction' | 'srcAddr' | 'dstAddr'> & Parties & { error: string }): void {
    const fields: Record<string, string | number> = {
      'src.addr': e.srcAddr,
      'dst.addr': e.dstAddr,
      direction: e.direction,
    };
    putParties(fields, e);
    fields.error = e.error;
    this.#log.warn(fields, 'connection failed');
  }
}

/** Who was at each end, as far as known: the fields both kinds of line carry. */
type Parties = Partial<
  Pick<
    AccessLogEntry,
    | 'srcWorkload'
    | 'srcNamespace'
    | 'srcIdentity'
    | 'dstService'
    | 'dstWorkload'
    | 'dstNamespace'
    | 'dstIdentity'
  >
>;

function putParties(fields: Record<string, string | number>, e: Parties): void {
  put(fields, 'src.workload', e.srcWorkload);
  put(fields, 'src.namespace', e.srcNamespace);
  put(fields, 'src.identity', e.srcIdentity);
  put(fields, 'dst.service', e.dstService);
  put(fields, 'dst.workload', e.dstWorkload);
  put(fields, 'dst.namespace', e.dstNamespace);
  put(fields, 'dst.identity', e.dstIdentity);
}

function put(o: Record<string, string | number>, k: string, v: string | undefined): void {
  if (v !== undefined && v !== '') o[k] = v;
}

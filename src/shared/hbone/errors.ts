// SPDX-License-Identifier: Apache-2.0
// Error catalogue of the HBONE transport (ambient-protocols.md §1: TLS §1.2, CONNECT and its
// status codes §1.3, keepalive §1.4, pool §1.5). Codes are stable; messages are written for the
// operator and say what to check next.
import { MeshError } from '../errors.ts';

export type HboneErrorCode =
  /** The peer answered 400 (bad method or authority), or a CONNECT we were asked to send/serve is malformed. */
  | 'HBONE_ERR_BAD_REQUEST'
  /** The peer answered 401: its authorization policy denied the connection. */
  | 'HBONE_ERR_UNAUTHORIZED'
  /** The peer answered 503 (destination workload unknown, no port mapping, app connect failed), or an upstream connect failed. */
  | 'HBONE_ERR_UNAVAILABLE'
  /** The peer answered with another non-200 status. */
  | 'HBONE_ERR_STATUS'
  /** The TLS handshake failed (protocol, cipher, chain, ALPN). */
  | 'HBONE_ERR_TLS'
  /** The peer's certificate is not an acceptable X.509-SVID for this hop (identity, trust domain, SPIFFE rules). */
  | 'HBONE_ERR_PEER_IDENTITY'
  /**
   * A certificate of the peer's path is revoked by a CRL: refused at the handshake, or the live
   * session torn down when the CRL changed (checklist B.31).
   */
  | 'HBONE_ERR_PEER_REVOKED'
  /** TCP connect to the peer's HBONE port did not complete in time. */
  | 'HBONE_ERR_CONNECT_TIMEOUT'
  /** TCP connect to the peer's HBONE port failed (refused, unreachable). */
  | 'HBONE_ERR_CONNECT_FAILED'
  /** The TLS handshake did not complete in time. */
  | 'HBONE_ERR_HANDSHAKE_TIMEOUT'
  /** The CONNECT stream was reset (RST_STREAM) before or after the response. */
  | 'HBONE_ERR_STREAM_RESET'
  /** The HTTP/2 session closed (GOAWAY, transport error) under an open stream. */
  | 'HBONE_ERR_SESSION_CLOSED'
  /** The peer stopped answering HTTP/2 PINGs; the session was dropped. */
  | 'HBONE_ERR_PING_TIMEOUT'
  /** Our own workload certificate is not available. */
  | 'HBONE_ERR_CERTIFICATE'
  /** The client or server has been closed. */
  | 'HBONE_ERR_CLOSED'
  /** The caller aborted the operation. */
  | 'HBONE_ERR_ABORTED'
  /** Invalid HBONE settings or options. */
  | 'HBONE_ERR_CONFIG';

export class HboneError extends MeshError {
  declare readonly code: HboneErrorCode;
  /** The HTTP status the peer answered with, for the status-mapped codes. */
  readonly status?: number;

  constructor(code: HboneErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(code, message, options);
    if (options?.status !== undefined) this.status = options.status;
  }
}

/** Maps a non-200 CONNECT response status to a typed error (ambient-protocols.md §1.3). */
export function statusError(status: number, peer: string, authority: string): HboneError {
  const where = `HBONE peer ${peer} refused CONNECT ${authority} with status ${status}`;
  switch (status) {
    case 400:
      return new HboneError(
        'HBONE_ERR_BAD_REQUEST',
        `${where}: bad request (the authority must be the destination pod's own IP and target port, or a service hostname:port the destination knows)`,
        { status },
      );
    case 401:
      return new HboneError(
        'HBONE_ERR_UNAUTHORIZED',
        `${where}: denied by the destination's authorization policy; check AuthorizationPolicies for the destination workload`,
        { status },
      );
    case 503:
      return new HboneError(
        'HBONE_ERR_UNAVAILABLE',
        `${where}: unavailable (destination workload not known yet, no port mapping for the target, or the application refused the connection); check the destination pod and its target port`,
        { status },
      );
    default:
      return new HboneError('HBONE_ERR_STATUS', `${where}; any status other than 200 fails the tunnel`, {
        status,
      });
  }
}

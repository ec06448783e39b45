// SPDX-License-Identifier: Apache-2.0
// ZDS framing (spec 2.6, 3.7): one protobuf message per SOCK_SEQPACKET datagram, no length
// prefix, every message below 1 KiB (ztunnel reads into a 1024-byte buffer and refuses MSG_TRUNC),
// and file descriptors only where the protocol puts them: exactly one, the pod's netns, on an
// AddWorkload; none on anything else. Pure functions over the generated ts-proto code; the
// transport is seqpacket.ts, the conversation connection.ts.
//
// Decoders take ownership of the datagram's fds: on any violation they close them all and throw
// ZdsError ZDS_ERR_PROTOCOL, so a refused message never leaks a descriptor.
import { MeshError } from '../errors.ts';
import { Version, WorkloadRequest, WorkloadResponse, ZdsHello, type WorkloadInfo } from '../gen/zds.ts';
import { closeFd } from '../native/index.ts';
import type { Datagram, DatagramLimits } from './seqpacket.ts';

/** Largest message either side may send or accept: below 1 KiB (spec 2.6). */
export const MAX_MESSAGE_BYTES = 1023;

/**
 * Receive limits for both ends: a buffer one byte larger than the largest message, so a 1024-byte
 * datagram is seen (and refused as too large) and anything longer is a MSG_TRUNC error; room for
 * one descriptor, so two are a MSG_CTRUNC error.
 */
export const ZDS_LIMITS: DatagramLimits = { maxBytes: MAX_MESSAGE_BYTES + 1, maxFds: 1 };

export type ZdsErrorCode =
  /** The peer broke the protocol: bad protobuf, wrong message, fd rules, too large. */
  | 'ZDS_ERR_PROTOCOL'
  /** A message we were about to send does not fit in a datagram below 1 KiB. */
  | 'ZDS_ERR_TOO_LARGE'
  /** No reply (or no send) within the per-message deadline. */
  | 'ZDS_ERR_TIMEOUT'
  /** The connection is closed. */
  | 'ZDS_ERR_CLOSED'
  /** ztunnel answered a request with Ack{error}. */
  | 'ZDS_ERR_NACK'
  /** No ztunnel is connected to take the request. */
  | 'ZDS_ERR_NO_ZTUNNEL';

export class ZdsError extends MeshError {
  declare readonly code: ZdsErrorCode;

  // Not useless: it narrows `code` to the ZDS catalogue.
  // eslint-disable-next-line @typescript-eslint/no-useless-constructor
  constructor(code: ZdsErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** An agent → ztunnel request as ztunnel acts on it. */
export type ZdsRequest =
  | {
      readonly kind: 'add';
      readonly uid: string;
      readonly info: WorkloadInfo | undefined;
      /** The pod's netns, now owned by the receiver (close it when done). */
      readonly netnsFd: number;
    }
  | { readonly kind: 'keep'; readonly uid: string }
  | { readonly kind: 'del'; readonly uid: string }
  | { readonly kind: 'snapshotSent' };

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) closeFd(fd);
}

function protocolError(d: Datagram, message: string, cause?: unknown): ZdsError {
  closeAll(d.fds);
  return new ZdsError('ZDS_ERR_PROTOCOL', message, cause === undefined ? undefined : { cause });
}

function checked(bytes: Uint8Array, what: string): Uint8Array {
  if (bytes.length > MAX_MESSAGE_BYTES) {
    throw new ZdsError(
      'ZDS_ERR_TOO_LARGE',
      `${what} is ${bytes.length} bytes; ZDS messages must stay below 1 KiB (at most ${MAX_MESSAGE_BYTES}), ` +
        'so shorten the pod name, namespace, service account or uid',
    );
  }
  return bytes;
}

function checkSize(d: Datagram, what: string): void {
  if (d.data.length > MAX_MESSAGE_BYTES) {
    throw protocolError(d, `${what} of ${d.data.length} bytes: ZDS messages must stay below 1 KiB`);
  }
}

/** `fds`: how many descriptors this message must carry (1 for AddWorkload, else 0). */
function checkFds(d: Datagram, what: string, fds: number): void {
  if (d.fds.length !== fds) {
    throw protocolError(
      d,
      fds === 0
        ? `${what} carried ${d.fds.length} file descriptor(s); only AddWorkload may carry one`
        : `${what} carried ${d.fds.length} file descriptor(s); it must carry exactly ${fds}`,
    );
  }
}

function decodeWith<T>(d: Datagram, what: string, decode: (b: Uint8Array) => T): T {
  try {
    return decode(d.data);
  } catch (err) {
    throw protocolError(d, `${what}: not a valid protobuf message`, err);
  }
}

export function encodeHello(): Uint8Array {
  return checked(ZdsHello.encode({ version: Version.V1 }).finish(), 'ZdsHello');
}

/** The first message from ztunnel: a ZdsHello for version V1 and nothing else. */
export function decodeHello(d: Datagram): void {
  checkSize(d, 'ZdsHello');
  checkFds(d, 'ZdsHello', 0);
  const hello = decodeWith(d, 'ZdsHello', (b) => ZdsHello.decode(b));
  if (hello.version !== Version.V1) {
    throw protocolError(d, `ZdsHello with version ${hello.version}; this node agent speaks only V1 (1)`);
  }
}

export function encodeRequest(req: WorkloadRequest): Uint8Array {
  const what = req.payload === undefined ? 'WorkloadRequest' : `WorkloadRequest(${req.payload.$case})`;
  return checked(WorkloadRequest.encode(req).finish(), what);
}

/** A request from the agent, with the fd rules: exactly one on add, none elsewhere. */
export function decodeRequest(d: Datagram): ZdsRequest {
  checkSize(d, 'WorkloadRequest');
  const req = decodeWith(d, 'WorkloadRequest', (b) => WorkloadRequest.decode(b));
  const p = req.payload;
  if (p === undefined) {
    throw protocolError(d, 'WorkloadRequest without a payload (or with one this ztunnel does not know)');
  }
  switch (p.$case) {
    case 'add': {
      checkFds(d, 'AddWorkload', 1);
      const [netnsFd] = d.fds as [number];
      return { kind: 'add', uid: p.value.uid, info: p.value.workloadInfo, netnsFd };
    }
    case 'keep':
      checkFds(d, 'KeepWorkload', 0);
      return { kind: 'keep', uid: p.value.uid };
    case 'del':
      checkFds(d, 'DelWorkload', 0);
      return { kind: 'del', uid: p.value.uid };
    case 'snapshotSent':
      checkFds(d, 'SnapshotSent', 0);
      return { kind: 'snapshotSent' };
  }
}

/** Ack: `error` empty for success, the reason for a NACK. Long reasons are cut to fit. */
export function encodeAck(error: string): Uint8Array {
  // Leave room for the tags and length prefixes around the text (at most 6 bytes).
  const room = MAX_MESSAGE_BYTES - 6;
  let text = error;
  if (Buffer.byteLength(text) > room) {
    const cut = Buffer.from(text)
      .subarray(0, room - 3)
      .toString('utf8');
    // A cut through a multi-byte character decodes as U+FFFD; drop it.
    text = `${cut.replace(/\uFFFD$/, '')}...`;
  }
  return checked(
    WorkloadResponse.encode({ payload: { $case: 'ack', value: { error: text } } }).finish(),
    'Ack',
  );
}

/** ztunnel's answer to a request: the Ack's error text ('' = success). */
export function decodeAck(d: Datagram): string {
  checkSize(d, 'WorkloadResponse');
  checkFds(d, 'WorkloadResponse', 0);
  const res = decodeWith(d, 'WorkloadResponse', (b) => WorkloadResponse.decode(b));
  if (res.payload === undefined) throw protocolError(d, 'WorkloadResponse without an Ack');
  return res.payload.value.error;
}

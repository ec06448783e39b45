// SPDX-License-Identifier: Apache-2.0
// The error base class shared by every component. Each component keeps its own catalogue of
// codes (ID_ERR_*, HBONE_ERR_*, ZT_ERR_*, CNI_ERR_*, CTL_ERR_*); messages are written for the
// operator and say what to check next.

export class MeshError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** True when `err`, or anything on its `cause` chain, is an instance of `ctor`. */
export function isCausedBy(err: unknown, ctor: abstract new (...args: never[]) => Error): boolean {
  const seen = new Set<unknown>();
  let cur: unknown = err;
  while (cur instanceof Error && !seen.has(cur)) {
    const e: Error = cur;
    // isPrototypeOf rather than instanceof: instanceof would narrow `e` to never below.
    if (Object.prototype.isPrototypeOf.call(ctor.prototype, e)) return true;
    seen.add(e);
    cur = e.cause;
  }
  return false;
}

/** The message of an unknown thrown value, for logs. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

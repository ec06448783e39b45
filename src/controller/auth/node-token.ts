// SPDX-License-Identifier: Apache-2.0
// Local-mode authentication of node agents: without a Kubernetes API there is no TokenReview, so
// the local runtime gives each node's ztunnel a random credential (32 bytes, base64url) and the
// controller reads the node → token map from a file (YAML, or JSON, which is YAML). A caller
// presenting one of those tokens is that node (a NodeCaller); every other caller is refused.
//
// Tokens are compared as SHA-256 digests with crypto.timingSafeEqual against every entry, so
// neither the token's length nor which entry matched shows in the timing. The file is loaded
// once and validated strictly: a node name that is not a Kubernetes node name, a short token or
// a token shared by two nodes stops start-up with a message saying what to fix.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { Metadata } from '@grpc/grpc-js';
import { parse, stringify } from 'yaml';
import { MeshError, errorMessage } from '../../shared/errors.ts';
import { nameProblem } from '../../shared/kube/resources.ts';
import { bearerToken } from './bearer.ts';
import { AuthenticationError } from './errors.ts';
import type { Authenticator, NodeCaller } from './types.ts';

/** Random bytes per generated token (256 bits). */
export const NODE_TOKEN_BYTES = 32;
/** base64url without padding of at least NODE_TOKEN_BYTES bytes. */
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43,}$/;

function fileError(source: string, message: string, cause?: unknown): MeshError {
  return new MeshError('CTL_ERR_NODE_TOKENS', `node token file ${source}: ${message}`, { cause });
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** A new random node token: NODE_TOKEN_BYTES bytes, base64url. */
export function generateNodeToken(): string {
  return randomBytes(NODE_TOKEN_BYTES).toString('base64url');
}

/**
 * Parses and validates a node → token file's text. `source` names the file in error messages.
 * Returns the map in file order.
 */
export function parseNodeTokens(text: string, source: string): ReadonlyMap<string, string> {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw fileError(source, `not valid YAML or JSON: ${errorMessage(err)}`, err);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw fileError(source, 'expected a mapping of node name to token, e.g. "node-1: <token>"');
  }
  const out = new Map<string, string>();
  const seen = new Map<string, string>();
  for (const [node, token] of Object.entries(doc)) {
    // Node objects follow the API server's DNS-1123 subdomain rule.
    const nameBad = nameProblem(node, 'dns1123-subdomain');
    if (nameBad !== undefined) {
      throw fileError(
        source,
        `${JSON.stringify(node.slice(0, 300))} is not a Kubernetes node name: it ${nameBad}`,
      );
    }
    if (typeof token !== 'string' || !TOKEN_SHAPE.test(token)) {
      throw fileError(
        source,
        `the token of node ${node} must be base64url of at least ${NODE_TOKEN_BYTES} random bytes (43+ characters of A-Z a-z 0-9 - _); generate one with writeNodeTokenFile`,
      );
    }
    const other = seen.get(token);
    if (other !== undefined) {
      throw fileError(source, `nodes ${other} and ${node} share a token; every node needs its own`);
    }
    seen.set(token, node);
    out.set(node, token);
  }
  if (out.size === 0) throw fileError(source, 'lists no node');
  return out;
}

/**
 * Generates a token for each node and writes the node → token file atomically with mode 0600.
 * Returns the tokens so the local runtime can hand each node's ztunnel its own.
 */
export function writeNodeTokenFile(path: string, nodes: readonly string[]): Record<string, string> {
  const tokens: Record<string, string> = {};
  for (const node of nodes) tokens[node] = generateNodeToken();
  const text =
    '# Node agent credentials for the controller in local mode (node name: token). Secret: keep mode 0600.\n' +
    stringify(tokens);
  parseNodeTokens(text, path); // the same validation the controller applies (node names, duplicates)
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600); // an existing temporary file keeps its old mode otherwise
  renameSync(tmp, path);
  return tokens;
}

export class NodeTokenAuthenticator implements Authenticator {
  readonly #entries: readonly { readonly node: string; readonly digest: Buffer }[];

  /** `tokens`: node name → token, already validated (see parseNodeTokens). */
  constructor(tokens: ReadonlyMap<string, string>) {
    this.#entries = [...tokens].map(([node, token]) => ({ node, digest: digest(token) }));
  }

  /** Loads and validates the node → token file (YAML or JSON). */
  static fromFile(path: string): NodeTokenAuthenticator {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw fileError(path, `cannot be read: ${errorMessage(err)}`, err);
    }
    return new NodeTokenAuthenticator(parseNodeTokens(text, path));
  }

  authenticate(metadata: Metadata): Promise<NodeCaller> {
    return new Promise((resolve) => {
      const presented = digest(bearerToken(metadata));
      let node: string | undefined;
      // Every entry is compared, whatever matched, so the timing does not depend on the position.
      for (const e of this.#entries) {
        if (timingSafeEqual(presented, e.digest)) node = e.node;
      }
      if (node === undefined) {
        throw new AuthenticationError(
          'bad-token',
          'the token is not the credential of any node in local mode',
        );
      }
      resolve({ kind: 'node', node, subject: `local node token (${node})` });
    });
  }
}

// SPDX-License-Identifier: Apache-2.0
// Error catalogue of the Kubernetes layer shared by the controller and the node agent: manifest
// files (local mode) and API requests made outside the client library's informers. Codes are
// stable; messages name the file, document or resource and say what to fix.
import { MeshError } from '../errors.ts';

export type KubeErrorCode =
  /** A manifest file cannot be read, is not YAML, or a document breaks the object rules. */
  | 'KUBE_ERR_MANIFEST'
  /** A manifest directory cannot be read or watched. */
  | 'KUBE_ERR_MANIFEST_DIR'
  /** The API server answered a request with an error status, or the request failed. */
  | 'KUBE_ERR_API'
  /** The watcher was stopped before it finished what was asked (initial list, start). */
  | 'KUBE_ERR_STOPPED';

export class KubeError extends MeshError {
  declare readonly code: KubeErrorCode;
  /** The HTTP status of an API error (KUBE_ERR_API), when the server answered. */
  readonly statusCode: number | undefined;

  constructor(code: KubeErrorCode, message: string, options?: { cause?: unknown; statusCode?: number }) {
    super(code, message, options);
    this.statusCode = options?.statusCode;
  }
}

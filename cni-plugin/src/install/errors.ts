// SPDX-License-Identifier: Apache-2.0
// Error catalogue for installing the CNI plugin on a node (cni-plugin/src/install/).
//
// Codes:
//   CNI_ERR_INSTALL_NO_CONFIG      the CNI config directory holds no network configuration yet (the
//                                  primary CNI has not written it): wait for it and retry
//   CNI_ERR_INSTALL_MALFORMED      the primary config is not valid JSON or not a CNI config; it is
//                                  left untouched
//   CNI_ERR_INSTALL_UNSUPPORTED    the primary config's cniVersion is one the plugin cannot chain to
//   CNI_ERR_INSTALL_PLUGIN_CONFIG  our own plugin entry would be refused by the plugin
//   CNI_ERR_INSTALL_BINARY         the plugin binary to install is missing or unreadable
//   CNI_ERR_INSTALL_WATCH          the CNI config directory cannot be watched (missing?)
import { MeshError } from '../../../src/shared/errors.ts';

export const INSTALL_ERROR_CODES = [
  'CNI_ERR_INSTALL_NO_CONFIG',
  'CNI_ERR_INSTALL_MALFORMED',
  'CNI_ERR_INSTALL_UNSUPPORTED',
  'CNI_ERR_INSTALL_PLUGIN_CONFIG',
  'CNI_ERR_INSTALL_BINARY',
  'CNI_ERR_INSTALL_WATCH',
] as const;

export type InstallErrorCode = (typeof INSTALL_ERROR_CODES)[number];

export class InstallError extends MeshError {
  declare readonly code: InstallErrorCode;

  // Not useless: it narrows `code` to this catalogue, so a typo in a code fails to compile.
  // eslint-disable-next-line @typescript-eslint/no-useless-constructor
  constructor(code: InstallErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

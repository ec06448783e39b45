// SPDX-License-Identifier: Apache-2.0
// The error every configuration problem is reported with (ZT_ERR_CONFIG): start-up stops with
// its message, which names the variable, the value and what is expected.
import { MeshError } from '../../../src/shared/errors.ts';

export class ConfigError extends MeshError {}

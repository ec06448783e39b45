// SPDX-License-Identifier: Apache-2.0
// The registry of benchmark paths, in default run order. A new path (e.g. `ztunnel`: pods in
// network namespaces) is one module implementing PathModule (bench/types.ts), added here.
import type { PathModule } from '../types.ts';
import { directPath } from './direct.ts';
import { hbonePath } from './hbone.ts';
import { stunnelPath } from './stunnel.ts';

export const PATHS: readonly PathModule[] = [directPath, stunnelPath, hbonePath];

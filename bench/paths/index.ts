// SPDX-License-Identifier: Apache-2.0
// The registry of benchmark paths, in default run order, grouped (bench/groups.ts): the loopback
// group against `direct`, the network-namespace group against `pod-direct`. A new path is one
// module implementing PathModule (bench/types.ts), added here.
import type { PathModule } from '../types.ts';
import { directPath } from './direct.ts';
import { hbonePath } from './hbone.ts';
import { podDirectPath } from './pod-direct.ts';
import { podNodeRelayPath } from './pod-node-relay.ts';
import { podStunnelPath } from './pod-stunnel.ts';
import { stunnelPath } from './stunnel.ts';
import { ztunnelPath } from './ztunnel.ts';

export const PATHS: readonly PathModule[] = [
  directPath,
  stunnelPath,
  hbonePath,
  podDirectPath,
  podStunnelPath,
  podNodeRelayPath,
  ztunnelPath,
];

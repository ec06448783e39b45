// SPDX-License-Identifier: Apache-2.0
// Moved to src/local (local mode uses it too); tests import it from here.
export * from '../../src/local/netns-net.ts';

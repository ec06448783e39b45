// SPDX-License-Identifier: Apache-2.0
// Is CNI_NETNS still a network namespace? A sandbox killed between the primary plugin's ADD and
// ours leaves a dangling path (checklist D.58): the plugin refuses it at once, before the agent is
// asked to enrol anything, with an error that is not "try again later" — retrying this sandbox
// cannot succeed; the runtime creates a new one.
//
// Namespace files (/var/run/netns/<name> bind mounts and /proc/<pid>/ns/net) live on nsfs, so a
// statfs of the path tells a namespace from an ordinary file left at the same path.
import { CNI_CODES, CniPluginError } from './cni.ts';

const { statfsSync } = process.getBuiltinModule('node:fs');

/** f_type of nsfs (linux/magic.h NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;

/** Throws CniPluginError (103 when missing or not a namespace, 5 when unreadable). */
export function assertNetns(path: string): void {
  let type: number;
  try {
    type = statfsSync(path).type;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new CniPluginError(
        CNI_CODES.netnsNotFound,
        `the pod's network namespace ${path} (CNI_NETNS) does not exist`,
        'the sandbox was removed before the ambient CNI plugin ran; nothing was enrolled and this sandbox ' +
          'cannot be retried: the runtime must create a new one',
      );
    }
    throw new CniPluginError(
      CNI_CODES.ioFailure,
      `cannot inspect the pod's network namespace ${path} (CNI_NETNS): ${(e as Error).message}`,
    );
  }
  if (type !== NSFS_MAGIC) {
    throw new CniPluginError(
      CNI_CODES.netnsNotFound,
      `CNI_NETNS=${path} is not a network namespace (filesystem type 0x${type.toString(16)}, expected nsfs)`,
      'the path was probably reused after the sandbox was removed; the runtime must create a new sandbox',
    );
  }
}

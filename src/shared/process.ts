// SPDX-License-Identifier: Apache-2.0
// Process helpers shared by the controller's CLI and local mode.

/** Whether a pid is alive (signal 0 probe); EPERM means it exists but is another user's. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

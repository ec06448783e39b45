// SPDX-License-Identifier: Apache-2.0
// The enrolment group's columns and sizes (bench/enrolment/): PERFORMANCE.md's "pod enrolment:
// CNI ADD to redirection live" row, measured on pods created one at a time in an ambient
// namespace (`enrolled`) against the same number in a namespace outside the mesh (`unenrolled`,
// the baseline). Pure, so args.ts can quote the sizes in its usage.

/** The baseline column: pods in a namespace outside the mesh (our plugin asks the agent, which declines). */
export const UNENROLLED = 'unenrolled';
/** The mesh column: pods in an ambient namespace (rules, ZDS hand-off, WDS, then the first connection). */
export const ENROLLED = 'enrolled';
export const ENROLMENT_COLUMNS: readonly string[] = [UNENROLLED, ENROLLED];

/** Pods per column; the p99 of 40 samples is their maximum (nearest rank), as it is of 10. */
export const FULL_PODS = 40;
export const QUICK_PODS = 10;

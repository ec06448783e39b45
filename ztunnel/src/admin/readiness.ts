// SPDX-License-Identifier: Apache-2.0
// Readiness (spec §7.4): ztunnel is ready when every registered start-up task has completed.
// A task may become pending again (for example when the node agent connection drops).

export class Readiness {
  readonly #pending = new Set<string>();

  /** Registers a task that must complete before ztunnel reports ready; returns its completion. */
  register(task: string): () => void {
    this.#pending.add(task);
    return () => this.#pending.delete(task);
  }

  markPending(task: string): void {
    this.#pending.add(task);
  }

  get ready(): boolean {
    return this.#pending.size === 0;
  }

  pending(): string[] {
    return [...this.#pending].sort();
  }
}

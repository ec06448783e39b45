// SPDX-License-Identifier: Apache-2.0
// The failure list `npm test` prints right above its closing `N passed, N failed` line.

/**
 * Collects every `not ok` line of tap's stream with the subtest path above it and the first
 * lines of its YAML diagnostic, bounded, so the end of the output says what failed and where.
 */
export class FailureLog {
  static readonly MAX_FAILURES = 20;
  static readonly DIAG_LINES = 8;
  #partial = '';
  #stack: string[] = [];
  #out: string[] = [];
  #count = 0;
  /** Indentation of the YAML block being read after a `not ok`, or -1. */
  #diagIndent = -1;
  #diag: string[] = [];
  #afterNotOk = -1;

  push(text: string): void {
    const lines = (this.#partial + text).split('\n');
    this.#partial = lines.pop() ?? '';
    for (const l of lines) this.#line(l);
  }

  #line(l: string): void {
    const indent = /^ */.exec(l)?.[0].length ?? 0;
    if (this.#afterNotOk >= 0) {
      const opens = l.trim() === '---' && indent === this.#afterNotOk + 2;
      this.#diagIndent = opens ? indent : -1;
      this.#diag = [];
      this.#afterNotOk = -1;
      if (opens) return;
    }
    if (this.#diagIndent >= 0) {
      if (l.trim() === '...' && indent === this.#diagIndent) {
        this.#diagIndent = -1;
        if (this.#count <= FailureLog.MAX_FAILURES) this.#out.push(...FailureLog.digest(this.#diag));
        this.#diag = [];
      } else this.#diag.push(l.slice(this.#diagIndent));
      return;
    }
    const depth = Math.floor(indent / 4);
    const sub = /^\s*# Subtest: (.*)$/.exec(l);
    if (sub) {
      this.#stack.length = depth;
      this.#stack[depth] = sub[1] ?? '';
      return;
    }
    const notOk = /^\s*not ok \d+ - (.*?)(?: # time=.*)?$/.exec(l);
    if (!notOk) return;
    // A subtest's or file's own `not ok` repeats a failure inside it that is already listed.
    const path = [...this.#stack.slice(0, depth), notOk[1] ?? ''].join(' › ');
    if (this.#out.some((o) => o.startsWith(`  ✗ ${path} › `))) return;
    this.#count += 1;
    if (this.#count <= FailureLog.MAX_FAILURES) this.#out.push(`  ✗ ${path}`);
    this.#afterNotOk = indent;
  }

  /** The telling parts of a tap YAML diagnostic: the diff or found/wanted, the message, where. */
  static digest(yaml: string[]): string[] {
    const blocks = new Map<string, string[]>();
    let key = '';
    for (const line of yaml) {
      const top = /^([A-Za-z_]+):(.*)$/.exec(line);
      if (top) {
        key = top[1] ?? '';
        const rest = top[2]?.trim() ?? '';
        blocks.set(key, rest && rest !== '|' && rest !== '>' ? [line] : []);
      } else blocks.get(key)?.push(line.trim());
    }
    const out: string[] = [];
    for (const k of ['message', 'found', 'wanted', 'pattern', 'code', 'signal', 'exitCode']) {
      const b = blocks.get(k);
      if (b && b.length > 0) out.push(b.slice(0, 2).join(' '));
    }
    const diff = (blocks.get('diff') ?? []).filter((d) => /^[-+](?![-+]{2})/.test(d));
    if (diff.length > 0) out.push(...diff.slice(0, 4));
    const stack = blocks.get('stack')?.[0];
    if (stack) out.push(`at ${stack}`);
    return out.slice(0, FailureLog.DIAG_LINES).map((o) => `      ${o}`);
  }

  render(): string {
    if (this.#count === 0) return '';
    const extra = this.#count - FailureLog.MAX_FAILURES;
    const more = extra > 0 ? `  … and ${extra} more\n` : '';
    return `Failed (${this.#count}):\n${this.#out.join('\n')}\n${more}`;
  }
}

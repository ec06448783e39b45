// SPDX-License-Identifier: Apache-2.0
// Times the plugin executions of one pod's CNI ADD without touching the chain. Local mode's CNI
// runtime (src/local/cni-runtime.ts) runs in this process and executes each plugin of the node's
// conflist as a child process (`ip netns exec <node> <plugin>`, as a runtime on the node's host
// would run it), and Node announces every child process on the `child_process` diagnostics
// channel (Node.js docs, "Built-in channels: Process"). The message arrives in the ChildProcess
// constructor, just before the spawn; the span ends when the child's stdio has closed, which is
// when the runtime's exec helper (spawnCollect) resolves. So a span is the plugin as the runtime
// waits for it, fork and exec included, and nothing else is in the chain: no wrapper binary whose
// own start-up would be counted, no edit of the conflist the node agent owns.
//
// A child belongs to the chain when its last argument is an absolute path whose file name is one
// of the conflist's plugin types (the plugins take no arguments; `ip netns add <name>` and the
// pod's own command do not match). Pods are created one at a time, so everything recorded
// between begin() and finish() is that pod's ADD; finish() checks the spans are the conflist's
// plugins, once each, in order.
import type { ChildProcess } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, isAbsolute, join } from 'node:path';
import { MeshError } from '../../src/shared/errors.ts';

const CHANNEL = 'child_process';

export class CniObserverError extends MeshError {
  constructor(message: string) {
    super('BENCH_ERR_CNI_OBSERVER', message);
  }
}

/** One plugin execution, in performance.now() milliseconds. */
export interface PluginSpan {
  readonly plugin: string;
  readonly startMs: number;
  readonly endMs: number;
}

/** One ADD: from the first plugin's spawn to the last plugin's exit. */
export interface AddTiming {
  readonly startMs: number;
  readonly endMs: number;
  readonly spans: readonly PluginSpan[];
}

export interface AddRecording {
  /** Resolves when the chain's last plugin has finished (the ADD has returned to the runtime). */
  readonly ended: Promise<void>;
  /** Stops recording and returns the ADD's spans; throws unless they are the chain, in order. */
  finish(): AddTiming;
}

/**
 * The plugin types of the conflist a runtime uses on this node: the lexicographically first
 * `*.conflist` of its configuration directory (libcni's order, which local mode follows).
 */
export function readChain(confDir: string): string[] {
  const file = readdirSync(confDir)
    .filter((f) => f.endsWith('.conflist'))
    .sort()[0];
  if (file === undefined) throw new CniObserverError(`no *.conflist in ${confDir}`);
  const list = JSON.parse(readFileSync(join(confDir, file), 'utf8')) as { plugins?: { type?: unknown }[] };
  const types = (list.plugins ?? []).map((p) => p.type);
  if (types.length === 0 || !types.every((t): t is string => typeof t === 'string')) {
    throw new CniObserverError(`${join(confDir, file)} has no plugins with a string type`);
  }
  return types;
}

export class CniExecObserver {
  readonly #chain: readonly string[];
  readonly #types: ReadonlySet<string>;
  #current: { spans: PluginSpan[]; onEnd: () => void } | undefined;
  readonly #listener = (message: unknown): void => {
    const current = this.#current;
    if (current === undefined) return;
    const startMs = performance.now();
    const child = (message as { process: ChildProcess }).process;
    // spawnargs are set by spawn(), right after the constructor that published the message.
    child.once('close', () => {
      const exe = child.spawnargs.at(-1) ?? '';
      const plugin = basename(exe);
      if (!isAbsolute(exe) || !this.#types.has(plugin)) return;
      current.spans.push({ plugin, startMs, endMs: performance.now() });
      if (plugin === this.#chain.at(-1)) current.onEnd();
    });
  };

  /** `chain`: the conflist's plugin types in order (readChain). */
  constructor(chain: readonly string[]) {
    this.#chain = chain;
    this.#types = new Set(chain);
    subscribe(CHANNEL, this.#listener);
  }

  /** Starts recording one pod's ADD. One recording at a time. */
  begin(): AddRecording {
    if (this.#current !== undefined) throw new CniObserverError('an ADD is already being recorded');
    let onEnd = (): void => undefined;
    const ended = new Promise<void>((resolve) => (onEnd = resolve));
    const current = { spans: [] as PluginSpan[], onEnd };
    this.#current = current;
    return {
      ended,
      finish: () => {
        if (this.#current === current) this.#current = undefined;
        const seen = current.spans.map((s) => s.plugin);
        if (seen.join(' ') !== this.#chain.join(' ')) {
          throw new CniObserverError(
            `expected one ADD through ${this.#chain.join(' → ')}, saw plugin executions: ${seen.join(', ') || 'none'}`,
          );
        }
        return {
          startMs: current.spans[0]!.startMs,
          endMs: current.spans.at(-1)!.endMs,
          spans: current.spans,
        };
      },
    };
  }

  close(): void {
    this.#current = undefined;
    unsubscribe(CHANNEL, this.#listener);
  }
}

// SPDX-License-Identifier: Apache-2.0
// A file that is loaded now and again whenever it changes, with the last good value kept in force
// when a new version is bad: ztunnel's static config (LOCAL_XDS_PATH) and its CRL file (CRL_PATH).
//
// The directory is watched, not the file, so editors' rename-into-place and Kubernetes
// ConfigMap/Secret symlink swaps (`..data`) are seen; any event in the directory schedules one
// debounced re-read, and unchanged content is not reported again. A missing or unreadable file
// is an error like a bad one: the caller keeps what it had (deleting a CRL file must not
// un-revoke anything, a truncated config must not drop every policy).
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { errorMessage } from './errors.ts';

export interface WatchedFile<T> {
  /** Resolves once the initial load has been attempted (and reported). */
  readonly ready: Promise<void>;
  /** The last value that loaded successfully, if any. */
  lastGood(): T | undefined;
  close(): void;
}

export interface WatchFileOptions {
  /** Quiet time after the last change event before re-reading; editors write in bursts. */
  debounceMs?: number;
  /** How often the file is re-read when the directory cannot be watched (default 1000 ms). */
  pollMs?: number;
}

export interface WatchFileHandlers<T> {
  /** Parses and validates the file's text; throws (with a message saying what to fix) when it is bad. */
  readonly parse: (text: string) => T;
  /** Each good load, in order. */
  readonly onValue: (value: T) => void;
  /** Each bad load (parse error, unreadable file, watch failure); the last good value stays. */
  readonly onError: (err: Error) => void;
  /**
   * Wraps the errors this module raises itself (reading and watching the file) in the caller's
   * error type; `message` says what happened and that the last good value stays.
   */
  readonly error: (message: string, cause: unknown) => Error;
  /** How the file is named in those messages, e.g. "static config". */
  readonly what: string;
}

export function watchFile<T>(
  path: string,
  handlers: WatchFileHandlers<T>,
  options: WatchFileOptions = {},
): WatchedFile<T> {
  const debounceMs = options.debounceMs ?? 100;
  const { parse, onValue, what } = handlers;
  let lastText: string | undefined;
  let good: T | undefined;
  let timer: NodeJS.Timeout | undefined;
  // Mutable flags shared by the closures below (an object, so control-flow narrowing in one
  // closure does not assume another cannot change them).
  const st = { running: false, again: false, closed: false };

  // A function, because TypeScript would otherwise narrow `st.again` to the `false` assigned at
  // the top of the loop and ignore that an event handler set it meanwhile.
  const queued = (): boolean => st.again && !st.closed;

  const report = (err: unknown): void => {
    handlers.onError(err instanceof Error ? err : new Error(String(err)));
  };

  /** One read-validate-report pass; at most one runs at a time, later events queue one more. */
  const reload = async (): Promise<void> => {
    if (st.running) {
      st.again = true;
      return;
    }
    st.running = true;
    try {
      do {
        st.again = false;
        let text: string;
        try {
          text = await readFile(path, 'utf8');
        } catch (err) {
          // Often transient (the file is being replaced); the next event retries.
          if (!st.closed) {
            report(
              handlers.error(
                `cannot read ${what} ${path}: ${errorMessage(err)}; keeping the last good ${what}`,
                err,
              ),
            );
          }
          continue;
        }
        if (st.closed || text === lastText) continue;
        lastText = text;
        let value: T;
        try {
          value = parse(text);
        } catch (err) {
          report(err);
          continue;
        }
        good = value;
        onValue(value);
      } while (queued());
    } finally {
      st.running = false;
    }
  };

  const schedule = (): void => {
    if (st.closed) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      reload().catch(report);
    }, debounceMs);
  };

  // Without a watch (inotify limits, a filesystem that has none), the file is re-read on a timer:
  // a change still arrives, a little later, instead of never.
  const pollMs = options.pollMs ?? 1000;
  let poll: NodeJS.Timeout | undefined;
  const startPolling = (why: string, cause: unknown): void => {
    report(handlers.error(`${why}; re-reading ${basename(path)} every ${pollMs} ms instead`, cause));
    watcher?.close();
    if (poll !== undefined || st.closed) return;
    poll = setInterval(schedule, pollMs);
    poll.unref();
  };
  let watcher: FSWatcher | undefined;
  try {
    // Any entry in the directory may be the one that changed our file (ConfigMaps swap a
    // `..data` symlink); the content comparison in reload() filters out the rest.
    watcher = watch(dirname(path), { persistent: false }, schedule);
    watcher.on('error', (err) => {
      startPolling(`watching ${dirname(path)} for changes to ${basename(path)} failed: ${err.message}`, err);
    });
  } catch (err) {
    watcher = undefined;
    startPolling(`cannot watch ${dirname(path)} for changes to ${basename(path)}: ${errorMessage(err)}`, err);
  }

  const ready = reload().catch(report);
  return {
    ready,
    lastGood: () => good,
    close: () => {
      st.closed = true;
      if (timer !== undefined) clearTimeout(timer);
      clearInterval(poll);
      watcher?.close();
    },
  };
}

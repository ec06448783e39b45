// SPDX-License-Identifier: Apache-2.0
// JSON with positions, for editing a node's CNI config in place. The installer changes only the
// bytes of the entry it adds (and removes exactly those bytes again), so the node's file keeps
// its formatting and, after uninstall, is byte-for-byte what it was. JSON.parse validates the
// text (RFC 8259) and gives the values; this scanner adds where each value starts and ends.
//
// Only text that JSON.parse accepted is scanned, so the scanner need not diagnose anything.

export interface JsonSpan {
  /** Offset of the value's first character. */
  start: number;
  /** Offset just past the value's last character. */
  end: number;
}

export interface JsonMember {
  key: string;
  /** Offset of the key's opening quote. */
  keyStart: number;
  value: JsonNode;
}

export type JsonNode =
  | (JsonSpan & { kind: 'object'; members: JsonMember[] })
  | (JsonSpan & { kind: 'array'; items: JsonNode[] })
  | (JsonSpan & { kind: 'scalar' });

const WS = new Set([' ', '\t', '\n', '\r']);

/** The structure of `text`, which must be JSON that JSON.parse accepts. */
export function scanJson(text: string): JsonNode {
  let i = 0;
  const skipWs = (): void => {
    while (i < text.length && WS.has(text[i] ?? '')) i++;
  };
  const stringEnd = (from: number): number => {
    let j = from + 1;
    while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
    return j + 1;
  };
  const value = (): JsonNode => {
    skipWs();
    const start = i;
    const c = text[i];
    if (c === '{') {
      i++;
      const members: JsonMember[] = [];
      skipWs();
      if (text[i] === '}') {
        i++;
        return { kind: 'object', start, end: i, members };
      }
      for (;;) {
        skipWs();
        const keyStart = i;
        i = stringEnd(i);
        const key = JSON.parse(text.slice(keyStart, i)) as string;
        skipWs();
        i++; // ':'
        members.push({ key, keyStart, value: value() });
        skipWs();
        if (text[i++] === '}') return { kind: 'object', start, end: i, members };
      }
    }
    if (c === '[') {
      i++;
      const items: JsonNode[] = [];
      skipWs();
      if (text[i] === ']') {
        i++;
        return { kind: 'array', start, end: i, items };
      }
      for (;;) {
        items.push(value());
        skipWs();
        if (text[i++] === ']') return { kind: 'array', start, end: i, items };
      }
    }
    if (c === '"') {
      i = stringEnd(i);
      return { kind: 'scalar', start, end: i };
    }
    while (i < text.length && !WS.has(text[i] ?? '') && !',]}'.includes(text[i] ?? '')) i++;
    return { kind: 'scalar', start, end: i };
  };
  return value();
}

/** The member spans of an object or the items of an array, as [start, end) pairs in order. */
function elementSpans(container: JsonNode): JsonSpan[] {
  if (container.kind === 'object')
    return container.members.map((m) => ({ start: m.keyStart, end: m.value.end }));
  if (container.kind === 'array') return container.items.map((n) => ({ start: n.start, end: n.end }));
  return [];
}

/**
 * `text` without element `index` of `container` and its separating comma. Removing the element an
 * {@link appendElement} added gives back exactly the text before the append.
 */
export function removeElement(text: string, container: JsonNode, index: number): string {
  const spans = elementSpans(container);
  const el = spans[index];
  if (el === undefined) throw new RangeError(`no element ${index} in a container of ${spans.length}`);
  const prev = spans[index - 1];
  if (prev !== undefined) return text.slice(0, prev.end) + text.slice(el.end);
  const next = spans[index + 1];
  if (next !== undefined) return text.slice(0, el.start) + text.slice(next.start);
  return text.slice(0, el.start) + text.slice(el.end);
}

/** The line break the text uses ("\r\n" or "\n"). */
function lineBreak(text: string): string {
  return text.includes('\r\n') ? '\r\n' : '\n';
}

/** One level of indentation in `text` (the leading whitespace of its first indented line), or '' if compact. */
function indentUnit(text: string): string {
  const m = /\n([ \t]+)\S/.exec(text);
  return m?.[1] ?? '';
}

/** `value` as JSON laid out like the text it goes into, starting at a column indented by `indent`. */
function layout(text: string, value: unknown, indent: string): string {
  const unit = indentUnit(text);
  if (unit === '') return JSON.stringify(value);
  return JSON.stringify(value, null, unit)
    .split('\n')
    .join(lineBreak(text) + indent);
}

/** Leading whitespace of the line `offset` is on, up to `offset` (the element's indentation). */
function indentAt(text: string, offset: number): string {
  const lineStart = text.lastIndexOf('\n', offset - 1) + 1;
  const lead = text.slice(lineStart, offset);
  return /^[ \t]*$/.test(lead) ? lead : '';
}

/**
 * `text` with `value` appended to the non-empty array `array`, separated from the last item the
 * way the existing items are separated, laid out in the text's indentation.
 */
export function appendElement(text: string, array: JsonNode, value: unknown): string {
  if (array.kind !== 'array' || array.items.length === 0) {
    throw new RangeError('appendElement needs a non-empty array');
  }
  const items = array.items;
  const last = items[items.length - 1] as JsonNode;
  const before = items[items.length - 2];
  // The separator between two items, without its comma; with one item, what follows "[".
  const sep =
    before === undefined
      ? text.slice(array.start + 1, last.start)
      : text.slice(before.end, last.start).replace(',', '');
  const entry = layout(text, value, indentAt(text, last.start));
  return `${text.slice(0, last.end)},${sep}${entry}${text.slice(last.end)}`;
}

/** `text` with the value `node` replaced by `value`, laid out at the node's indentation. */
export function replaceValue(text: string, node: JsonNode, value: unknown): string {
  return text.slice(0, node.start) + layout(text, value, indentAt(text, node.start)) + text.slice(node.end);
}

// SPDX-License-Identifier: Apache-2.0
// JSON with positions (cni-plugin/src/install/json-text.ts): spans match JSON.parse's values, and
// appending an element then removing it gives back the original text byte for byte, whatever
// the layout (property-tested with fast-check over documents and indentations).
import t from 'tap';
import fc from 'fast-check';
import {
  appendElement,
  removeElement,
  replaceValue,
  scanJson,
} from '../../../../cni-plugin/src/install/json-text.ts';
import type { JsonNode } from '../../../../cni-plugin/src/install/json-text.ts';

/** Every node's text parses to the value JSON.parse gives for that position. */
function checkSpans(text: string, node: JsonNode, value: unknown): boolean {
  if (JSON.stringify(JSON.parse(text.slice(node.start, node.end))) !== JSON.stringify(value)) return false;
  if (node.kind === 'object') {
    const obj = value as Record<string, unknown>;
    // Keys are written as JSON.stringify writes them in every text these tests scan.
    return node.members.every(
      (m) => text.startsWith(JSON.stringify(m.key), m.keyStart) && checkSpans(text, m.value, obj[m.key]),
    );
  }
  if (node.kind === 'array') return node.items.every((n, i) => checkSpans(text, n, (value as unknown[])[i]));
  return true;
}

const layouts = fc.constantFrom<(v: unknown) => string>(
  (v) => JSON.stringify(v),
  (v) => JSON.stringify(v, null, 2),
  (v) => JSON.stringify(v, null, 4),
  (v) => JSON.stringify(v, null, '\t'),
  (v) => `${JSON.stringify(v, null, 2).replace(/\n/g, '\r\n')}\r\n`,
  (v) => `  ${JSON.stringify(v, null, 3)}\n\n`,
);

t.test('spans of every value match JSON.parse (random documents and layouts)', async (t) => {
  fc.assert(
    fc.property(fc.jsonValue(), layouts, (v, fmt) => {
      const text = fmt(v);
      return checkSpans(text, scanJson(text), JSON.parse(text));
    }),
    { numRuns: 500 },
  );
  t.pass('500 random documents');
});

t.test('strings with escapes, quotes and brackets do not confuse the scanner', async (t) => {
  const text = '{"a\\"]}": ["x\\\\", "}{][,", {"k": "\\u005d"}], "b" : -1.5e+3 , "c":null}';
  const root = scanJson(text);
  t.equal(root.kind, 'object');
  if (root.kind !== 'object') return;
  t.same(
    root.members.map((m) => m.key),
    ['a"]}', 'b', 'c'],
  );
  t.ok(checkSpans(text, root, JSON.parse(text)));
});

t.test('append then remove is the identity on the text', async (t) => {
  const entry = fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 });
  fc.assert(
    fc.property(
      fc.array(fc.jsonValue({ maxDepth: 2 }), { minLength: 1, maxLength: 5 }),
      layouts,
      entry,
      (items, fmt, added) => {
        const text = fmt({ name: 'n', plugins: items, tail: true });
        const root = scanJson(text);
        if (root.kind !== 'object') return false;
        const plugins = root.members[1]?.value;
        if (plugins === undefined) return false;
        const grown = appendElement(text, plugins, added);
        const parsed = JSON.parse(grown) as { plugins: unknown[] };
        if (JSON.stringify(parsed.plugins) !== JSON.stringify([...items, added])) return false;
        const again = scanJson(grown);
        if (again.kind !== 'object') return false;
        const grownPlugins = again.members[1]?.value;
        if (grownPlugins === undefined) return false;
        return removeElement(grown, grownPlugins, items.length) === text;
      },
    ),
    { numRuns: 500 },
  );
  t.pass('500 random lists');
});

t.test('appended entries follow the layout of the list', async (t) => {
  const text = '{\n    "plugins": [\n        {\n            "type": "bridge"\n        }\n    ]\n}\n';
  const root = scanJson(text);
  if (root.kind !== 'object') throw new Error('object expected');
  const plugins = root.members[0]?.value;
  if (plugins === undefined) throw new Error('plugins expected');
  t.equal(
    appendElement(text, plugins, { type: 'ambient-cni', x: [1] }),
    '{\n    "plugins": [\n        {\n            "type": "bridge"\n        },\n        {\n            "type": "ambient-cni",\n' +
      '            "x": [\n                1\n            ]\n        }\n    ]\n}\n',
  );
  const compact = '{"plugins":[{"type":"bridge"}]}';
  const c = scanJson(compact);
  if (c.kind !== 'object' || c.members[0] === undefined) throw new Error('object expected');
  t.equal(
    appendElement(compact, c.members[0].value, { type: 'b' }),
    '{"plugins":[{"type":"bridge"},{"type":"b"}]}',
  );
});

t.test('removeElement of the first, a middle and the only element; replaceValue', async (t) => {
  const text = '[1, 2, 3]';
  const arr = scanJson(text);
  t.equal(removeElement(text, arr, 0), '[2, 3]');
  t.equal(removeElement(text, arr, 1), '[1, 3]');
  t.equal(removeElement(text, arr, 2), '[1, 2]');
  t.equal(removeElement('[ 7 ]', scanJson('[ 7 ]'), 0), '[  ]');
  t.throws(() => removeElement(text, arr, 3), RangeError);
  const obj = '{"a": 1, "b": 2}';
  t.equal(removeElement(obj, scanJson(obj), 1), '{"a": 1}');
  t.equal(removeElement(obj, scanJson(obj), 0), '{"b": 2}');
  t.equal(
    replaceValue(text, (arr as JsonNode & { kind: 'array' }).items[1] as JsonNode, { k: 'v' }),
    '[1, {"k":"v"}, 3]',
  );
  t.throws(() => appendElement('[]', scanJson('[]'), 1), RangeError, 'an empty list has no layout to follow');
});

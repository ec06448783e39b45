// SPDX-License-Identifier: Apache-2.0
// Unit tests for the bench children's small parsers (bench/child.ts): endpoints given on the
// command line and the JSON config fields of the tunnel proxies.
import t from 'tap';
import { asObject, formatEndpoint, int, parseEndpoint, str, strList } from '../../../bench/child.ts';

t.test('endpoints round-trip, IPv6 in brackets', async (t) => {
  t.same(parseEndpoint('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
  t.same(parseEndpoint('[::1]:15008'), { host: '::1', port: 15008 });
  t.equal(formatEndpoint({ host: '::1', port: 15008 }), '[::1]:15008');
  t.equal(formatEndpoint({ host: '198.18.0.2', port: 80 }), '198.18.0.2:80');
  t.throws(() => parseEndpoint('127.0.0.1'), /expected host:port/);
  t.throws(() => parseEndpoint('127.0.0.1:0'), /bad port/);
  t.throws(() => parseEndpoint('127.0.0.1:70000'), /bad port/);
});

t.test('config field readers reject the wrong types', async (t) => {
  const o = asObject(JSON.parse('{"a":"x","n":3,"f":1.5,"l":["p","q"],"e":[]}'), 'cfg');
  t.equal(str(o, 'a'), 'x');
  t.equal(int(o, 'n'), 3);
  t.same(strList(o, 'l'), ['p', 'q']);
  t.throws(() => str(o, 'n'), /"n" must be a string/);
  t.throws(() => int(o, 'f'), /"f" must be an integer/);
  t.throws(() => int(o, 'missing'), /"missing" must be an integer/);
  t.throws(() => strList(o, 'e'), /non-empty list/);
  t.throws(() => asObject([], 'cfg'), /expected an object/);
  t.throws(() => asObject(null, 'cfg'), /expected an object/);
});

// SPDX-License-Identifier: Apache-2.0
// The failure list printed above `npm test`'s closing line: CI shows only the end of the output,
// so this list is how a red run says what failed.
import t from 'tap';
import { FailureLog } from '../../../scripts/failure-log.ts';

/** tap's own stream for a file with one failed assertion two subtests deep and one thrown error. */
const stream = `TAP version 14
1..2
# Subtest: test/unit/a.test.ts
    # Subtest: outer
        # Subtest: inner
            not ok 1 - one is two
              ---
              compare: ===
              at:
                fileName: test/unit/a.test.ts
                lineNumber: 3
              stack: |
                Test.<anonymous> (test/unit/a.test.ts:3:36)
                Test.<anonymous> (test/unit/a.test.ts:3:5)
              source: |
                t.equal(1, 2, 'one is two');
              diff: |
                --- expected
                +++ actual
                @@ -1,1 +1,1 @@
                -2
                +1
              ...
            
            ok 2 - should be equal
            1..2
        not ok 1 - inner # time=26.286ms
          ---
          at:
            fileName: test/unit/a.test.ts
          ...
        1..1
    not ok 1 - outer # time=30ms
    # Subtest: thrower
        not ok 1 - boom here
          ---
          stack: |
            Test.<anonymous> (test/unit/a.test.ts:6:39)
          ...
        1..1
    not ok 2 - thrower
    1..2
not ok 1 - test/unit/a.test.ts # time=700ms
# Subtest: test/unit/b.test.ts
    ok 1 - fine
    1..1
ok 2 - test/unit/b.test.ts
`;

t.test(
  'names each innermost failure with its path, the diff and where; parents are not repeated',
  async (t) => {
    const log = new FailureLog();
    // Arbitrary chunk boundaries, as a pipe delivers them.
    for (let i = 0; i < stream.length; i += 37) log.push(stream.slice(i, i + 37));
    t.equal(
      log.render(),
      [
        'Failed (2):',
        '  ✗ test/unit/a.test.ts › outer › inner › one is two',
        '      -2',
        '      +1',
        '      at Test.<anonymous> (test/unit/a.test.ts:3:36)',
        '  ✗ test/unit/a.test.ts › thrower › boom here',
        '      at Test.<anonymous> (test/unit/a.test.ts:6:39)',
        '',
      ].join('\n'),
    );
  },
);

t.test('a passing stream renders nothing', async (t) => {
  const log = new FailureLog();
  log.push('# Subtest: x\n    ok 1 - fine\n    1..1\nok 1 - x\n');
  t.equal(log.render(), '');
});

t.test('found/wanted are shown when there is no diff; the list is bounded', async (t) => {
  const log = new FailureLog();
  let s = '# Subtest: f\n';
  for (let i = 1; i <= 25; i++) {
    s += `    not ok ${i} - case ${i}\n      ---\n      found: ${i}\n      wanted: 0\n      ...\n`;
  }
  log.push(s);
  const out = log.render();
  t.match(out, /^Failed \(25\):\n {2}✗ f › case 1\n {6}found: 1\n {6}wanted: 0\n/);
  t.match(out, /✗ f › case 20\n/);
  t.notMatch(out, /case 21/);
  t.match(out, /… and 5 more\n$/);
});

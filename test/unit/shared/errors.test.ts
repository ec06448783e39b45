// SPDX-License-Identifier: Apache-2.0
import t from 'tap';
import { MeshError, isCausedBy, errorMessage } from '../../../src/shared/errors.ts';

class SubError extends MeshError {}

t.test('MeshError carries a code and a cause chain', async (t) => {
  const root = new SubError('X_ERR_ROOT', 'root cause');
  const outer = new MeshError('X_ERR_OUTER', 'outer', { cause: root });
  t.equal(outer.code, 'X_ERR_OUTER');
  t.equal(root.name, 'SubError');
  t.ok(isCausedBy(outer, SubError));
  t.notOk(isCausedBy(new MeshError('A', 'a'), SubError));
  t.equal(errorMessage(outer), 'outer');
  t.equal(errorMessage('plain'), 'plain');
});

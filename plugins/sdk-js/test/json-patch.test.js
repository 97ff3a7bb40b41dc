// JSON patches (RFC 6902): the diff `patched` answers, and applying one as
// the API server does (what `Admission` reports a mutation with).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PatchError, applyPatch, diff, patchProblem } from '../src/json-patch.js';

test('a diff removes, adds and replaces member by member, escaping keys, a list whole', () => {
  const from = { metadata: { name: 'a', labels: { 'x/y': '1', 'a~b': '2' } }, data: { keep: '1', drop: '2' }, items: [1, 2] };
  const to = { metadata: { name: 'a', labels: { 'x/y': '9', 'a~b': '2', new: '3' } }, data: { keep: '1' }, items: [1, 2, 3], spec: { on: true } };
  const operations = diff(from, to);
  assert.deepEqual(operations, [
    { op: 'replace', path: '/metadata/labels/x~1y', value: '9' },
    { op: 'add', path: '/metadata/labels/new', value: '3' },
    { op: 'remove', path: '/data/drop' },
    { op: 'replace', path: '/items', value: [1, 2, 3] },
    { op: 'add', path: '/spec', value: { on: true } },
  ]);
  assert.deepEqual(applyPatch(from, operations), to, 'the diff applies back to the target');
  assert.deepEqual(diff(from, structuredClone(from)), []);
  assert.deepEqual(diff({ a: { b: 1 } }, { a: [1] }), [{ op: 'replace', path: '/a', value: [1] }]);
  assert.deepEqual(diff({ a: null }, { a: {} }), [{ op: 'replace', path: '/a', value: {} }]);
});

test('every operation applies as RFC 6902 says, leaving the document as it was', () => {
  const document = { a: { b: 'c' }, list: ['x', 'y'], 'm~n': 1 };
  const patched = applyPatch(document, [
    { op: 'add', path: '/list/1', value: 'inserted' },
    { op: 'add', path: '/list/-', value: 'last' },
    { op: 'replace', path: '/a/b', value: 'd' },
    { op: 'copy', from: '/a', path: '/copied' },
    { op: 'move', from: '/m~0n', path: '/moved' },
    { op: 'remove', path: '/list/0' },
    { op: 'test', path: '/copied/b', value: 'd' },
    { op: 'add', path: '/a/b', value: 'replaced by add' },
  ]);
  assert.deepEqual(patched, {
    a: { b: 'replaced by add' }, list: ['inserted', 'y', 'last'], copied: { b: 'd' }, moved: 1,
  });
  assert.deepEqual(document, { a: { b: 'c' }, list: ['x', 'y'], 'm~n': 1 });
  assert.deepEqual(applyPatch(document, [{ op: 'add', path: '', value: [] }]), []);
  // A member named __proto__ is a member, as JSON.parse makes it.
  const proto = applyPatch({}, [{ op: 'add', path: '/__proto__', value: { polluted: true } }]);
  assert.deepEqual(Object.keys(proto), ['__proto__']);
  assert.equal({}.polluted, undefined);
});

test('an operation that does not apply fails the whole patch, naming it', () => {
  const document = { a: { b: 'c' }, list: [1] };
  const cases = [
    [{ op: 'remove', path: '/missing' }, 'operation 0 {"op":"remove","path":"/missing"}: no value at /missing'],
    [{ op: 'replace', path: '/a/x', value: 1 }, 'operation 0 {"op":"replace","path":"/a/x","value":1}: no value at /a/x'],
    [{ op: 'add', path: '/none/x', value: 1 }, 'operation 0 {"op":"add","path":"/none/x","value":1}: no value at /none'],
    [{ op: 'add', path: '/list/5', value: 1 }, 'operation 0 {"op":"add","path":"/list/5","value":1}: 5 is not an index of a list of 1'],
    [{ op: 'remove', path: '/list/01' }, 'operation 0 {"op":"remove","path":"/list/01"}: 01 is not an index of a list of 1'],
    [{ op: 'add', path: '/a/b/c', value: 1 }, 'operation 0 {"op":"add","path":"/a/b/c","value":1}: no object or list at /a/b'],
    [{ op: 'test', path: '/a/b', value: 'x' }, 'operation 0 {"op":"test","path":"/a/b","value":"x"}: the value differs'],
    [{ op: 'move', from: '/a', path: '/a/inner' }, 'operation 0 {"op":"move","from":"/a","path":"/a/inner"}: cannot move a value into itself'],
    [{ op: 'remove', path: '' }, 'operation 0 {"op":"remove","path":""}: cannot remove the whole document'],
  ];
  for (const [operation, message] of cases) {
    assert.throws(() => applyPatch(document, [{ op: 'add', path: '/first', value: 1 }, operation]), (error) => {
      assert.ok(error instanceof PatchError);
      assert.equal(error.message, message.replace('operation 0', 'operation 1'));
      return true;
    });
  }
  assert.equal(patchProblem([{ op: 'test', path: '/a', value: null }]), undefined, 'null is a value');
  assert.throws(() => applyPatch(document, { op: 'add' }), { name: 'PatchError', message: /^a patch is a list of operations/ });
});

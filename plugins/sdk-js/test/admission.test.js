// The admission export and its verdicts under Node, the contract's imports
// answered by test/fake-wit/ (see fake-host.js): what the host receives
// for every answer a handler can give, the abusive ones included.

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import {
  AdmissionError, AdmissionRequest, ApiError, ConfigError, Verdict, allow, deny, err, exportAdmission, ok,
  parseRequest, patched,
} from '../src/index.js';
import { reset, state } from './fake-wit/state.js';

beforeEach(reset);

/** An AdmissionReview's `request` about ConfigMap `default/settings`, as the API server sends it. */
function request({ operation = 'CREATE', object, oldObject = null, ...rest } = {}) {
  return JSON.stringify({
    uid: '705ab4f5',
    kind: { group: '', version: 'v1', kind: 'ConfigMap' },
    resource: { group: '', version: 'v1', resource: 'configmaps' },
    requestKind: { group: '', version: 'v1', kind: 'ConfigMap' },
    name: 'settings',
    namespace: 'default',
    operation,
    userInfo: { username: 'jane', groups: ['devs'] },
    object: object === undefined
      ? { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings', namespace: 'default' }, data: { mode: 'fast' } }
      : object,
    oldObject,
    dryRun: false,
    options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
    ...rest,
  });
}

const ALLOWED = { tag: 'ok', val: { allowed: true, message: undefined, code: undefined, warnings: [], patch: undefined } };

/** What the host hears from `validate` and `mutate` when both are `handler`. */
function answers(handler, json = request()) {
  const admission = exportAdmission({ validate: handler, mutate: handler });
  return { validate: admission.validate(json), mutate: admission.mutate(json) };
}

test('a request gives its operation, kind, objects, user and place', () => {
  const parsed = parseRequest(request({
    operation: 'UPDATE',
    oldObject: { metadata: { name: 'settings' }, data: { mode: 'slow' } },
    dryRun: true,
  })).unwrap();

  assert.ok(parsed instanceof AdmissionRequest);
  assert.equal(parsed.operation, 'UPDATE');
  assert.deepEqual(parsed.kind, { apiVersion: 'v1', kind: 'ConfigMap' });
  assert.deepEqual(parsed.resource, { group: '', version: 'v1', resource: 'configmaps' });
  assert.deepEqual([parsed.namespace, parsed.name, parsed.uid], ['default', 'settings', '705ab4f5']);
  assert.equal(parsed.object.data.mode, 'fast');
  assert.equal(parsed.oldObject.data.mode, 'slow');
  assert.deepEqual(parsed.userInfo, { username: 'jane', groups: ['devs'] });
  assert.equal(parsed.dryRun, true);
  assert.equal(parsed.raw.options.kind, 'CreateOptions');
  // `raw` is the request as sent, whatever the handler did to `object`.
  parsed.object.data.mode = 'changed';
  assert.equal(parsed.raw.object.data.mode, 'fast');
});

test('a delete has only the old object; a cluster-scoped request has no namespace; a group joins its version', () => {
  const deleted = parseRequest(request({ operation: 'DELETE', object: null, oldObject: { metadata: { name: 'settings' } } }))
    .unwrap();
  assert.equal(deleted.object, undefined);
  assert.equal(deleted.oldObject.metadata.name, 'settings');

  const namespace = parseRequest(JSON.stringify({
    operation: 'CREATE',
    kind: { group: 'apps', version: 'v1', kind: 'Deployment' },
    namespace: '',
    object: { metadata: {} },
  })).unwrap();
  assert.equal(namespace.namespace, undefined);
  assert.equal(namespace.name, '');
  assert.deepEqual(namespace.kind, { apiVersion: 'apps/v1', kind: 'Deployment' });
  assert.deepEqual(namespace.userInfo, {});
  assert.equal(namespace.dryRun, false);
});

test('a request that is not one is an AdmissionError naming what is wrong', () => {
  const cases = [
    ['{', /^the admission request is not JSON: /],
    ['[1]', /^the admission request is not a JSON object but \[1\]$/],
    ['null', /^the admission request is not a JSON object but null$/],
    [request({ operation: 'PATCH' }), /^the admission request's operation is "PATCH", not one of CREATE, UPDATE, DELETE, CONNECT$/],
    [request({ kind: 'ConfigMap' }), /^the admission request names no kind \(\{group, version, kind\}\): "ConfigMap"$/],
    [request({ object: null }), /^the admission request is a CREATE without an object$/],
    [request({ operation: 'UPDATE', object: 'text' }), /^the admission request is a UPDATE without an object$/],
  ];
  for (const [json, message] of cases) {
    const parsed = parseRequest(json);
    assert.equal(parsed.ok, false, json);
    assert.ok(parsed.error instanceof AdmissionError, json);
    assert.match(parsed.error.message, message);
  }
  assert.match(parseRequest({ operation: 'CREATE' }).error.message, /^the admission request is not JSON text but \{"operation":"CREATE"\}$/);
});

test('a request that is not one reaches the host as the review error, without calling the handler', () => {
  let called = false;
  const { validate, mutate } = answers(() => { called = true; return allow(); }, '{"operation":"CREATE"');
  assert.equal(validate.tag, 'err');
  assert.match(validate.val, /^the admission request is not JSON: /);
  assert.match(mutate.val, /^the admission request is not JSON: /);
  assert.equal(called, false);
  const noObject = answers(() => allow(), request({ object: null }));
  assert.deepEqual(noObject.validate, { tag: 'err', val: 'the admission request is a CREATE without an object' });
});

test('verdicts: allow, deny with a message and code, warnings on either', () => {
  assert.deepEqual(answers(() => allow()).validate, ALLOWED);
  assert.deepEqual(
    answers(() => deny('every ConfigMap needs a team label', { code: 422 }).warn('checked by team-policy')).validate,
    { tag: 'ok', val: { allowed: false, message: 'every ConfigMap needs a team label', code: 422, warnings: ['checked by team-policy'], patch: undefined } },
  );
  assert.deepEqual(
    answers(() => allow().warn('a').warn('b')).mutate,
    { tag: 'ok', val: { allowed: true, message: undefined, code: undefined, warnings: ['a', 'b'], patch: undefined } },
  );
  assert.equal(deny('no').code, undefined, 'the host answers 403 without a code');
  for (const code of [400, 403, 599]) assert.equal(deny('no', { code }).code, code);

  // Verdicts are values: warn makes a new one.
  const base = allow();
  const warned = base.warn('w');
  assert.deepEqual([base.warnings, warned.warnings], [[], ['w']]);
  assert.ok(Object.isFrozen(warned) && Object.isFrozen(warned.warnings));
});

test('deny needs a message and an HTTP error status; warn needs text', () => {
  for (const message of [undefined, '', '   ', 42, null]) {
    assert.throws(() => deny(message), { name: 'TypeError', message: /^deny needs a message saying what is wrong and how to fix it/ }, String(message));
  }
  for (const code of [200, 399, 600, 0, -403, 422.5, '422', Number.NaN, Infinity, 65935]) {
    assert.throws(() => deny('no', { code }), { name: 'TypeError', message: /^a denial's code is an HTTP error status, a whole number from 400 to 599/ }, String(code));
  }
  assert.throws(() => deny('no', 422), { name: 'TypeError', message: /^deny takes its code as an option, deny\(message, \{ code: 422 \}\), not 422$/ });
  for (const warning of [undefined, '', 7, ['a']]) {
    assert.throws(() => allow().warn(warning), { name: 'TypeError', message: /^warn takes the text of a warning/ });
  }
});

test('a deny without a message inside a handler is reported as the review error, not a trap', () => {
  const { validate } = answers(() => deny());
  assert.equal(validate.tag, 'err');
  assert.match(validate.val, /^validate threw TypeError: deny needs a message/);
  const badCode = answers(() => deny('no', { code: 200 })).mutate;
  assert.match(badCode.val, /^mutate threw TypeError: a denial's code is an HTTP error status/);
});

test('mutate patches the object as sent into the changed one, in place or a copy', () => {
  const json = request({
    object: {
      apiVersion: 'v1', kind: 'ConfigMap',
      metadata: { name: 'settings', labels: { keep: 'yes' }, future: 1 },
      data: { mode: 'fast', drop: 'me' },
    },
  });
  const admission = exportAdmission({
    mutate(review) {
      const { object } = review;
      object.metadata.labels['leasehold.dev/team'] = 'payments';
      delete object.data.drop;
      object.data.mode = undefined;   // removed, as JSON.stringify drops it
      return patched(review, object);
    },
  });
  const answer = admission.mutate(json);
  assert.equal(answer.tag, 'ok');
  assert.equal(answer.val.allowed, true);
  assert.deepEqual(JSON.parse(answer.val.patch), [
    { op: 'add', path: '/metadata/labels/leasehold.dev~1team', value: 'payments' },
    { op: 'remove', path: '/data/mode' },
    { op: 'remove', path: '/data/drop' },
  ]);
  // `validate` was not given: it allows.
  assert.deepEqual(admission.validate(json), ALLOWED);
});

test('an unchanged object is allowed without a patch; a whole new member is one add', () => {
  const same = answers((review) => patched(review, review.object)).mutate;
  assert.deepEqual(same, ALLOWED);
  const added = answers((review) => patched(review, { ...review.object, metadata: { ...review.object.metadata, labels: { a: 'b' } } }))
    .mutate;
  assert.deepEqual(JSON.parse(added.val.patch), [{ op: 'add', path: '/metadata/labels', value: { a: 'b' } }]);
  // A list that differs is replaced whole.
  const listed = parseRequest(request({ object: { metadata: {}, items: [1, 2, 3] } })).unwrap();
  assert.deepEqual(patched(listed, { metadata: {}, items: [1, 3] }).unwrap().patch, [
    { op: 'replace', path: '/items', value: [1, 3] },
  ]);
});

test('patched on a delete is an AdmissionError value; on anything but the request or an object, a TypeError', () => {
  const deleted = parseRequest(request({ operation: 'DELETE', object: null, oldObject: { metadata: {} } })).unwrap();
  const result = patched(deleted, {});
  assert.equal(result.ok, false);
  assert.ok(result.error instanceof AdmissionError);
  assert.equal(result.error.message, 'a DELETE request has no object to patch');
  // Returned as it is, it is the review's error.
  const { mutate } = answers((review) => patched(review, {}), request({ operation: 'DELETE', object: null }));
  assert.deepEqual(mutate, { tag: 'err', val: 'a DELETE request has no object to patch' });

  const created = parseRequest(request()).unwrap();
  assert.throws(() => patched({ object: {} }, {}), { name: 'TypeError', message: /takes the request the handler was given/ });
  assert.throws(() => patched(created, undefined), { name: 'TypeError', message: /takes the changed object, not undefined/ });
  assert.throws(() => patched(created, [1]), { name: 'TypeError', message: /takes the changed object, not \[1\]/ });
});

test('withPatch takes an RFC 6902 patch, and an empty one is no change', () => {
  const operations = [{ op: 'add', path: '/data/x', value: '1' }];
  assert.deepEqual(allow().withPatch(operations).patch, operations);
  assert.equal(allow().withPatch([]).patch, undefined);
  const cases = [
    [undefined, 'not an RFC 6902 JSON patch: a patch is a list of operations, not undefined'],
    [[{ op: 'frobnicate', path: '/a' }], 'not an RFC 6902 JSON patch: operation 0 {"op":"frobnicate","path":"/a"}: op is not one of add, remove, replace, move, copy, test'],
    [[{ op: 'add', path: 'a', value: 1 }], 'not an RFC 6902 JSON patch: operation 0 {"op":"add","path":"a","value":1}: path is not a JSON pointer ("" or starting with "/")'],
    [[{ op: 'remove', path: '/a' }, { op: 'add', path: '/a' }], 'not an RFC 6902 JSON patch: operation 1 {"op":"add","path":"/a"}: value is missing'],
    [[{ op: 'move', path: '/a' }], 'not an RFC 6902 JSON patch: operation 0 {"op":"move","path":"/a"}: from is not a JSON pointer ("" or starting with "/")'],
    [['remove /a'], 'not an RFC 6902 JSON patch: operation 0 "remove /a": not an object'],
  ];
  for (const [patch, message] of cases) {
    assert.throws(() => allow().withPatch(patch), { name: 'TypeError', message });
  }
});

test('a patch from validate is an error: only mutate may change the object', () => {
  const { validate, mutate } = answers((review) => {
    review.object.data.mode = 'slow';
    return patched(review, review.object);
  });
  assert.deepEqual(validate, { tag: 'err', val: 'validate answered a patch; only mutate may change the object' });
  assert.equal(mutate.tag, 'ok');
  assert.deepEqual(JSON.parse(mutate.val.patch), [{ op: 'replace', path: '/data/mode', value: 'slow' }]);
  // A denial with a patch from validate is refused the same way.
  const denied = answers(() => deny('no').withPatch([{ op: 'remove', path: '/data' }])).validate;
  assert.equal(denied.tag, 'err');
});

test('error values and thrown SDK errors are the review error; other exceptions are bugs, logged, never traps', () => {
  const cases = [
    [() => new AdmissionError('the quota service did not answer'), 'the quota service did not answer'],
    [() => err(new ApiError(403, 'Forbidden', 'no')), 'api error 403 Forbidden: no'],
    [() => err('plain text'), 'plain text'],
    [() => { throw new ConfigError('labels must map names to strings'); }, 'invalid plugin configuration: labels must map names to strings'],
    [() => err(new ApiError(500, 'InternalError', 'down')).unwrap(), 'api error 500 InternalError: down'],
    [() => new Error('cannot decide'), 'cannot decide'],
    [() => { throw new TypeError('x is undefined'); }, 'validate threw TypeError: x is undefined'],
    [() => { throw 'a string'; }, 'validate threw "a string"'],
    [() => { throw undefined; }, 'validate threw undefined'],
  ];
  for (const [handler, message] of cases) {
    assert.deepEqual(answers(handler).validate, { tag: 'err', val: message }, message);
  }
  // Only the three bugs were logged (each by validate and by mutate), with their stacks.
  assert.deepEqual(state.logs.map(({ level, message }) => [level, message]), Array(6).fill(['error', 'plugin failed']));
  assert.deepEqual(state.logs.slice(0, 2).map(({ fields }) => fields[0]), [
    { key: 'review', value: 'validate' }, { key: 'review', value: 'mutate' },
  ]);
  assert.match(state.logs[0].fields[1].value, /^TypeError: x is undefined\n\s+at /);
});

test('anything returned that is not a verdict is the review error, naming what came back', () => {
  const cases = [
    [() => undefined, 'validate returned undefined; return allow(), deny(message), patched(request, object) or an error'],
    [() => ({ allowed: true }), 'validate returned {"allowed":true}; return allow(), deny(message), patched(request, object) or an error'],
    [() => true, 'validate returned true; return allow(), deny(message), patched(request, object) or an error'],
    [() => allow, 'validate returned a function; return allow(), deny(message), patched(request, object) or an error'],
    [() => ok(undefined), 'validate returned undefined; return allow(), deny(message), patched(request, object) or an error'],
    [() => Promise.resolve(allow()), 'validate returned a Promise: a review is synchronous, return its verdict'],
    [() => ({ data: 'x'.repeat(300) }), `validate returned {"data":"${'x'.repeat(191)}…; return allow(), deny(message), patched(request, object) or an error`],
  ];
  for (const [handler, message] of cases) {
    assert.deepEqual(answers(handler).validate, { tag: 'err', val: message }, message);
  }
  // A successful Result holding a verdict is that verdict.
  assert.deepEqual(answers(() => ok(allow())).validate, ALLOWED);
});

test('a verdict made by hand that the contract cannot carry is an error, not a trap', () => {
  const huge = new Verdict(false, 'no', 70000, [], undefined);
  assert.match(answers(() => huge).validate.val, /^validate answered a verdict the contract cannot carry: /);
  const notText = new Verdict(true, undefined, undefined, [1], undefined);
  assert.match(answers(() => notText).mutate.val, /^mutate answered a verdict the contract cannot carry: /);
});

test('exportAdmission needs at least one handler, and handlers that are functions', () => {
  assert.throws(() => exportAdmission({}), { name: 'TypeError', message: 'exportAdmission needs validate(request), mutate(request) or both' });
  assert.throws(() => exportAdmission(), TypeError);
  assert.throws(() => exportAdmission({ validate: allow() }), { name: 'TypeError', message: /^exportAdmission: validate must be a function/ });
  // Only mutate given: validate allows.
  assert.deepEqual(exportAdmission({ mutate: () => deny('no') }).validate(request()), ALLOWED);
});

// The SDK's own logic under Node, its imports answered by test/fake-wit/
// (see fake-host.js). Components built on it are tested on the real
// runtime by the example's and the scaffold's tests.

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import {
  Api, ApiError, ConfigMap, ConfigError, Deployment, Patch, ReconcileError, done, emitEvent,
  exportController, finalizer, loadConfig, optionalStringMap, requeueAfter, setController,
  controllerReference,
} from '../src/index.js';
import { reset, state } from './fake-wit/state.js';

beforeEach(reset);

const apiError = (code, reason) => {
  const error = new Error('host error');
  error.payload = { code, reason, message: `${reason} happened` };
  return error;
};

test('api errors are retryable unless the request itself was invalid', () => {
  for (const code of [0, 403, 404, 409, 429, 500, 503]) {
    assert.equal(new ApiError(code, 'X', '').isRetryable(), true, code);
  }
  for (const code of [400, 405, 406, 413, 415, 422]) {
    assert.equal(new ApiError(code, 'X', '').isRetryable(), false, code);
  }
  const reconcileError = ReconcileError.from(new ApiError(409, 'Conflict', 'stale'), 'applying');
  assert.deepEqual([reconcileError.message, reconcileError.retryable], ['applying: api error 409 Conflict: stale', true]);
  assert.equal(ReconcileError.from(new TypeError('bug')).retryable, false);
});

test('a host error comes back as a value, never thrown', () => {
  state.answer = () => { throw apiError(403, 'Forbidden'); };
  const found = Api.namespaced(ConfigMap, 'default').get('settings');
  assert.equal(found.ok, false);
  assert.ok(found.error instanceof ApiError);
  assert.equal(found.error.isForbidden(), true);
  assert.throws(() => found.unwrap(), ApiError);
});

test('get answers undefined for a missing object and parses a found one', () => {
  const api = Api.namespaced(ConfigMap, 'team-a');
  assert.deepEqual(api.get('absent').value, undefined);
  state.answer = () => '{"metadata":{"name":"found"}}';
  assert.deepEqual(api.get('found').value, { metadata: { name: 'found' } });
  assert.deepEqual(state.calls[0], ['get', { apiVersion: 'v1', kind: 'ConfigMap' }, { namespace: 'team-a', name: 'absent' }]);
});

test('delete says whether it deleted, and a missing object is not an error', () => {
  const api = Api.namespaced(ConfigMap, 'default');
  assert.deepEqual(api.delete('here').value, true);
  state.answer = () => { throw apiError(404, 'NotFound'); };
  assert.deepEqual(api.delete('gone').value, false);
  state.answer = () => { throw apiError(500, 'InternalError'); };
  assert.equal(api.delete('broken').error.code, 500);
});

test('apply fills in the type and name, and patches cross as the contract variants', () => {
  state.answer = (name, args) => args[2];
  const api = Api.namespaced(Deployment, 'default');
  const applied = api.apply('web', { spec: { replicas: 2 } }, { fieldManager: 'me' });
  assert.deepEqual(applied.value, { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web' }, spec: { replicas: 2 } });
  assert.deepEqual(state.calls[0][4], { fieldManager: 'me', force: false });

  state.answer = () => '{}';
  api.patch('web', Patch.merge({ metadata: { labels: { a: null } } }));
  api.patch('web', Patch.json([{ op: 'remove', path: '/spec/paused' }]));
  api.patchStatus('web', { status: { ready: true } });
  assert.deepEqual(state.calls.slice(1).map((call) => call[3]), [
    { tag: 'merge', val: '{"metadata":{"labels":{"a":null}}}' },
    { tag: 'json', val: '[{"op":"remove","path":"/spec/paused"}]' },
    { tag: 'merge-patch', val: '{"status":{"ready":true}}' },
  ]);
  assert.throws(() => api.patch('web', { strategic: {} }), TypeError);
});

test('list pages carry the continue token and give items their type', () => {
  state.answer = () => JSON.stringify({ metadata: { continue: 'next' }, items: [{ metadata: { name: 'a' } }] });
  const page = Api.all(ConfigMap).listPage({ labelSelector: 'app=web', limit: 1 });
  assert.equal(page.value.continueToken, 'next');
  assert.deepEqual(page.value.items, [{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'a' } }]);
  assert.deepEqual(state.calls[0][2], {
    namespace: undefined, labelSelector: 'app=web', fieldSelector: undefined, limit: 1, continueToken: undefined,
  });
});

test('events name the object, its uid and the type as the contract spells them', () => {
  const configMap = { ...ConfigMap, metadata: { namespace: 'default', name: 'settings', uid: 'u1' } };
  assert.equal(emitEvent(configMap, { type: 'Warning', reason: 'Odd', message: 'hm' }).ok, true);
  assert.deepEqual(state.calls[0].slice(1), [
    { typeMeta: { apiVersion: 'v1', kind: 'ConfigMap' }, object: { namespace: 'default', name: 'settings' }, uid: 'u1' },
    { eventType: 'warning', reason: 'Odd', message: 'hm' },
  ]);
});

test('configuration is parsed and checked into a value or a ConfigError', () => {
  const check = (raw) => ({ labels: optionalStringMap(raw, 'labels') ?? {} });
  state.config = '{"labels": {"tier": "web"}}';
  assert.deepEqual(loadConfig(check).value, { labels: { tier: 'web' } });
  state.config = '{"labels": {"tier": 1}}';
  const bad = loadConfig(check);
  assert.ok(bad.error instanceof ConfigError);
  assert.equal(bad.error.message, 'invalid plugin configuration: labels must map names to strings');
  state.config = 'nope';
  assert.match(loadConfig().error.message, /^invalid plugin configuration: not JSON/);
});

test('owner references need a uid, one namespace and no other controller', () => {
  const owner = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { namespace: 'a', name: 'app', uid: 'u1' } };
  assert.deepEqual(controllerReference(owner).value, { apiVersion: 'v1', kind: 'ConfigMap', name: 'app', uid: 'u1', controller: true });
  assert.match(controllerReference({ ...owner, metadata: { name: 'x' } }).error.message, /has no uid/);
  const child = { metadata: { namespace: 'a', name: 'child' } };
  assert.equal(setController(child, owner).ok, true);
  assert.equal(setController(child, owner).ok, true, 'setting the same owner again is fine');
  assert.equal(child.metadata.ownerReferences.length, 1);
  const other = { ...owner, metadata: { ...owner.metadata, uid: 'u2', name: 'other' } };
  assert.match(setController(child, other).error.message, /already controlled by ConfigMap app/);
  assert.match(setController({ metadata: { namespace: 'b' } }, owner).error.message, /cannot own an object in namespace b/);
});

test('finalizers are added and removed once', () => {
  const object = { metadata: {} };
  assert.equal(finalizer.add(object, 'x/y'), true);
  assert.equal(finalizer.add(object, 'x/y'), false);
  assert.equal(finalizer.has(object, 'x/y'), true);
  assert.equal(finalizer.remove(object, 'x/y'), true);
  assert.deepEqual(object.metadata.finalizers, []);
});

test('the export turns actions, error values and thrown errors into the contract result', () => {
  let outcome;
  const reconciler = exportController({
    registration: () => ({ name: 'n', primary: Deployment, resyncPeriodMs: 60000, finalizer: 'x/y' }),
    reconcile: (object) => outcome(object),
  });
  const registration = reconciler.register();
  assert.deepEqual(registration.primary, { group: 'apps', version: 'v1', kind: 'Deployment', plural: 'deployments' });
  assert.equal(registration.resyncPeriodMs, 60000n);

  const request = { reference: { namespace: 'a', name: 'b' }, object: '{"metadata":{"name":"b"}}' };
  const cases = [
    [() => done(), { tag: 'ok', val: { tag: 'done' } }],
    [() => undefined, { tag: 'ok', val: { tag: 'done' } }],
    [() => requeueAfter(1500), { tag: 'ok', val: { tag: 'requeue-after', val: 1500n } }],
    [() => new ApiError(422, 'Invalid', 'no'), { tag: 'err', val: { message: 'api error 422 Invalid: no', retryable: false } }],
    [() => { throw new ApiError(409, 'Conflict', 'stale'); }, { tag: 'err', val: { message: 'api error 409 Conflict: stale', retryable: true } }],
    [() => ReconcileError.retryable('later'), { tag: 'err', val: { message: 'later', retryable: true } }],
    [() => { throw new TypeError('a bug'); }, { tag: 'err', val: { message: 'a bug', retryable: false } }],
  ];
  for (const [handler, expected] of cases) {
    outcome = handler;
    assert.deepEqual(reconciler.reconcile(request), expected);
  }
  // Only the bug was logged: error values are the plugin's answer.
  assert.deepEqual(state.logs.map((record) => record.message), ['plugin failed']);
  // The primary's type is filled in from the registration.
  outcome = (object) => (object.kind === 'Deployment' ? done() : new Error('no kind'));
  assert.deepEqual(reconciler.reconcile(request), { tag: 'ok', val: { tag: 'done' } });
  // A missing primary is `absent`, done by default; cleanup too.
  assert.deepEqual(reconciler.reconcile({ reference: request.reference }), { tag: 'ok', val: { tag: 'done' } });
  assert.deepEqual(reconciler.cleanup(request), { tag: 'ok', val: { tag: 'done' } });
});

test('a type spreads into an object as apiVersion and kind, and registers with its plural', () => {
  assert.deepEqual({ ...ConfigMap, metadata: {} }, { apiVersion: 'v1', kind: 'ConfigMap', metadata: {} });
  const registration = exportController({ registration: () => ({ name: 'n', primary: ConfigMap }), reconcile: done })
    .register();
  assert.equal(registration.primary.plural, 'configmaps');
});

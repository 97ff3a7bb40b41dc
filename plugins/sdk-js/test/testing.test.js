// The harness client: a component that cannot be loaded is refused with the
// reason `leasehold plugin run` gave, and no process is left behind. And
// offline admission reviews: `Admission` on a plugin module (this file
// imports no SDK module that needs the contract, so the plugin's imports
// are answered by offline-host.js), and the requests `ReviewRequest` builds.

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import {
  Admission, ConfigMap, Deployment, Harness, ReviewRequest, Verdict, allow, deny,
} from '../src/testing.js';

test('a harness that cannot start says why', async () => {
  // A stand-in for `leasehold` that fails as it would for a bad file.
  const dir = mkdtempSync(join(tmpdir(), 'leasehold-sdk-'));
  const fake = join(dir, 'leasehold');
  writeFileSync(fake, '#!/bin/sh\necho "error: cannot run $6: not a valid wasm component" >&2\nexit 1\n');
  chmodSync(fake, 0o755);
  await assert.rejects(
    Harness.load('broken.wasm', { leasehold: fake }),
    /cannot load broken.wasm into the harness: leasehold plugin run exited \(code 1\):\nerror: cannot run broken.wasm: not a valid wasm component/,
  );
});

test('answers are matched to commands in order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'leasehold-sdk-'));
  const fake = join(dir, 'leasehold');
  // Answers each command line with its op, after the registration.
  writeFileSync(fake, `#!/usr/bin/env node
const rl = require('node:readline').createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const { op, name } = JSON.parse(line);
  const answer = op === 'registration' ? { name: 'fake', primary: {} } : { object: { op, name } };
  process.stdout.write(JSON.stringify({ ok: true, ...answer }) + '\\n');
});
`);
  chmodSync(fake, 0o755);
  const harness = await Harness.load('any.wasm', { leasehold: fake });
  assert.equal(harness.registration.name, 'fake');
  const [a, b] = await Promise.all([
    harness.get({ apiVersion: 'v1', kind: 'ConfigMap', name: 'a' }),
    harness.get({ apiVersion: 'v1', kind: 'ConfigMap', name: 'b' }),
  ]);
  assert.deepEqual([a.name, b.name], ['a', 'b']);
  harness.close();
});

const fixture = (name) => new URL(`./fixtures/${name}`, import.meta.url);

function configMap(name, data, labels) {
  return { ...ConfigMap, metadata: { namespace: 'default', name, labels }, data };
}

test('a built request is what the API server sends about the object', () => {
  const old = configMap('settings', { review: 'old' });
  const changed = configMap('settings', { review: 'new' });
  const request = ReviewRequest.update(old, changed).user('jane', ['devs']).dryRun().toJSON();
  assert.deepEqual(request.kind, { group: '', version: 'v1', kind: 'ConfigMap' });
  assert.deepEqual(request.resource, { group: '', version: 'v1', resource: 'configmaps' });
  assert.deepEqual(request.requestKind, request.kind);
  assert.deepEqual([request.operation, request.namespace, request.name], ['UPDATE', 'default', 'settings']);
  assert.deepEqual(request.userInfo, { username: 'jane', groups: ['devs'] });
  assert.equal(request.dryRun, true);
  assert.deepEqual([request.object.data, request.oldObject.data], [{ review: 'new' }, { review: 'old' }]);
  assert.deepEqual(request.options, { apiVersion: 'meta.k8s.io/v1', kind: 'UpdateOptions' });

  const created = ReviewRequest.create(configMap('a', {})).toJSON();
  assert.deepEqual([created.operation, created.oldObject, created.dryRun], ['CREATE', null, false]);
  assert.equal(created.userInfo.username, 'kubernetes-admin');
  const deleted = ReviewRequest.delete({ ...Deployment, metadata: { name: 'web' } }).toJSON();
  assert.deepEqual([deleted.operation, deleted.object, deleted.namespace], ['DELETE', null, undefined]);
  assert.deepEqual(deleted.resource, { group: 'apps', version: 'v1', resource: 'deployments' });
  const plurals = ['Policy', 'Ingress', 'Greeting', 'Gateway'].map((kind) =>
    ReviewRequest.create({ apiVersion: 'example.dev/v1', kind, metadata: {} }).toJSON().resource.resource);
  assert.deepEqual(plurals, ['policies', 'ingresses', 'greetings', 'gateways']);
  assert.equal(String(ReviewRequest.create(configMap('a', {}))), JSON.stringify(created));
  assert.throws(() => ReviewRequest.create({ metadata: {} }), { name: 'TypeError', message: /needs an object with apiVersion and kind/ });
});

test('an offline review answers the verdict, the patched object, and the calls and logs it made', async () => {
  const admission = await Admission.load(fixture('reviewer.js'), { config: { team: 'payments' } });
  const request = ReviewRequest.create(configMap('settings', { review: 'fine' }, { keep: 'yes' }));

  const validated = await admission.validate(request);
  assert.deepEqual(validated, {
    verdict: allow(),
    calls: [],
    logs: [{ level: 'info', message: 'allowed', fields: { name: 'settings', user: 'kubernetes-admin' } }],
  });
  const mutated = await admission.mutate(request);
  assert.ok(mutated.verdict instanceof Verdict);
  assert.deepEqual(mutated.verdict.patch, [{ op: 'add', path: '/metadata/labels/team', value: 'payments' }]);
  assert.deepEqual(mutated.object.metadata.labels, { keep: 'yes', team: 'payments' });
  assert.deepEqual(mutated.object.data, { review: 'fine' });

  const denied = await admission.validate(String(ReviewRequest.create(configMap('refused', { review: 'deny' }))));
  assert.deepEqual(denied.verdict, deny('refused is refused for team payments', { code: 422 }).warn('checked'));
  // A denied or unchanged request keeps its object as sent; a delete has none.
  const deleted = await admission.mutate(ReviewRequest.delete(configMap('gone', {})));
  assert.deepEqual([deleted.verdict, deleted.object], [allow(), undefined]);
});

test('each load has its own configuration', async () => {
  const [a, b] = await Promise.all([
    Admission.load(fixture('reviewer.js'), { config: { team: 'a' } }),
    Admission.load(fixture('reviewer.js'), { config: { team: 'b' } }),
  ]);
  const request = ReviewRequest.create(configMap('x', { review: 'fine' }));
  assert.equal((await a.mutate(request)).object.metadata.labels.team, 'a');
  assert.equal((await b.mutate(request)).object.metadata.labels.team, 'b');
});

test('offline, a Kubernetes call fails as a value and is reported; errors and bugs are the review error', async () => {
  const admission = await Admission.load(fixture('reviewer.js'), { config: { team: 't' } });
  const read = await admission.validate(ReviewRequest.create(configMap('r', { review: 'read' })));
  assert.deepEqual(read.error, { message: 'api error 0 Offline: an offline review has no cluster to call; test a review that reads the cluster against a real API server' });
  assert.deepEqual(read.calls, ['get v1/ConfigMap default/other -> 0 Offline']);

  const thrown = await admission.validate(ReviewRequest.create(configMap('t', { review: 'throw' })));
  assert.deepEqual(thrown.error, { message: 'validate threw RangeError: out of range' });
  assert.deepEqual(thrown.logs.map(({ level, message }) => [level, message]), [['error', 'plugin failed']]);

  const patchedByValidate = await admission.validate(ReviewRequest.create(configMap('p', { review: 'patch' })));
  assert.deepEqual(patchedByValidate.error, { message: 'validate answered a patch; only mutate may change the object' });
  const badPatch = await admission.mutate(ReviewRequest.create(configMap('b', { review: 'bad-patch' })));
  assert.deepEqual(badPatch.error, { message: 'the API server cannot apply the verdict\'s patch to the object: operation 0 {"op":"remove","path":"/spec/missing"}: no value at /spec' });
  const notJson = await admission.validate('{');
  assert.match(notJson.error.message, /^the admission request is not JSON: /);
});

test('what the host would refuse from an export written by hand is an error, a throw is a trap', async () => {
  const admission = await Admission.load(fixture('raw-export.js'), { config: { from: 'load' } });
  const asking = (answer) => ReviewRequest.create(configMap('x', { answer }));
  assert.equal((await admission.validate(asking('config'))).verdict.message, '{"from":"load"}');
  assert.deepEqual((await admission.validate(asking('undecided'))).error, { message: 'cannot decide' });
  assert.deepEqual((await admission.validate(asking('not-a-result'))).error, {
    message: 'the validate export answered {"allowed":true}, not a result', runtime: true,
  });
  assert.deepEqual((await admission.mutate(asking('trap'))).error, {
    message: 'the mutate export threw (a trap in a component): Error: unreachable executed', runtime: true,
  });
  assert.match((await admission.mutate(asking('not-json-patch'))).error.message, /^not a JSON patch \(RFC 6902\): /);
  assert.deepEqual((await admission.validate(asking('patch'))).error, {
    message: 'validate answered a patch; the API server takes one from mutate only',
  });
  assert.equal((await admission.mutate(asking('patch'))).object.data.added, 'yes');
  // A denial's patch is not applied.
  const denied = await admission.mutate(asking('denied-patch'));
  assert.deepEqual([denied.verdict.allowed, denied.object.data.added], [false, undefined]);
});

test('a module without an admission export, or a component without its bundle, is refused by name', async () => {
  await assert.rejects(Admission.load(fixture('no-admission.js')), /no-admission.js exports no admission: export const admission = exportAdmission/);
  await assert.rejects(Admission.load('dist/missing.wasm'), /cannot load dist\/missing.wasm for admission reviews: no dist\/missing.bundle.js, which leasehold-js build writes beside the component/);
});
